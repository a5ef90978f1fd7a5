//! Storage and the audit chain on both databases: appends, concurrent
//! appends, and detection of edited, removed, reordered and truncated
//! records.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kms::audit::{self, AuditEvent, ChainFault, Outcome};
use kms::config::DatabaseConfig;
use kms::store::Store;
use kms_tests::{ALL_DBS, DbKind, TestDb};

use kms_tests::LATEST_SCHEMA;

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

/// Checkpoints signed with a key made here (the service signs in the HSM;
/// the verification is the same), on both databases.
mod checkpoints {
    use kms::audit::checkpoint::{self, ALGORITHM, Checkpoint, FILE_FORMAT, TrustedKey};
    use kms::audit::verify::{self, AuditFault, Segment};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;

    struct Signer {
        pair: EcdsaKeyPair,
        spki: Vec<u8>,
        key: TrustedKey,
    }

    fn signer() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        spki.extend_from_slice(pair.public_key().as_ref());
        let key = TrustedKey::from_spki(&spki).unwrap();
        Signer { pair, spki, key }
    }

    impl Signer {
        fn sign(&self, seq: i64, hash: &str) -> Checkpoint {
            let sig = self.pair.sign(&SystemRandom::new(), &checkpoint::statement(seq, hash, 1000 + seq)).unwrap();
            Checkpoint {
                format: FILE_FORMAT.into(),
                seq,
                head_hash: hash.into(),
                time_ms: 1000 + seq,
                algorithm: ALGORITHM.into(),
                key_label: "kms/audit-checkpoint".into(),
                key_fingerprint: checkpoint::fingerprint(&self.spki),
                public_key: hex::encode(&self.spki),
                signature: hex::encode(sig.as_ref()),
            }
        }
    }

    /// Ten records with checkpoints at 4 and 10.
    async fn checkpointed(kind: DbKind, dir: &std::path::Path, s: &Signer) -> (TestDb, Store, Vec<audit::AuditRecord>) {
        let (db, store) = filled(kind, dir, 10).await;
        let records = audit::read_range(&store, 1, 10).await.unwrap();
        for seq in [4, 10] {
            assert!(checkpoint::insert(&store, &s.sign(seq, &records[seq as usize - 1].hash)).await.unwrap());
        }
        // The same head signed again (another replica) is stored once.
        assert!(!checkpoint::insert(&store, &s.sign(10, &records[9].hash)).await.unwrap());
        (db, store, records)
    }

    #[tokio::test]
    async fn checkpoints_pin_the_chain_and_its_tail() {
        let s = signer();
        for kind in ALL_DBS {
            let dir = tempfile::tempdir().unwrap();
            let (_db, store, records) = checkpointed(kind, dir.path(), &s).await;
            let v = verify::verify(&store, Some(&s.key), None).await.unwrap();
            assert_eq!((v.records, v.checkpoints, v.fault.clone()), (10, 2, None), "{kind:?}");
            assert_eq!(v.newest_checkpoint.map(|c| c.seq), Some(10));
            // Without the trusted key, or with another one, nothing vouches for them.
            let v = verify::verify(&store, None, None).await.unwrap();
            assert!(matches!(v.fault, Some(AuditFault::CheckpointKey { seq: 4, .. })), "{:?}", v.fault);
            let v = verify::verify(&store, Some(&signer().key), None).await.unwrap();
            assert!(matches!(v.fault, Some(AuditFault::CheckpointKey { seq: 4, .. })), "{:?}", v.fault);
            // The segment after the first checkpoint links up to the head.
            let seg = verify::segment(&store, 5, &records[3].hash, 10).await.unwrap();
            assert_eq!(seg, Segment::Intact(records[9].hash.clone()));

            // Rewritten from record 6 with recomputed hashes, head included.
            let mut prev = records[4].hash.clone();
            for r in records.iter().skip(5) {
                let mut r = r.clone();
                r.reason = "rewritten".into();
                r.prev_hash = prev.clone();
                r.hash = r.compute_hash();
                prev = r.hash.clone();
                sqlx::query("UPDATE audit_log SET reason = $1, prev_hash = $2, hash = $3 WHERE seq = $4")
                    .bind(&r.reason)
                    .bind(&r.prev_hash)
                    .bind(&r.hash)
                    .bind(r.seq)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
            sqlx::query("UPDATE audit_head SET head_hash = $1 WHERE id = 1")
                .bind(&prev)
                .execute(store.pool())
                .await
                .unwrap();
            assert_eq!(audit::verify_chain(&store).await.unwrap().fault, None, "the chain alone cannot tell");
            let v = verify::verify(&store, Some(&s.key), None).await.unwrap();
            assert_eq!(
                v.fault,
                Some(AuditFault::CheckpointMismatch { seq: 10, since: 4, external: false }),
                "{kind:?}"
            );
            assert_eq!(v.fault.map(|f| f.position()), Some(10));
        }
    }

    #[tokio::test]
    async fn a_cut_tail_is_found_through_the_database_or_a_kept_checkpoint() {
        let s = signer();
        for kind in ALL_DBS {
            let dir = tempfile::tempdir().unwrap();
            let (_db, store, records) = checkpointed(kind, dir.path(), &s).await;
            let kept = s.sign(10, &records[9].hash);
            exec(&store, "DELETE FROM audit_log WHERE seq > 7").await;
            sqlx::query("UPDATE audit_head SET seq = 7, head_hash = $1 WHERE id = 1")
                .bind(&records[6].hash)
                .execute(store.pool())
                .await
                .unwrap();
            assert_eq!(audit::verify_chain(&store).await.unwrap().fault, None, "the chain alone cannot tell");
            let v = verify::verify(&store, Some(&s.key), None).await.unwrap();
            let cut = AuditFault::Truncated { last_seq: 7, checkpoint_seq: 10, external: false };
            assert_eq!(v.fault, Some(cut), "{kind:?}");
            assert_eq!(v.fault.map(|f| f.position()), Some(8));

            exec(&store, "DELETE FROM audit_checkpoints").await;
            let v = verify::verify(&store, Some(&s.key), None).await.unwrap();
            assert_eq!(v.fault, None, "{kind:?}: the database alone no longer shows it");
            let v = verify::verify(&store, Some(&s.key), Some(&kept)).await.unwrap();
            let cut = AuditFault::Truncated { last_seq: 7, checkpoint_seq: 10, external: true };
            assert_eq!((v.fault, v.external_ok), (Some(cut), Some(false)), "{kind:?}");
            // A kept checkpoint inside the log that still matches holds.
            let inside = s.sign(5, &records[4].hash);
            let v = verify::verify(&store, Some(&s.key), Some(&inside)).await.unwrap();
            assert_eq!((v.fault, v.external_ok), (None, Some(true)), "{kind:?}");

            // A forged checkpoint beyond the head.
            let mut forged = s.sign(50, &records[0].hash);
            forged.time_ms += 1;
            assert!(checkpoint::insert(&store, &forged).await.unwrap());
            let v = verify::verify(&store, Some(&s.key), None).await.unwrap();
            assert_eq!(v.fault, Some(AuditFault::CheckpointSignature { seq: 50, external: false }), "{kind:?}");
        }
    }
}

