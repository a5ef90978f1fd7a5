//! `kms`: the transit-card key service and its operator CLI.

#![deny(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use kms::cli::{self, ClientOptions};
use kms::config::{Config, LogFormat, Overrides};
use kms::dev::{self, DevOptions};
use kms::hsm::raw::apply_module_env_before_threads;

/// HSM-backed key service for city transit-card systems.
///
/// `kms serve` runs the gRPC service (mutual TLS) in front of a PKCS#11
/// module. `kms dev` creates and runs a local development instance. The
/// other commands are the operator's client: they connect over mutual TLS
/// with a client certificate (a profile file, `--endpoint/--ca/--cert/--key`
/// or the `KMS_*` environment variables).
#[derive(Parser)]
#[command(name = "kms", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service from a configuration file.
    ///
    /// The HSM PIN comes from the file or environment variable the
    /// configuration names, never from the command line. Flags override
    /// environment variables, which override the file.
    Serve {
        /// Configuration file (see kms.sample.toml and docs/configuration.md).
        #[arg(long, short, env = "KMS_CONFIG")]
        config: PathBuf,
        /// Override server.listen.
        #[arg(long, env = "KMS_LISTEN")]
        listen: Option<SocketAddr>,
        /// Override database.url.
        #[arg(long, env = "KMS_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Override logging.level (a tracing filter such as `info` or `kms=debug`).
        #[arg(long, env = "KMS_LOG_LEVEL")]
        log_level: Option<String>,
        /// Override ops.listen (metrics and /healthz).
        #[arg(long, env = "KMS_OPS_LISTEN")]
        ops_listen: Option<SocketAddr>,
    },
    /// Create (first run) and run a local development instance.
    ///
    /// Makes a token in the PKCS#11 module, a development CA whose key is
    /// in that token, server and admin client certificates, a SQLite
    /// database and the configuration, all under --data-dir; then serves
    /// and prints how to call it. Development only: PINs and TLS keys are
    /// plain files there.
    Dev {
        /// Where everything lives.
        #[arg(long, default_value = "kms-dev")]
        data_dir: PathBuf,
        /// PKCS#11 module (default: $KMS_DEV_MODULE, else SoftHSM).
        #[arg(long)]
        module: Option<PathBuf>,
        /// gRPC listen address.
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: SocketAddr,
        /// Metrics and /healthz listen address.
        #[arg(long, default_value = "127.0.0.1:9464")]
        ops_listen: SocketAddr,
        /// Policy directory.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../policies"))]
        policy_dir: PathBuf,
        /// Card profile directory.
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles"))]
        profiles_dir: PathBuf,
        /// Prepare the data directory and exit without serving.
        #[arg(long)]
        init_only: bool,
    },
    /// Show the server, PKCS#11 module, capability table and database.
    Status(ClientArgs),
    /// Show the principal the server sees for your client certificate.
    Whoami(ClientArgs),
    /// Show the module's capability table.
    Capabilities(ClientArgs),
}

#[derive(Args)]
struct ClientArgs {
    /// Client profile (TOML with endpoint, ca, cert, key). Default:
    /// kms-dev/client.toml when no --endpoint is given.
    #[arg(long, env = "KMS_PROFILE")]
    profile: Option<PathBuf>,
    /// Server endpoint, e.g. https://127.0.0.1:7443.
    #[arg(long, env = "KMS_ENDPOINT", requires_all = ["ca", "cert", "key"])]
    endpoint: Option<String>,
    /// CA certificate of the server (PEM).
    #[arg(long, env = "KMS_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "KMS_CERT")]
    cert: Option<PathBuf>,
    /// Client private key (PEM).
    #[arg(long, env = "KMS_KEY")]
    key: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl ClientArgs {
    fn options(&self) -> Result<ClientOptions, cli::ClientError> {
        if let (Some(endpoint), Some(ca), Some(cert), Some(key)) = (&self.endpoint, &self.ca, &self.cert, &self.key) {
            return Ok(ClientOptions {
                endpoint: endpoint.clone(),
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                server_name: None,
            });
        }
        let profile = self.profile.clone().unwrap_or_else(|| PathBuf::from("kms-dev/client.toml"));
        ClientOptions::from_file(&profile)
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| format!("tokio runtime: {e}"))
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("kms: {message}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen, database_url, log_level, ops_listen } => {
            let overrides = Overrides { listen, database_url, log_level, ops_listen };
            let config = match Config::load(&config, &overrides) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            // Before any thread exists (see the function's safety note).
            apply_module_env_before_threads(&config.hsm.module_env);
            serve(config, None)
        }
        Command::Dev { data_dir, module, listen, ops_listen, policy_dir, profiles_dir, init_only } => {
            let opts = DevOptions { data_dir, module, listen, ops_listen, policy_dir, profiles_dir };
            let layout = match dev::prepare_layout(&opts) {
                Ok(l) => l,
                Err(e) => return fail(dev::explain(&e)),
            };
            apply_module_env_before_threads(&layout.module_env);
            if let Err(e) = dev::bootstrap(&opts, &layout) {
                return fail(dev::explain(&e));
            }
            let config = match Config::load(&layout.config, &Overrides::default()) {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let banner = format!(
                "kms dev: development instance in {dir}\n\
                 \x20 module {module}, token {token:?}; the CA key is in the token\n\
                 \x20 PINs and TLS keys are plain files there: development only\n\n\
                 Call it from another terminal:\n\
                 \x20 cargo run -q -p kms -- status --profile {profile}\n\
                 \x20 cargo run -q -p kms -- whoami --profile {profile}\n\
                 \x20 curl http://{ops}/metrics\n",
                dir = layout.dir.display(),
                module = layout.module.display(),
                token = dev::TOKEN_LABEL,
                profile = layout.client_profile.display(),
                ops = opts.ops_listen,
            );
            if init_only {
                println!("{banner}");
                return ExitCode::SUCCESS;
            }
            serve(config, Some(banner))
        }
        Command::Status(args) => client(args, |o, j| Box::pin(async move { cli::status(&o, j).await })),
        Command::Whoami(args) => client(args, |o, j| Box::pin(async move { cli::whoami(&o, j).await })),
        Command::Capabilities(args) => client(args, |o, j| Box::pin(async move { cli::capabilities(&o, j).await })),
    }
}

type ClientFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, cli::ClientError>>>>;

fn client(args: ClientArgs, f: impl FnOnce(ClientOptions, bool) -> ClientFuture) -> ExitCode {
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => return fail(e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match rt.block_on(f(opts, args.json)) {
        Ok(out) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

fn serve(config: Config, banner: Option<String>) -> ExitCode {
    init_logging(&config.logging.level, config.logging.format);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    rt.block_on(async move {
        let shutdown = kms::server::shutdown_on_signals();
        if let Some(b) = banner {
            eprintln!("{b}");
        }
        match kms::server::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        }
    })
}
