//! Reading the log for auditors: filtered queries in sequence order with
//! keyset paging, and exports of a range read in bounded pages, so an
//! export of millions of records holds one page in memory at a time.
//!
//! A sequence range that starts after the last record is refused with
//! `NOT_FOUND` (a clear error, nothing is read or written); a time range
//! without records is an empty answer.

use tokio::sync::mpsc;

use super::{AuditRecord, Outcome, RECORD_COLUMNS, row_to_record};
use crate::error::{Error, Result};
use crate::store::{Store, StoreError};

/// Records in a `QueryAudit` page when the request names no size.
pub const DEFAULT_PAGE: u32 = 100;
/// The largest `QueryAudit` page.
pub const MAX_PAGE: u32 = 1000;
/// Records an export reads per database round trip.
pub const EXPORT_PAGE: u32 = 500;
/// The longest text filter (principal, tenant, action).
pub const MAX_FILTER_BYTES: usize = 256;

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.to_owned(), reason: reason.into() }
}

/// A range of the log, inclusive at both ends; `None` is an open end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditRange {
    /// First sequence number.
    pub from_seq: Option<i64>,
    /// Last sequence number.
    pub to_seq: Option<i64>,
    /// Earliest record time, Unix milliseconds.
    pub from_ms: Option<i64>,
    /// Latest record time, Unix milliseconds.
    pub to_ms: Option<i64>,
}

impl AuditRange {
    /// The range of a request's `from_seq`, `to_seq`, `from_time_ms` and
    /// `to_time_ms`, where 0 is an open end. A start after its end, a
    /// negative time or a sequence number beyond `i64` is refused, naming
    /// the field.
    pub fn from_wire(from_seq: u64, to_seq: u64, from_ms: i64, to_ms: i64) -> Result<AuditRange> {
        let seq = |field: &str, v: u64| -> Result<Option<i64>> {
            match v {
                0 => Ok(None),
                v => i64::try_from(v)
                    .map(Some)
                    .map_err(|_| invalid(field, format!("{v} is beyond the largest sequence number"))),
            }
        };
        let time = |field: &str, v: i64| -> Result<Option<i64>> {
            match v {
                0 => Ok(None),
                v if v < 0 => Err(invalid(field, format!("{v} is negative (Unix milliseconds expected)"))),
                v => Ok(Some(v)),
            }
        };
        let range = AuditRange {
            from_seq: seq("from_seq", from_seq)?,
            to_seq: seq("to_seq", to_seq)?,
            from_ms: time("from_time_ms", from_ms)?,
            to_ms: time("to_time_ms", to_ms)?,
        };
        if let (Some(a), Some(b)) = (range.from_seq, range.to_seq)
            && a > b
        {
            return Err(invalid("from_seq", format!("{a} is after to_seq {b}")));
        }
        if let (Some(a), Some(b)) = (range.from_ms, range.to_ms)
            && a > b
        {
            return Err(invalid("from_time_ms", format!("{a} is after to_time_ms {b}")));
        }
        Ok(range)
    }
}

/// What `QueryAudit` selects; `None` matches all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Sequence and time range.
    pub range: AuditRange,
    /// Exact principal name.
    pub principal: Option<String>,
    /// Exact tenant.
    pub tenant: Option<String>,
    /// Exact action, e.g. `keys.CreateKey`.
    pub action: Option<String>,
    /// Outcome.
    pub outcome: Option<Outcome>,
}

impl AuditFilter {
    /// A text filter from a request field: empty matches all; at most
    /// [`MAX_FILTER_BYTES`], no control characters.
    pub fn text(field: &str, value: String) -> Result<Option<String>> {
        if value.is_empty() {
            return Ok(None);
        }
        if value.len() > MAX_FILTER_BYTES {
            return Err(invalid(field, format!("at most {MAX_FILTER_BYTES} bytes")));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(field, "control characters are not allowed"));
        }
        Ok(Some(value))
    }

    /// An outcome filter from a request field: empty matches all.
    pub fn outcome(field: &str, value: &str) -> Result<Option<Outcome>> {
        if value.is_empty() {
            return Ok(None);
        }
        Outcome::parse(value)
            .map(Some)
            .ok_or_else(|| invalid(field, format!("{value:?} is not success, denied, unauthenticated or failed")))
    }
}

