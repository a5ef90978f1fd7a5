//! `kms derive`: card keys for one card (`DeriveCardKeys`) or for a file of
//! cards (`DeriveCardKeysBatch`), written as JSON lines.
//!
//! A file is streamed: a reader thread parses one card at a time and hands
//! it through bounded channels to the gRPC request stream, and results are
//! written as they arrive, so memory stays flat however long the file. The
//! server answers in order and reads the next card only when the previous
//! result has been sent; re-running the same batch id answers the cards it
//! has already done from its record (`"replayed": true`).

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, LineWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kms_proto::v1 as pb;
use kms_proto::v1::key_service_client::KeyServiceClient;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::keys::{algorithm_name, parse_key_ref, parse_versioned_key_ref, wrap_format_name};
use super::{ClientError, ClientOptions, call_error};

/// Cards parsed ahead of the request stream.
const REQUEST_QUEUE: usize = 64;
/// Cards sent but not yet answered, kept to print beside their results.
/// why: bounds memory however far ahead HTTP/2 flow-control windows let the
/// request stream run.
const PENDING_QUEUE: usize = 1024;
/// Longest accepted JSON line; a card is a few hundred bytes.
const MAX_LINE: u64 = 64 * 1024;

/// The format of a `--input` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// Comma-separated values with a header row naming the fields.
    Csv,
    /// One JSON object per line with the field names as keys.
    Jsonl,
}

/// `kms derive`.
#[derive(Debug, Clone, Args)]
#[command(group(
    ArgGroup::new("cards")
        .required(true)
        .multiple(true)
        .args(["input", "asn", "city", "pan", "psn", "kdd", "uid", "aid", "system_identifier"])
))]
pub struct DeriveArgs {
    /// Card profile, e.g. mohurd-epurse (`kms keys profiles` lists them).
    #[arg(long = "profile", visible_alias = "card-profile")]
    pub card_profile: String,
    /// Transport key (purpose transport-export) to wrap the card keys under, NAME or NAME@vN.
    #[arg(long, value_parser = parse_key_ref)]
    pub transport_key: pb::KeyRef,
    /// Pin a master key version, NAME@vN (repeatable); others use the newest active version.
    #[arg(long = "pin", value_parser = parse_versioned_key_ref)]
    pub pins: Vec<pb::KeyRef>,
    /// Card application serial number, hex (8 or 10 bytes).
    #[arg(long, help_heading = "One card")]
    pub asn: Option<String>,
    /// City or issuer factor for two-level derivation, hex (8 bytes).
    #[arg(long, help_heading = "One card")]
    pub city: Option<String>,
    /// PAN, decimal digits (EMV).
    #[arg(long, help_heading = "One card")]
    pub pan: Option<String>,
    /// PAN sequence number, 2 decimal digits (EMV).
    #[arg(long, help_heading = "One card")]
    pub psn: Option<String>,
    /// Key diversification data, hex (10 bytes, GlobalPlatform).
    #[arg(long, help_heading = "One card")]
    pub kdd: Option<String>,
    /// Card UID, hex (7 or 4 bytes, AN10922).
    #[arg(long, help_heading = "One card")]
    pub uid: Option<String>,
    /// AN10922 application id, hex (3 bytes).
    #[arg(long, help_heading = "One card")]
    pub aid: Option<String>,
    /// AN10922 system identifier, hex (0-21 bytes).
    #[arg(long, help_heading = "One card")]
    pub system_identifier: Option<String>,
    /// File of cards: CSV with a header row, or JSON lines, naming the fields
    /// asn, city, pan, psn, kdd, uid, aid, system_identifier.
    #[arg(
        long,
        help_heading = "A file of cards",
        requires = "batch_id",
        conflicts_with_all = ["asn", "city", "pan", "psn", "kdd", "uid", "aid", "system_identifier"]
    )]
    pub input: Option<PathBuf>,
    /// Format of --input; default: from its extension (.csv, .jsonl or .ndjson).
    #[arg(long, value_enum, help_heading = "A file of cards", requires = "input")]
    pub input_format: Option<InputFormat>,
    /// Batch id, 1-64 of [A-Za-z0-9_.-]. Re-running the same id with the same
    /// file resumes: cards already done are answered from the server's record
    /// ("replayed": true) and are neither derived nor audited twice.
    #[arg(long, help_heading = "A file of cards", requires = "input")]
    pub batch_id: Option<String>,
    /// Write the JSON lines to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// No progress bar (it is shown only when standard error is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
}

