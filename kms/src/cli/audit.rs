//! `kms audit ...`: the hash-chained audit log from an auditor's side.
//!
//! `query` prints records (a line each, or with `--json` one JSON object per
//! record: the stored fields); `export` writes the records of a range as
//! JSON lines for a SIEM, streaming, so its memory stays flat; `verify`
//! asks the service to walk the chain and its signed checkpoints, and exits
//! with status 3 when it finds a fault; `checkpoint` saves the newest
//! signed checkpoint, for the auditor to keep where the service's database
//! administrators cannot change it and to hand back to `verify
//! --checkpoint` later. Checkpoint files are checked here too: their
//! signature must verify under the public key they carry, whose fingerprint
//! the auditor can pin with `--key-fingerprint`.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_client::AdminServiceClient;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::transport::Channel;

use super::{ClientError, ClientOptions, call_error};
use crate::audit::checkpoint::{self, Checkpoint, TrustedKey};
use crate::grpc::admin_audit::{checkpoint_from_pb, checkpoint_to_pb, record_from_pb};

/// Exit status of `kms audit verify` (and `checkpoint`) when the log does
/// not verify.
pub const EXIT_FAULT: u8 = 3;

/// Examples and exit statuses shown at the end of `--help`.
pub mod help {
    /// `kms audit --help`.
    pub const AUDIT: &str = "\
Examples:
  kms audit query --principal issuance-7 --outcome denied --since 2026-03-01
  kms audit query --from-seq 1200 --to-seq 1300 --json
  kms audit export --since 2026-03-01T00:00:00+08:00 --until 2026-03-31T23:59:59+08:00 \\
      --output march.jsonl --checkpoint-out march.checkpoint.json
  kms audit checkpoint --output kms-audit-2026-03-31.checkpoint.json
  kms audit verify --checkpoint kms-audit-2026-03-31.checkpoint.json --key-fingerprint 3b0c...e1

Exit status: 0 success; 1 the call failed (connection, permission, a range that does
not exist) or a file could not be read, written or trusted; 2 usage error; 3 (verify and
checkpoint) the log did not verify: the fault and its position are printed.

Needs an auditor or security_officer certificate. The operator and auditor guide is
docs/governance.md.";

    /// `kms audit verify --help`.
    pub const VERIFY: &str = "\
What is checked: every record against its hash and its predecessor (an edited, removed
or reordered record is reported with its seq); every signed checkpoint in the database
against the checkpoint key in the HSM token and against the record at its seq (a chain
rewritten with recomputed hashes, a forged checkpoint); that the log still reaches the
newest checkpoint (a cut-off tail, even with the head row rewound); and with
--checkpoint, the same for a checkpoint you kept: that catches a cut tail even after the
checkpoints in the database were deleted too.

Records newer than the newest checkpoint are covered only by the chain: someone who can
write to the database can remove them without a trace. Keep a checkpoint outside the
service regularly (kms audit checkpoint).";
}

/// An outcome as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutcomeArg {
    /// Performed.
    Success,
    /// Refused by policy.
    Denied,
    /// The caller could not be identified.
    Unauthenticated,
    /// Allowed, but it failed.
    Failed,
}

impl OutcomeArg {
    fn as_str(self) -> &'static str {
        match self {
            OutcomeArg::Success => "success",
            OutcomeArg::Denied => "denied",
            OutcomeArg::Unauthenticated => "unauthenticated",
            OutcomeArg::Failed => "failed",
        }
    }
}

/// A range of the log.
#[derive(Debug, Clone, Default, Args)]
pub struct RangeArgs {
    /// First sequence number (inclusive). A range that starts after the
    /// last record is refused (NOT_FOUND).
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
    pub from_seq: Option<u64>,
    /// Last sequence number (inclusive).
    #[arg(long, value_name = "SEQ", value_parser = clap::value_parser!(u64).range(1..))]
    pub to_seq: Option<u64>,
    /// Records at or after this time: RFC 3339 (2026-03-01T08:00:00+08:00) or
    /// a date (2026-03-01, 00:00 UTC).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Records at or before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

/// `kms audit query`.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// The range.
    #[command(flatten)]
    pub range: RangeArgs,
    /// Only records of this principal (the certificate's common name).
    #[arg(long)]
    pub principal: Option<String>,
    /// Only records of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only records of this action, e.g. keys.CreateKey or admin.ReadAudit.
    #[arg(long)]
    pub action: Option<String>,
    /// Only records with this outcome.
    #[arg(long, value_enum)]
    pub outcome: Option<OutcomeArg>,
    /// Stop after this many records (default: every match).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Records per call (1-1000; default the server's, 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub page_size: Option<u32>,
}