/// Where the next page starts: after this sequence number. On the wire it
/// is opaque (hex of a version byte and the number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageToken(i64);

const TOKEN_VERSION: u8 = 1;

impl PageToken {
    /// The token of a page that ended at `seq`.
    pub fn after_seq(seq: i64) -> PageToken {
        PageToken(seq)
    }

    /// The last sequence number of the previous page.
    pub fn seq(self) -> i64 {
        self.0
    }

    /// The wire form.
    pub fn encode(self) -> String {
        let mut bytes = vec![TOKEN_VERSION];
        bytes.extend_from_slice(&self.0.to_be_bytes());
        hex::encode(bytes)
    }

    /// Parses a request's `field`: empty is the first page; anything that is
    /// not a token this service made is refused.
    pub fn parse(field: &str, text: &str) -> Result<Option<PageToken>> {
        if text.is_empty() {
            return Ok(None);
        }
        let bad = || invalid(field, "not a page token from a previous response");
        let bytes = hex::decode(text).map_err(|_| bad())?;
        let [TOKEN_VERSION, rest @ ..] = bytes.as_slice() else {
            return Err(bad());
        };
        let seq = <[u8; 8]>::try_from(rest).map(i64::from_be_bytes).map_err(|_| bad())?;
        if seq < 1 {
            return Err(bad());
        }
        Ok(Some(PageToken(seq)))
    }
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// Records, in sequence order.
    pub records: Vec<AuditRecord>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageToken>,
}

/// Refuses a range that starts after the last record; returns the head's
/// sequence number.
async fn check_start(store: &Store, range: &AuditRange) -> Result<i64> {
    let (head, _) = super::head(store).await?;
    if let Some(from) = range.from_seq
        && from > head
    {
        return Err(Error::NotFound { what: format!("audit record {from} (the log ends at seq {head})") });
    }
    Ok(head)
}

/// `QueryAudit`: up to `limit` (1 to [`MAX_PAGE`]) records matching
/// `filter`, after `after`, in sequence order.
pub async fn query(store: &Store, filter: &AuditFilter, after: Option<PageToken>, limit: u32) -> Result<AuditPage> {
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(invalid("page_size", format!("must be 0-{MAX_PAGE}")));
    }
    check_start(store, &filter.range).await?;
    let start = after.map_or(0, PageToken::seq).max(filter.range.from_seq.map_or(0, |s| s - 1));
    let mut records = read_page(store, filter, start, limit + 1).await?;
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next = if more { records.last().map(|r| PageToken(r.seq)) } else { None };
    Ok(AuditPage { records, next })
}

/// Fixes the range of an export: refuses one that starts after the last
/// record, and ends it at the current head at the latest, so an export is a
/// snapshot (records appended while it runs, its own included, are not in
/// it).
pub async fn export_range(store: &Store, range: AuditRange) -> Result<AuditRange> {
    let head = check_start(store, &range).await?;
    Ok(AuditRange { to_seq: Some(range.to_seq.map_or(head, |t| t.min(head))), ..range })
}

/// Sends the records of `range` to `tx` in sequence order, reading
/// [`EXPORT_PAGE`] records at a time and waiting while the receiver is
/// full; stops when the receiver is gone. A database error is sent as the
/// last item.
pub async fn export(store: Store, range: AuditRange, tx: mpsc::Sender<Result<AuditRecord>>) {
    let filter = AuditFilter { range, ..Default::default() };
    let mut after = range.from_seq.map_or(0, |s| s - 1);
    loop {
        let page = match read_page(&store, &filter, after, EXPORT_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(Error::Store(e))).await;
                return;
            }
        };
        let last_page = page.len() < EXPORT_PAGE as usize;
        for record in page {
            after = record.seq;
            if tx.send(Ok(record)).await.is_err() {
                return;
            }
        }
        if last_page {
            return;
        }
    }
}

