//! `ceremony`: the security officers' command-line tool.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use ceremony::CeremonyError;
use ceremony::credential::Credential;
use ceremony::io::{Io, Secrets};
use ceremony::plan::Plan;
use ceremony::steps::{RunOptions, run};
use clap::{Parser, Subcommand};

/// Key ceremonies for the transit-card key service.
///
/// A ceremony is described by a plan file (TOML: the PKCS#11 module and
/// token, the officers and their credentials, the keys, and the steps) and
/// run step by step, each step confirmed and authorised by a quorum of
/// officers. Every step is recorded in a transcript signed by a key that
/// lives in the HSM only for the ceremony. See docs/ceremony.md.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a plan without touching any HSM: unknown steps, officers or
    /// keys, quorums that cannot be met, inconsistent parameters.
    Check {
        /// The plan file.
        plan: PathBuf,
        /// Print the checked plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a plan.
    ///
    /// Interactively (the default), every secret is typed at a prompt that
    /// echoes nothing, every step is confirmed, and Ctrl-C at any prompt
    /// stops the ceremony, leaving the token and the transcript consistent.
    /// With --batch (rehearsals and tests), secrets come from --secrets-dir
    /// files or --secrets-fd lines, officers from --present, and what a
    /// custodian would be shown is written to --deliver.
    Run {
        /// The plan file.
        plan: PathBuf,
        /// Transcript to create (default: <plan>.transcript.jsonl).
        #[arg(long)]
        transcript: Option<PathBuf>,
        /// Witnesses' summary to create (default: the transcript's name with
        /// .summary.txt); a printable PDF is written beside it (.pdf).
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Run without prompts.
        #[arg(long)]
        batch: bool,
        /// Batch: a directory of secret files: so-pin, user-pin,
        /// officer-<name>, component-<key>-<custodian>, share-<custodian>.
        #[arg(long, requires = "batch")]
        secrets_dir: Option<PathBuf>,
        /// Batch: a file descriptor to read NAME=VALUE secret lines from
        /// (e.g. 3 with `3<secrets.txt` or a pipe).
        #[arg(long, requires = "batch")]
        secrets_fd: Option<u32>,
        /// Batch: officers present, in the order they authorise steps.
        #[arg(long, requires = "batch", value_delimiter = ',')]
        present: Vec<String>,
        /// Batch: directory where components and shares are delivered, one
        /// file per custodian (mode 0600).
        #[arg(long, requires = "batch")]
        deliver: Option<PathBuf>,
    },
    /// Officer credentials.
    #[command(subcommand)]
    Officer(OfficerCommand),
    /// Ceremony transcripts.
    #[command(subcommand)]
    Transcript(TranscriptCommand),
    /// Hand-over of a ceremony's keys to the service.
    #[command(subcommand)]
    Handover(HandoverCommand),
}

#[derive(Subcommand)]
enum HandoverCommand {
    /// Register the keys of a hand-over file in the service's catalogue,
    /// after checking the file against the ceremony's transcript.
    ///
    /// The keys must be in the service's token (the ceremony ran on it, or
    /// a backup was restored into it). Run it as a security officer: the
    /// client profile names a certificate with that role.
    Import {
        /// The hand-over file the ceremony's handover step wrote.
        file: PathBuf,
        /// The ceremony's transcript.
        #[arg(long)]
        transcript: PathBuf,
        /// The transcript key's SHA-256 fingerprint from the signed summary.
        #[arg(long)]
        transcript_key: String,
        /// Client profile (TOML: endpoint, ca, cert, key), as `kms dev` writes.
        #[arg(long)]
        client: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OfficerCommand {
    /// Make a credential line for the plan from a passphrase typed twice
    /// (no echo) or read from --passphrase-fd.
    Credential {
        /// The officer's name (printed with the line).
        name: String,
        /// Read the passphrase from this file descriptor instead.
        #[arg(long)]
        passphrase_fd: Option<u32>,
        /// PBKDF2 iterations (at least 100000).
        #[arg(long, default_value_t = ceremony::credential::ITERATIONS,
              value_parser = clap::value_parser!(u32).range(i64::from(ceremony::credential::MIN_ITERATIONS)..))]
        iterations: u32,
    },
}

