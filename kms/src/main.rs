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
    /// Read, export and verify the hash-chained audit log, and save its
    /// signed checkpoints.
    ///
    /// Every security-relevant call is a record chained to the previous one
    /// by SHA-256; the service periodically signs the chain head with a key
    /// in the HSM (a checkpoint). Needs an auditor or security_officer
    /// certificate.
    #[command(after_long_help = cli::audit::help::AUDIT)]
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage the key catalogue: create, import, adopt, get, list, rotate,
    /// set-state, destroy; list card profiles.
    ///
    /// The catalogue holds only metadata; key material stays in the HSM.
    /// Managing keys needs a security_officer certificate; get and list
    /// also work for operators and auditors.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run the certificate authority: issuing CAs, certificate profiles,
    /// enrollment tokens, reader enrollment and renewal, server and client
    /// certificates, revocation, chains and CRLs.
    ///
    /// Issuing CAs' keys stay in the HSM; their certificates come from the
    /// offline root. Profiles decide what a certificate holds: a CSR asks,
    /// the profile decides. Every command connects with a client
    /// certificate except `enroll`, which a reader runs before it has one.
    ///
    /// Here --profile names a certificate profile, so the client profile is
    /// --client-profile (or KMS_PROFILE). The operator guide is
    /// docs/certificates.md.
    #[command(after_long_help = cli::certs::help::CERTS)]
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Derive a card's keys, or those of a file of cards, wrapped under a
    /// transport key; print one JSON line per card.
    ///
    /// One card: give its identifiers as flags (--asn, --pan/--psn, --kdd,
    /// ...). A production batch: --input cards.csv (header row naming the
    /// fields) or cards.jsonl, with --batch-id; re-running the same batch
    /// id resumes it, answering finished cards from the server's record
    /// ("replayed": true). Each line is
    /// {"index", "card", "replayed", "keys": [{"role", "master_key",
    /// "master_version", "algorithm", "kcv_method", "kcv", "wrapped",
    /// "format"}]} or {"index", "card", "error": {"code", "message"}}.
    /// A summary goes to standard error, with a progress bar when it is a
    /// terminal. Needs an issuance_partner certificate.
    ///
    /// Exit status: 0 every card done; 3 the run finished but some cards
    /// failed; 1 the run failed or stopped early (connection, server,
    /// unreadable or malformed input file: the message names the line);
    /// 2 usage error.
    ///
    /// The client profile is --client-profile here (--profile names the
    /// card profile).
    Derive {
        #[command(flatten)]
        client: DeriveClientArgs,
        #[command(flatten)]
        args: cli::derive::DeriveArgs,
    },
    /// Partners' production plans: which cards of which card profile a
    /// tenant may have derived, how many, until when.
    ///
    /// With plans required (`[plans] required`, the default), every
    /// derivation needs a live plan of the caller's tenant covering the
    /// card; beyond the count it is refused with RESOURCE_EXHAUSTED.
    /// Operators create and revoke plans; partners see their own.
    Plans {
        #[command(subcommand)]
        command: PlansCommand,
    },
    /// Authorization policies: check a decision offline, reload the
    /// server's set.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

/// `kms plans ...`.
#[derive(Subcommand)]
enum PlansCommand {
    /// Grant a partner a plan.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::plans::CreateArgs,
    },
    /// Show one plan and its consumption.
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The plan id.
        id: String,
    },
    /// List plans (all pages).
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::plans::ListArgs,
    },
    /// End a plan now; what it consumed stays recorded.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        /// The plan id.
        id: String,
        /// Why (recorded and audited).
        #[arg(long)]
        reason: String,
    },
}

/// `kms policy ...`.
#[derive(Subcommand)]
enum PolicyCommand {
    /// Would principal P be allowed action A on resource R, and by which
    /// policy? Reads a policy directory; no server needed. Exit 0 when
    /// allowed, 3 when denied.
    Check(cli::plans::CheckArgs),
    /// Ask the server to reload its policy directory (as SIGHUP does); a
    /// set that does not validate is rejected whole with its errors.
    Reload(ClientArgs),
}

