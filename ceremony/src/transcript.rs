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

/// The order n of the P-256 group (SEC 2 §2.4.2), big-endian.
const P256_N: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xBC, 0xE6, 0xFA,
    0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// Whether the 32-byte big-endian `s` is above n/2.
fn is_high(s: &[u8]) -> bool {
    // Compare 2s with n: s > n/2 (n odd) iff 2s > n.
    let mut doubled = [0u8; 33];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let v = u16::from(s[i]) * 2 + carry;
        doubled[i + 1] = v as u8;
        carry = v >> 8;
    }
    doubled[0] = carry as u8;
    let mut n = [0u8; 33];
    n[1..].copy_from_slice(&P256_N);
    doubled > n
}

/// Replaces s by n - s when s is above n/2: both verify, and fixing one
/// form makes a signature non-malleable (a changed s is refused).
fn low_s(sig: &mut [u8]) {
    if sig.len() != 64 || !is_high(&sig[32..]) {
        return;
    }
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let v = i16::from(P256_N[i]) - i16::from(sig[32 + i]) - borrow;
        sig[32 + i] = v.rem_euclid(256) as u8;
        borrow = i16::from(v < 0);
    }
}
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
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new().append(true).create_new(true).mode(0o600).open(path).map_err(|e| {
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
        let mut sig = session.sign(&Mechanism::Ecdsa, self.key, &digest).map_err(hsm(&self.module))?;
        low_s(&mut sig);
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
    /// The entries, as verified (without their signatures).
    #[serde(skip)]
    pub records: Vec<serde_json::Value>,
}

/// Verifies a transcript file: every signature (low-s form), the chain,
/// the sequence and the closing entry, and that the signing key is the one
/// whose `fingerprint` the witnesses' summary shows (a transcript is only
/// as good as that anchor: anyone can make a self-consistent one with a
/// key of their own). `head`, if given, must be the last line's hash.
pub fn verify(path: &Path, fingerprint: &str, head: Option<&str>) -> Result<Verified, CeremonyError> {
    let fail = |reason: String| CeremonyError::Transcript { path: path.to_owned(), reason };
    let file = File::open(path).map_err(CeremonyError::file(path))?;
    let mut reader = std::io::BufReader::new(file);
    let mut prev = [0u8; 32];
    let mut key: Option<(Vec<u8>, String)> = None;
    let mut ceremony = String::new();
    let mut last_event = String::new();
    let mut n = 0u64;
    let mut buf = Vec::new();
    let mut records = Vec::new();
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
            if !fingerprint.eq_ignore_ascii_case(&fp) {
                return Err(fail(format!("the transcript key is {fp}, not {fingerprint} from the summary")));
            }
            ceremony = entry["ceremony"].as_str().unwrap_or_default().to_owned();
            key = Some((point, fp));
        }
        let Some((point, _)) = &key else {
            return Err(fail("no transcript key".into()));
        };
        if sig.len() != 64 || is_high(&sig[32..]) {
            return Err(fail(format!("line {lineno}: the signature is not in low-s form: it was altered")));
        }
        let public = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
        public.verify(body.as_bytes(), &sig).map_err(|_| {
            fail(format!(
                "line {lineno}: the signature does not verify: the entry was edited (event {})",
                entry["event"]
            ))
        })?;
        last_event = entry["event"].as_str().unwrap_or_default().to_owned();
        records.push(entry);
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
    let head_hex = hex::encode(prev);
    if let Some(want) = head
        && !want.eq_ignore_ascii_case(&head_hex)
    {
        return Err(fail(format!("the last entry's hash is {head_hex}, not {want} from the summary")));
    }
    Ok(Verified { entries: n, ceremony, key_fingerprint, head: head_hex, closing: last_event, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_s_flips_high_values_only() {
        let mut n_minus_1 = P256_N;
        n_minus_1[31] -= 1;
        let mut sig = [0u8; 64];
        sig[32..].copy_from_slice(&n_minus_1);
        assert!(is_high(&sig[32..]));
        low_s(&mut sig);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(&sig[32..], &one, "n - (n - 1) = 1");
        assert!(!is_high(&sig[32..]));
        // (n - 1) / 2 is the largest low value; (n + 1) / 2 the smallest high one.
        let half_low: [u8; 32] = {
            let mut h = [0u8; 32];
            let mut rem = 0u16;
            for i in 0..32 {
                let v = (rem << 8) | u16::from(P256_N[i]);
                h[i] = (v / 2) as u8;
                rem = v % 2;
            }
            h
        };
        assert!(!is_high(&half_low));
        let mut half_high = half_low;
        half_high[31] += 1;
        assert!(is_high(&half_high));
    }
}
