//! The key catalogue's domain types and its storage. Only metadata lives
//! here: names, versions, algorithms, purposes, states, KCVs and where the
//! HSM object is. Key values exist only inside the HSM.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::Row;

use crate::error::{Error, Result};
use crate::store::{Store, StoreError, Tx};

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.to_owned(), reason: reason.into() }
}

/// A validated hierarchical key name, e.g. `city/3301/mohurd/dpk`: 1 to 8
/// segments of 1-64 characters `[a-z0-9_-]`, joined by `/`, at most 255
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct KeyName(String);

impl KeyName {
    /// Parses and checks a name; `field` names the request field in errors.
    pub fn parse(field: &str, s: &str) -> Result<KeyName> {
        if s.is_empty() || s.len() > 255 {
            return Err(invalid(field, "must be 1-255 bytes"));
        }
        let segments: Vec<&str> = s.split('/').collect();
        if segments.len() > 8 {
            return Err(invalid(field, format!("{s:?} has more than 8 segments")));
        }
        for seg in &segments {
            let ok = !seg.is_empty()
                && seg.len() <= 64
                && seg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !ok {
                return Err(invalid(field, format!("{s:?}: each segment must be 1-64 of [a-z0-9_-]")));
            }
        }
        Ok(KeyName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $($(#[$vdoc])* $variant),* }
        impl $name {
            /// The stored name.
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $text),* } }
            /// Parses a stored name.
            pub fn from_stored(s: &str) -> std::result::Result<Self, StoreError> {
                match s { $($text => Ok($name::$variant),)* other => Err(StoreError::Corrupt(format!("{} {other:?}", stringify!($name)))) }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}
pub(crate) use string_enum;

string_enum!(
    /// Symmetric key algorithms.
    Algorithm {
        /// 2-key triple DES (16 bytes).
        Des2 => "DES2",
        /// AES-128.
        Aes128 => "AES128",
        /// AES-192.
        Aes192 => "AES192",
        /// AES-256.
        Aes256 => "AES256",
        /// SM4.
        Sm4 => "SM4",
    }
);

impl Algorithm {
    /// Key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Algorithm::Des2 | Algorithm::Aes128 | Algorithm::Sm4 => 16,
            Algorithm::Aes192 => 24,
            Algorithm::Aes256 => 32,
        }
    }

    /// The KCV method used when none is asked for.
    pub fn default_kcv(self) -> KcvMethod {
        match self {
            Algorithm::Des2 => KcvMethod::Des3Zero,
            Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256 => KcvMethod::AesZero,
            Algorithm::Sm4 => KcvMethod::Sm4Zero,
        }
    }

    /// The family the wrap probes use: `DES2`, `AES` or `SM4`.
    pub fn family(self) -> &'static str {
        match self {
            Algorithm::Des2 => "DES2",
            Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256 => "AES",
            Algorithm::Sm4 => "SM4",
        }
    }
}

string_enum!(
    /// What a key may be used for; also limits its HSM attributes.
    Purpose {
        /// Card keys are diversified from it (CKA_DERIVE).
        DerivationMaster => "derivation_master",
        /// Derived keys are wrapped under it for export (CKA_WRAP).
        TransportExport => "transport_export",
        /// Delivered keys are unwrapped with it (CKA_UNWRAP).
        TransportImport => "transport_import",
        /// MAC computation (CKA_SIGN, CKA_VERIFY).
        Mac => "mac",
        /// Keeps copies of service-generated private keys wrapped for
        /// recovery under dual control (CKA_WRAP, CKA_UNWRAP; AES only).
        Escrow => "escrow",
    }
);

impl Purpose {
    /// Checks that a key of `algorithm` may serve this purpose: escrow keys
    /// are AES, because they keep private keys wrapped with AES key wrap
    /// with padding (RFC 5649).
    pub fn check_algorithm(self, algorithm: Algorithm) -> Result<()> {
        if self == Purpose::Escrow && algorithm.family() != "AES" {
            return Err(invalid("algorithm", format!("an escrow key must be AES, not {algorithm}")));
        }
        Ok(())
    }
}

string_enum!(
    /// Life-cycle state of a key version.
    KeyState {
        /// Usable; the newest active version is the default.
        Active => "active",
        /// Usable only when named explicitly.
        Deprecated => "deprecated",
        /// Not usable.
        Suspended => "suspended",
        /// HSM object destroyed; record kept.
        Destroyed => "destroyed",
    }
);

string_enum!(
    /// Key check value conventions (DESIGN.md §2). Every stored or returned
    /// KCV names its method.
    KcvMethod {
        /// 3DES: encrypt 8 zero bytes, first 3 bytes.
        Des3Zero => "DES3_ZERO",
        /// AES: encrypt a zero block, first 3 bytes.
        AesZero => "AES_ZERO",
        /// AES, GlobalPlatform: encrypt 16 bytes of 0x01, first 3 bytes.
        AesGp => "AES_GP",
        /// SM4: encrypt a zero block, first 3 bytes.
        Sm4Zero => "SM4_ZERO",
    }
);

