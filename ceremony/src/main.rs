//! `ceremony`: the security officers' command-line tool.
//!
//! It talks to a PKCS#11 module directly and will run key ceremonies from a
//! plan file (token set-up, master keys with components, backups, the root
//! CA), writing a signed, hash-chained transcript. Until those steps land it
//! only explains itself, and refuses to pretend otherwise.

use clap::Parser;

/// Key ceremonies for the transit-card key service.
///
/// Not yet implemented in this release: every subcommand will be driven by a
/// plan file. See docs/architecture.md for where ceremonies fit.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _cli = Cli::parse();
    eprintln!("ceremony: no ceremony steps are implemented in this release; see docs/architecture.md");
    std::process::ExitCode::from(2)
}
