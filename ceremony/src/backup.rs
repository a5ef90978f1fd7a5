//! The backup file and its shares (format documented in
//! `docs/ceremony.md`, "Backup file format").
//!
//! A backup is a JSON file holding each key wrapped under a fresh AES-256
//! backup key (RFC 3394 AES key wrap, `CKM_AES_KEY_WRAP`, done by the
//! HSM), each key's KCV, the backup key's KCV and an HMAC-SHA-256 over
//! the rest of the file keyed from the backup key, so that a changed
//! label, purpose or KCV is found before anything is restored.
//!
//! The backup key itself exists in the clear only in the ceremony's
//! memory (zeroized) between its generation by the HSM and its split into
//! shares, and again when a restore combines shares. Each share is text:
//! `KMSB1-<backup id>-<share number>-<value>-<check>`, all hex, where the
//! check value is the first 3 bytes of SHA-256("kms-ceremony-share-v1" ||
//! id || number || value). A mistyped share fails its check value; a share
//! of another backup names another id.

use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::CeremonyError;

/// The backup file's format name.
pub const FORMAT: &str = "kms-ceremony-backup/1";
/// Share text prefix.
pub const SHARE_PREFIX: &str = "KMSB1";
/// Backup key length.
pub const BACKUP_KEY_LEN: usize = 32;
/// Largest backup file read.
pub const MAX_BACKUP_BYTES: u64 = 4 << 20;

/// A key check value as the service writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KcvJson {
    /// `DES3_ZERO`, `AES_ZERO`, `SM4_ZERO`.
    pub method: String,
    /// 6 hex digits.
    pub value: String,
}

/// One key in a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupKey {
    /// The plan's name for it.
    pub name: String,
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID (hex).
    pub id: String,
    /// `DES2`, `AES128`, ...
    pub algorithm: String,
    /// `derivation_master`, ...
    pub purpose: String,
    /// Its KCV.
    pub kcv: KcvJson,
    /// The key wrapped under the backup key (hex).
    pub wrapped: String,
}

/// A backup file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFile {
    /// [`FORMAT`].
    pub format: String,
    /// 8 random bytes (hex), also in every share.
    pub backup_id: String,
    /// The ceremony that made it.
    pub ceremony: String,
    /// When (RFC 3339).
    pub created: String,
    /// Shares needed.
    pub threshold: usize,
    /// Share holders; share number i+1 is `custodians[i]`'s.
    pub custodians: Vec<String>,
    /// The backup key's KCV (AES, zero block).
    pub backup_key_kcv: KcvJson,
    /// SHA-256("kms-ceremony-share-hash-v1" || id || number || value) of
    /// each share (hex), in share-number order: a share is checked on its
    /// own against the MAC-covered file, and a wrong one is named.
    pub share_hashes: Vec<String>,
    /// `CKM_AES_KEY_WRAP`.
    pub mechanism: String,
    /// The keys.
    pub keys: Vec<BackupKey>,
    /// HMAC-SHA-256 (hex) of this file without `mac`, under
    /// SHA-256("kms-ceremony-backup-mac-v1" || backup key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

fn mac_key(backup_key: &[u8]) -> hmac::Key {
    let mut h = Sha256::new();
    h.update(b"kms-ceremony-backup-mac-v1");
    h.update(backup_key);
    let k = Zeroizing::new(<[u8; 32]>::from(h.finalize()));
    hmac::Key::new(hmac::HMAC_SHA256, k.as_slice())
}

impl BackupFile {
    fn unsigned_bytes(&self) -> Result<Vec<u8>, CeremonyError> {
        let mut copy = self.clone();
        copy.mac = None;
        serde_json::to_vec(&copy).map_err(|e| CeremonyError::Refused(e.to_string()))
    }

    /// Sets `mac` under `backup_key`.
    pub fn seal(&mut self, backup_key: &[u8]) -> Result<(), CeremonyError> {
        let tag = hmac::sign(&mac_key(backup_key), &self.unsigned_bytes()?);
        self.mac = Some(hex::encode(tag.as_ref()));
        Ok(())
    }

    /// Checks `mac` under `backup_key`.
    pub fn check_mac(&self, backup_key: &[u8]) -> Result<(), CeremonyError> {
        let tag = self
            .mac
            .as_deref()
            .and_then(|m| hex::decode(m).ok())
            .ok_or_else(|| CeremonyError::Refused("the backup file has no valid mac".into()))?;
        hmac::verify(&mac_key(backup_key), &self.unsigned_bytes()?, &tag).map_err(|_| {
            CeremonyError::Refused(
                "the backup file's mac does not verify: the file was changed after the backup".into(),
            )
        })
    }

    /// Reads and checks the shape of a backup file.
    pub fn read(path: &std::path::Path) -> Result<BackupFile, CeremonyError> {
        let meta = std::fs::metadata(path).map_err(CeremonyError::file(path))?;
        if meta.len() > MAX_BACKUP_BYTES {
            return Err(CeremonyError::Refused(format!("{}: larger than a backup file may be", path.display())));
        }
        let bytes = std::fs::read(path).map_err(CeremonyError::file(path))?;
        let file: BackupFile = serde_json::from_slice(&bytes)
            .map_err(|e| CeremonyError::Refused(format!("{}: not a backup file: {e}", path.display())))?;
        if file.format != FORMAT {
            return Err(CeremonyError::Refused(format!(
                "{}: format {:?}, expected {FORMAT}",
                path.display(),
                file.format
            )));
        }
        if file.threshold < 2 || file.threshold > file.custodians.len() {
            return Err(CeremonyError::Refused(format!(
                "{}: threshold {} does not fit",
                path.display(),
                file.threshold
            )));
        }
        if hex::decode(&file.backup_id).map(|b| b.len()) != Ok(8) {
            return Err(CeremonyError::Refused(format!("{}: backup_id is not 8 bytes of hex", path.display())));
        }
        if file.share_hashes.len() != file.custodians.len() {
            return Err(CeremonyError::Refused(format!("{}: one share hash per custodian is needed", path.display())));
        }
        for k in &file.keys {
            if hex::decode(&k.wrapped).is_err() || hex::decode(&k.id).is_err() {
                return Err(CeremonyError::Refused(format!("{}: key {:?} is not hex", path.display(), k.label)));
            }
        }
        Ok(file)
    }
}