/// A card's identifiers as read from flags or a file; empty fields are absent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// Application serial number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub asn: String,
    /// City factor.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub city: String,
    /// PAN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pan: String,
    /// PAN sequence number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub psn: String,
    /// Key diversification data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kdd: String,
    /// UID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// AN10922 application id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aid: String,
    /// AN10922 system identifier.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub system_identifier: String,
}

impl Card {
    fn to_proto(&self) -> pb::CardIdentifiers {
        pb::CardIdentifiers {
            asn: self.asn.clone(),
            city: self.city.clone(),
            pan: self.pan.clone(),
            psn: self.psn.clone(),
            kdd: self.kdd.clone(),
            uid: self.uid.clone(),
            aid: self.aid.clone(),
            system_identifier: self.system_identifier.clone(),
        }
    }

    fn field_mut(&mut self, name: &str) -> Option<&mut String> {
        Some(match name {
            "asn" => &mut self.asn,
            "city" => &mut self.city,
            "pan" => &mut self.pan,
            "psn" => &mut self.psn,
            "kdd" => &mut self.kdd,
            "uid" => &mut self.uid,
            "aid" => &mut self.aid,
            "system_identifier" | "system-identifier" => &mut self.system_identifier,
            _ => return None,
        })
    }
}

/// How a run went, for the summary line on standard error.
#[derive(Debug, Clone, Default)]
pub struct DeriveSummary {
    /// The batch id, for a file.
    pub batch_id: Option<String>,
    /// Cards whose keys came back.
    pub ok: u64,
    /// Cards that failed.
    pub failed: u64,
    /// Results answered from the record of an earlier run.
    pub replayed: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl DeriveSummary {
    /// Cards answered.
    pub fn cards(&self) -> u64 {
        self.ok + self.failed
    }
}

impl std::fmt::Display for DeriveSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(id) = &self.batch_id {
            write!(f, "batch {id}: ")?;
        }
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.cards() as f64 / secs } else { 0.0 };
        write!(
            f,
            "{} card{}: {} ok, {} failed, {} replayed in {secs:.2} s ({rate:.1} cards/s)",
            self.cards(),
            if self.cards() == 1 { "" } else { "s" },
            self.ok,
            self.failed,
            self.replayed
        )
    }
}

/// The end of a run: the summary, and the error that stopped it early, if
/// any (the results before it were written).
#[derive(Debug)]
pub struct DeriveReport {
    /// What was done.
    pub summary: DeriveSummary,
    /// Why the run stopped before the end of its cards.
    pub interrupted: Option<ClientError>,
}

