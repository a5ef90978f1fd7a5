//! The certificate authority's records and their storage: issuing CAs,
//! issued certificates, enrollment tokens, escrowed encryption keys and the
//! current CRL of each issuer. No private key is ever here: an issuing CA's
//! key is an HSM object, and a reader's encryption key is kept only wrapped
//! under an escrow key.
//!
//! Times are Unix seconds.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::Row;

use crate::keys::string_enum;
use crate::store::{Store, StoreError, Tx};

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

string_enum!(
    /// Life-cycle state of an issuing CA.
    IssuerState {
        /// Key generated, waiting for its certificate.
        Pending => "pending",
        /// Issues certificates and CRLs.
        Active => "active",
        /// Issues only CRLs, until its last certificate expires.
        Retired => "retired",
    }
);

string_enum!(
    /// Whether a certificate may be relied on.
    CertStatus {
        /// Issued and not revoked.
        Valid => "valid",
        /// Revoked.
        Revoked => "revoked",
    }
);

/// An issuing CA.
#[derive(Debug, Clone)]
pub struct IssuerRecord {
    /// Name; also the CRL file name.
    pub name: String,
    /// State.
    pub state: IssuerState,
    /// Key type name (`ec-p256`, ...).
    pub key_type: String,
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Module path.
    pub module: String,
    /// CKA_ID of the key pair, hex.
    pub object_id: String,
    /// SubjectPublicKeyInfo DER of the HSM key.
    pub public_key: Vec<u8>,
    /// Certificate DER (empty while pending).
    pub certificate: Vec<u8>,
    /// The chain above it, concatenated DER, up to the root.
    pub chain: Vec<u8>,
    /// Certificate validity (0 while pending).
    pub not_before: i64,
    /// Certificate validity (0 while pending).
    pub not_after: i64,
    /// Number of the last CRL.
    pub crl_number: i64,
    /// Creator.
    pub created_by: String,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

const ISSUER_COLUMNS: &str = "name, state, key_type, subject, module, object_id, public_key, certificate, chain, \
                              not_before, not_after, crl_number, created_by, created_at, updated_at";

fn issuer_from_row(row: &sqlx::any::AnyRow) -> Result<IssuerRecord, StoreError> {
    Ok(IssuerRecord {
        name: row.try_get("name")?,
        state: IssuerState::from_stored(&row.try_get::<String, _>("state")?)?,
        key_type: row.try_get("key_type")?,
        subject: row.try_get("subject")?,
        module: row.try_get("module")?,
        object_id: row.try_get("object_id")?,
        public_key: row.try_get("public_key")?,
        certificate: row.try_get("certificate")?,
        chain: row.try_get("chain")?,
        not_before: row.try_get("not_before")?,
        not_after: row.try_get("not_after")?,
        crl_number: row.try_get("crl_number")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// Inserts a new (pending) issuer.
pub async fn insert_issuer(tx: &mut Tx, r: &IssuerRecord) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO ca_issuers ({ISSUER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         $14, $15)"
    ))
    .bind(&r.name)
    .bind(r.state.as_str())
    .bind(&r.key_type)
    .bind(&r.subject)
    .bind(&r.module)
    .bind(&r.object_id)
    .bind(&r.public_key)
    .bind(&r.certificate)
    .bind(&r.chain)
    .bind(r.not_before)
    .bind(r.not_after)
    .bind(r.crl_number)
    .bind(&r.created_by)
    .bind(r.created_at)
    .bind(r.updated_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reads an issuer.
pub async fn issuer(store: &Store, name: &str) -> Result<Option<IssuerRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {ISSUER_COLUMNS} FROM ca_issuers WHERE name = $1"))
        .bind(name)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(issuer_from_row).transpose()
}

/// Every issuer, newest first.
pub async fn issuers(store: &Store) -> Result<Vec<IssuerRecord>, StoreError> {
    let rows = sqlx::query(&format!("SELECT {ISSUER_COLUMNS} FROM ca_issuers ORDER BY created_at DESC, name"))
        .fetch_all(store.pool())
        .await?;
    rows.iter().map(issuer_from_row).collect()
}

/// Installs a pending issuer's certificate and makes it active; false if it
/// was no longer pending.
pub async fn activate_issuer(
    tx: &mut Tx,
    name: &str,
    subject: &str,
    certificate: &[u8],
    chain: &[u8],
    validity: (i64, i64),
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE ca_issuers SET state = 'active', subject = $1, certificate = $2, chain = $3, not_before = $4, \
         not_after = $5, updated_at = $6 WHERE name = $7 AND state = 'pending'",
    )
    .bind(subject)
    .bind(certificate)
    .bind(chain)
    .bind(validity.0)
    .bind(validity.1)
    .bind(now_secs())
    .bind(name)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Moves an issuer from `from` to `to`; false if it was not in `from`.
pub async fn set_issuer_state(tx: &mut Tx, name: &str, from: IssuerState, to: IssuerState) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE ca_issuers SET state = $1, updated_at = $2 WHERE name = $3 AND state = $4")
        .bind(to.as_str())
        .bind(now_secs())
        .bind(name)
        .bind(from.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes the next CRL number of an issuer. The increment happens in the
/// database, so replicas sharing it never hand out the same number.
pub async fn next_crl_number(store: &Store, issuer: &str) -> Result<i64, StoreError> {
    let row = sqlx::query("UPDATE ca_issuers SET crl_number = crl_number + 1 WHERE name = $1 RETURNING crl_number")
        .bind(issuer)
        .fetch_optional(store.pool())
        .await?;
    match row {
        Some(r) => Ok(r.try_get("crl_number")?),
        None => Err(StoreError::Corrupt(format!("issuer {issuer:?} vanished while numbering its CRL"))),
    }
}

/// The record of an issued certificate.
#[derive(Debug, Clone, Serialize)]
pub struct CertRecord {
    /// Serial, upper-case hex.
    pub serial: String,
    /// Issuer name.
    pub issuer: String,
    /// Profile.
    pub profile: String,
    /// Subject DN (RFC 4514).
    pub subject: String,
    /// Status.
    pub status: CertStatus,
    /// Validity.
    pub not_before: i64,
    /// Validity.
    pub not_after: i64,
    /// DER.
    #[serde(skip)]
    pub der: Vec<u8>,
    /// SHA-256 of the DER, upper-case hex.
    pub fingerprint: String,
    /// Subject key type.
    pub key_type: String,
    /// Role it carries, or empty.
    pub role: String,
    /// Tenant it carries, or empty.
    pub tenant: String,
    /// The other certificate of a dual pair, or empty.
    pub paired_serial: String,
    /// Revocation time, or 0.
    pub revoked_at: i64,
    /// RFC 5280 reason name, or empty.
    pub revocation_reason: String,
    /// Who asked for it.
    pub requested_by: String,
    /// Issuance time.
    pub created_at: i64,
}

const CERT_COLUMNS: &str = "serial, issuer, profile, subject, status, not_before, not_after, der, fingerprint, \
                            key_type, role, tenant, paired_serial, revoked_at, revocation_reason, requested_by, \
                            created_at";

fn cert_from_row(row: &sqlx::any::AnyRow) -> Result<CertRecord, StoreError> {
    Ok(CertRecord {
        serial: row.try_get("serial")?,
        issuer: row.try_get("issuer")?,
        profile: row.try_get("profile")?,
        subject: row.try_get("subject")?,
        status: CertStatus::from_stored(&row.try_get::<String, _>("status")?)?,
        not_before: row.try_get("not_before")?,
        not_after: row.try_get("not_after")?,
        der: row.try_get("der")?,
        fingerprint: row.try_get("fingerprint")?,
        key_type: row.try_get("key_type")?,
        role: row.try_get("role")?,
        tenant: row.try_get("tenant")?,
        paired_serial: row.try_get("paired_serial")?,
        revoked_at: row.try_get("revoked_at")?,
        revocation_reason: row.try_get("revocation_reason")?,
        requested_by: row.try_get("requested_by")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Records an issued certificate.
pub async fn insert_cert(tx: &mut Tx, r: &CertRecord) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO certificates ({CERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         $14, $15, $16, $17)"
    ))
    .bind(&r.serial)
    .bind(&r.issuer)
    .bind(&r.profile)
    .bind(&r.subject)
    .bind(r.status.as_str())
    .bind(r.not_before)
    .bind(r.not_after)
    .bind(&r.der)
    .bind(&r.fingerprint)
    .bind(&r.key_type)
    .bind(&r.role)
    .bind(&r.tenant)
    .bind(&r.paired_serial)
    .bind(r.revoked_at)
    .bind(&r.revocation_reason)
    .bind(&r.requested_by)
    .bind(r.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reads a certificate by serial (upper-case hex).
pub async fn cert(store: &Store, serial: &str) -> Result<Option<CertRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {CERT_COLUMNS} FROM certificates WHERE serial = $1"))
        .bind(serial)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref().map(cert_from_row).transpose()
}

/// Serials and times of the revocations at or after `since` (seconds),
/// expired certificates included (they no longer authenticate anyway).
pub async fn revoked_since(store: &Store, since: i64) -> Result<Vec<(String, i64)>, StoreError> {
    // why: one aggregated value, like the CRL's list (the `Any` driver's
    // per-row cost dominates a first load of many revocations).
    let aggregate = match store.backend() {
        crate::store::Backend::Sqlite => "group_concat(serial || ':' || revoked_at, ',')",
        crate::store::Backend::Postgres => "string_agg(serial || ':' || revoked_at::text, ',')",
    };
    let row = sqlx::query(&format!(
        "SELECT COALESCE({aggregate}, '') AS entries FROM certificates WHERE status = 'revoked' AND revoked_at >= $1"
    ))
    .bind(since)
    .fetch_one(store.pool())
    .await?;
    let joined: String = row.try_get("entries")?;
    joined
        .split(',')
        .filter(|e| !e.is_empty())
        .map(|e| match e.split_once(':') {
            Some((serial, at)) if !serial.is_empty() => at
                .parse()
                .map(|at| (serial.to_owned(), at))
                .map_err(|_| StoreError::Corrupt(format!("revocation entry {e:?}"))),
            _ => Err(StoreError::Corrupt(format!("revocation entry {e:?}"))),
        })
        .collect()
}

/// Marks a valid certificate revoked; false if it was not valid.
pub async fn revoke_cert(tx: &mut Tx, serial: &str, at: i64, reason: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = $2 \
         WHERE serial = $3 AND status = 'valid'",
    )
    .bind(at)
    .bind(reason)
    .bind(serial)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Filters for [`list_certs`].
#[derive(Debug, Clone, Default)]
pub struct CertFilter {
    /// Exact subject, or a substring when `subject_contains`.
    pub subject: String,
    /// Match `subject` as a substring.
    pub subject_contains: bool,
    /// Serial prefix (upper-case hex).
    pub serial_prefix: String,
    /// Status.
    pub status: Option<CertStatus>,
    /// Issuer.
    pub issuer: String,
    /// Expiring before (0: any).
    pub expires_before: i64,
}

/// One page of certificates after serial `after`, ordered by serial.
pub async fn list_certs(store: &Store, f: &CertFilter, after: &str, limit: u32) -> Result<Vec<CertRecord>, StoreError> {
    let upper = format!("{}\u{10FFFF}", f.serial_prefix);
    let (subject_eq, subject_like) = match (f.subject.is_empty(), f.subject_contains) {
        (true, _) => (String::new(), String::new()),
        (false, false) => (f.subject.clone(), String::new()),
        // why: LIKE patterns treat % and _ specially; escape them so the
        // operator's text is matched literally.
        (false, true) => (String::new(), format!("%{}%", like_escape(&f.subject))),
    };
    let rows = sqlx::query(&format!(
        "SELECT {CERT_COLUMNS} FROM certificates WHERE serial >= $1 AND serial < $2 AND serial > $3 \
         AND ($4 = '' OR subject = $4) AND ($5 = '' OR subject LIKE $5 ESCAPE '\\') \
         AND ($6 = '' OR status = $6) AND ($7 = '' OR issuer = $7) AND ($8 = 0 OR not_after < $8) \
         ORDER BY serial LIMIT $9"
    ))
    .bind(&f.serial_prefix)
    .bind(&upper)
    .bind(after)
    .bind(&subject_eq)
    .bind(&subject_like)
    .bind(f.status.map(|s| s.as_str()).unwrap_or(""))
    .bind(&f.issuer)
    .bind(f.expires_before)
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(cert_from_row).collect()
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A revoked certificate as a CRL lists it.
#[derive(Debug, Clone)]
pub struct RevokedRow {
    /// Serial, upper-case hex.
    pub serial: String,
    /// Revocation time.
    pub revoked_at: i64,
    /// RFC 5280 reason name.
    pub reason: String,
}

/// The revoked certificates of `issuer` that have not yet expired at `now`
/// (RFC 5280 §3.3 lets an entry leave the CRL once the certificate expired),
/// in no particular order.
pub async fn revoked_for_crl(store: &Store, issuer: &str, now: i64) -> Result<Vec<RevokedRow>, StoreError> {
    // why: the `Any` driver builds a column map for every row, which was
    // most of the time of a 100,000-entry CRL; the database joins the
    // entries into one text value instead (serials are hex, times digits,
    // reasons letters, so ':' and ',' cannot occur inside a field).
    let aggregate = match store.backend() {
        crate::store::Backend::Sqlite => "group_concat(serial || ':' || revoked_at || ':' || revocation_reason, ',')",
        crate::store::Backend::Postgres => {
            "string_agg(serial || ':' || revoked_at::text || ':' || revocation_reason, ',')"
        }
    };
    let row = sqlx::query(&format!(
        "SELECT COALESCE({aggregate}, '') AS entries FROM certificates \
         WHERE issuer = $1 AND status = 'revoked' AND not_after > $2"
    ))
    .bind(issuer)
    .bind(now)
    .fetch_one(store.pool())
    .await?;
    let joined: String = row.try_get("entries")?;
    parse_revoked(&joined)
}

fn parse_revoked(joined: &str) -> Result<Vec<RevokedRow>, StoreError> {
    if joined.is_empty() {
        return Ok(Vec::new());
    }
    joined
        .split(',')
        .map(|entry| {
            let mut f = entry.splitn(3, ':');
            match (f.next(), f.next().and_then(|t| t.parse().ok()), f.next()) {
                (Some(serial), Some(revoked_at), Some(reason)) if !serial.is_empty() => {
                    Ok(RevokedRow { serial: serial.to_owned(), revoked_at, reason: reason.to_owned() })
                }
                _ => Err(StoreError::Corrupt(format!("revoked certificate entry {entry:?}"))),
            }
        })
        .collect()
}

/// The time of `issuer`'s latest revocation (0 if none).
pub async fn last_revocation(store: &Store, issuer: &str) -> Result<i64, StoreError> {
    let row = sqlx::query(
        "SELECT COALESCE(MAX(revoked_at), 0) AS t FROM certificates WHERE issuer = $1 AND status = 'revoked'",
    )
    .bind(issuer)
    .fetch_one(store.pool())
    .await?;
    Ok(row.try_get("t")?)
}

/// The latest expiry among `issuer`'s certificates (0 if it issued none).
pub async fn last_expiry(store: &Store, issuer: &str) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(not_after), 0) AS t FROM certificates WHERE issuer = $1")
        .bind(issuer)
        .fetch_one(store.pool())
        .await?;
    Ok(row.try_get("t")?)
}

/// An enrollment token. The secret itself is never stored.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    /// Token id (public).
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// The reader serial the CSR must name.
    pub reader_serial: String,
    /// Profiles it may be used with, comma-separated.
    pub profiles: String,
    /// Issuer to enroll under.
    pub issuer: String,
    /// Tenant the certificates will carry.
    pub tenant: String,
    /// Expiry.
    pub expires_at: i64,
    /// When it was used (0: unused).
    pub used_at: i64,
    /// Serial it was used for.
    pub used_for: String,
    /// Creator.
    pub created_by: String,
    /// Creation time.
    pub created_at: i64,
}

const TOKEN_COLUMNS: &str =
    "id, secret_hash, reader_serial, profiles, issuer, tenant, expires_at, used_at, used_for, created_by, created_at";

/// Stores a new token.
pub async fn insert_token(tx: &mut Tx, t: &TokenRecord) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO enrollment_tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&t.id)
    .bind(&t.secret_hash)
    .bind(&t.reader_serial)
    .bind(&t.profiles)
    .bind(&t.issuer)
    .bind(&t.tenant)
    .bind(t.expires_at)
    .bind(t.used_at)
    .bind(&t.used_for)
    .bind(&t.created_by)
    .bind(t.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Reads a token by id.
pub async fn token(store: &Store, id: &str) -> Result<Option<TokenRecord>, StoreError> {
    let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE id = $1"))
        .bind(id)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref()
        .map(|r| {
            Ok(TokenRecord {
                id: r.try_get("id")?,
                secret_hash: r.try_get("secret_hash")?,
                reader_serial: r.try_get("reader_serial")?,
                profiles: r.try_get("profiles")?,
                issuer: r.try_get("issuer")?,
                tenant: r.try_get("tenant")?,
                expires_at: r.try_get("expires_at")?,
                used_at: r.try_get("used_at")?,
                used_for: r.try_get("used_for")?,
                created_by: r.try_get("created_by")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
}

/// Consumes an unused, unexpired token; false if another request used it
/// first (the update is the one place that decides, across replicas).
pub async fn consume_token(tx: &mut Tx, id: &str, now: i64, serial: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE enrollment_tokens SET used_at = $1, used_for = $2 WHERE id = $3 AND used_at = 0 AND expires_at > $1",
    )
    .bind(now)
    .bind(serial)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Keeps an encryption private key wrapped under the escrow key.
pub async fn insert_escrow(
    tx: &mut Tx,
    serial: &str,
    escrow_key: &str,
    mechanism: &str,
    wrapped: &[u8],
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO key_escrow (certificate_serial, escrow_key, mechanism, wrapped, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(serial)
    .bind(escrow_key)
    .bind(mechanism)
    .bind(wrapped)
    .bind(now_secs())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether an escrow copy exists for a certificate.
pub async fn has_escrow(store: &Store, serial: &str) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM key_escrow WHERE certificate_serial = $1")
        .bind(serial)
        .fetch_one(store.pool())
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

/// An issuer's current CRL.
#[derive(Debug, Clone)]
pub struct CrlRecord {
    /// Issuer.
    pub issuer: String,
    /// CRL number.
    pub number: i64,
    /// thisUpdate.
    pub this_update: i64,
    /// nextUpdate.
    pub next_update: i64,
    /// Entries on it.
    pub entries: i64,
    /// DER.
    pub der: Vec<u8>,
}

/// Stores a CRL unless a newer one (higher number) is already stored, as
/// happens when two replicas publish at once.
pub async fn store_crl(store: &Store, c: &CrlRecord) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO crls (issuer, number, this_update, next_update, entries, der) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (issuer) DO UPDATE SET number = excluded.number, this_update = excluded.this_update, \
         next_update = excluded.next_update, entries = excluded.entries, der = excluded.der \
         WHERE crls.number < excluded.number",
    )
    .bind(&c.issuer)
    .bind(c.number)
    .bind(c.this_update)
    .bind(c.next_update)
    .bind(c.entries)
    .bind(&c.der)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Reads an issuer's current CRL.
pub async fn crl(store: &Store, issuer: &str) -> Result<Option<CrlRecord>, StoreError> {
    let row = sqlx::query("SELECT issuer, number, this_update, next_update, entries, der FROM crls WHERE issuer = $1")
        .bind(issuer)
        .fetch_optional(store.pool())
        .await?;
    row.as_ref()
        .map(|r| {
            Ok(CrlRecord {
                issuer: r.try_get("issuer")?,
                number: r.try_get("number")?,
                this_update: r.try_get("this_update")?,
                next_update: r.try_get("next_update")?,
                entries: r.try_get("entries")?,
                der: r.try_get("der")?,
            })
        })
        .transpose()
}

impl fmt::Display for CertRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "certificate {} ({})", self.serial, self.subject)
    }
}

#[cfg(test)]
mod tests {
    use super::like_escape;

    #[test]
    fn revoked_entries_parse_or_are_refused() {
        let rows = super::parse_revoked("0A01:42:keyCompromise,0B:7:superseded").unwrap_or_default();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].serial.as_str(), rows[1].revoked_at, rows[1].reason.as_str()), ("0B", 7, "superseded"));
        assert!(super::parse_revoked("").is_ok_and(|r| r.is_empty()));
        assert!(super::parse_revoked("0A01:x:keyCompromise").is_err());
        assert!(super::parse_revoked(":1:unspecified").is_err());
    }

    #[test]
    fn like_patterns_are_literal() {
        assert_eq!(like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