fn share_check(id: &[u8], x: u8, y: &[u8]) -> [u8; 3] {
    let mut h = Sha256::new();
    h.update(b"kms-ceremony-share-v1");
    h.update(id);
    h.update([x]);
    h.update(y);
    let d = h.finalize();
    [d[0], d[1], d[2]]
}

/// The hash of share `x` the backup file keeps.
pub fn share_hash(id: &[u8], x: u8, y: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"kms-ceremony-share-hash-v1");
    h.update(id);
    h.update([x]);
    h.update(y);
    hex::encode(h.finalize())
}

/// The text of share `x` of backup `id`, in groups of 4 for reading aloud
/// and writing down.
pub fn encode_share(id: &[u8], x: u8, y: &[u8]) -> Zeroizing<String> {
    let value = Zeroizing::new(hex::encode_upper(y));
    let mut grouped = Zeroizing::new(String::new());
    for (i, c) in value.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    Zeroizing::new(format!(
        "{SHARE_PREFIX}-{}-{x:02X}-{}-{}",
        hex::encode_upper(id),
        grouped.as_str(),
        hex::encode_upper(share_check(id, x, y))
    ))
}

/// A parsed share.
pub struct Share {
    /// The backup id.
    pub id: Vec<u8>,
    /// The share number.
    pub x: u8,
    /// The value.
    pub y: Zeroizing<Vec<u8>>,
}

/// Parses share text (spaces and case ignored) and checks its check value
/// and that it belongs to backup `want_id`.
pub fn decode_share(text: &str, want_id: &[u8]) -> Result<Share, String> {
    let compact: Zeroizing<String> = Zeroizing::new(text.chars().filter(|c| !c.is_whitespace()).collect());
    let parts: Vec<&str> = compact.split('-').collect();
    let [prefix, id, x, y, check] = parts.as_slice() else {
        return Err(format!("a share looks like {SHARE_PREFIX}-ID-NN-VALUE-CHECK"));
    };
    if !prefix.eq_ignore_ascii_case(SHARE_PREFIX) {
        return Err(format!("a share starts with {SHARE_PREFIX}"));
    }
    let id = hex::decode(id).map_err(|_| "the backup id is not hex".to_owned())?;
    let x = u8::from_str_radix(x, 16).map_err(|_| "the share number is not hex".to_owned())?;
    let y = Zeroizing::new(hex::decode(y).map_err(|_| "the share value is not hex".to_owned())?);
    let check = hex::decode(check).map_err(|_| "the check value is not hex".to_owned())?;
    if y.len() != BACKUP_KEY_LEN {
        return Err(format!("the share value has {} bytes, not {BACKUP_KEY_LEN}", y.len()));
    }
    if check != share_check(&id, x, &y) {
        return Err("the share's check value does not match (a typing error)".into());
    }
    if id != want_id {
        return Err(format!(
            "this share belongs to backup {}, not to backup {}",
            hex::encode_upper(&id),
            hex::encode_upper(want_id)
        ));
    }
    Ok(Share { id, x, y })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_round_trip_and_catch_mistakes() -> Result<(), String> {
        let id = [1, 2, 3, 4, 5, 6, 7, 8];
        let y = [0xA5u8; 32];
        let text = encode_share(&id, 2, &y);
        let s = decode_share(&text.to_lowercase(), &id)?;
        assert_eq!((s.x, s.y.as_slice(), s.id.as_slice()), (2, y.as_slice(), id.as_slice()));
        // One hex digit changed in the value.
        let typo = text.replacen("A5A5", "A5A4", 1);
        assert!(decode_share(&typo, &id).is_err_and(|e| e.contains("check value")));
        // A good share of another backup.
        let other = encode_share(&[9; 8], 1, &y);
        assert!(decode_share(&other, &id).is_err_and(|e| e.contains("belongs to backup 0909090909090909")));
        assert!(decode_share("nonsense", &id).is_err());
        Ok(())
    }

    #[test]
    fn the_mac_covers_every_field() -> Result<(), CeremonyError> {
        let mut f = BackupFile {
            format: FORMAT.into(),
            backup_id: "0102030405060708".into(),
            ceremony: "c".into(),
            created: "2026-11-21T00:00:00Z".into(),
            threshold: 2,
            custodians: vec!["a".into(), "b".into()],
            backup_key_kcv: KcvJson { method: "AES_ZERO".into(), value: "000000".into() },
            share_hashes: vec![],
            mechanism: "CKM_AES_KEY_WRAP".into(),
            keys: vec![BackupKey {
                name: "k".into(),
                label: "l".into(),
                id: "00".into(),
                algorithm: "DES2".into(),
                purpose: "derivation_master".into(),
                kcv: KcvJson { method: "DES3_ZERO".into(), value: "08D7B4".into() },
                wrapped: "00".into(),
            }],
            mac: None,
        };
        let key = [7u8; 32];
        f.seal(&key)?;
        f.check_mac(&key)?;
        assert!(f.check_mac(&[8u8; 32]).is_err());
        let mut changed = f.clone();
        changed.keys[0].purpose = "transport_export".into();
        assert!(changed.check_mac(&key).is_err());
        Ok(())
    }
}