/// Runs `kms derive`. `Err` means nothing was derived (bad options, the
/// connection or the batch refused whole); a run that started ends in a
/// [`DeriveReport`].
pub async fn run(opts: &ClientOptions, args: DeriveArgs) -> Result<DeriveReport, ClientError> {
    let started = Instant::now();
    let output_is_stdout = args.output.is_none();
    let (out, what) = open_output(args.output.as_deref())?;
    let master_key_versions = args.pins.iter().map(|k| (k.name.clone(), k.version)).collect();
    let Some(input) = args.input.clone() else {
        let card = Card {
            asn: args.asn.clone().unwrap_or_default(),
            city: args.city.clone().unwrap_or_default(),
            pan: args.pan.clone().unwrap_or_default(),
            psn: args.psn.clone().unwrap_or_default(),
            kdd: args.kdd.clone().unwrap_or_default(),
            uid: args.uid.clone().unwrap_or_default(),
            aid: args.aid.clone().unwrap_or_default(),
            system_identifier: args.system_identifier.clone().unwrap_or_default(),
        };
        let mut client = KeyServiceClient::new(opts.connect().await?);
        let result = client
            .derive_card_keys(pb::DeriveCardKeysRequest {
                profile: args.card_profile.clone(),
                card: Some(card.to_proto()),
                transport_key: Some(args.transport_key.clone()),
                master_key_versions,
            })
            .await;
        let mut summary = DeriveSummary::default();
        let result = match result {
            Ok(r) => {
                summary.ok = 1;
                pb::derive_batch_response::Result::Keys(r.into_inner())
            }
            Err(s) => {
                if !is_card_error(s.code()) {
                    return Err(call_error("DeriveCardKeys", s));
                }
                summary.failed = 1;
                pb::derive_batch_response::Result::Error(pb::ItemError {
                    code: s.code() as i32,
                    message: s.message().to_owned(),
                })
            }
        };
        let line = result_line(0, None, &card, false, &result);
        let mut out = out;
        let interrupted = write_line(&mut out, &what, &line).and_then(|()| flush(&mut out, &what)).err();
        summary.elapsed = started.elapsed();
        return Ok(DeriveReport { summary, interrupted });
    };
    let Some(batch_id) = args.batch_id.clone() else {
        return Err(ClientError::Usage("--input needs --batch-id (re-running the same id resumes the batch)".into()));
    };
    let format = match args.input_format {
        Some(f) => f,
        None => format_from_extension(&input)?,
    };
    let file = File::open(&input).map_err(|source| ClientError::Read { what: "input", path: input.clone(), source })?;
    let show_progress =
        !args.no_progress && std::io::stderr().is_terminal() && !(output_is_stdout && std::io::stdout().is_terminal());
    let progress = progress_bar(show_progress);
    if show_progress && std::fs::metadata(&input).is_ok_and(|m| m.is_file()) {
        // why: counting is a pass over the whole file; done beside the run,
        // the first cards need not wait for it. Only for regular files: a
        // pipe read here would lose its cards.
        let (bar, path) = (progress.clone(), input.clone());
        std::thread::spawn(move || {
            if let Some(n) = count_cards(&path, format) {
                bar.set_length(n);
                bar.set_style(progress_style(BAR_TEMPLATE));
            }
        });
    }
    let reader = CardReader::new(file, format, input.clone())?;

    let mut client = KeyServiceClient::new(opts.connect().await?);
    let (req_tx, req_rx) = mpsc::channel::<pb::DeriveBatchRequest>(REQUEST_QUEUE);
    let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(PENDING_QUEUE);
    let header = pb::DeriveBatchRequest {
        item: Some(pb::derive_batch_request::Item::Header(pb::DeriveBatchHeader {
            batch_id: batch_id.clone(),
            profile: args.card_profile.clone(),
            transport_key: Some(args.transport_key.clone()),
            master_key_versions,
        })),
    };
    // The channel is empty, so this cannot wait.
    req_tx.try_send(header).map_err(|_| ClientError::Protocol {
        rpc: "DeriveCardKeysBatch",
        message: "the request stream closed before it started".into(),
    })?;
    // why: a plain thread, not spawn_blocking: if the run stops early the
    // process must not wait for it at runtime shutdown.
    std::thread::spawn(move || feed(reader, req_tx, pending_tx));

    let mut stream = client
        .derive_card_keys_batch(ReceiverStream::new(req_rx))
        .await
        .map_err(|e| call_error("DeriveCardKeysBatch", e))?
        .into_inner();
    let mut summary = DeriveSummary { batch_id: Some(batch_id), ..DeriveSummary::default() };
    let mut out = out;
    let interrupted = loop {
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break None,
            Err(s) => break Some(call_error("DeriveCardKeysBatch", s)),
        };
        let Some(pending) = pending_rx.recv().await else {
            break Some(protocol(format!("a result for index {} that was never sent", message.index)));
        };
        let (index, line_no, card) = match pending {
            Pending::Card { index, line, card } => (index, line, card),
            Pending::Failed(e) => {
                break Some(protocol(format!("a result for index {} after the input stopped: {e}", message.index)));
            }
        };
        if message.index != index {
            break Some(protocol(format!("result for index {} where {index} was expected", message.index)));
        }
        let Some(result) = &message.result else {
            break Some(protocol(format!("result {index} has neither keys nor an error")));
        };
        match result {
            pb::derive_batch_response::Result::Keys(_) => summary.ok += 1,
            pb::derive_batch_response::Result::Error(_) => summary.failed += 1,
        }
        if message.replayed {
            summary.replayed += 1;
        }
        let line = result_line(index, Some(line_no), &card, message.replayed, result);
        if let Err(e) = write_line(&mut out, &what, &line) {
            break Some(e);
        }
        progress.inc(1);
    };
    drop(stream);
    let interrupted = match interrupted {
        Some(e) => Some(e),
        None => match pending_rx.recv().await {
            None => None,
            Some(Pending::Failed(e)) => Some(e),
            Some(Pending::Card { index, .. }) => {
                Some(protocol(format!("the server ended the batch without a result for index {index}")))
            }
        },
    };
    let interrupted = match flush(&mut out, &what) {
        Ok(()) => interrupted,
        Err(e) => interrupted.or(Some(e)),
    };
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    Ok(DeriveReport { summary, interrupted })
}

