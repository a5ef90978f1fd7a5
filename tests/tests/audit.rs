//! The audit log end to end (issue #9): auditors query it with filters and
//! paging, export ranges as JSON lines, and verify it; the service signs
//! checkpoints of its head with a key in the token. Tampering done directly
//! in the database (SQLite and PostgreSQL) is reported with its position by
//! `VerifyAudit` and by `kms audit verify`'s exit status: an edited record,
//! a removed one, two swapped, a chain rewritten with recomputed hashes, a
//! forged checkpoint, and a tail cut off after a checkpoint with the head
//! row rewound (caught through the database's checkpoints, and through a
//! checkpoint the auditor kept once those are deleted too).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kms::audit::checkpoint::{self, Checkpoint};
use kms::audit::{self, AuditEvent, AuditRecord, Outcome};
use kms::config::DatabaseConfig;
use kms::grpc::admin_audit::record_from_pb;
use kms::store::Store;
use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_client::AdminServiceClient;
use kms_tests::server::{Server, Setup, kms_bin};
use kms_tests::{ALL_DBS, DbKind};
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

type Admin = AdminServiceClient<Channel>;

async fn store(setup: &Setup) -> Store {
    Store::connect(&DatabaseConfig::for_url(&setup.db.url)).await.unwrap()
}

async fn admin(setup: &Setup, server: &Server, role: &str) -> Admin {
    AdminServiceClient::new(setup.channel(server, role).await)
}

/// A setup whose replicas sign a checkpoint every `secs` seconds.
async fn setup_with_checkpoints(kind: DbKind, secs: u64) -> Setup {
    let mut setup = Setup::new(kind).await;
    setup.extra_config = format!("\n[audit]\ncheckpoint_interval_secs = {secs}\n");
    setup
}

fn event(i: usize) -> AuditEvent {
    AuditEvent {
        principal: format!("partner-{}", i % 3),
        role: "issuance_partner".into(),
        tenant: format!("tenant-{}", i % 2),
        action: if i.is_multiple_of(4) { "keys.DeriveCardKeys".into() } else { "keys.GetKey".into() },
        resource: "Kms::CardProfile::\"mohurd-epurse\"".into(),
        outcome: if i.is_multiple_of(5) { Outcome::Denied } else { Outcome::Success },
        reason: if i.is_multiple_of(5) { "no permitting policy".into() } else { String::new() },
        details: serde_json::json!({
            "batch_id": format!("B-{i:04}"),
            "kcv": { "method": "DES3_ZERO", "value": "08D7B4" },
        }),
    }
}

/// Appends `n` records the way the service does (the database is shared
/// with the running server).
async fn seed(store: &Store, n: usize) {
    for i in 0..n {
        audit::record(store, &event(i)).await.unwrap();
    }
}

async fn all_records(store: &Store) -> Vec<AuditRecord> {
    let (head, _) = audit::head(store).await.unwrap();
    audit::read_range(store, 1, head).await.unwrap()
}

