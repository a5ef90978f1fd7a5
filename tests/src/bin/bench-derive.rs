//! `bench-derive`: card-key derivation throughput, measured in one run on
//! the same module two ways:
//!
//! (a) a raw PKCS#11 loop (cryptoki, no service): per key, derive
//!     (ENCRYPT_DATA) + KCV (encrypt) + wrap (AES key wrap) + destroy;
//! (b) the same work through the running `kms` server over mTLS: single-card
//!     `DeriveCardKeys` calls (with p50/p99 latency) and the
//!     `DeriveCardKeysBatch` stream.
//!
//! It prints keys per second for each and the ratios (b)/(a), with the
//! machine's core count. Build everything in release mode first:
//!
//! ```sh
//! cargo build --release -p kms -p hsm-sim -p kms-tests
//! target/release/bench-derive            # both modules
//! target/release/bench-derive --module hsm-sim --seconds 5 --cards 20000
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use kms_proto::v1 as pb;
use kms_proto::v1::key_service_client::KeyServiceClient;
use kms_tests::DbKind;
use kms_tests::bench::{Common, RawArgs, module_name, percentile, raw_args, raw_in_child, service_config};
use kms_tests::server::Setup;
use kms_tests::token::{Module, SeedKey};

const ROLES: [&str; 11] = ["dcck", "dcmk", "damk", "dpk", "dlk", "dtk", "dulk", "duk", "dpuk", "drpk", "diak"];
const KEK_IMPORT: [u8; 16] = [0x11; 16];
const KEK_EXPORT: [u8; 16] = [0x22; 16];
const MK: [u8; 16] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54, 0x32, 0x10];

struct Args {
    common: Common,
    cards: u64,
    chunk: usize,
}

fn args() -> Args {
    let mut a = Args { common: Common::new(4), cards: 5000, chunk: 64 };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if a.common.take(&arg, &mut it) {
            continue;
        }
        match arg.as_str() {
            "--cards" => a.cards = it.next().and_then(|s| s.parse().ok()).expect("--cards N"),
            "--chunk" => a.chunk = it.next().and_then(|s| s.parse().ok()).expect("--chunk N"),
            "raw" => {
                raw_child(it.collect());
                std::process::exit(0);
            }
            "--help" | "-h" => {
                println!("bench-derive {} [--cards N] [--chunk N]", Common::USAGE);
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// The raw loop, run in a child process so the module's environment can be
/// set for it: prints keys/second.
fn raw_child(args: Vec<String>) {
    let RawArgs { ctx, slot, pin, seconds, threads } = raw_args(args);
    let keys = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (ctx, pin, keys) = (&ctx, &pin, keys.clone());
            scope.spawn(move || {
                let s = ctx.open_rw_session(slot).unwrap();
                let _ = s.login(UserType::User, Some(pin));
                let find = |l: &str| {
                    s.find_objects(&[
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::Label(l.as_bytes().to_vec()),
                    ])
                    .unwrap()[0]
                };
                let mk = find("bench/mk");
                let kek = find("bench/kek-export");
                let template = [
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::DES2),
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::Encrypt(true),
                    Attribute::Derive(false),
                ];
                let mut card = (t as u64) << 40;
                while Instant::now() < deadline {
                    card += 1;
                    let mut d = [0u8; 16];
                    d[..8].copy_from_slice(&card.to_be_bytes());
                    for i in 0..8 {
                        d[8 + i] = !d[i];
                    }
                    for _ in ROLES {
                        let params = cryptoki_sys::CK_KEY_DERIVATION_STRING_DATA { pData: d.as_mut_ptr(), ulLen: 16 };
                        let mech = Mechanism::VendorDefined(VendorDefinedMechanism::new(
                            kms::hsm::raw::mechanism_type(cryptoki_sys::CKM_DES3_ECB_ENCRYPT_DATA),
                            Some(&params),
                        ));
                        let k = s.derive_key(&mech, mk, &template).unwrap();
                        let kcv = s.encrypt(&Mechanism::Des3Ecb, k, &[0u8; 8]).unwrap();
                        assert!(kcv.len() >= 3);
                        let w = s.wrap_key(&Mechanism::AesKeyWrap, kek, k).unwrap();
                        assert!(w.len() >= 24);
                        s.destroy_object(k).unwrap();
                    }
                    keys.fetch_add(ROLES.len() as u64, Ordering::Relaxed);
                }
            });
        }
    });
    println!("{}", keys.load(Ordering::Relaxed) as f64 / seconds as f64);
}

struct Row {
    module: &'static str,
    raw: f64,
    single: f64,
    p50: Duration,
    p99: Duration,
    batch: f64,
}

