//! Signed checkpoints of the chain head.
//!
//! A checkpoint states "the head is at seq N with hash H at time T", signed
//! with an EC P-256 key pair that lives in the HSM token (sensitive, not
//! extractable, sign only). The hash chain alone carries no key: whoever
//! can write to the database can rewrite it consistently from any record
//! on, or cut off its tail and rewind `audit_head`. What they cannot do
//! without the HSM is sign a (seq, hash) pair, so every checkpoint pins the
//! chain up to its seq, and a log that no longer reaches the newest
//! checkpoint has lost its tail.
//!
//! The signed bytes ([`statement`]) are four lines of text, so an auditor
//! can check a checkpoint with any ECDSA tool. Checkpoints are stored with
//! the signing key's public key for exports and auditors' files, but
//! verification trusts only a key it got elsewhere: the token's, or one an
//! auditor pinned by fingerprint ([`TrustedKey`]).

use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::{Store, StoreError};

/// The signature algorithm of every checkpoint.
pub const ALGORITHM: &str = "ecdsa-p256-sha256";
/// The `format` of a checkpoint file.
pub const FILE_FORMAT: &str = "kms-audit-checkpoint-v1";
/// The largest checkpoint file or message accepted, in bytes.
pub const MAX_FILE_BYTES: usize = 16 * 1024;

/// The bytes a checkpoint signs.
pub fn statement(seq: i64, head_hash: &str, time_ms: i64) -> Vec<u8> {
    format!("kms audit checkpoint v1\nseq: {seq}\nhead_hash: {head_hash}\ntime_ms: {time_ms}\n").into_bytes()
}

/// SHA-256 (hex, lower case) of a DER SubjectPublicKeyInfo.
pub fn fingerprint(spki_der: &[u8]) -> String {
    hex::encode(Sha256::digest(spki_der))
}

/// A signed checkpoint, as stored and as an auditor keeps it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// [`FILE_FORMAT`].
    pub format: String,
    /// The head's sequence number.
    pub seq: i64,
    /// The head's hash (the `hash` of record `seq`).
    pub head_hash: String,
    /// When it was signed, Unix milliseconds.
    pub time_ms: i64,
    /// [`ALGORITHM`].
    pub algorithm: String,
    /// `CKA_LABEL` of the signing key in the token.
    pub key_label: String,
    /// [`fingerprint`] of `public_key`.
    pub key_fingerprint: String,
    /// The signing key's SubjectPublicKeyInfo, DER as hex.
    pub public_key: String,
    /// ECDSA `r || s`, hex.
    pub signature: String,
}

/// Why a checkpoint is malformed (before any signature is checked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Malformed {
    /// The field.
    pub field: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Checkpoint {
    /// The bytes this checkpoint's signature covers.
    pub fn statement(&self) -> Vec<u8> {
        statement(self.seq, &self.head_hash, self.time_ms)
    }

    /// Checks the shape of every field (for checkpoints from outside: a
    /// file or a request).
    pub fn check_shape(&self) -> Result<(), Malformed> {
        let bad = |field: &'static str, reason: &str| Err(Malformed { field, reason: reason.to_owned() });
        if self.format != FILE_FORMAT {
            return bad("format", &format!("must be {FILE_FORMAT:?}"));
        }
        if self.seq < 1 {
            return bad("seq", "must be 1 or more");
        }
        if self.head_hash.len() != 64 || !is_lower_hex(&self.head_hash) {
            return bad("head_hash", "must be 64 lower-case hex digits");
        }
        if self.time_ms < 0 {
            return bad("time_ms", "must not be negative");
        }
        if self.algorithm != ALGORITHM {
            return bad("algorithm", &format!("must be {ALGORITHM:?}"));
        }
        if self.key_label.len() > 128 || self.key_label.chars().any(char::is_control) {
            return bad("key_label", "at most 128 bytes without control characters");
        }
        if self.key_fingerprint.len() != 64 || !is_lower_hex(&self.key_fingerprint) {
            return bad("key_fingerprint", "must be 64 lower-case hex digits");
        }
        if self.public_key.is_empty() || self.public_key.len() > 1024 || !is_lower_hex(&self.public_key) {
            return bad("public_key", "must be a DER SubjectPublicKeyInfo in lower-case hex");
        }
        if self.signature.len() != 128 || !is_lower_hex(&self.signature) {
            return bad("signature", "must be 64 bytes (r || s) in lower-case hex");
        }
        Ok(())
    }

    /// Parses and checks a checkpoint file (JSON, as `kms audit checkpoint`
    /// writes it).
    pub fn from_json(text: &str) -> Result<Checkpoint, Malformed> {
        if text.len() > MAX_FILE_BYTES {
            return Err(Malformed { field: "file", reason: format!("larger than {MAX_FILE_BYTES} bytes") });
        }
        let c: Checkpoint = serde_json::from_str(text)
            .map_err(|e| Malformed { field: "file", reason: format!("not a checkpoint: {e}") })?;
        c.check_shape()?;
        Ok(c)
    }
}