/// Whether a single-card call's status is about the request (a line with
/// `error`, as a batch reports it) rather than about the call itself (the
/// connection, the caller's rights, the server), which fails the command.
fn is_card_error(code: tonic::Code) -> bool {
    match code {
        tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange
        | tonic::Code::AlreadyExists
        | tonic::Code::Aborted => true,
        tonic::Code::Ok
        | tonic::Code::Cancelled
        | tonic::Code::Unknown
        | tonic::Code::DeadlineExceeded
        | tonic::Code::PermissionDenied
        | tonic::Code::ResourceExhausted
        | tonic::Code::Unimplemented
        | tonic::Code::Internal
        | tonic::Code::Unavailable
        | tonic::Code::DataLoss
        | tonic::Code::Unauthenticated => false,
    }
}

fn protocol(message: String) -> ClientError {
    ClientError::Protocol { rpc: "DeriveCardKeysBatch", message }
}

/// A card on its way to the server, kept until its result comes back.
enum Pending {
    Card {
        index: u64,
        line: u64,
        card: Card,
    },
    /// The input stopped here (a malformed line, a read error).
    Failed(ClientError),
}

/// The reader thread: parses cards one at a time into the bounded channels.
fn feed(mut reader: CardReader, req_tx: mpsc::Sender<pb::DeriveBatchRequest>, pending_tx: mpsc::Sender<Pending>) {
    let mut index = 0u64;
    loop {
        match reader.next_card() {
            Ok(None) => return,
            Ok(Some((line, card))) => {
                let request =
                    pb::DeriveBatchRequest { item: Some(pb::derive_batch_request::Item::Card(card.to_proto())) };
                // why: pending first, so a result can never arrive before the
                // card it belongs to is queued for printing.
                if pending_tx.blocking_send(Pending::Card { index, line, card }).is_err()
                    || req_tx.blocking_send(request).is_err()
                {
                    return;
                }
                index += 1;
            }
            Err(e) => {
                // Dropping req_tx after this ends the request stream, so the
                // server finishes the cards before the bad line.
                let _ = pending_tx.blocking_send(Pending::Failed(e));
                return;
            }
        }
    }
}

fn format_from_extension(path: &Path) -> Result<InputFormat, ClientError> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("csv") => Ok(InputFormat::Csv),
        Some("jsonl" | "ndjson") => Ok(InputFormat::Jsonl),
        _ => Err(ClientError::Usage(format!(
            "cannot tell the format of {} from its extension; name it .csv or .jsonl, or give --input-format",
            path.display()
        ))),
    }
}

/// Reads cards lazily from a CSV or JSON-lines file, one card per line.
struct CardReader {
    lines: Lines,
    /// CSV: the field each column fills, from the header row.
    columns: Option<Vec<String>>,
}

/// Non-blank lines of a file with their numbers, at most [`MAX_LINE`] bytes each.
struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    buf: String,
}

impl Lines {
    fn error(&self, line: u64, message: impl Into<String>) -> ClientError {
        ClientError::Input { path: self.path.clone(), line, message: message.into() }
    }

    fn next_line(&mut self) -> Result<Option<(u64, &str)>, ClientError> {
        loop {
            self.buf.clear();
            let n = match self.reader.by_ref().take(MAX_LINE + 1).read_line(&mut self.buf) {
                Ok(n) => n,
                Err(e) => return Err(self.error(self.line + 1, e.to_string())),
            };
            if n == 0 {
                return Ok(None);
            }
            self.line += 1;
            if n as u64 > MAX_LINE {
                return Err(self.error(self.line, format!("longer than {MAX_LINE} bytes")));
            }
            if !self.buf.trim().is_empty() {
                return Ok(Some((self.line, self.buf.trim_end_matches(['\n', '\r']))));
            }
        }
    }
}

const FIELDS: &str = "asn, city, pan, psn, kdd, uid, aid, system_identifier";

