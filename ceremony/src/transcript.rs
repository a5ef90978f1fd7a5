//! The ceremony transcript: one JSON object per line, appended as each
//! step ends and flushed to disk at once.
//!
//! Each entry carries `seq` (0, 1, 2, ...), `prev` (the SHA-256 of the
//! previous line as written, 64 zeros for the first) and, last, `sig`: an
//! ECDSA P-256 signature (raw `r || s`, hex) over the SHA-256 of the line
//! without its `,"sig":"..."` member. The signing key is made for the
//! ceremony in the HSM as a session object: it cannot be extracted and is
//! gone when the ceremony ends, so no one can add to or rewrite the
//! transcript afterwards. Its public key is in the first entry and its
//! fingerprint on the witnesses' summary, with the hash of the last line.
//!
//! [`verify`] finds an edited entry (bad signature), a removed or
//! reordered one (`seq` or `prev` breaks), and a cut tail (no closing
//! `ceremony-completed` or `ceremony-aborted` entry).

use std::fs::File;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{CeremonyError, hsm};

const SIG_MARK: &str = ",\"sig\":\"";
/// Longest transcript line verified.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Serialize)]
struct Entry<'a> {
    seq: u64,
    time: String,
    ceremony: &'a str,
    event: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<usize>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    officers: &'a [String],
    details: serde_json::Value,
    prev: String,
}

/// An open transcript being written.
pub struct Transcript {
    path: PathBuf,
    file: File,
    ceremony: String,
    seq: u64,
    prev: [u8; 32],
    key: ObjectHandle,
    module: String,
}

impl Transcript {
    /// Creates `path` (which must not exist) and writes the first entry,
    /// `ceremony-started`, with `details` and the signing key's public key.
    pub fn create(
        path: &Path,
        ceremony: &str,
        session: &Session,
        module: &str,
        key: ObjectHandle,
        details: serde_json::Value,
    ) -> Result<Transcript, CeremonyError> {
        let file = std::fs::OpenOptions::new().append(true).create_new(true).open(path).map_err(|e| {
            CeremonyError::Refused(format!("transcript {}: {e} (a transcript is never overwritten)", path.display()))
        })?;
        let mut t = Transcript {
            path: path.to_owned(),
            file,
            ceremony: ceremony.to_owned(),
            seq: 0,
            prev: [0; 32],
            key,
            module: module.to_owned(),
        };
        t.append(session, "ceremony-started", None, &[], details)?;
        Ok(t)
    }

    /// The transcript file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the last line written (hex).
    pub fn head(&self) -> String {
        hex::encode(self.prev)
    }

    /// Entries written.
    pub fn len(&self) -> u64 {
        self.seq
    }

    /// Whether nothing was written (never true after [`Transcript::create`]).
    pub fn is_empty(&self) -> bool {
        self.seq == 0
    }

    /// Signs and appends one entry, then syncs the file.
    pub fn append(
        &mut self,
        session: &Session,
        event: &str,
        step: Option<usize>,
        officers: &[String],
        details: serde_json::Value,
    ) -> Result<(), CeremonyError> {
        let entry = Entry {
            seq: self.seq,
            time: now(),
            ceremony: &self.ceremony,
            event,
            step,
            officers,
            details,
            prev: hex::encode(self.prev),
        };
        let body = serde_json::to_string(&entry).map_err(|e| CeremonyError::Refused(e.to_string()))?;
        let digest = Sha256::digest(body.as_bytes());
        let sig = session.sign(&Mechanism::Ecdsa, self.key, &digest).map_err(hsm(&self.module))?;
        let mut line = body;
        line.pop(); // the closing brace
        line.push_str(SIG_MARK);
        line.push_str(&hex::encode(sig));
        line.push_str("\"}");
        self.file
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(CeremonyError::file(&self.path))?;
        self.prev = Sha256::digest(line.as_bytes()).into();
        self.seq += 1;
        Ok(())
    }
}

/// UTC now, RFC 3339, seconds.
pub fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.replace_nanosecond(0).unwrap_or(t).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

/// What [`verify`] found in a good transcript.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// Entries.
    pub entries: u64,
    /// The ceremony's name.
    pub ceremony: String,
    /// SHA-256 of the signing key's SubjectPublicKeyInfo (hex).
    pub key_fingerprint: String,
    /// SHA-256 of the last line (hex): the value on the witnesses' summary.
    pub head: String,
    /// The closing event: `ceremony-completed` or `ceremony-aborted`.
    pub closing: String,
}

