//! Storage and the audit chain on both databases: appends, concurrent
//! appends, and detection of edited, removed, reordered and truncated
//! records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kms::audit::{self, AuditEvent, ChainFault, Outcome};
use kms::config::DatabaseConfig;
use kms::store::Store;
use kms_tests::{ALL_DBS, DbKind, TestDb};

/// The newest migration in kms/migrations.
const LATEST_SCHEMA: i64 = 2;

async fn store(kind: DbKind, dir: &std::path::Path) -> (TestDb, Store) {
    let db = TestDb::new(kind, dir).await;
    let cfg = DatabaseConfig::for_url(&db.url);
    let store = Store::connect(&cfg).await.unwrap();
    (db, store)
}

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        principal: format!("p{i}"),
        role: "operator".into(),
        tenant: "city-3301".into(),
        action: "admin.GetStatus".into(),
        resource: "Kms::Service::\"AdminService\"".into(),
        outcome: if i.is_multiple_of(2) { Outcome::Success } else { Outcome::Denied },
        reason: String::new(),
        details: serde_json::json!({ "i": i, "kcv": { "method": "DES3_ZERO", "value": "08D7B4" } }),
    }
}

async fn filled(kind: DbKind, dir: &std::path::Path, n: usize) -> (TestDb, Store) {
    let (db, store) = store(kind, dir).await;
    for i in 0..n {
        audit::record(&store, &event(i)).await.unwrap();
    }
    (db, store)
}

async fn exec(store: &Store, sql: &str) {
    sqlx::query(sql).execute(store.pool()).await.unwrap();
}

#[tokio::test]
async fn migrations_are_idempotent_and_chain_starts_clean() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (db, store) = store(kind, dir.path()).await;
        assert_eq!(store.schema_version().await.unwrap(), LATEST_SCHEMA, "{kind:?}");
        // Connecting again (a restart, or a second replica) applies nothing new.
        let cfg = DatabaseConfig::for_url(&db.url);
        let again = Store::connect(&cfg).await.unwrap();
        assert_eq!(again.schema_version().await.unwrap(), LATEST_SCHEMA);
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!((report.records, report.fault), (0, None), "{kind:?}");
    }
}

#[tokio::test]
async fn intact_chain_verifies() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = filled(kind, dir.path(), 5).await;
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!(report.records, 5, "{kind:?}");
        assert_eq!(report.fault, None, "{kind:?}");
        let recs = audit::read_range(&store, 1, 5).await.unwrap();
        assert_eq!(recs[0].prev_hash, audit::GENESIS_HASH);
        assert_eq!(recs[4].hash, report.head_hash);
        assert!(recs[1].details.contains("08D7B4"));
    }
}

#[tokio::test]
async fn edited_record_is_reported_at_its_position() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = filled(kind, dir.path(), 5).await;
        exec(&store, "UPDATE audit_log SET outcome = 'success' WHERE seq = 2").await;
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!(report.fault, Some(ChainFault::Edited { seq: 2 }), "{kind:?}");
        assert_eq!(report.records, 1);
    }
}

#[tokio::test]
async fn edited_record_with_recomputed_hash_breaks_the_next_link() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = filled(kind, dir.path(), 5).await;
        let mut r = audit::read_range(&store, 3, 3).await.unwrap().remove(0);
        r.reason = "rewritten".into();
        r.hash = r.compute_hash();
        sqlx::query("UPDATE audit_log SET reason = $1, hash = $2 WHERE seq = 3")
            .bind(&r.reason)
            .bind(&r.hash)
            .execute(store.pool())
            .await
            .unwrap();
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!(report.fault, Some(ChainFault::BrokenLink { seq: 4 }), "{kind:?}");
    }
}

#[tokio::test]
async fn removed_record_is_reported() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = filled(kind, dir.path(), 5).await;
        exec(&store, "DELETE FROM audit_log WHERE seq = 3").await;
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!(report.fault, Some(ChainFault::Missing { expected: 3, found: 4 }), "{kind:?}");
    }
}

#[tokio::test]
async fn reordered_records_are_reported() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = filled(kind, dir.path(), 5).await;
        // Swap the sequence numbers of records 2 and 3 (contents and hashes move with them).
        exec(&store, "UPDATE audit_log SET seq = -2 WHERE seq = 2").await;
        exec(&store, "UPDATE audit_log SET seq = 2 WHERE seq = 3").await;
        exec(&store, "UPDATE audit_log SET seq = 3 WHERE seq = -2").await;
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!(report.fault, Some(ChainFault::Edited { seq: 2 }), "{kind:?}");
    }
}

#[tokio::test]
async fn truncated_tail_is_reported() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = filled(kind, dir.path(), 5).await;
        exec(&store, "DELETE FROM audit_log WHERE seq = 5").await;
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!(report.fault, Some(ChainFault::HeadMismatch { head_seq: 5, last_seq: 4 }), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_keep_one_contiguous_chain() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = store(kind, dir.path()).await;
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move { audit::record(&s, &event(i)).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!((report.records, report.fault), (40, None), "{kind:?}");
    }
}

#[tokio::test]
async fn a_failed_transaction_leaves_no_record() {
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = filled(kind, dir.path(), 2).await;
        let mut tx = store.begin().await.unwrap();
        audit::append(&mut tx, &event(9)).await.unwrap();
        tx.rollback().await.unwrap();
        let report = audit::verify_chain(&store).await.unwrap();
        assert_eq!((report.records, report.fault), (2, None), "{kind:?}");
        audit::record(&store, &event(10)).await.unwrap();
        assert_eq!(audit::verify_chain(&store).await.unwrap().records, 3);
    }
}