/// `kms audit verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// A checkpoint file you kept (from `kms audit checkpoint` or
    /// `kms audit export --checkpoint-out`): the log must still reach it and
    /// match it.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The SHA-256 fingerprint (hex) of the checkpoint key you trust: the
    /// service's key, and the key of --checkpoint, must be this one.
    #[arg(long, value_name = "HEX")]
    pub key_fingerprint: Option<String>,
}

/// `kms audit export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The range.
    #[command(flatten)]
    pub range: RangeArgs,
    /// Write the JSON lines here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also save the newest signed checkpoint (JSON) here, for `kms audit
    /// verify --checkpoint` later.
    #[arg(long, value_name = "FILE")]
    pub checkpoint_out: Option<PathBuf>,
}

/// `kms audit checkpoint`.
#[derive(Debug, Clone, Args)]
pub struct CheckpointArgs {
    /// Write the checkpoint here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// A `kms audit` command.
#[derive(Debug, Clone)]
pub enum AuditCommand {
    /// `query`.
    Query(QueryArgs),
    /// `verify`.
    Verify(VerifyArgs),
    /// `export`.
    Export(ExportArgs),
    /// `checkpoint`.
    Checkpoint(CheckpointArgs),
}

/// Runs `command`, writing its output; returns the exit status (0, or
/// [`EXIT_FAULT`] when the log does not verify).
pub async fn run(opts: &ClientOptions, json: bool, command: AuditCommand) -> Result<u8, ClientError> {
    let mut client = AdminServiceClient::new(opts.connect().await?);
    match command {
        AuditCommand::Query(a) => query(&mut client, a, json).await,
        AuditCommand::Verify(a) => verify(&mut client, a, json).await,
        AuditCommand::Export(a) => export(&mut client, a).await,
        AuditCommand::Checkpoint(a) => save_checkpoint(&mut client, a).await,
    }
}

/// Parses `--since`/`--until` into Unix milliseconds.
pub fn parse_time_ms(flag: &str, s: &str) -> Result<i64, ClientError> {
    let bad = || {
        ClientError::Usage(format!(
            "--{flag} {s:?}: expected an RFC 3339 time such as 2026-03-01T08:00:00+08:00, or a date YYYY-MM-DD, \
             after 1970"
        ))
    };
    let ms = match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad())?,
        Err(_) => super::certs::parse_instant(s).map_err(|_| bad())?.checked_mul(1000).ok_or_else(bad)?,
    };
    // why: 0 means "open" on the wire.
    if ms <= 0 {
        return Err(bad());
    }
    Ok(ms)
}

/// The wire form of a range: (from_seq, to_seq, from_time_ms, to_time_ms).
fn wire_range(r: &RangeArgs) -> Result<(u64, u64, i64, i64), ClientError> {
    let from_ms = r.since.as_deref().map(|s| parse_time_ms("since", s)).transpose()?.unwrap_or(0);
    let to_ms = r.until.as_deref().map(|s| parse_time_ms("until", s)).transpose()?.unwrap_or(0);
    Ok((r.from_seq.unwrap_or(0), r.to_seq.unwrap_or(0), from_ms, to_ms))
}

/// Unix milliseconds as RFC 3339 in UTC, with milliseconds.
fn time_text(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{ms}"))
}

fn write_err(what: &str) -> impl Fn(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Write { what: what.to_owned(), source }
}

/// One record as a JSON line: the stored fields, as `export` writes them.
fn record_line(r: pb::AuditRecord) -> String {
    serde_json::to_string(&record_from_pb(r)).unwrap_or_default()
}

