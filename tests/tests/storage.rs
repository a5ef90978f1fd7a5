//! Storage and the audit chain on both databases: appends, concurrent
//! appends, and detection of edited, removed, reordered and truncated
//! records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kms::audit::{self, AuditEvent, ChainFault, Outcome};
use kms::config::DatabaseConfig;
use kms::store::Store;
use kms_tests::{ALL_DBS, DbKind, TestDb};

/// The newest migration in kms/migrations.
const LATEST_SCHEMA: i64 = 4;

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

#[tokio::test]
async fn ca_records_on_both_databases() {
    use kms::certs::{self, CertFilter, CertRecord, CertStatus, CrlRecord, IssuerRecord, IssuerState, TokenRecord};
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = store(kind, dir.path()).await;
        let issuer = IssuerRecord {
            name: "city-3301".into(),
            state: IssuerState::Pending,
            key_type: "ec-p256".into(),
            subject: "CN=Issuing CA".into(),
            module: "m".into(),
            object_id: "00".into(),
            public_key: vec![1, 2, 3],
            certificate: Vec::new(),
            chain: Vec::new(),
            not_before: 0,
            not_after: 0,
            crl_number: 0,
            created_by: "so".into(),
            created_at: 1,
            updated_at: 1,
        };
        let mut tx = store.begin().await.unwrap();
        certs::insert_issuer(&mut tx, &issuer).await.unwrap();
        assert!(certs::activate_issuer(&mut tx, "city-3301", "CN=Issuing CA", &[9], &[8], (1, 2)).await.unwrap());
        assert!(!certs::activate_issuer(&mut tx, "city-3301", "CN=x", &[9], &[8], (1, 2)).await.unwrap());
        tx.commit().await.unwrap();
        let got = certs::issuer(&store, "city-3301").await.unwrap().unwrap();
        assert_eq!((got.state, got.certificate, got.chain), (IssuerState::Active, vec![9], vec![8]));
        // CRL numbers come from the database, one after the other.
        assert_eq!(certs::next_crl_number(&store, "city-3301").await.unwrap(), 1);
        assert_eq!(certs::next_crl_number(&store, "city-3301").await.unwrap(), 2);
        assert!(certs::next_crl_number(&store, "nobody").await.is_err());

        let cert = |serial: &str, subject: &str, not_after: i64| CertRecord {
            serial: serial.into(),
            issuer: "city-3301".into(),
            profile: "reader-sign".into(),
            subject: subject.into(),
            status: CertStatus::Valid,
            not_before: 0,
            not_after,
            der: vec![0x30, 0x00],
            fingerprint: "F".into(),
            key_type: "ec-p256".into(),
            role: "reader".into(),
            tenant: "city-3301".into(),
            paired_serial: String::new(),
            revoked_at: 0,
            revocation_reason: String::new(),
            requested_by: "token:1".into(),
            created_at: 0,
        };
        let mut tx = store.begin().await.unwrap();
        certs::insert_cert(&mut tx, &cert("0A01", "CN=R_1", 100)).await.unwrap();
        certs::insert_cert(&mut tx, &cert("0A02", "CN=RX1", 200)).await.unwrap();
        certs::insert_cert(&mut tx, &cert("0B01", "CN=R%2", 5_000_000_000)).await.unwrap();
        assert!(certs::insert_cert(&mut tx, &cert("0A01", "CN=dup", 1)).await.is_err());
        tx.rollback().await.unwrap();
        let mut tx = store.begin().await.unwrap();
        certs::insert_cert(&mut tx, &cert("0A01", "CN=R_1", 100)).await.unwrap();
        certs::insert_cert(&mut tx, &cert("0A02", "CN=RX1", 200)).await.unwrap();
        certs::insert_cert(&mut tx, &cert("0B01", "CN=R%2", 5_000_000_000)).await.unwrap();
        tx.commit().await.unwrap();
        let list = |f: CertFilter, after: &'static str, limit: u32| {
            let store = &store;
            async move {
                certs::list_certs(store, &f, after, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|c| c.serial)
                    .collect::<Vec<_>>()
            }
        };
        // `_` and `%` in a substring filter are literal, not wildcards.
        let contains = |s: &str| CertFilter { subject: s.into(), subject_contains: true, ..Default::default() };
        assert_eq!(list(contains("R_"), "", 10).await, vec!["0A01"]);
        assert_eq!(list(contains("R%"), "", 10).await, vec!["0B01"]);
        assert_eq!(
            list(CertFilter { serial_prefix: "0A".into(), ..Default::default() }, "", 10).await,
            vec!["0A01", "0A02"]
        );
        assert_eq!(list(CertFilter::default(), "0A01", 1).await, vec!["0A02"]);
        assert_eq!(list(CertFilter { expires_before: 150, ..Default::default() }, "", 10).await, vec!["0A01"]);

        // Revocation is one-way; CRLs list revoked, unexpired certificates.
        let mut tx = store.begin().await.unwrap();
        assert!(certs::revoke_cert(&mut tx, "0B01", 42, "keyCompromise").await.unwrap());
        assert!(!certs::revoke_cert(&mut tx, "0B01", 43, "superseded").await.unwrap());
        assert!(certs::revoke_cert(&mut tx, "0A01", 44, "superseded").await.unwrap());
        tx.commit().await.unwrap();
        let revoked = certs::revoked_for_crl(&store, "city-3301", 1000).await.unwrap();
        assert_eq!(
            revoked.iter().map(|r| (r.serial.as_str(), r.reason.as_str())).collect::<Vec<_>>(),
            vec![("0B01", "keyCompromise")]
        );
        let revoked_filter = CertFilter { status: Some(CertStatus::Revoked), ..Default::default() };
        assert_eq!(list(revoked_filter, "", 10).await, vec!["0A01", "0B01"]);
        assert_eq!(certs::last_expiry(&store, "city-3301").await.unwrap(), 5_000_000_000);
        // What replicas refresh their revocation view from: everything, then
        // only what is at or after the newest time they have seen.
        let mut all = certs::revoked_since(&store, 0).await.unwrap();
        all.sort();
        assert_eq!(all, vec![("0A01".to_owned(), 44), ("0B01".to_owned(), 42)]);
        assert_eq!(certs::revoked_since(&store, 44).await.unwrap(), vec![("0A01".to_owned(), 44)]);
        assert!(certs::revoked_since(&store, 45).await.unwrap().is_empty());

        // A token is consumed once, and never after it expired.
        let token = |id: &str, expires_at: i64| TokenRecord {
            id: id.into(),
            secret_hash: "H".into(),
            reader_serial: "R1".into(),
            profiles: "reader-sign".into(),
            issuer: "city-3301".into(),
            tenant: "city-3301".into(),
            expires_at,
            used_at: 0,
            used_for: String::new(),
            created_by: "op".into(),
            created_at: 0,
        };
        let mut tx = store.begin().await.unwrap();
        certs::insert_token(&mut tx, &token("t1", 10_000)).await.unwrap();
        certs::insert_token(&mut tx, &token("t2", 10)).await.unwrap();
        assert!(certs::consume_token(&mut tx, "t1", 100, "0A02").await.unwrap());
        assert!(!certs::consume_token(&mut tx, "t1", 101, "0A02").await.unwrap());
        assert!(!certs::consume_token(&mut tx, "t2", 100, "0A02").await.unwrap());
        tx.commit().await.unwrap();
        assert_eq!(certs::token(&store, "t1").await.unwrap().unwrap().used_for, "0A02");

        // An older CRL never replaces a newer one (two replicas publishing).
        let crl = |number: i64| CrlRecord {
            issuer: "city-3301".into(),
            number,
            this_update: number,
            next_update: number + 1,
            entries: 0,
            der: vec![number as u8],
        };
        certs::store_crl(&store, &crl(5)).await.unwrap();
        certs::store_crl(&store, &crl(4)).await.unwrap();
        assert_eq!(certs::crl(&store, "city-3301").await.unwrap().unwrap().number, 5);
        certs::store_crl(&store, &crl(6)).await.unwrap();
        assert_eq!(certs::crl(&store, "city-3301").await.unwrap().unwrap().der, vec![6]);
        let mut tx = store.begin().await.unwrap();
        certs::insert_escrow(&mut tx, "0A02", "city/3301/ca/escrow@v1", "CKM_AES_KEY_WRAP_PAD", &[1; 40])
            .await
            .unwrap();
        tx.commit().await.unwrap();
        assert!(certs::has_escrow(&store, "0A02").await.unwrap());
    }
}