/// Verification and export across page boundaries (1000 records a page
/// for verification, 500 for export), on both databases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_logs_verify_and_export_across_pages() {
    use kms::audit::checkpoint::{self, ALGORITHM, Checkpoint, FILE_FORMAT, TrustedKey};
    use kms::audit::query::{self, AuditRange};
    use kms::audit::verify::{self, AuditFault};
    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let mut spki = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
    spki.extend_from_slice(pair.public_key().as_ref());
    let key = TrustedKey::from_spki(&spki).unwrap();
    let sign = |seq: i64, hash: &str| Checkpoint {
        format: FILE_FORMAT.into(),
        seq,
        head_hash: hash.into(),
        time_ms: 7,
        algorithm: ALGORITHM.into(),
        key_label: "kms/audit-checkpoint".into(),
        key_fingerprint: checkpoint::fingerprint(&spki),
        public_key: hex::encode(&spki),
        signature: hex::encode(pair.sign(&rng, &checkpoint::statement(seq, hash, 7)).unwrap().as_ref()),
    };
    for kind in ALL_DBS {
        let dir = tempfile::tempdir().unwrap();
        let (_db, store) = store(kind, dir.path()).await;
        let mut tx = store.begin().await.unwrap();
        for i in 0..2500 {
            audit::append(&mut tx, &event(i)).await.unwrap();
        }
        tx.commit().await.unwrap();
        let records = audit::read_range(&store, 1, 2500).await.unwrap();
        for seq in [999i64, 1000, 1001, 2000, 2500] {
            checkpoint::insert(&store, &sign(seq, &records[seq as usize - 1].hash)).await.unwrap();
        }
        let v = verify::verify(&store, Some(&key), None).await.unwrap();
        assert_eq!((v.records, v.checkpoints, v.fault), (2500, 5, None), "{kind:?}");

        // Everything, and a range straddling export pages, in order.
        for (range, want) in [
            (AuditRange::default(), 1..=2500i64),
            (AuditRange { from_seq: Some(499), to_seq: Some(1001), ..Default::default() }, 499..=1001),
        ] {
            let range = query::export_range(&store, range).await.unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::channel(8);
            tokio::spawn(query::export(store.clone(), range, tx));
            let mut got = Vec::new();
            while let Some(r) = rx.recv().await {
                got.push(r.unwrap().seq);
            }
            assert_eq!(got, want.collect::<Vec<_>>(), "{kind:?}");
        }
        let beyond = query::export_range(&store, AuditRange { from_seq: Some(2501), ..Default::default() }).await;
        assert!(matches!(beyond, Err(kms::error::Error::NotFound { .. })), "{kind:?}");

        // An edit in the second page is found there, before any checkpoint after it.
        exec(&store, "UPDATE audit_log SET reason = 'x' WHERE seq = 1500").await;
        let v = verify::verify(&store, Some(&key), None).await.unwrap();
        assert_eq!((v.records, v.fault), (1499, Some(AuditFault::Edited { seq: 1500 })), "{kind:?}");
    }
}