/// Why a checkpoint does not hold under a trusted key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Signed (or claimed to be signed) by another key.
    OtherKey,
    /// The signature does not verify: forged, or a field was edited.
    BadSignature,
}

/// A public key that checkpoints must verify under: the token's, or one an
/// auditor pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    spki_der: Vec<u8>,
    point: Vec<u8>,
    fingerprint: String,
}

impl TrustedKey {
    /// The key of a DER SubjectPublicKeyInfo; only EC P-256 keys qualify.
    pub fn from_spki(spki_der: &[u8]) -> Result<TrustedKey, Malformed> {
        let key = kms_ca::PublicKey::from_spki_der(spki_der)
            .map_err(|e| Malformed { field: "public_key", reason: e.to_string() })?;
        if key.key_type() != kms_ca::KeyType::EcP256 {
            return Err(Malformed {
                field: "public_key",
                reason: format!("a {} key; checkpoints are signed with EC P-256", key.key_type()),
            });
        }
        Ok(TrustedKey {
            spki_der: key.spki_der().to_vec(),
            point: key.raw().to_vec(),
            fingerprint: fingerprint(key.spki_der()),
        })
    }

    /// The uncompressed EC point.
    pub fn point(&self) -> &[u8] {
        &self.point
    }

    /// SHA-256 (hex) of the SubjectPublicKeyInfo.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The DER SubjectPublicKeyInfo (canonical encoding).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Checks that `c` names this key and that its signature verifies
    /// under it (the stored public key is not used).
    pub fn check(&self, c: &Checkpoint) -> Result<(), Rejection> {
        if c.key_fingerprint != self.fingerprint || c.public_key != hex::encode(&self.spki_der) {
            return Err(Rejection::OtherKey);
        }
        let signature = hex::decode(&c.signature).map_err(|_| Rejection::BadSignature)?;
        self.verify(&c.statement(), &signature)
    }

    /// Verifies a raw `r || s` signature of `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Rejection> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(message, signature)
            .map_err(|_| Rejection::BadSignature)
    }
}

const COLUMNS: &str = "seq, head_hash, ts_ms, algorithm, key_label, key_fingerprint, public_key, signature";

fn row_to_checkpoint(row: &sqlx::any::AnyRow) -> Result<Checkpoint, StoreError> {
    Ok(Checkpoint {
        format: FILE_FORMAT.to_owned(),
        seq: row.try_get("seq")?,
        head_hash: row.try_get("head_hash")?,
        time_ms: row.try_get("ts_ms")?,
        algorithm: row.try_get("algorithm")?,
        key_label: row.try_get("key_label")?,
        key_fingerprint: row.try_get("key_fingerprint")?,
        public_key: row.try_get("public_key")?,
        signature: row.try_get("signature")?,
    })
}

/// Stores a checkpoint; `false` when one for the same seq exists already
/// (another replica signed the same head first).
pub async fn insert(store: &Store, c: &Checkpoint) -> Result<bool, StoreError> {
    let done = sqlx::query(&format!(
        "INSERT INTO audit_checkpoints ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (seq) DO NOTHING"
    ))
    .bind(c.seq)
    .bind(&c.head_hash)
    .bind(c.time_ms)
    .bind(&c.algorithm)
    .bind(&c.key_label)
    .bind(&c.key_fingerprint)
    .bind(&c.public_key)
    .bind(&c.signature)
    .execute(store.pool())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The checkpoint with the highest seq.
pub async fn newest(store: &Store) -> Result<Option<Checkpoint>, StoreError> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"))
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(row_to_checkpoint).transpose()
}