/// The fields of one CSV line.
// why: a reader per line rather than one over the file, so that line numbers
// are those of the file (the csv crate does not count the blank lines it
// skips); card identifiers never need quoted newlines.
fn csv_fields(text: &str) -> Result<Vec<String>, String> {
    let mut reader =
        csv::ReaderBuilder::new().has_headers(false).trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Ok(record.iter().map(str::to_owned).collect()),
        Ok(false) => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

impl CardReader {
    fn new(file: File, format: InputFormat, path: PathBuf) -> Result<CardReader, ClientError> {
        let mut lines = Lines { path, reader: BufReader::new(file), line: 0, buf: String::new() };
        let columns = match format {
            InputFormat::Jsonl => None,
            InputFormat::Csv => {
                let Some((line, text)) = lines.next_line()? else {
                    return Err(lines.error(1, format!("no header row (expected column names among {FIELDS})")));
                };
                let names = csv_fields(text).map_err(|m| lines.error(line, m))?;
                let mut columns = Vec::new();
                let mut probe = Card::default();
                for h in names {
                    let name = h.to_ascii_lowercase();
                    if probe.field_mut(&name).is_none() {
                        return Err(
                            lines.error(line, format!("unknown column {h:?} in the header row (expected {FIELDS})"))
                        );
                    }
                    if columns.iter().any(|f| f == &name) {
                        return Err(lines.error(line, format!("column {h:?} appears twice")));
                    }
                    columns.push(name);
                }
                Some(columns)
            }
        };
        Ok(CardReader { lines, columns })
    }

    /// The next card and its line number, or `None` at the end.
    fn next_card(&mut self) -> Result<Option<(u64, Card)>, ClientError> {
        let Some((line, text)) = self.lines.next_line()? else {
            return Ok(None);
        };
        let card = match &self.columns {
            Some(columns) => {
                let values = csv_fields(text).map_err(|m| self.lines.error(line, m))?;
                if values.len() != columns.len() {
                    return Err(self
                        .lines
                        .error(line, format!("{} fields where the header row has {}", values.len(), columns.len())));
                }
                let mut card = Card::default();
                for (name, value) in columns.iter().zip(values) {
                    if let Some(slot) = card.field_mut(name) {
                        *slot = value;
                    }
                }
                card
            }
            None => serde_json::from_str(text).map_err(|e| {
                self.lines.error(line, format!("{e} (expected an object of strings named among {FIELDS})"))
            })?,
        };
        Ok(Some((line, card)))
    }
}

/// Counts the cards of a file for the progress bar: one pass over its bytes
/// (non-blank lines, less the CSV header). `None` if the file cannot be read.
/// Only for regular files.
fn count_cards(path: &Path, format: InputFormat) -> Option<u64> {
    let mut file = File::open(path).ok()?;
    let mut buf = vec![0u8; 64 * 1024];
    let (mut lines, mut blank) = (0u64, true);
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        for &b in buf.get(..n)? {
            if b == b'\n' {
                if !blank {
                    lines += 1;
                }
                blank = true;
            } else if !b.is_ascii_whitespace() {
                blank = false;
            }
        }
    }
    if !blank {
        lines += 1;
    }
    Some(match format {
        InputFormat::Csv => lines.saturating_sub(1),
        InputFormat::Jsonl => lines,
    })
}

/// Known total: a bar with the count and time left.
const BAR_TEMPLATE: &str = "{spinner} [{elapsed_precise}] [{bar:40}] {pos}/{len} cards, {rate}, eta {eta}";
/// Total not (yet) known: a spinner with the count and rate.
const SPINNER_TEMPLATE: &str = "{spinner} [{elapsed_precise}] {pos} cards, {rate}";

fn progress_style(template: &str) -> ProgressStyle {
    match ProgressStyle::with_template(template) {
        Ok(style) => style
            .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} cards/s", state.per_sec());
            })
            .progress_chars("=> "),
        Err(_) => ProgressStyle::default_spinner(),
    }
}