#[derive(Subcommand)]
enum TranscriptCommand {
    /// Verify a transcript: every signature, the hash chain, the sequence
    /// and the closing entry, against the key fingerprint (and optionally
    /// the last entry's hash) on the signed witnesses' summary. Exit 0
    /// only if all hold.
    Verify {
        /// The transcript file.
        transcript: PathBuf,
        /// The transcript key's SHA-256 fingerprint from the signed summary.
        #[arg(long)]
        key: String,
        /// The last entry's SHA-256 from the signed summary.
        #[arg(long)]
        head: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn fd_reader(fd: u32) -> Result<BufReader<std::fs::File>, CeremonyError> {
    let path = PathBuf::from(format!("/dev/fd/{fd}"));
    std::fs::File::open(&path).map(BufReader::new).map_err(CeremonyError::file(path))
}

fn main() -> ExitCode {
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceremony: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn real_main(cli: Cli) -> Result<(), CeremonyError> {
    match cli.command {
        Command::Check { plan, json } => {
            let p = Plan::load(&plan)?;
            if json {
                let steps: Vec<_> = p.steps.iter().map(|s| s.kind()).collect();
                let out = serde_json::json!({
                    "name": p.name, "sha256": hex::encode(p.sha256), "officers": p.officers.iter().map(|o| &o.name).collect::<Vec<_>>(),
                    "keys": p.keys.keys().collect::<Vec<_>>(), "steps": steps,
                });
                println!("{out}");
            } else {
                println!(
                    "plan {} is valid: {} officers, {} keys, {} steps",
                    plan.display(),
                    p.officers.len(),
                    p.keys.len(),
                    p.steps.len()
                );
            }
            Ok(())
        }
        Command::Run { plan, transcript, summary, batch, secrets_dir, secrets_fd, present, deliver } => {
            let p = Plan::load(&plan)?;
            let transcript = transcript.unwrap_or_else(|| plan.with_extension("transcript.jsonl"));
            let summary = summary.unwrap_or_else(|| transcript.with_extension("summary.txt"));
            let mut io = if batch {
                let mut secrets = secrets_dir.as_deref().map(Secrets::from_dir).unwrap_or_default();
                if let Some(fd) = secrets_fd {
                    secrets.read_lines(fd_reader(fd)?)?;
                }
                Io::batch(secrets, deliver, present)
            } else {
                Io::interactive()?
            };
            run(&p, &mut io, &RunOptions { transcript, summary })
        }
        Command::Officer(OfficerCommand::Credential { name, passphrase_fd, iterations }) => {
            let passphrase = match passphrase_fd {
                Some(fd) => {
                    let mut s = Secrets::default();
                    let mut line = zeroize::Zeroizing::new(String::with_capacity(1024));
                    std::io::BufRead::read_line(&mut fd_reader(fd)?, &mut line)
                        .map_err(CeremonyError::file("passphrase"))?;
                    let entry = zeroize::Zeroizing::new(format!("p={}", line.trim()));
                    s.read_lines(entry.as_bytes())?;
                    let mut io = Io::batch(s, None, vec![]);
                    io.secret("p", "")?
                }
                None => Io::interactive()?.new_secret("passphrase", &format!("Passphrase for {name}: "))?,
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(CeremonyError::Refused(format!(
                    "officer {name:?}: a name is letters, digits, '-', '_' or '.'"
                )));
            }
            if secrecy::ExposeSecret::expose_secret(&passphrase).chars().count() < 12 {
                return Err(CeremonyError::Refused("a passphrase has at least 12 characters".into()));
            }
            let mut salt = [0u8; 16];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
                .map_err(|_| CeremonyError::Refused("no system randomness".into()))?;
            let c = Credential::with_iterations(&passphrase, salt, iterations);
            println!("[[officer]]\nname = {name:?}\ncredential = \"{c}\"");
            Ok(())
        }
        Command::Handover(HandoverCommand::Import { file, transcript, transcript_key, client, json }) => {
            let client =
                kms::cli::ClientOptions::from_file(&client).map_err(|e| CeremonyError::Refused(e.to_string()))?;
            let adopted = ceremony::handover::import(&file, &transcript, &transcript_key, &client)?;
            if json {
                println!("{}", serde_json::to_string(&adopted).unwrap_or_default());
            } else {
                for a in &adopted {
                    println!("registered {} version {} KCV {}", a.name, a.version, a.kcv);
                }
            }
            Ok(())
        }
        Command::Transcript(TranscriptCommand::Verify { transcript, key, head, json }) => {
            let v = ceremony::transcript::verify(&transcript, &key, head.as_deref())?;
            if json {
                println!("{}", serde_json::to_string(&v).unwrap_or_default());
            } else {
                println!(
                    "transcript {} verifies: ceremony {:?}, {} entries, closed by {}\n  key SHA-256 {}\n  last entry SHA-256 {}",
                    transcript.display(),
                    v.ceremony,
                    v.entries,
                    v.closing,
                    v.key_fingerprint,
                    v.head
                );
            }
            Ok(())
        }
    }
}