/// `kms keys ...`.
#[derive(Subcommand)]
enum KeysCommand {
    /// Generate a key (version 1) inside the HSM: sensitive, non-extractable,
    /// limited to its purpose.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::keys::CreateArgs,
    },
    /// Import a key delivered wrapped under a transport key in the catalogue.
    ///
    /// The KCV its owner published must match, or nothing is kept. An
    /// existing name gets a new version.
    Import {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::keys::ImportArgs,
    },
    /// Adopt a key a ceremony made in the service's token, by its CKA_LABEL.
    Adopt {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::keys::AdoptArgs,
    },
    /// Show one key version (NAME: the newest active version; NAME@vN: that one).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// NAME or NAME@vN.
        // why: the id "key" is taken by the client's --key (its private key).
        #[arg(id = "key_ref", value_name = "NAME[@vN]", value_parser = cli::keys::parse_key_ref)]
        key: kms_proto::v1::KeyRef,
    },
    /// List key versions in name order, following the pages to the end
    /// (--json: one JSON object per line).
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::keys::ListArgs,
    },
    /// Generate a new version of a generated key; older versions become
    /// deprecated (usable when named explicitly, for cards already issued).
    Rotate {
        #[command(flatten)]
        client: ClientArgs,
        /// Key name.
        name: String,
    },
    /// Move one version between active, deprecated and suspended.
    SetState {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::keys::SetStateArgs,
    },
    /// Destroy the HSM object of one version; its record and history stay.
    ///
    /// Asks for confirmation on a terminal unless --yes; refuses (exit 2)
    /// without --yes when standard input is not a terminal.
    Destroy {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::keys::DestroyArgs,
    },
    /// List the card profiles the service has loaded, with their key roles.
    Profiles {
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl KeysCommand {
    fn split(self) -> (ClientArgs, cli::keys::KeysCommand) {
        use cli::keys::KeysCommand as K;
        match self {
            KeysCommand::Create { client, args } => (client, K::Create(args)),
            KeysCommand::Import { client, args } => (client, K::Import(args)),
            KeysCommand::Adopt { client, args } => (client, K::Adopt(args)),
            KeysCommand::Get { client, key } => (client, K::Get(key)),
            KeysCommand::List { client, args } => (client, K::List(args)),
            KeysCommand::Rotate { client, name } => (client, K::Rotate(name)),
            KeysCommand::SetState { client, args } => (client, K::SetState(args)),
            KeysCommand::Destroy { client, args } => (client, K::Destroy(args)),
            KeysCommand::Profiles { client } => (client, K::Profiles),
        }
    }
}

/// `kms audit ...`.
#[derive(Subcommand)]
enum AuditCommand {
    /// Print records matching filters, in sequence order, following the
    /// pages to the end (--json: one JSON object per record, the stored
    /// fields).
    Query {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::audit::QueryArgs,
    },
    /// Walk the whole chain and every signed checkpoint; exit 3 and print
    /// the first fault and its position when the log was edited, records
    /// were removed or reordered, or its tail was cut off.
    #[command(after_long_help = cli::audit::help::VERIFY)]
    Verify {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::audit::VerifyArgs,
    },
    /// Write the records of a range as JSON lines (for a SIEM), streaming.
    ///
    /// Each line holds a record's stored fields (seq, ts_ms, principal,
    /// role, tenant, action, resource, outcome, reason, details as JSON
    /// text, prev_hash, hash), so the chain can be re-checked outside the
    /// service. An open range ends at the last record when the export
    /// starts. The export itself is recorded in the log.
    Export {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::audit::ExportArgs,
    },
    /// Save the newest signed checkpoint (JSON) after the service verified
    /// the whole log; keep it where the database's administrators cannot
    /// change it, and give it to `verify --checkpoint` later.
    Checkpoint {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: cli::audit::CheckpointArgs,
    },
}

impl AuditCommand {
    fn split(self) -> (ClientArgs, cli::audit::AuditCommand) {
        use cli::audit::AuditCommand as A;
        match self {
            AuditCommand::Query { client, args } => (client, A::Query(args)),
            AuditCommand::Verify { client, args } => (client, A::Verify(args)),
            AuditCommand::Export { client, args } => (client, A::Export(args)),
            AuditCommand::Checkpoint { client, args } => (client, A::Checkpoint(args)),
        }
    }
}

fn audit(command: AuditCommand) -> ExitCode {
    let (args, command) = command.split();
    with_client(&args, move |o, j| Box::pin(async move { cli::audit::run(&o, j, command).await }))
        .map_or_else(|code| code, ExitCode::from)
}

/// `kms certs ...`.
#[derive(Subcommand)]
enum CertsCommand {
    /// Manage issuing CAs: create (key in the HSM, CSR for the root),
    /// activate, retire, list.
    Issuer {
        #[command(subcommand)]
        command: IssuerCommand,
    },
    /// List the certificate profiles the service loaded: validity, key
    /// types, whether readers may enroll with them, whether the service
    /// generates the key.
    Profiles {
        #[command(flatten)]
        client: CertsClientArgs,
    },
    /// Make one-time enrollment tokens for readers.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Enroll a reader: send its CSR with an enrollment token (or an external
    /// CA's certificate) and write its certificates into --out-dir.
    ///
    /// Run by the reader, or an installer acting for it. Connects with TLS
    /// but without a client certificate: only --endpoint and --ca (or a
    /// client profile's endpoint and ca) are used.
    ///
    /// The token: --token-file FILE (- reads standard input), or, with
    /// neither --token nor --token-file, a prompt that does not echo.
    /// --token TOKEN works but leaves the secret in the shell history and
    /// the process list. A token is used up only when a certificate is
    /// issued.
    ///
    /// Writes signing.crt (PEM) and chain.pem (issuing CA up to the root);
    /// with --dual also encryption.crt and encryption-key.p7m, the
    /// encryption private key generated by the service as DER CMS
    /// EnvelopedData to the signing certificate. Only the signing key opens
    /// it, to a PKCS#8 key:
    /// openssl cms -decrypt -inform DER -in encryption-key.p7m -inkey <signing key> -recip signing.crt
    #[command(after_long_help = cli::certs::help::ENROLL)]
    Enroll {
        #[command(flatten)]
        client: EnrollClientArgs,
        #[command(flatten)]
        args: cli::certs::EnrollArgs,
    },
    /// Renew your own certificate: connect with the current one (unexpired,
    /// unrevoked) and send a CSR for a new key with the same subject.
    ///
    /// Writes the same files as `enroll` into --out-dir; --dual also renews
    /// the paired encryption certificate with a new service-generated key.
    #[command(after_long_help = cli::certs::help::RENEW)]
    Renew {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::RenewArgs,
    },
    /// Issue a server (server-tls), client (client-tls) or subordinate CA
    /// (sub-ca) certificate for a CSR.
    ///
    /// The profile decides the certificate's content; the names, role and
    /// tenant you give are checked against it.
    #[command(after_long_help = cli::certs::help::ISSUE)]
    Issue {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::IssueArgs,
    },
    /// Revoke a certificate with an RFC 5280 reason; its issuer publishes a
    /// new CRL at once.
    ///
    /// Shows the certificate and asks you to type its serial on a terminal
    /// unless --yes; refuses (exit 2) without --yes when standard input is
    /// not a terminal.
    #[command(after_long_help = cli::certs::help::REVOKE)]
    Revoke {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::RevokeArgs,
    },
    /// Show one certificate by serial number; --out also writes it as PEM.
    Get {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::GetArgs,
    },
    /// List certificates by subject, serial, status, issuer and expiry,
    /// following the pages to the end (--json: one JSON object per line).
    ///
    /// Certificates that have already expired are left out unless --all.
    #[command(after_long_help = cli::certs::help::LIST)]
    List {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::ListArgs,
    },
    /// Print or save an issuer's certificate and the chain up to the root (PEM).
    Chain {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::ChainArgs,
    },
    /// Show an issuer's current CRL (number, thisUpdate, nextUpdate,
    /// entries); --out saves it (DER).
    ///
    /// The same bytes are served over plain HTTP at /crl/<issuer>.crl on
    /// the ops listener.
    Crl {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::CrlArgs,
    },
}

/// `kms certs issuer ...`.
#[derive(Subcommand)]
enum IssuerCommand {
    /// Generate an issuing CA's key pair in the HSM and write its CSR (PEM)
    /// for the offline root to sign; the issuer stays pending until activated.
    #[command(after_long_help = cli::certs::help::ISSUER_CREATE)]
    Create {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::IssuerCreateArgs,
    },
    /// Install the certificate the root signed for a pending issuer, and the
    /// chain up to the root; the issuer becomes active.
    ///
    /// The service checks that it is a CA certificate with keyCertSign and
    /// cRLSign, for exactly the HSM key, and valid now.
    #[command(after_long_help = cli::certs::help::ISSUER_ACTIVATE)]
    Activate {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::IssuerActivateArgs,
    },
    /// Stop an issuer issuing; it keeps publishing CRLs until its last
    /// certificate has expired.
    ///
    /// Asks you to type the issuer's name on a terminal unless --yes;
    /// refuses (exit 2) without --yes when standard input is not a terminal.
    Retire {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::IssuerRetireArgs,
    },
    /// List issuers, newest first.
    List {
        #[command(flatten)]
        client: CertsClientArgs,
    },
}

/// `kms certs token ...`.
#[derive(Subcommand)]
enum TokenCommand {
    /// Make a one-time enrollment token bound to a reader serial, the
    /// profiles it may use and an expiry.
    ///
    /// The secret is printed once (--json: {"token_id", "token",
    /// "expires_at"}); the service keeps only its hash.
    #[command(after_long_help = cli::certs::help::TOKEN_CREATE)]
    Create {
        #[command(flatten)]
        client: CertsClientArgs,
        #[command(flatten)]
        args: cli::certs::TokenCreateArgs,
    },
}

/// A `kms certs` command and how it connects.
enum CertsCall {
    /// With a client certificate.
    Mtls(CertsClientArgs, cli::certs::CertsCommand),
    /// `enroll`: without one.
    Enroll(EnrollClientArgs, cli::certs::EnrollArgs),
}

impl CertsCommand {
    fn split(self) -> CertsCall {
        use cli::certs::CertsCommand as C;
        let (client, command) = match self {
            CertsCommand::Issuer { command } => match command {
                IssuerCommand::Create { client, args } => (client, C::IssuerCreate(args)),
                IssuerCommand::Activate { client, args } => (client, C::IssuerActivate(args)),
                IssuerCommand::Retire { client, args } => (client, C::IssuerRetire(args)),
                IssuerCommand::List { client } => (client, C::IssuerList),
            },
            CertsCommand::Profiles { client } => (client, C::Profiles),
            CertsCommand::Token { command: TokenCommand::Create { client, args } } => (client, C::TokenCreate(args)),
            CertsCommand::Enroll { client, args } => return CertsCall::Enroll(client, args),
            CertsCommand::Renew { client, args } => (client, C::Renew(args)),
            CertsCommand::Issue { client, args } => (client, C::Issue(args)),
            CertsCommand::Revoke { client, args } => (client, C::Revoke(args)),
            CertsCommand::Get { client, args } => (client, C::Get(args)),
            CertsCommand::List { client, args } => (client, C::List(args)),
            CertsCommand::Chain { client, args } => (client, C::Chain(args)),
            CertsCommand::Crl { client, args } => (client, C::Crl(args)),
        };
        CertsCall::Mtls(client, command)
    }
}

/// The client flags of `kms certs`, where `--profile` names a certificate profile.
#[derive(Args)]
struct CertsClientArgs {
    #[command(flatten)]
    connection: DeriveClientArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The connection flags of `kms certs enroll`: no client certificate.
#[derive(Args)]
struct EnrollClientArgs {
    /// Client profile (TOML); only its endpoint, ca and server_name are
    /// used. Default: kms-dev/client.toml when no --endpoint is given.
    #[arg(long, env = "KMS_PROFILE")]
    client_profile: Option<PathBuf>,
    /// Server endpoint, e.g. https://kms.city.example:7443.
    #[arg(long, env = "KMS_ENDPOINT", requires = "ca")]
    endpoint: Option<String>,
    /// CA certificate of the server (PEM).
    #[arg(long, env = "KMS_CA")]
    ca: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The client flags of `kms derive`, where `--profile` names the card profile.
#[derive(Args)]
struct DeriveClientArgs {
    /// Client profile (TOML with endpoint, ca, cert, key). Default:
    /// kms-dev/client.toml when no --endpoint is given.
    #[arg(long, env = "KMS_PROFILE")]
    client_profile: Option<PathBuf>,
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
        client_options(
            self.profile.as_ref(),
            self.endpoint.as_ref(),
            self.ca.as_ref(),
            self.cert.as_ref(),
            self.key.as_ref(),
        )
    }
}

impl DeriveClientArgs {
    fn options(&self) -> Result<ClientOptions, cli::ClientError> {
        client_options(
            self.client_profile.as_ref(),
            self.endpoint.as_ref(),
            self.ca.as_ref(),
            self.cert.as_ref(),
            self.key.as_ref(),
        )
    }
}

fn client_options(
    profile: Option<&PathBuf>,
    endpoint: Option<&String>,
    ca: Option<&PathBuf>,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> Result<ClientOptions, cli::ClientError> {
    if let (Some(endpoint), Some(ca), Some(cert), Some(key)) = (endpoint, ca, cert, key) {
        return Ok(ClientOptions {
            endpoint: endpoint.clone(),
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
            server_name: None,
        });
    }
    let profile = profile.cloned().unwrap_or_else(|| PathBuf::from("kms-dev/client.toml"));
    ClientOptions::from_file(&profile)
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
        Command::Audit { command } => audit(command),
        Command::Keys { command } => keys(command),
        Command::Certs { command } => certs(command),
        Command::Derive { client, args } => derive(&client, args),
        Command::Plans { command } => {
            let (args, call) = match command {
                PlansCommand::Create { client, args } => (client, cli::plans::PlansCall::Create(args)),
                PlansCommand::Get { client, id } => (client, cli::plans::PlansCall::Get(id)),
                PlansCommand::List { client, args } => (client, cli::plans::PlansCall::List(args)),
                PlansCommand::Revoke { client, id, reason } => (client, cli::plans::PlansCall::Revoke(id, reason)),
            };
            client(args, move |o, j| Box::pin(async move { cli::plans::run(&o, j, call).await }))
        }
        Command::Policy { command: PolicyCommand::Check(args) } => match cli::plans::check(&args) {
            Ok((out, allowed)) => {
                print!("{out}");
                if allowed { ExitCode::SUCCESS } else { ExitCode::from(3) }
            }
            Err(e) => fail_with(&e),
        },
        Command::Policy { command: PolicyCommand::Reload(args) } => {
            client(args, |o, j| Box::pin(async move { cli::plans::reload(&o, j).await }))
        }
    }
}

/// Prints `kms: message` and returns the error's exit code (2 for usage).
fn fail_with(e: &cli::ClientError) -> ExitCode {
    eprintln!("kms: {e}");
    ExitCode::from(e.exit_code())
}

fn keys(command: KeysCommand) -> ExitCode {
    let (args, command) = command.split();
    with_client(&args, move |o, j| Box::pin(async move { cli::keys::run(&o, j, command).await }))
        .map_or_else(|code| code, print_output)
}

fn certs(command: CertsCommand) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    let result = match command.split() {
        CertsCall::Mtls(client, command) => match client.connection.options() {
            Ok(opts) => rt.block_on(cli::certs::run(&opts, client.json, command)),
            Err(e) => Err(e),
        },
        CertsCall::Enroll(client, args) => {
            match cli::certs::EnrollServer::resolve(
                client.client_profile.as_deref(),
                client.endpoint.as_deref(),
                client.ca.as_deref(),
            ) {
                Ok(server) => rt.block_on(cli::certs::enroll(&server, client.json, args)),
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => fail_with(&e),
    }
}

fn derive(client: &DeriveClientArgs, args: cli::derive::DeriveArgs) -> ExitCode {
    let opts = match client.options() {
        Ok(o) => o,
        Err(e) => return fail_with(&e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(e),
    };
    match rt.block_on(cli::derive::run(&opts, args)) {
        Ok(report) => {
            eprintln!("kms derive: {}", report.summary);
            if let Some(e) = report.interrupted {
                if report.summary.batch_id.is_some() {
                    eprintln!(
                        "kms derive: stopped early; after fixing the cause, re-run with the same --batch-id to resume"
                    );
                }
                fail_with(&e)
            } else if report.summary.failed > 0 {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => fail_with(&e),
    }
}

type CliFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, cli::ClientError>>>>;

/// Connects with `args` and runs `f` on a runtime. A failure is printed
/// (`kms: ...`) and becomes the error's exit code.
fn with_client<T>(args: &ClientArgs, f: impl FnOnce(ClientOptions, bool) -> CliFuture<T>) -> Result<T, ExitCode> {
    let opts = args.options().map_err(|e| fail_with(&e))?;
    let rt = runtime().map_err(fail)?;
    rt.block_on(f(opts, args.json)).map_err(|e| fail_with(&e))
}

/// Prints a command's output, ending with a newline.
fn print_output(out: String) -> ExitCode {
    print!("{out}");
    if !out.is_empty() && !out.ends_with('\n') {
        println!();
    }
    ExitCode::SUCCESS
}

fn client(args: ClientArgs, f: impl FnOnce(ClientOptions, bool) -> CliFuture<String>) -> ExitCode {
    with_client(&args, f).map_or_else(|code| code, print_output)
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn arguments_are_consistent() {
        super::Cli::command().debug_assert();
    }
}