/// A spinner on standard error (it becomes a bar once the total is known),
/// or nothing.
fn progress_bar(show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(progress_style(SPINNER_TEMPLATE));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

type Output = Box<dyn Write + Send>;

fn open_output(path: Option<&Path>) -> Result<(Output, String), ClientError> {
    match path {
        None => Ok((Box::new(LineWriter::new(std::io::stdout())), "standard output".into())),
        Some(p) => {
            let file =
                File::create(p).map_err(|source| ClientError::Write { what: p.display().to_string(), source })?;
            // why: one write per result, so an interrupted run leaves whole
            // lines that match what the server recorded.
            Ok((Box::new(LineWriter::new(file)), p.display().to_string()))
        }
    }
}

fn write_line(out: &mut Output, what: &str, line: &serde_json::Value) -> Result<(), ClientError> {
    let mut text = line.to_string();
    text.push('\n');
    out.write_all(text.as_bytes()).map_err(|source| ClientError::Write { what: what.to_owned(), source })
}

fn flush(out: &mut Output, what: &str) -> Result<(), ClientError> {
    out.flush().map_err(|source| ClientError::Write { what: what.to_owned(), source })
}

/// The canonical gRPC name of a status code number.
pub fn code_name(code: i32) -> &'static str {
    match tonic::Code::from_i32(code) {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One output line: the card, and its keys (wrapped) or its error.
fn result_line(
    index: u64,
    line: Option<u64>,
    card: &Card,
    replayed: bool,
    result: &pb::derive_batch_response::Result,
) -> serde_json::Value {
    let mut v = serde_json::json!({ "index": index });
    if let Some(l) = line {
        v["line"] = l.into();
    }
    v["card"] = serde_json::to_value(card).unwrap_or(serde_json::Value::Null);
    v["replayed"] = replayed.into();
    match result {
        pb::derive_batch_response::Result::Keys(r) => {
            v["keys"] = r
                .keys
                .iter()
                .map(|k| {
                    let master = k.master_key.clone().unwrap_or_default();
                    let kcv = k.kcv.clone().unwrap_or_default();
                    serde_json::json!({
                        "role": k.role,
                        "master_key": master.name,
                        "master_version": master.version,
                        "algorithm": algorithm_name(k.algorithm),
                        "kcv_method": kcv.method,
                        "kcv": kcv.value,
                        "wrapped": hex::encode_upper(&k.wrapped),
                        "format": wrap_format_name(k.format),
                    })
                })
                .collect();
            if let Some(t) = &r.transport_key {
                v["transport_key"] = serde_json::json!({"name": t.name, "version": t.version});
            }
        }
        pb::derive_batch_response::Result::Error(e) => {
            v["error"] = serde_json::json!({ "code": code_name(e.code), "message": e.message });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap_or_else(|e| unreachable!("{e}"));
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| unreachable!("{e}"));
        (dir, path)
    }

    fn read_all(path: &Path, format: InputFormat) -> Result<Vec<(u64, Card)>, ClientError> {
        let file = File::open(path).map_err(|source| ClientError::Read { what: "t", path: path.into(), source })?;
        let mut r = CardReader::new(file, format, path.to_owned())?;
        let mut out = Vec::new();
        while let Some(c) = r.next_card()? {
            out.push(c);
        }
        Ok(out)
    }

    #[test]
    fn csv_with_header_and_line_numbers() {
        let (_d, p) = write("c.csv", "asn,city\n4567890123456701, 3301000000000000\n\n0000000000000001,\n");
        let cards = read_all(&p, InputFormat::Csv).map_err(|e| e.to_string());
        let Ok(cards) = cards else { unreachable!("{cards:?}") };
        assert_eq!(cards.len(), 2);
        assert_eq!(
            (cards[0].0, cards[0].1.asn.as_str(), cards[0].1.city.as_str()),
            (2, "4567890123456701", "3301000000000000")
        );
        assert_eq!(cards[1].0, 4);
        assert_eq!(count_cards(&p, InputFormat::Csv), Some(2));
    }

    #[test]
    fn csv_errors_name_the_line() {
        let (_d, p) = write("c.csv", "asn\n01\n02,03\n");
        let e = read_all(&p, InputFormat::Csv).map(|_| ()).map_err(|e| e.to_string());
        assert!(matches!(&e, Err(m) if m.contains("line 3")), "{e:?}");
        let (_d, p) = write("c.csv", "asn,colour\n01,red\n");
        let e = read_all(&p, InputFormat::Csv).map(|_| ()).map_err(|e| e.to_string());
        assert!(matches!(&e, Err(m) if m.contains("line 1") && m.contains("colour")), "{e:?}");
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let (_d, p) = write("c.jsonl", "{\"asn\":\"01\"}\n\n{\"asn\":\"02\",\"pan\":\"123\"}\n{\"asn\":3}\n");
        let e = read_all(&p, InputFormat::Jsonl).map(|_| ()).map_err(|e| e.to_string());
        assert!(matches!(&e, Err(m) if m.contains("line 4")), "{e:?}");
        assert_eq!(count_cards(&p, InputFormat::Jsonl), Some(3));
    }

    #[test]
    fn formats_from_extensions() {
        assert_eq!(format_from_extension(Path::new("a.CSV")).ok(), Some(InputFormat::Csv));
        assert_eq!(format_from_extension(Path::new("a.jsonl")).ok(), Some(InputFormat::Jsonl));
        assert!(format_from_extension(Path::new("a.txt")).is_err());
    }
}