/// Verifies a transcript file: every signature, the chain, the sequence
/// and the closing entry; `fingerprint`, if given, must be the signing
/// key's (from the witnesses' summary).
pub fn verify(path: &Path, fingerprint: Option<&str>) -> Result<Verified, CeremonyError> {
    let fail = |reason: String| CeremonyError::Transcript { path: path.to_owned(), reason };
    let file = File::open(path).map_err(CeremonyError::file(path))?;
    let mut reader = std::io::BufReader::new(file);
    let mut prev = [0u8; 32];
    let mut key: Option<(Vec<u8>, String)> = None;
    let mut ceremony = String::new();
    let mut last_event = String::new();
    let mut n = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let read =
            (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).map_err(CeremonyError::file(path))?;
        if read == 0 {
            break;
        }
        let lineno = n + 1;
        if buf.last() != Some(&b'\n') {
            return Err(fail(format!("line {lineno}: too long or not terminated (a cut file?)")));
        }
        buf.pop();
        let line = std::str::from_utf8(&buf).map_err(|_| fail(format!("line {lineno}: not UTF-8")))?;
        let at = line.rfind(SIG_MARK).ok_or_else(|| fail(format!("line {lineno}: no signature")))?;
        let sig_hex = line[at + SIG_MARK.len()..]
            .strip_suffix("\"}")
            .ok_or_else(|| fail(format!("line {lineno}: malformed signature member")))?;
        let sig = hex::decode(sig_hex).map_err(|_| fail(format!("line {lineno}: signature is not hex")))?;
        let body = format!("{}}}", &line[..at]);
        let entry: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| fail(format!("line {lineno}: not a JSON entry: {e}")))?;
        if entry["seq"].as_u64() != Some(n) {
            return Err(fail(format!(
                "line {lineno}: seq is {}, expected {n}: an entry was removed, inserted or moved",
                entry["seq"]
            )));
        }
        if entry["prev"].as_str() != Some(hex::encode(prev).as_str()) {
            return Err(fail(format!(
                "line {lineno}: prev does not match the hash of line {n}: an entry before it was edited, removed or moved"
            )));
        }
        if n == 0 {
            if entry["event"] != "ceremony-started" {
                return Err(fail("line 1 is not a ceremony-started entry".into()));
            }
            let point = entry["details"]["transcript_key"]["ec_point"]
                .as_str()
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| fail("line 1: no transcript_key.ec_point".into()))?;
            let spki = entry["details"]["transcript_key"]["spki"]
                .as_str()
                .and_then(|h| hex::decode(h).ok())
                .ok_or_else(|| fail("line 1: no transcript_key.spki".into()))?;
            if !spki.ends_with(&point) {
                return Err(fail("line 1: transcript_key.spki does not hold ec_point".into()));
            }
            let fp = hex::encode(Sha256::digest(&spki));
            if let Some(want) = fingerprint
                && !want.eq_ignore_ascii_case(&fp)
            {
                return Err(fail(format!("the transcript key is {fp}, not {want} from the summary")));
            }
            ceremony = entry["ceremony"].as_str().unwrap_or_default().to_owned();
            key = Some((point, fp));
        }
        let Some((point, _)) = &key else {
            return Err(fail("no transcript key".into()));
        };
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
        public.verify(body.as_bytes(), &sig).map_err(|_| {
            fail(format!(
                "line {lineno}: the signature does not verify: the entry was edited (event {})",
                entry["event"]
            ))
        })?;
        last_event = entry["event"].as_str().unwrap_or_default().to_owned();
        prev = Sha256::digest(line.as_bytes()).into();
        n += 1;
    }
    let Some((_, key_fingerprint)) = key else {
        return Err(fail("the transcript is empty".into()));
    };
    if last_event != "ceremony-completed" && last_event != "ceremony-aborted" {
        return Err(fail(format!(
            "the last entry ({n}) is {last_event:?}, not a closing entry: the end of the transcript was cut, or the ceremony was killed"
        )));
    }
    Ok(Verified { entries: n, ceremony, key_fingerprint, head: hex::encode(prev), closing: last_event })
}