/// A bound value of [`read_page`]'s query.
enum Arg {
    Int(i64),
    Text(String),
}

/// Up to `limit` records matching `filter` with `seq > after`, in sequence
/// order.
async fn read_page(
    store: &Store,
    filter: &AuditFilter,
    after: i64,
    limit: u32,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut sql = format!("SELECT {RECORD_COLUMNS} FROM audit_log WHERE seq > $1");
    let mut args = vec![Arg::Int(after)];
    let mut and = |clause: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    };
    let r = &filter.range;
    if let Some(v) = r.to_seq {
        and("seq <=", Arg::Int(v));
    }
    if let Some(v) = r.from_ms {
        and("ts_ms >=", Arg::Int(v));
    }
    if let Some(v) = r.to_ms {
        and("ts_ms <=", Arg::Int(v));
    }
    if let Some(v) = &filter.principal {
        and("principal =", Arg::Text(v.clone()));
    }
    if let Some(v) = &filter.tenant {
        and("tenant =", Arg::Text(v.clone()));
    }
    if let Some(v) = &filter.action {
        and("action =", Arg::Text(v.clone()));
    }
    if let Some(v) = filter.outcome {
        and("outcome =", Arg::Text(v.as_str().to_owned()));
    }
    args.push(Arg::Int(i64::from(limit)));
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));
    let mut q = sqlx::query(&sql);
    for arg in args {
        q = match arg {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
        };
    }
    let rows = q.fetch_all(store.pool()).await?;
    rows.iter().map(row_to_record).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_strangers_are_refused() -> Result<()> {
        let t = PageToken::after_seq(1234);
        assert_eq!(PageToken::parse("page_token", &t.encode())?, Some(t));
        assert_eq!(PageToken::parse("page_token", "")?, None);
        for bad in
            ["zz", "00", "01", "0100000000000004d2ff", "020000000000000001", "010000000000000000", "01ffffffffffffffff"]
        {
            let e = PageToken::parse("page_token", bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("page_token"), "{bad}: {e}");
        }
        Ok(())
    }

    #[test]
    fn ranges_are_checked_field_by_field() -> Result<()> {
        assert_eq!(AuditRange::from_wire(0, 0, 0, 0)?, AuditRange::default());
        let r = AuditRange::from_wire(3, 7, 10, 20)?;
        assert_eq!((r.from_seq, r.to_seq, r.from_ms, r.to_ms), (Some(3), Some(7), Some(10), Some(20)));
        let err = |r: Result<AuditRange>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(AuditRange::from_wire(8, 7, 0, 0)).contains("from_seq"));
        assert!(err(AuditRange::from_wire(0, 0, 21, 20)).contains("from_time_ms"));
        assert!(err(AuditRange::from_wire(0, 0, -1, 0)).contains("from_time_ms"));
        assert!(err(AuditRange::from_wire(u64::MAX, 0, 0, 0)).contains("from_seq"));
        Ok(())
    }

    #[test]
    fn filters_are_checked() -> Result<()> {
        assert_eq!(AuditFilter::text("principal", String::new())?, None);
        assert!(AuditFilter::text("principal", "a".repeat(MAX_FILTER_BYTES + 1)).is_err());
        assert!(AuditFilter::text("tenant", "a\nb".into()).is_err());
        assert_eq!(AuditFilter::outcome("outcome", "denied")?, Some(Outcome::Denied));
        assert!(AuditFilter::outcome("outcome", "DENIED").is_err());
        Ok(())
    }
}