/// Follows `QueryAudit` pages to the end; checks each page's size.
async fn query_all(admin: &mut Admin, req: pb::QueryAuditRequest) -> Vec<AuditRecord> {
    let size = if req.page_size == 0 { 100 } else { req.page_size as usize };
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .query_audit(pb::QueryAuditRequest { page_token: token.clone(), ..req.clone() })
            .await
            .unwrap()
            .into_inner();
        assert!(page.records.len() <= size);
        if !page.next_page_token.is_empty() {
            assert_eq!(page.records.len(), size, "only the last page may be short");
        }
        out.extend(page.records.into_iter().map(record_from_pb));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

fn seqs(records: &[AuditRecord]) -> Vec<i64> {
    records.iter().map(|r| r.seq).collect()
}

async fn query_code(admin: &mut Admin, req: pb::QueryAuditRequest) -> Code {
    admin.query_audit(req).await.err().map_or(Code::Ok, |s| s.code())
}

/// Runs `kms audit ...` as one client certificate.
struct Cli {
    args: Vec<String>,
}

impl Cli {
    fn new(setup: &Setup, server: &Server, role: &str) -> Cli {
        let c = setup.pki.client(&format!("{role}-cli"), Some(role), Some("city-3301"));
        let p = |p: &Path| p.display().to_string();
        Cli {
            args: vec![
                "--endpoint".into(),
                format!("https://127.0.0.1:{}", server.grpc_port),
                "--ca".into(),
                p(&setup.pki.ca_pem),
                "--cert".into(),
                p(&c.cert),
                "--key".into(),
                p(&c.key),
            ],
        }
    }

    fn run(&self, command: &[&str]) -> Output {
        Command::new(kms_bin())
            .arg("audit")
            .args(command.iter().take(1))
            .args(&self.args)
            .args(command.iter().skip(1))
            .env_remove("KMS_PROFILE")
            .stdin(Stdio::null())
            .output()
            .expect("run kms")
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Waits (at most 30 s) until a checkpoint covers `seq`.
async fn wait_for_checkpoint(store: &Store, seq: i64) -> Checkpoint {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = checkpoint::newest(store).await.unwrap()
            && c.seq >= seq
        {
            return c;
        }
        assert!(Instant::now() < deadline, "no checkpoint reached seq {seq} within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_with_filters_and_paging_on_both_databases() {
    for kind in ALL_DBS {
        let setup = Setup::new(kind).await;
        let server = setup.start();
        let store = store(&setup).await;
        seed(&store, 30).await;
        let stored = all_records(&store).await;
        assert_eq!(stored.len(), 30, "{kind:?}");
        let mut auditor = admin(&setup, &server, "auditor").await;

        // Everything, in pages of 7 (the last one short), and in one default page.
        let all = query_all(&mut auditor, pb::QueryAuditRequest { page_size: 7, ..Default::default() }).await;
        assert_eq!(all, stored, "{kind:?}");
        assert_eq!(query_all(&mut auditor, pb::QueryAuditRequest::default()).await, stored);

        // Filters, alone and together, paged by 2.
        let expect =
            |f: &dyn Fn(&AuditRecord) -> bool| seqs(&stored.iter().filter(|r| f(r)).cloned().collect::<Vec<_>>());
        let q = |principal: &str, tenant: &str, action: &str, outcome: &str| pb::QueryAuditRequest {
            principal: principal.into(),
            tenant: tenant.into(),
            action: action.into(),
            outcome: outcome.into(),
            page_size: 2,
            ..Default::default()
        };
        let got = query_all(&mut auditor, q("partner-1", "", "", "")).await;
        assert_eq!(seqs(&got), expect(&|r| r.principal == "partner-1"), "{kind:?}");
        let got = query_all(&mut auditor, q("", "tenant-0", "keys.DeriveCardKeys", "")).await;
        assert_eq!(seqs(&got), expect(&|r| r.tenant == "tenant-0" && r.action == "keys.DeriveCardKeys"));
        let got = query_all(&mut auditor, q("", "", "", "denied")).await;
        assert_eq!(seqs(&got), expect(&|r| r.outcome == "denied"));
        assert!(got.iter().all(|r| r.reason == "no permitting policy"));
        let got = query_all(&mut auditor, q("partner-2", "tenant-1", "keys.GetKey", "success")).await;
        assert_eq!(
            seqs(&got),
            expect(&|r| r.principal == "partner-2"
                && r.tenant == "tenant-1"
                && r.action == "keys.GetKey"
                && r.outcome == "success")
        );

        // Sequence and time ranges, inclusive.
        let got = query_all(
            &mut auditor,
            pb::QueryAuditRequest { from_seq: 5, to_seq: 9, page_size: 2, ..Default::default() },
        )
        .await;
        assert_eq!(seqs(&got), vec![5, 6, 7, 8, 9]);
        let (t0, t1) = (stored[9].ts_ms, stored[19].ts_ms);
        let got = query_all(
            &mut auditor,
            pb::QueryAuditRequest { from_time_ms: t0, to_time_ms: t1, page_size: 3, ..Default::default() },
        )
        .await;
        assert_eq!(seqs(&got), expect(&|r| r.ts_ms >= t0 && r.ts_ms <= t1));
        assert!(got.len() >= 11);
        // A time range without records is an empty answer, not an error.
        let far = stored[29].ts_ms + 86_400_000;
        let got = query_all(&mut auditor, pb::QueryAuditRequest { from_time_ms: far, ..Default::default() }).await;
        assert!(got.is_empty());

        // Bad input: a clear error, nothing changed.
        for (req, code, needle) in [
            (pb::QueryAuditRequest { page_size: 1001, ..Default::default() }, Code::InvalidArgument, "page_size"),
            (
                pb::QueryAuditRequest { page_token: "zz".into(), ..Default::default() },
                Code::InvalidArgument,
                "page_token",
            ),
            (pb::QueryAuditRequest { outcome: "bogus".into(), ..Default::default() }, Code::InvalidArgument, "outcome"),
            (
                pb::QueryAuditRequest { from_seq: 10, to_seq: 5, ..Default::default() },
                Code::InvalidArgument,
                "from_seq",
            ),
            (pb::QueryAuditRequest { from_time_ms: -5, ..Default::default() }, Code::InvalidArgument, "from_time_ms"),
            (pb::QueryAuditRequest { from_seq: 31, ..Default::default() }, Code::NotFound, "ends at seq 30"),
            (pb::QueryAuditRequest { from_seq: 1000, to_seq: 2000, ..Default::default() }, Code::NotFound, "1000"),
        ] {
            let status = auditor.query_audit(req.clone()).await.unwrap_err();
            assert_eq!(status.code(), code, "{req:?}: {status:?}");
            assert!(status.message().contains(needle), "{req:?}: {}", status.message());
        }
        assert_eq!(audit::count(&store).await.unwrap(), 30, "{kind:?}: a refused query changed the log");

        // The CLI follows the pages and prints the stored fields as JSON.
        let cli = Cli::new(&setup, &server, "auditor");
        let out = cli.run(&["query", "--principal", "partner-0", "--outcome", "success", "--page-size", "2", "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let want: Vec<Value> = stored
            .iter()
            .filter(|r| r.principal == "partner-0" && r.outcome == "success")
            .map(|r| serde_json::to_value(r).unwrap())
            .collect();
        assert_eq!(lines, want);
        let out = cli.run(&["query", "--from-seq", "28"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 3, "{}", text(&out.stdout));
        let out = cli.run(&["query", "--from-seq", "31"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("NotFound"), "{}", text(&out.stderr));
        let out = cli.run(&["query", "--since", "last tuesday"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_writes_the_stored_records_and_refuses_a_range_beyond_the_log() {
    for kind in ALL_DBS {
        let setup = setup_with_checkpoints(kind, 1).await;
        let server = setup.start();
        let store = store(&setup).await;
        seed(&store, 20).await;
        let stored = all_records(&store).await;
        let mut auditor = admin(&setup, &server, "auditor").await;

        // gRPC: a range, as stored.
        let mut stream = auditor
            .export_audit(pb::ExportAuditRequest { from_seq: 3, to_seq: 12, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(r) = stream.message().await.unwrap() {
            got.push(record_from_pb(r));
        }
        assert_eq!(got, stored[2..12].to_vec(), "{kind:?}");
        // The export is itself recorded.
        let last = all_records(&store).await.pop().unwrap();
        assert_eq!((last.seq, last.action.as_str(), last.outcome.as_str()), (21, "admin.ReadAudit", "success"));
        assert_eq!(last.principal, "auditor-client");
        let details: Value = serde_json::from_str(&last.details).unwrap();
        assert_eq!(
            (details["call"].as_str(), details["from_seq"].as_i64(), details["to_seq"].as_i64()),
            (Some("ExportAudit"), Some(3), Some(12))
        );

        // The CLI: an open range ends where the log ended when it started
        // (its own record is not in it); JSON lines equal the stored records.
        let dir = setup.dir.path();
        let out_file = dir.join("export.jsonl");
        let cp_file = dir.join("export.checkpoint.json");
        wait_for_checkpoint(&store, 21).await;
        let cli = Cli::new(&setup, &server, "auditor");
        let out = cli.run(&["export", "--from-seq", "2", "--output", p(&out_file), "--checkpoint-out", p(&cp_file)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("20 records (seq 2-21)"), "{}", text(&out.stderr));
        let lines: Vec<Value> =
            std::fs::read_to_string(&out_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let now = all_records(&store).await;
        assert_eq!(now.len(), 22);
        let want: Vec<Value> = now[1..21].iter().map(|r| serde_json::to_value(r).unwrap()).collect();
        assert_eq!(lines, want, "{kind:?}");
        // Each line carries what is needed to re-check the chain outside.
        let first: AuditRecord = record_from_value(&lines[0]);
        assert_eq!(first.compute_hash(), first.hash);
        let saved = Checkpoint::from_json(&std::fs::read_to_string(&cp_file).unwrap()).unwrap();
        assert!(saved.seq >= 21);

        // A time range through the CLI, to standard output.
        let (t0, t1) = (now[4].ts_ms, now[8].ts_ms);
        let since = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t0) * 1_000_000).unwrap();
        let until = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(t1) * 1_000_000).unwrap();
        let rfc = |t: time::OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
        let out = cli.run(&["export", "--since", &rfc(since), "--until", &rfc(until)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let got: Vec<i64> = text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["seq"].as_i64().unwrap())
            .collect();
        let want: Vec<i64> = now.iter().filter(|r| r.ts_ms >= t0 && r.ts_ms <= t1).map(|r| r.seq).collect();
        assert_eq!(got, want);

        // A range that does not exist: a clear error, nothing written or recorded.
        let before = audit::count(&store).await.unwrap();
        let status =
            auditor.export_audit(pb::ExportAuditRequest { from_seq: 9999, ..Default::default() }).await.err().unwrap();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("9999"), "{}", status.message());
        let status = auditor
            .export_audit(pb::ExportAuditRequest { from_seq: 9, to_seq: 3, ..Default::default() })
            .await
            .err()
            .unwrap();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let missing = dir.join("missing.jsonl");
        let out = cli.run(&["export", "--from-seq", "9999", "--output", p(&missing)]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains("NotFound"), "{}", text(&out.stderr));
        assert!(!missing.exists(), "a refused export left a file");
        assert_eq!(audit::count(&store).await.unwrap(), before, "{kind:?}: a refused export changed the log");
    }
}

fn record_from_value(v: &Value) -> AuditRecord {
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    AuditRecord {
        seq: v["seq"].as_i64().unwrap(),
        ts_ms: v["ts_ms"].as_i64().unwrap(),
        principal: s("principal"),
        role: s("role"),
        tenant: s("tenant"),
        action: s("action"),
        resource: s("resource"),
        outcome: s("outcome"),
        reason: s("reason"),
        details: s("details"),
        prev_hash: s("prev_hash"),
        hash: s("hash"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_the_log_and_a_partner_is_denied_and_audited() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let store = store(&setup).await;
    seed(&store, 3).await;
    for role in ["auditor", "security_officer"] {
        let mut a = admin(&setup, &server, role).await;
        assert_eq!(query_code(&mut a, pb::QueryAuditRequest::default()).await, Code::Ok, "{role}");
        assert!(a.verify_audit(pb::VerifyAuditRequest::default()).await.unwrap().into_inner().ok, "{role}");
    }
    let mut partner = admin(&setup, &server, "issuance_partner").await;
    let before = audit::count(&store).await.unwrap();
    assert_eq!(query_code(&mut partner, pb::QueryAuditRequest::default()).await, Code::PermissionDenied);
    let verify = partner.verify_audit(pb::VerifyAuditRequest::default()).await.err().map(|s| s.code());
    assert_eq!(verify, Some(Code::PermissionDenied));
    let export = partner.export_audit(pb::ExportAuditRequest::default()).await.err().map(|s| s.code());
    assert_eq!(export, Some(Code::PermissionDenied));
    let mut operator = admin(&setup, &server, "operator").await;
    assert_eq!(query_code(&mut operator, pb::QueryAuditRequest::default()).await, Code::PermissionDenied);
    let cli = Cli::new(&setup, &server, "issuance_partner");
    let out = cli.run(&["verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("PermissionDenied"), "{}", text(&out.stderr));

    // Every denial is in the log, with its reason; the auditor finds them.
    assert_eq!(audit::count(&store).await.unwrap(), before + 5);
    let mut auditor = admin(&setup, &server, "auditor").await;
    let denials = query_all(
        &mut auditor,
        pb::QueryAuditRequest {
            principal: "issuance_partner-client".into(),
            outcome: "denied".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(denials.len(), 3, "{denials:?}");
    for d in &denials {
        assert_eq!(
            (d.action.as_str(), d.role.as_str(), d.tenant.as_str()),
            ("admin.ReadAudit", "issuance_partner", "city-3301")
        );
        assert_eq!(d.resource, "Kms::Service::\"AdminService\"");
        assert!(!d.reason.is_empty());
        assert!(d.details.contains("certificate_serial"));
    }
    let cli_denial = query_all(
        &mut auditor,
        pb::QueryAuditRequest { principal: "issuance_partner-cli".into(), ..Default::default() },
    )
    .await;
    assert_eq!(cli_denial.len(), 1);
    assert_eq!(cli_denial[0].outcome, "denied");
}

/// The fault `VerifyAudit` and `kms audit verify --json` report: kind and
/// position, the same through both.
async fn fault(auditor: &mut Admin, cli: &Cli, external: Option<&Path>) -> Option<(String, u64)> {
    let checkpoint = external.map(|f| {
        let c = Checkpoint::from_json(&std::fs::read_to_string(f).unwrap()).unwrap();
        kms::grpc::admin_audit::checkpoint_to_pb(&c)
    });
    let v = auditor.verify_audit(pb::VerifyAuditRequest { checkpoint }).await.unwrap().into_inner();
    let mut args = vec!["verify", "--json"];
    if let Some(f) = external {
        args.extend(["--checkpoint", p(f)]);
    }
    let out = cli.run(&args);
    let report: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap_or_else(|e| {
        panic!("kms audit verify printed no JSON ({e}): {}\n{}", text(&out.stdout), text(&out.stderr))
    });
    if v.ok {
        assert_eq!(out.status.code(), Some(0), "{report}");
        assert_eq!(report["ok"], true);
        assert!(v.fault.is_empty() && v.fault_kind.is_empty() && v.fault_seq == 0);
        return None;
    }
    assert_eq!(out.status.code(), Some(3), "{report}\n{}", text(&out.stderr));
    assert_eq!(report["ok"], false);
    assert_eq!(report["fault"]["kind"].as_str(), Some(v.fault_kind.as_str()));
    assert_eq!(report["fault"]["seq"].as_u64(), Some(v.fault_seq));
    assert!(v.fault.contains(&v.fault_seq.to_string()), "the message names the position: {}", v.fault);
    // The human form names the position too.
    let mut human = vec!["verify"];
    if let Some(f) = external {
        human.extend(["--checkpoint", p(f)]);
    }
    let out = cli.run(&human);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stdout).contains(&format!("FAULT at seq {}", v.fault_seq)), "{}", text(&out.stdout));
    Some((v.fault_kind, v.fault_seq))
}

async fn exec(store: &Store, statements: &[String]) {
    let mut tx = store.begin().await.unwrap();
    for sql in statements {
        sqlx::query(sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn insert_record(r: &AuditRecord) -> String {
    format!(
        "INSERT INTO audit_log (seq, ts_ms, principal, role, tenant, action, resource, outcome, reason, details, prev_hash, hash) \
         VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {})",
        r.seq,
        r.ts_ms,
        quote(&r.principal),
        quote(&r.role),
        quote(&r.tenant),
        quote(&r.action),
        quote(&r.resource),
        quote(&r.outcome),
        quote(&r.reason),
        quote(&r.details),
        quote(&r.prev_hash),
        quote(&r.hash)
    )
}

fn insert_checkpoint(c: &Checkpoint) -> String {
    format!(
        "INSERT INTO audit_checkpoints (seq, head_hash, ts_ms, algorithm, key_label, key_fingerprint, public_key, signature) \
         VALUES ({}, {}, {}, {}, {}, {}, {}, {})",
        c.seq,
        quote(&c.head_hash),
        c.time_ms,
        quote(&c.algorithm),
        quote(&c.key_label),
        quote(&c.key_fingerprint),
        quote(&c.public_key),
        quote(&c.signature)
    )
}

/// Puts the log, head and checkpoints back as they were, in one transaction.
async fn restore(store: &Store, records: &[AuditRecord], checkpoints: &[Checkpoint]) {
    let mut sql = vec!["DELETE FROM audit_log".to_owned(), "DELETE FROM audit_checkpoints".to_owned()];
    sql.extend(records.iter().map(insert_record));
    sql.extend(checkpoints.iter().map(insert_checkpoint));
    let last = records.last().unwrap();
    sql.push(format!("UPDATE audit_head SET seq = {}, head_hash = {} WHERE id = 1", last.seq, quote(&last.hash)));
    exec(store, &sql).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected_and_located_on_both_databases() {
    for kind in ALL_DBS {
        let setup = setup_with_checkpoints(kind, 1).await;
        let server = setup.start();
        let store = store(&setup).await;
        seed(&store, 12).await;
        let mut partner = admin(&setup, &server, "issuance_partner").await;
        assert_eq!(query_code(&mut partner, pb::QueryAuditRequest::default()).await, Code::PermissionDenied);
        let (head, _) = audit::head(&store).await.unwrap();
        assert_eq!(head, 13);
        let newest = wait_for_checkpoint(&store, head).await;
        assert_eq!(newest.seq, head, "{kind:?}");

        let mut auditor = admin(&setup, &server, "auditor").await;
        let cli = Cli::new(&setup, &server, "auditor");
        let v = auditor.verify_audit(pb::VerifyAuditRequest::default()).await.unwrap().into_inner();
        assert!(v.ok, "{kind:?}: {}", v.fault);
        assert_eq!((v.records, v.last_checkpoint_seq), (13, 13));
        assert!(v.checkpoints >= 1);
        assert_eq!(v.checkpoint_key_fingerprint, newest.key_fingerprint);
        assert_eq!(fault(&mut auditor, &cli, None).await, None, "{kind:?}");
        // The auditor keeps a checkpoint outside the service, pinned to the key.
        let saved = setup.dir.path().join("kept.checkpoint.json");
        let out = cli.run(&["checkpoint", "--output", p(&saved)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(Checkpoint::from_json(&std::fs::read_to_string(&saved).unwrap()).unwrap().seq, head);
        let out = cli.run(&["verify", "--checkpoint", p(&saved), "--key-fingerprint", &newest.key_fingerprint]);
        assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
        assert!(text(&out.stdout).contains("holds"), "{}", text(&out.stdout));
        let out = cli.run(&["verify", "--key-fingerprint", &"ab".repeat(32)]);
        assert_eq!(out.status.code(), Some(3), "a pinned key that is not the service's is a fault");

        let original = all_records(&store).await;
        let checkpoints = checkpoint::page(&store, i64::MIN, None, 1000).await.unwrap();

        // An edited record.
        exec(&store, &["UPDATE audit_log SET details = '{\"kcv\":\"000000\"}' WHERE seq = 3".into()]).await;
        assert_eq!(fault(&mut auditor, &cli, None).await, Some(("edited".into(), 3)), "{kind:?}");
        restore(&store, &original, &checkpoints).await;
        assert_eq!(fault(&mut auditor, &cli, None).await, None, "{kind:?}: restored");

        // A record removed from the middle.
        exec(&store, &["DELETE FROM audit_log WHERE seq = 6".into()]).await;
        assert_eq!(fault(&mut auditor, &cli, None).await, Some(("missing".into(), 6)), "{kind:?}");
        restore(&store, &original, &checkpoints).await;

        // Two records swapped (their sequence numbers exchanged).
        exec(
            &store,
            &[
                "UPDATE audit_log SET seq = -7 WHERE seq = 7".into(),
                "UPDATE audit_log SET seq = 7 WHERE seq = 8".into(),
                "UPDATE audit_log SET seq = 8 WHERE seq = -7".into(),
            ],
        )
        .await;
        assert_eq!(fault(&mut auditor, &cli, None).await, Some(("edited".into(), 7)), "{kind:?}");
        restore(&store, &original, &checkpoints).await;

        // A record edited and every hash after it recomputed, head included:
        // the chain holds, the signed checkpoint does not.
        let mut rewritten = original.clone();
        rewritten[3].reason = "rewritten".into();
        let mut prev = rewritten[2].hash.clone();
        let mut sql = Vec::new();
        for r in rewritten.iter_mut().skip(3) {
            r.prev_hash = prev.clone();
            r.hash = r.compute_hash();
            prev = r.hash.clone();
            sql.push(format!(
                "UPDATE audit_log SET reason = {}, prev_hash = {}, hash = {} WHERE seq = {}",
                quote(&r.reason),
                quote(&r.prev_hash),
                quote(&r.hash),
                r.seq
            ));
        }
        sql.push(format!("UPDATE audit_head SET head_hash = {} WHERE id = 1", quote(&prev)));
        exec(&store, &sql).await;
        assert_eq!(fault(&mut auditor, &cli, None).await, Some(("checkpoint_mismatch".into(), 13)), "{kind:?}");
        restore(&store, &original, &checkpoints).await;

        // A forged checkpoint (its signature altered).
        let mut sig = newest.signature.clone();
        let flipped = if sig.starts_with('0') { "1" } else { "0" };
        sig.replace_range(0..1, flipped);
        exec(&store, &[format!("UPDATE audit_checkpoints SET signature = {} WHERE seq = 13", quote(&sig))]).await;
        assert_eq!(fault(&mut auditor, &cli, None).await, Some(("checkpoint_signature".into(), 13)), "{kind:?}");
        restore(&store, &original, &checkpoints).await;
        assert_eq!(fault(&mut auditor, &cli, None).await, None, "{kind:?}: restored");

        // The tail cut off after the checkpoint, the head row rewound to match.
        exec(
            &store,
            &[
                "DELETE FROM audit_log WHERE seq > 10".into(),
                format!("UPDATE audit_head SET seq = 10, head_hash = {} WHERE id = 1", quote(&original[9].hash)),
            ],
        )
        .await;
        assert_eq!(fault(&mut auditor, &cli, None).await, Some(("truncated".into(), 11)), "{kind:?}");
        // The service refuses to sign the rewound head.
        assert!(server.log_contains("no checkpoint signed"), "{}", server.log_text());
        // The checkpoints deleted too: the database alone no longer shows it
        // (a documented limit), the auditor's kept checkpoint does.
        exec(&store, &["DELETE FROM audit_checkpoints".into()]).await;
        assert_eq!(fault(&mut auditor, &cli, None).await, None, "{kind:?}");
        assert_eq!(fault(&mut auditor, &cli, Some(&saved)).await, Some(("truncated".into(), 11)), "{kind:?}");
        // A kept checkpoint that was edited is refused before it is sent.
        let edited = setup.dir.path().join("edited.checkpoint.json");
        let text_cp = std::fs::read_to_string(&saved).unwrap().replace("\"seq\":13", "\"seq\":9");
        std::fs::write(&edited, text_cp).unwrap();
        let out = cli.run(&["verify", "--checkpoint", p(&edited)]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains("does not verify"), "{}", text(&out.stderr));
        restore(&store, &original, &checkpoints).await;
        assert_eq!(fault(&mut auditor, &cli, Some(&saved)).await, None, "{kind:?}: restored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_sharing_a_database_sign_with_one_key() {
    // why: the replicas start one after the other: SoftHSM sometimes shows
    // no token to a process that initialises while another one does.
    for kind in ALL_DBS {
        let setup = setup_with_checkpoints(kind, 1).await;
        let store = store(&setup).await;
        // Records before either replica starts: both have a head to sign
        // from their first round on.
        seed(&store, 5).await;
        let config = setup.write_config();
        let first = Server::spawn(&config, setup.dir.path());
        let second = Server::spawn(&config, setup.dir.path());
        let head = audit::head(&store).await.unwrap().0;
        let c = wait_for_checkpoint(&store, head).await;
        // Both replicas sign the heads that follow.
        for round in 1..=3 {
            seed(&store, 2).await;
            wait_for_checkpoint(&store, head + 2 * round).await;
        }
        let all = checkpoint::page(&store, i64::MIN, None, 1000).await.unwrap();
        assert!(all.iter().all(|x| x.key_fingerprint == c.key_fingerprint), "{kind:?}: two keys: {all:?}");
        for server in [&first, &second] {
            let mut auditor = admin(&setup, server, "auditor").await;
            let v = auditor.verify_audit(pb::VerifyAuditRequest::default()).await.unwrap().into_inner();
            assert!(v.ok, "{kind:?}: {}", v.fault);
            assert_eq!(v.checkpoint_key_fingerprint, c.key_fingerprint);
        }
        let generated = [&first, &second]
            .iter()
            .filter(|s| s.log_text().contains("audit checkpoint key generated in the token"))
            .count();
        assert_eq!(generated, 1, "{kind:?}: exactly one replica generates the key");
        let signing = [&first, &second].iter().filter(|s| s.log_text().contains("audit checkpoint signed")).count();
        assert!(signing >= 1, "{kind:?}");
    }
}