/// Number of checkpoints.
pub async fn count(store: &Store) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM audit_checkpoints").fetch_one(store.pool()).await?;
    Ok(row.try_get::<i64, _>("n")?)
}

/// Up to `limit` checkpoints with `seq > after` and, when given,
/// `seq <= upto`, in seq order.
pub async fn page(store: &Store, after: i64, upto: Option<i64>, limit: i64) -> Result<Vec<Checkpoint>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit_checkpoints WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
    ))
    .bind(after)
    .bind(upto.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(row_to_checkpoint).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    /// A fresh P-256 key (ring) and a checkpoint it signed.
    fn signed(seq: i64, hash: &str) -> (TrustedKey, Checkpoint) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING point }
        let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        let key = TrustedKey::from_spki(&spki).unwrap();
        let sig = pair.sign(&rng, &statement(seq, hash, 42)).unwrap();
        let c = Checkpoint {
            format: FILE_FORMAT.into(),
            seq,
            head_hash: hash.into(),
            time_ms: 42,
            algorithm: ALGORITHM.into(),
            key_label: "kms/audit-checkpoint".into(),
            key_fingerprint: fingerprint(&spki),
            public_key: hex::encode(&spki),
            signature: hex::encode(sig.as_ref()),
        };
        (key, c)
    }

    #[test]
    fn the_statement_is_four_lines_of_text() {
        assert_eq!(
            statement(7, "ab", 1000),
            b"kms audit checkpoint v1\nseq: 7\nhead_hash: ab\ntime_ms: 1000\n".to_vec()
        );
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_edit_is_caught() {
        let hash = "1f".repeat(32);
        let (key, c) = signed(12, &hash);
        assert_eq!(c.check_shape(), Ok(()));
        assert_eq!(key.check(&c), Ok(()));
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(Checkpoint::from_json(&json), Ok(c.clone()));

        let mut moved = c.clone();
        moved.seq = 13;
        assert_eq!(key.check(&moved), Err(Rejection::BadSignature));
        let mut rehashed = c.clone();
        rehashed.head_hash = "2f".repeat(32);
        assert_eq!(key.check(&rehashed), Err(Rejection::BadSignature));
        let mut retimed = c.clone();
        retimed.time_ms = 43;
        assert_eq!(key.check(&retimed), Err(Rejection::BadSignature));

        // Signed by someone else's key, even a valid signature, is refused.
        let (_, other) = signed(12, &hash);
        assert_eq!(key.check(&other), Err(Rejection::OtherKey));
        // A checkpoint claiming the trusted key but signed by another one.
        let mut claimed = other.clone();
        claimed.key_fingerprint = c.key_fingerprint.clone();
        claimed.public_key = c.public_key.clone();
        assert_eq!(key.check(&claimed), Err(Rejection::BadSignature));
    }

    #[test]
    fn malformed_files_are_refused_naming_the_field() {
        let (_, c) = signed(3, &"00".repeat(32));
        let field = |edit: &dyn Fn(&mut Checkpoint)| {
            let mut x = c.clone();
            edit(&mut x);
            x.check_shape().err().map(|e| e.field).unwrap_or("ok")
        };
        assert_eq!(field(&|x| x.seq = 0), "seq");
        assert_eq!(field(&|x| x.head_hash = "AB".repeat(32)), "head_hash");
        assert_eq!(field(&|x| x.signature.truncate(10)), "signature");
        assert_eq!(field(&|x| x.format = "v0".into()), "format");
        assert_eq!(field(&|x| x.algorithm = "rsa".into()), "algorithm");
        let with_extra = serde_json::to_string(&c).unwrap().replacen('{', "{\"extra\":1,", 1);
        assert_eq!(Checkpoint::from_json(&with_extra).err().map(|e| e.field), Some("file"));
        assert!(TrustedKey::from_spki(b"not der").is_err());
    }
}