fn record_text(r: &pb::AuditRecord) -> String {
    let mut line = format!(
        "{:>8}  {}  {:<15}  {:<28}  {} ({}, {})  {}",
        r.seq,
        time_text(r.time_ms),
        r.outcome,
        r.action,
        r.principal,
        r.role,
        r.tenant,
        r.resource
    );
    if !r.reason.is_empty() {
        line.push_str(&format!("  reason: {}", r.reason));
    }
    line
}

async fn query(client: &mut AdminServiceClient<Channel>, a: QueryArgs, json: bool) -> Result<u8, ClientError> {
    let (from_seq, to_seq, from_time_ms, to_time_ms) = wire_range(&a.range)?;
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut page_token = String::new();
    while printed < limit {
        let page = client
            .query_audit(pb::QueryAuditRequest {
                from_seq,
                to_seq,
                from_time_ms,
                to_time_ms,
                principal: a.principal.clone().unwrap_or_default(),
                tenant: a.tenant.clone().unwrap_or_default(),
                action: a.action.clone().unwrap_or_default(),
                outcome: a.outcome.map(|o| o.as_str().to_owned()).unwrap_or_default(),
                page_size: a.page_size.unwrap_or(0),
                page_token: page_token.clone(),
            })
            .await
            .map_err(|e| call_error("QueryAudit", e))?
            .into_inner();
        let room = usize::try_from(limit - printed).unwrap_or(usize::MAX);
        for r in page.records.into_iter().take(room) {
            let line = if json { record_line(r) } else { record_text(&r) };
            writeln!(out, "{line}").map_err(write_err("standard output"))?;
            printed += 1;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        if page.next_page_token == page_token {
            return Err(ClientError::Protocol {
                rpc: "QueryAudit",
                message: "the same page token came back twice".into(),
            });
        }
        page_token = page.next_page_token;
    }
    if printed == 0 && !json {
        writeln!(out, "no records").map_err(write_err("standard output"))?;
    }
    out.flush().map_err(write_err("standard output"))?;
    Ok(0)
}

/// Reads and checks a checkpoint file: its shape, that its signature
/// verifies under the public key it carries, and that this key is the
/// pinned one when `pin` is given.
pub fn read_checkpoint(path: &Path, pin: Option<&str>) -> Result<Checkpoint, ClientError> {
    let fail = |message: String| ClientError::File { path: path.to_owned(), message };
    let size = std::fs::metadata(path)
        .map_err(|source| ClientError::Read { what: "checkpoint file", path: path.to_owned(), source })?
        .len();
    if size > checkpoint::MAX_FILE_BYTES as u64 {
        return Err(fail(format!("larger than {} bytes: not a checkpoint file", checkpoint::MAX_FILE_BYTES)));
    }
    let text = std::fs::read_to_string(path).map_err(|source| ClientError::Read {
        what: "checkpoint file",
        path: path.to_owned(),
        source,
    })?;
    let c = Checkpoint::from_json(&text).map_err(|e| fail(e.to_string()))?;
    check_self_signed(&c).map_err(fail)?;
    if let Some(pin) = pin
        && !pin.eq_ignore_ascii_case(&c.key_fingerprint)
    {
        return Err(fail(format!("signed by key {}, not the pinned {pin}", c.key_fingerprint)));
    }
    Ok(c)
}

/// Checks that `c`'s signature verifies under the public key it carries.
fn check_self_signed(c: &Checkpoint) -> Result<(), String> {
    let spki = hex::decode(&c.public_key).map_err(|_| "public_key is not hex".to_owned())?;
    let key = TrustedKey::from_spki(&spki).map_err(|e| e.to_string())?;
    key.check(c).map_err(|_| {
        format!(
            "the signature of the checkpoint at seq {} does not verify under the key it names: it was edited or forged",
            c.seq
        )
    })
}

async fn verify(client: &mut AdminServiceClient<Channel>, a: VerifyArgs, json: bool) -> Result<u8, ClientError> {
    let pin = a.key_fingerprint.as_deref().map(str::trim).filter(|p| !p.is_empty());
    if let Some(p) = pin
        && (p.len() != 64 || hex::decode(p).is_err())
    {
        return Err(ClientError::Usage(format!("--key-fingerprint {p:?}: expected 64 hex digits (SHA-256)")));
    }
    let external = a.checkpoint.as_deref().map(|p| read_checkpoint(p, pin)).transpose()?;
    let v = client
        .verify_audit(pb::VerifyAuditRequest { checkpoint: external.as_ref().map(checkpoint_to_pb) })
        .await
        .map_err(|e| call_error("VerifyAudit", e))?
        .into_inner();
    let mut fault = (!v.ok).then(|| (v.fault_kind.clone(), v.fault_seq, v.fault.clone()));
    if fault.is_none()
        && let Some(p) = pin
        && !p.eq_ignore_ascii_case(&v.checkpoint_key_fingerprint)
    {
        let key = if v.checkpoint_key_fingerprint.is_empty() { "none" } else { &v.checkpoint_key_fingerprint };
        fault =
            Some(("checkpoint_key".into(), 0, format!("the service's checkpoint key is {key}, not the pinned {p}")));
    }
    if fault.is_none() && external.is_some() && !v.external_checkpoint_ok {
        fault = Some(("checkpoint_mismatch".into(), 0, "the service did not confirm your checkpoint".into()));
    }
    let text = if json {
        let mut line = json!({
            "ok": fault.is_none(),
            "records": v.records,
            "head_hash": v.head_hash,
            "checkpoints": v.checkpoints,
            "last_checkpoint_seq": v.last_checkpoint_seq,
            "checkpoint_key_fingerprint": v.checkpoint_key_fingerprint,
            "external_checkpoint": external.as_ref().map(|c| json!({"seq": c.seq, "ok": v.external_checkpoint_ok})),
            "fault": fault.as_ref().map(|(kind, seq, message)| json!({"kind": kind, "seq": seq, "message": message})),
        })
        .to_string();
        line.push('\n');
        line
    } else {
        let mut out = String::new();
        match &fault {
            None => out.push_str(&format!("audit log OK: {} records, head {}\n", v.records, v.head_hash)),
            Some((kind, seq, message)) => {
                out.push_str(&format!("audit log FAULT at seq {seq} ({kind}): {message}\n"));
                out.push_str(&format!("{} records checked before the fault\n", v.records));
            }
        }
        if v.checkpoints == 0 {
            out.push_str("no signed checkpoints yet\n");
        } else {
            out.push_str(&format!(
                "{} signed checkpoints, the newest at seq {}\n",
                v.checkpoints, v.last_checkpoint_seq
            ));
        }
        let key = if v.checkpoint_key_fingerprint.is_empty() {
            "none in the token yet"
        } else {
            &v.checkpoint_key_fingerprint
        };
        out.push_str(&format!("checkpoint key (SHA-256 of its public key): {key}\n"));
        if let Some(c) = &external {
            let state = if v.external_checkpoint_ok { "holds" } else { "does not hold" };
            out.push_str(&format!("your checkpoint at seq {} (signed {}): {state}\n", c.seq, time_text(c.time_ms)));
        }
        out
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(write_err("standard output"))?;
    Ok(if fault.is_some() { EXIT_FAULT } else { 0 })
}

fn create(path: &Path) -> Result<BufWriter<std::fs::File>, ClientError> {
    std::fs::File::create(path)
        .map(BufWriter::new)
        .map_err(|source| ClientError::Write { what: path.display().to_string(), source })
}

async fn export(client: &mut AdminServiceClient<Channel>, a: ExportArgs) -> Result<u8, ClientError> {
    let (from_seq, to_seq, from_time_ms, to_time_ms) = wire_range(&a.range)?;
    let mut stream = client
        .export_audit(pb::ExportAuditRequest { from_seq, to_seq, from_time_ms, to_time_ms })
        .await
        .map_err(|e| call_error("ExportAudit", e))?
        .into_inner();
    // The file is created only once the service accepted the range.
    let (mut out, what): (Box<dyn Write>, String) = match &a.output {
        Some(p) => (Box::new(create(p)?), p.display().to_string()),
        None => (Box::new(BufWriter::new(std::io::stdout().lock())), "standard output".into()),
    };
    let mut count = 0u64;
    let mut seqs = (0u64, 0u64);
    while let Some(r) = stream.message().await.map_err(|e| call_error("ExportAudit", e))? {
        if count == 0 {
            seqs.0 = r.seq;
        }
        seqs.1 = r.seq;
        count += 1;
        writeln!(out, "{}", record_line(r)).map_err(write_err(&what))?;
    }
    out.flush().map_err(write_err(&what))?;
    drop(out);
    let range = if count == 0 { String::new() } else { format!(" (seq {}-{})", seqs.0, seqs.1) };
    eprintln!("kms audit export: {count} records{range} written to {what}");
    if let Some(path) = &a.checkpoint_out {
        let page = client
            .query_audit(pb::QueryAuditRequest { page_size: 1, ..Default::default() })
            .await
            .map_err(|e| call_error("QueryAudit", e))?
            .into_inner();
        let Some(c) = page.newest_checkpoint else {
            return Err(ClientError::File {
                path: path.clone(),
                message: "not written: the service has no signed checkpoint yet (audit.checkpoint_interval_secs)"
                    .into(),
            });
        };
        let c = checkpoint_from_pb("newest_checkpoint", c)
            .map_err(|e| ClientError::Protocol { rpc: "QueryAudit", message: e.to_string() })?;
        write_checkpoint(&c, Some(path))?;
        if c.seq < i64::try_from(seqs.1).unwrap_or(i64::MAX) {
            eprintln!(
                "kms audit export: the newest checkpoint (seq {}) is older than the last record exported; records \
                 after it are covered by the next checkpoint",
                c.seq
            );
        }
    }
    Ok(0)
}

/// Writes `c` as one line of JSON to `path` or standard output, after
/// checking its signature.
fn write_checkpoint(c: &Checkpoint, path: Option<&PathBuf>) -> Result<(), ClientError> {
    check_self_signed(c).map_err(|message| ClientError::Protocol { rpc: "VerifyAudit", message })?;
    let mut text = serde_json::to_string(c).unwrap_or_default();
    text.push('\n');
    match path {
        Some(p) => {
            let mut f = create(p)?;
            f.write_all(text.as_bytes()).and_then(|()| f.flush()).map_err(write_err(&p.display().to_string()))?;
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()).map_err(write_err("standard output"))?;
        }
    }
    eprintln!(
        "kms audit checkpoint: seq {} head {} signed {} by key {}",
        c.seq,
        c.head_hash,
        time_text(c.time_ms),
        c.key_fingerprint
    );
    Ok(())
}

/// `kms audit checkpoint`: the service verifies the whole log first; only a
/// checkpoint of a log that verifies is saved.
async fn save_checkpoint(client: &mut AdminServiceClient<Channel>, a: CheckpointArgs) -> Result<u8, ClientError> {
    let v = client
        .verify_audit(pb::VerifyAuditRequest { checkpoint: None })
        .await
        .map_err(|e| call_error("VerifyAudit", e))?
        .into_inner();
    if !v.ok {
        eprintln!(
            "kms audit checkpoint: not saved: audit log FAULT at seq {} ({}): {}",
            v.fault_seq, v.fault_kind, v.fault
        );
        return Ok(EXIT_FAULT);
    }
    let Some(c) = v.newest_checkpoint else {
        return Err(ClientError::Protocol {
            rpc: "VerifyAudit",
            message: "the service has no signed checkpoint yet (audit.checkpoint_interval_secs is 0, or nothing was \
                      recorded since it started)"
                .into(),
        });
    };
    let c = checkpoint_from_pb("newest_checkpoint", c)
        .map_err(|e| ClientError::Protocol { rpc: "VerifyAudit", message: e.to_string() })?;
    write_checkpoint(&c, a.output.as_ref())?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_to_milliseconds() -> Result<(), ClientError> {
        assert_eq!(parse_time_ms("since", "2026-03-01T00:00:00Z")?, 1_772_323_200_000);
        assert_eq!(parse_time_ms("since", "2026-03-01T08:00:00.250+08:00")?, 1_772_323_200_250);
        assert_eq!(parse_time_ms("since", "2026-03-01")?, 1_772_323_200_000);
        assert!(parse_time_ms("until", "yesterday").is_err());
        assert!(parse_time_ms("until", "1969-12-31").is_err());
        assert_eq!(time_text(1_772_323_200_250), "2026-03-01T00:00:00.25Z");
        Ok(())
    }
}