async fn bench(module: Module, a: &Args) -> Row {
    let setup = Setup::with_module(module, DbKind::Sqlite).await;
    setup.token.seed(&[
        SeedKey {
            label: "bench/kek-import",
            key_type: "AES",
            value: &KEK_IMPORT,
            wrap: false,
            unwrap: true,
            derive: false,
        },
        SeedKey {
            label: "bench/kek-export",
            key_type: "AES",
            value: &KEK_EXPORT,
            wrap: true,
            unwrap: false,
            derive: false,
        },
        SeedKey { label: "bench/mk", key_type: "DES2", value: &MK, wrap: false, unwrap: false, derive: true },
    ]);

    // (a) raw loop, in a child process with the module's environment.
    let raw = raw_in_child(&setup, module, &a.common);

    // (b) the service, with as many HSM sessions as raw threads.
    let mut setup = setup;
    setup.extra_config = format!("[derive]\nbatch_chunk = {}\n", a.chunk);
    let config = service_config(&setup, &a.common);
    let server = kms_tests::server::Server::spawn(&config, setup.dir.path());
    let mut so = KeyServiceClient::new(setup.channel(&server, "security_officer").await);
    for (name, label, purpose) in [
        ("city/3301/kek/import", "bench/kek-import", pb::KeyPurpose::TransportImport),
        ("partner/factory-1/kek", "bench/kek-export", pb::KeyPurpose::TransportExport),
    ] {
        let kcv = {
            use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
            let k = if label.ends_with("import") { KEK_IMPORT } else { KEK_EXPORT };
            let c = aes::Aes128::new_from_slice(&k).unwrap();
            let mut b = GenericArray::from([0u8; 16]);
            c.encrypt_block(&mut b);
            hex::encode_upper(&b[..3])
        };
        so.import_key(pb::ImportKeyRequest {
            name: name.into(),
            algorithm: pb::KeyAlgorithm::Aes128 as i32,
            purpose: purpose as i32,
            source: Some(pb::import_key_request::Source::HsmObjectLabel(label.into())),
            expected_kcv: Some(pb::KeyCheckValue { method: "AES_ZERO".into(), value: kcv }),
        })
        .await
        .unwrap();
    }
    for role in ROLES {
        so.import_key(pb::ImportKeyRequest {
            name: format!("city/3301/mohurd/{role}"),
            algorithm: pb::KeyAlgorithm::Des2 as i32,
            purpose: pb::KeyPurpose::DerivationMaster as i32,
            source: Some(pb::import_key_request::Source::Wrapped(pb::WrappedKeyMaterial {
                transport_key: Some(pb::KeyRef { name: "city/3301/kek/import".into(), version: 0 }),
                format: 0,
                wrapped: aes_kw::KekAes128::from(KEK_IMPORT).wrap_vec(&MK).unwrap(),
            })),
            expected_kcv: Some(pb::KeyCheckValue { method: "DES3_ZERO".into(), value: "08D7B4".into() }),
        })
        .await
        .unwrap();
    }
    let transport = Some(pb::KeyRef { name: "partner/factory-1/kek".into(), version: 0 });
    let card = |n: u64| pb::CardIdentifiers { asn: format!("{n:016X}"), ..Default::default() };

    // Single-card calls from `threads` concurrent clients.
    let deadline = Instant::now() + Duration::from_secs(a.common.seconds);
    let mut tasks = Vec::new();
    for t in 0..a.common.threads {
        let mut partner = KeyServiceClient::new(setup.channel(&server, "issuance_partner").await);
        let transport = transport.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = (t as u64) << 40;
            while Instant::now() < deadline {
                n += 1;
                let started = Instant::now();
                let r = partner
                    .derive_card_keys(pb::DeriveCardKeysRequest {
                        profile: "mohurd-epurse".into(),
                        card: Some(card(n)),
                        transport_key: transport.clone(),
                        master_key_versions: Default::default(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                lat.push(started.elapsed());
                assert_eq!(r.keys.len(), ROLES.len());
            }
            lat
        }));
    }
    let started = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let single = (lat.len() * ROLES.len()) as f64 / started.elapsed().as_secs_f64();
    lat.sort();

    // One batch stream of `cards` cards.
    let mut partner = KeyServiceClient::new(setup.channel(&server, "issuance_partner").await);
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let total = a.cards;
    tokio::spawn(async move {
        tx.send(pb::DeriveBatchRequest {
            item: Some(pb::derive_batch_request::Item::Header(pb::DeriveBatchHeader {
                batch_id: "bench-1".into(),
                profile: "mohurd-epurse".into(),
                transport_key: transport,
                master_key_versions: Default::default(),
            })),
        })
        .await
        .unwrap();
        for n in 0..total {
            if tx
                .send(pb::DeriveBatchRequest {
                    item: Some(pb::derive_batch_request::Item::Card(card(0xB000_0000 + n))),
                })
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut stream =
        partner.derive_card_keys_batch(tokio_stream::wrappers::ReceiverStream::new(rx)).await.unwrap().into_inner();
    let mut done = 0u64;
    while let Some(r) = stream.message().await.unwrap() {
        assert!(matches!(r.result, Some(pb::derive_batch_response::Result::Keys(_))));
        done += 1;
    }
    assert_eq!(done, total);
    let batch = (done * ROLES.len() as u64) as f64 / started.elapsed().as_secs_f64();
    drop(server);
    Row { module: module_name(module), raw, single, p50: percentile(&lat, 0.50), p99: percentile(&lat, 0.99), batch }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "bench-derive: profile mohurd-epurse (11 DES2 keys per card), {} HSM threads/sessions, {cores} cores",
        a.common.threads
    );
    println!(
        "per key: derive (CKM_DES3_ECB_ENCRYPT_DATA) + KCV + AES key wrap + destroy; service: mTLS gRPC, SQLite, audit"
    );
    println!();
    println!("| module | raw loop keys/s | single calls keys/s | ratio | p50 | p99 | batch stream keys/s | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for m in &a.common.modules {
        let r = bench(*m, &a).await;
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {:.0} | {:.2} |",
            r.module,
            r.raw,
            r.single,
            r.single / r.raw,
            r.p50.as_secs_f64() * 1000.0,
            r.p99.as_secs_f64() * 1000.0,
            r.batch,
            r.batch / r.raw
        );
    }
}