impl KcvMethod {
    /// Parses a request's method name (empty: the algorithm's default) and
    /// checks it fits the algorithm.
    pub fn parse_for(field: &str, s: &str, algorithm: Algorithm) -> Result<KcvMethod> {
        let m = if s.is_empty() {
            algorithm.default_kcv()
        } else {
            KcvMethod::from_stored(s).map_err(|_| {
                invalid(field, format!("unknown KCV method {s:?} (DES3_ZERO, AES_ZERO, AES_GP, SM4_ZERO)"))
            })?
        };
        let fits = matches!(
            (m, algorithm),
            (KcvMethod::Des3Zero, Algorithm::Des2)
                | (KcvMethod::AesZero | KcvMethod::AesGp, Algorithm::Aes128 | Algorithm::Aes192 | Algorithm::Aes256)
                | (KcvMethod::Sm4Zero, Algorithm::Sm4)
        );
        if fits { Ok(m) } else { Err(invalid(field, format!("KCV method {m} does not apply to {algorithm} keys"))) }
    }

    /// The block to encrypt.
    pub fn input(self) -> &'static [u8] {
        match self {
            KcvMethod::Des3Zero => &[0u8; 8],
            KcvMethod::AesZero | KcvMethod::Sm4Zero => &[0u8; 16],
            KcvMethod::AesGp => &[1u8; 16],
        }
    }
}

/// A key check value with its method.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kcv {
    /// The method.
    pub method: KcvMethod,
    /// Upper-case hex, 3 bytes.
    pub value: String,
}

impl Kcv {
    /// Builds the KCV from the encryption of the method's input block.
    pub fn from_ciphertext(method: KcvMethod, ciphertext: &[u8]) -> Kcv {
        Kcv { method, value: hex::encode_upper(&ciphertext[..ciphertext.len().min(3)]) }
    }

    /// Constant-time comparison with an expected value (case-insensitive hex).
    pub fn matches(&self, method: KcvMethod, value: &str) -> bool {
        let a = self.value.as_bytes();
        let b = value.to_ascii_uppercase();
        let b = b.as_bytes();
        method == self.method && a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// How a key came into the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Origin {
    /// Generated in the HSM by the service.
    Generated,
    /// Unwrapped from a transport-key delivery.
    Imported,
    /// An existing token object registered by a security officer.
    Adopted,
}

impl Origin {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::Imported => "imported",
            Origin::Adopted => "adopted",
        }
    }
}

/// One key version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// Name.
    pub name: KeyName,
    /// Version, from 1.
    pub version: u32,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Purpose.
    pub purpose: Purpose,
    /// State.
    pub state: KeyState,
    /// KCV.
    pub kcv: Kcv,
    /// Origin (`generated`, `imported`, `adopted`).
    pub origin: String,
    /// Module path.
    pub module: String,
    /// CKA_ID of the HSM object, hex.
    pub object_id: String,
    /// Creator.
    pub created_by: String,
    /// Milliseconds since the epoch.
    pub created_at: i64,
    /// Milliseconds since the epoch.
    pub updated_at: i64,
}

impl KeyRecord {
    /// `name@vN`, for messages and audit.
    pub fn reference(&self) -> String {
        format!("{}@v{}", self.name, self.version)
    }

    /// The CKA_ID bytes.
    pub fn object_id_bytes(&self) -> Vec<u8> {
        hex::decode(&self.object_id).unwrap_or_default()
    }
}

