//! `bench-certs`: certificate issuance and CRL publication, measured in one
//! run on the same module:
//!
//! (a) a raw PKCS#11 loop (cryptoki, no service) of the issuing CA's
//!     signature: ECDSA P-256 over a SHA-256 digest (`CKM_ECDSA`);
//! (b) `IssueServerCertificate` through the running `kms` server over mTLS
//!     (CSR parsing and checks, profile approval, one HSM signature, the
//!     record and its audit entry in the database);
//!
//! and it prints both, their ratio, and the time a revocation takes to
//! publish a new signed CRL when the issuer already has 10,000 and 100,000
//! revoked certificates on record. Build in release mode first:
//!
//! ```sh
//! cargo build --release -p kms -p hsm-sim -p kms-tests
//! target/release/bench-certs                 # both modules
//! target/release/bench-certs --module hsm-sim --seconds 5
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use kms::certs::{CertRecord, CertStatus};
use kms::config::DatabaseConfig;
use kms::store::Store;
use kms_proto::v1 as pb;
use kms_tests::DbKind;
use kms_tests::bench::{Common, RawArgs, module_name, percentile, raw_args, raw_in_child, service_config};
use kms_tests::ca::{ISSUER, certs_client, stand_up_ca};
use kms_tests::server::{Server, Setup};
use kms_tests::token::Module;

struct Args {
    common: Common,
    clients: usize,
    crl_sizes: Vec<u64>,
}