/// A request's reference to a key: a name and an optional version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// Name.
    pub name: KeyName,
    /// Version; `None` means the newest active version.
    pub version: Option<u32>,
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.version {
            Some(v) => write!(f, "{}@v{v}", self.name),
            None => write!(f, "{}@active", self.name),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

const COLUMNS: &str = "name, version, algorithm, purpose, state, kcv_method, kcv_value, origin, module, object_id, \
                       created_by, created_at, updated_at";

fn from_row(row: &sqlx::any::AnyRow) -> std::result::Result<KeyRecord, StoreError> {
    let name: String = row.try_get("name")?;
    Ok(KeyRecord {
        name: KeyName(name),
        version: u32::try_from(row.try_get::<i64, _>("version")?).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        algorithm: Algorithm::from_stored(&row.try_get::<String, _>("algorithm")?)?,
        purpose: Purpose::from_stored(&row.try_get::<String, _>("purpose")?)?,
        state: KeyState::from_stored(&row.try_get::<String, _>("state")?)?,
        kcv: Kcv {
            method: KcvMethod::from_stored(&row.try_get::<String, _>("kcv_method")?)?,
            value: row.try_get("kcv_value")?,
        },
        origin: row.try_get("origin")?,
        module: row.try_get("module")?,
        object_id: row.try_get("object_id")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// The newest version number of `name`, or 0.
pub async fn latest_version(tx: &mut Tx, name: &KeyName) -> std::result::Result<u32, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM keys WHERE name = $1")
        .bind(name.as_str())
        .fetch_one(&mut **tx)
        .await?;
    Ok(u32::try_from(row.try_get::<i64, _>("v")?).unwrap_or(0))
}

/// Inserts a new version.
pub async fn insert(tx: &mut Tx, r: &KeyRecord) -> std::result::Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(r.name.as_str())
    .bind(i64::from(r.version))
    .bind(r.algorithm.as_str())
    .bind(r.purpose.as_str())
    .bind(r.state.as_str())
    .bind(r.kcv.method.as_str())
    .bind(&r.kcv.value)
    .bind(&r.origin)
    .bind(&r.module)
    .bind(&r.object_id)
    .bind(&r.created_by)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Sets the state of one version.
pub async fn set_state(
    tx: &mut Tx,
    name: &KeyName,
    version: u32,
    state: KeyState,
) -> std::result::Result<(), StoreError> {
    sqlx::query("UPDATE keys SET state = $1, updated_at = $2 WHERE name = $3 AND version = $4")
        .bind(state.as_str())
        .bind(now_ms())
        .bind(name.as_str())
        .bind(i64::from(version))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Marks every active version of `name` below `below` deprecated; returns
/// the versions changed.
pub async fn deprecate_older(tx: &mut Tx, name: &KeyName, below: u32) -> std::result::Result<Vec<u32>, StoreError> {
    let rows = sqlx::query("SELECT version FROM keys WHERE name = $1 AND version < $2 AND state = 'active'")
        .bind(name.as_str())
        .bind(i64::from(below))
        .fetch_all(&mut **tx)
        .await?;
    let versions: Vec<u32> =
        rows.iter().filter_map(|r| r.try_get::<i64, _>("version").ok()).filter_map(|v| u32::try_from(v).ok()).collect();
    for v in &versions {
        set_state(tx, name, *v, KeyState::Deprecated).await?;
    }
    Ok(versions)
}

/// Reads one version (exact) or the newest active one.
pub async fn find(store: &Store, key: &KeyRef) -> std::result::Result<Option<KeyRecord>, StoreError> {
    let row = match key.version {
        Some(v) => {
            sqlx::query(&format!("SELECT {COLUMNS} FROM keys WHERE name = $1 AND version = $2"))
                .bind(key.name.as_str())
                .bind(i64::from(v))
                .fetch_optional(store.pool())
                .await?
        }
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM keys WHERE name = $1 AND state = 'active' ORDER BY version DESC LIMIT 1"
            ))
            .bind(key.name.as_str())
            .fetch_optional(store.pool())
            .await?
        }
    };
    row.as_ref().map(from_row).transpose()
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Name prefix.
    pub name_prefix: String,
    /// State.
    pub state: Option<KeyState>,
    /// Purpose.
    pub purpose: Option<Purpose>,
}

/// One page of records after `(after_name, after_version)`, ordered by name
/// and version.
pub async fn list(
    store: &Store,
    filter: &ListFilter,
    after: Option<(String, u32)>,
    limit: u32,
) -> std::result::Result<Vec<KeyRecord>, StoreError> {
    let (after_name, after_version) = after.unwrap_or_default();
    // why: LIKE treats _ and % specially; a range on the prefix does not.
    let upper = format!("{}\u{10FFFF}", filter.name_prefix);
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM keys WHERE name >= $1 AND name < $2 \
         AND ($3 = '' OR state = $3) AND ($4 = '' OR purpose = $4) \
         AND (name > $5 OR (name = $5 AND version > $6)) \
         ORDER BY name, version LIMIT $7"
    ))
    .bind(&filter.name_prefix)
    .bind(&upper)
    .bind(filter.state.map(|s| s.as_str()).unwrap_or(""))
    .bind(filter.purpose.map(|p| p.as_str()).unwrap_or(""))
    .bind(&after_name)
    .bind(i64::from(after_version))
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(from_row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(KeyName::parse("name", "city/3301/mohurd/dpk").is_ok());
        assert!(KeyName::parse("name", "a").is_ok());
        for bad in ["", "/a", "a/", "a//b", "A/b", "a b", "a/b/c/d/e/f/g/h/i", "ä"] {
            assert!(KeyName::parse("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kcv_methods_fit_algorithms() {
        assert_eq!(KcvMethod::parse_for("m", "", Algorithm::Des2).ok(), Some(KcvMethod::Des3Zero));
        assert_eq!(KcvMethod::parse_for("m", "AES_GP", Algorithm::Aes128).ok(), Some(KcvMethod::AesGp));
        assert!(KcvMethod::parse_for("m", "AES_GP", Algorithm::Des2).is_err());
        assert!(KcvMethod::parse_for("m", "SHA1", Algorithm::Des2).is_err());
    }

    #[test]
    fn kcv_comparison_ignores_case_but_not_method() {
        let k = Kcv { method: KcvMethod::Des3Zero, value: "08D7B4".into() };
        assert!(k.matches(KcvMethod::Des3Zero, "08d7b4"));
        assert!(!k.matches(KcvMethod::AesZero, "08D7B4"));
        assert!(!k.matches(KcvMethod::Des3Zero, "08D7B5"));
        assert!(!k.matches(KcvMethod::Des3Zero, "08D7"));
    }
}