fn args() -> Args {
    let mut a = Args { common: Common::new(5), clients: 4, crl_sizes: vec![10_000, 100_000] };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if a.common.take(&arg, &mut it) {
            continue;
        }
        match arg.as_str() {
            "--clients" => a.clients = it.next().and_then(|s| s.parse().ok()).expect("--clients N"),
            "--crl-sizes" => {
                a.crl_sizes = it
                    .next()
                    .expect("--crl-sizes N,N")
                    .split(',')
                    .map(|s| s.parse().expect("--crl-sizes N,N"))
                    .collect()
            }
            "raw" => {
                raw_child(it.collect());
                std::process::exit(0);
            }
            "--help" | "-h" => {
                println!("bench-certs {} [--clients N] [--crl-sizes 10000,100000]", Common::USAGE);
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The raw loop in a child process (with the module's environment): an EC
/// P-256 key pair in the token, then ECDSA signatures of SHA-256 digests on
/// `threads` sessions; prints signatures/second.
fn raw_child(args: Vec<String>) {
    let RawArgs { ctx, slot, pin, seconds, threads } = raw_args(args);
    let setup = ctx.open_rw_session(slot).unwrap();
    setup.login(UserType::User, Some(&pin)).unwrap();
    let p256 = vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let (_, private) = setup
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[Attribute::Token(true), Attribute::EcParams(p256), Attribute::Verify(true)],
            &[Attribute::Token(true), Attribute::Private(true), Attribute::Sensitive(true), Attribute::Sign(true)],
        )
        .unwrap();
    let signatures = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (ctx, pin, signatures) = (&ctx, &pin, signatures.clone());
            scope.spawn(move || {
                let s = ctx.open_rw_session(slot).unwrap();
                let _ = s.login(UserType::User, Some(pin));
                let mut n = (t as u64) << 40;
                while Instant::now() < deadline {
                    n += 1;
                    let mut digest = [0u8; 32];
                    digest[..8].copy_from_slice(&n.to_be_bytes());
                    let sig = s.sign(&Mechanism::Ecdsa, private, &digest).unwrap();
                    assert_eq!(sig.len(), 64);
                    signatures.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    println!("{}", signatures.load(Ordering::Relaxed) as f64 / seconds as f64);
}

fn csr_der(i: usize) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![format!("host-{i}.city.example")]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("host-{i}.city.example"));
    params.serialize_request(&key).unwrap().der().to_vec()
}

struct Row {
    module: &'static str,
    raw: f64,
    service: f64,
    p50: Duration,
    crl: Vec<(u64, Duration, usize)>,
}

async fn bench(module: Module, a: &Args) -> Row {
    let setup = Setup::with_module(module, DbKind::Sqlite).await;
    // (a) the raw signature loop.
    let raw = raw_in_child(&setup, module, &a.common);

    // (b) the service.
    let config = service_config(&setup, &a.common);
    let server = Server::spawn(&config, setup.dir.path());
    stand_up_ca(&setup, &server, "ec-p256").await;
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new((0..64).map(csr_der).collect());
    let deadline = Instant::now() + Duration::from_secs(a.common.seconds);
    let mut tasks = Vec::new();
    for t in 0..a.clients {
        let mut op = certs_client(&setup, &server, "operator").await;
        let csrs = csrs.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut serials = Vec::new();
            let mut i = t;
            while Instant::now() < deadline {
                i += 1;
                let started = Instant::now();
                let r = op
                    .issue_server_certificate(pb::IssueServerCertificateRequest {
                        csr: csrs[i % csrs.len()].clone(),
                        profile: "server-tls".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                lat.push(started.elapsed());
                serials.push(r.certificate.unwrap().serial);
            }
            (lat, serials)
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    let mut serials = Vec::new();
    for t in tasks {
        let (l, s) = t.await.unwrap();
        lat.extend(l);
        serials.extend(s);
    }
    let service = lat.len() as f64 / started.elapsed().as_secs_f64();
    lat.sort();

    // CRLs: revoked certificates on record, then one revocation that
    // publishes the new CRL (number, entries, HSM signature, store).
    let store = Store::connect(&DatabaseConfig::for_url(&setup.db.url)).await.unwrap();
    let mut op = certs_client(&setup, &server, "operator").await;
    let mut on_record = 0u64;
    let mut crl = Vec::new();
    for (round, &size) in a.crl_sizes.iter().enumerate() {
        let mut tx = store.begin().await.unwrap();
        while on_record < size {
            on_record += 1;
            let r = CertRecord {
                serial: format!("7E{on_record:030X}"),
                issuer: ISSUER.into(),
                profile: "reader-sign".into(),
                subject: format!("CN=R{on_record:010}"),
                status: CertStatus::Revoked,
                not_before: 0,
                not_after: i64::MAX / 2,
                der: Vec::new(),
                fingerprint: String::new(),
                key_type: "ec-p256".into(),
                role: "reader".into(),
                tenant: "city-3301".into(),
                paired_serial: String::new(),
                revoked_at: 1_700_000_000,
                revocation_reason: "keyCompromise".into(),
                requested_by: "bench".into(),
                created_at: 0,
            };
            kms::certs::insert_cert(&mut tx, &r).await.unwrap();
        }
        tx.commit().await.unwrap();
        let serial = serials[round].clone();
        let started = Instant::now();
        op.revoke_certificate(pb::RevokeCertificateRequest { serial, reason: pb::RevocationReason::Superseded as i32 })
            .await
            .unwrap();
        let took = started.elapsed();
        // why: past a few MB a CRL no longer fits a gRPC message
        // (server.max_message_bytes); relying parties fetch it over HTTP.
        let der = kms_tests::http_get_bytes(server.ops_port, &format!("/crl/{ISSUER}.crl"));
        crl.push((size + round as u64 + 1, took, der.len()));
    }
    drop(server);
    Row { module: module_name(module), raw, service, p50: percentile(&lat, 0.5), crl }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "bench-certs: {cores} cores; {} s per measurement; raw loop on {} threads; service with {} sessions and {} clients; SQLite synchronous={}",
        a.common.seconds, a.common.threads, a.common.threads, a.clients, a.common.sqlite_sync
    );
    let mut rows = Vec::new();
    for &m in &a.common.modules {
        rows.push(bench(m, &a).await);
    }
    println!();
    println!("| module | raw ECDSA P-256 signs/s | certificates issued/s (p50) | issued / raw |");
    println!("|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} ({:.1} ms) | {:.2} |",
            r.module,
            r.raw,
            r.service,
            r.p50.as_secs_f64() * 1e3,
            r.service / r.raw
        );
    }
    println!();
    println!("| module | revoked entries | revoke + publish CRL | CRL size |");
    println!("|---|---|---|---|");
    for r in &rows {
        for (entries, took, size) in &r.crl {
            println!(
                "| {} | {entries} | {:.0} ms | {:.1} MiB |",
                r.module,
                took.as_secs_f64() * 1e3,
                *size as f64 / 1048576.0
            );
        }
    }
}
