//! Card-key diversification through the real server against SoftHSM:
//! known-answer tests against published vectors (../shared/VECTORS.md),
//! the catalogue life cycle, refusals, and production batches.
//!
//! Keys of known value are seeded into the token as a ceremony would, a
//! security officer adopts the transport keys and imports the master keys
//! wrapped under one; every derived key comes back wrapped, is unwrapped
//! here with an independent RFC 3394 implementation (RustCrypto aes-kw) and
//! compared with the vector, DES keys after normalising parity.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use kms::config::DatabaseConfig;
use kms_proto::v1 as pb;
use kms_proto::v1::key_service_client::KeyServiceClient;
use kms_tests::server::{Server, Setup};
use kms_tests::token::{Module, SeedKey};
use kms_tests::{ALL_DBS, DbKind};
use tonic::Code;
use tonic::transport::Channel;

const KEK_IMPORT: [u8; 16] = *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f";
const KEK_EXPORT: [u8; 16] = *b"\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f";
/// VECTORS.md: the PBOC / EMV test master key.
const MK: &str = "0123456789ABCDEFFEDCBA9876543210";
/// VECTORS.md: GlobalPlatformPro TestPlaintextKeys master key.
const GP_MK: &str = "404142434445464748494A4B4C4D4E4F";

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn aes_kcv(key: &[u8]) -> String {
    let c = aes::Aes128::new_from_slice(key).unwrap();
    let mut b = GenericArray::from([0u8; 16]);
    c.encrypt_block(&mut b);
    hex::encode_upper(&b[..3])
}

fn des3_kcv(key: &[u8]) -> String {
    let c = des::TdesEde2::new_from_slice(key).unwrap();
    let mut b = GenericArray::from([0u8; 8]);
    c.encrypt_block(&mut b);
    hex::encode_upper(&b[..3])
}

fn unparity(key: &[u8]) -> Vec<u8> {
    key.iter().map(|b| b & 0xFE).collect()
}

fn unwrap_export(wrapped: &[u8]) -> Vec<u8> {
    aes_kw::KekAes128::from(KEK_EXPORT).unwrap_vec(wrapped).expect("RFC 3394 unwrap with the export KEK")
}

fn kref(name: &str, version: u32) -> Option<pb::KeyRef> {
    Some(pb::KeyRef { name: name.into(), version })
}

struct Env {
    setup: Setup,
    server: Server,
    so: KeyServiceClient<Channel>,
    partner: KeyServiceClient<Channel>,
}

async fn env(kind: DbKind) -> Env {
    env_in(Module::from_env(), kind).await
}

async fn env_in(module: Module, kind: DbKind) -> Env {
    env_with(module, kind, "").await
}

/// An environment whose server configuration gets `extra_config`.
async fn env_with(module: Module, kind: DbKind, extra_config: &str) -> Env {
    env_full(module, kind, extra_config, false).await
}

/// As [`env_with`], and derivations need production plans when
/// `plans_required`.
async fn env_full(module: Module, kind: DbKind, extra_config: &str, plans_required: bool) -> Env {
    let mut setup = Setup::with_module(module, kind).await;
    setup.extra_config = extra_config.to_owned();
    setup.plans_required = plans_required;
    setup.token.seed(&[
        SeedKey {
            label: "ceremony/kek-import",
            key_type: "AES",
            value: &KEK_IMPORT,
            wrap: false,
            unwrap: true,
            derive: false,
        },
        SeedKey {
            label: "ceremony/kek-export",
            key_type: "AES",
            value: &KEK_EXPORT,
            wrap: true,
            unwrap: false,
            derive: false,
        },
    ]);
    let server = setup.start();
    let mut so = KeyServiceClient::new(setup.channel(&server, "security_officer").await);
    let partner = KeyServiceClient::new(setup.channel(&server, "issuance_partner").await);
    for (name, label, purpose, kek) in [
        ("city/3301/kek/import", "ceremony/kek-import", pb::KeyPurpose::TransportImport, KEK_IMPORT),
        ("partner/factory-1/kek", "ceremony/kek-export", pb::KeyPurpose::TransportExport, KEK_EXPORT),
    ] {
        let k = so
            .import_key(pb::ImportKeyRequest {
                name: name.into(),
                algorithm: pb::KeyAlgorithm::Aes128 as i32,
                purpose: purpose as i32,
                source: Some(pb::import_key_request::Source::HsmObjectLabel(label.into())),
                expected_kcv: Some(pb::KeyCheckValue { method: "AES_ZERO".into(), value: aes_kcv(&kek) }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(k.origin, "adopted");
    }
    Env { setup, server, so, partner }
}

async fn import_master(so: &mut KeyServiceClient<Channel>, name: &str, value: &[u8]) -> Result<pb::Key, tonic::Status> {
    import_master_as(so, name, value, pb::KeyAlgorithm::Des2, "DES3_ZERO", des3_kcv(value)).await
}

async fn import_master_as(
    so: &mut KeyServiceClient<Channel>,
    name: &str,
    value: &[u8],
    algorithm: pb::KeyAlgorithm,
    kcv_method: &str,
    kcv: String,
) -> Result<pb::Key, tonic::Status> {
    let wrapped = aes_kw::KekAes128::from(KEK_IMPORT).wrap_vec(value).unwrap();
    so.import_key(pb::ImportKeyRequest {
        name: name.into(),
        algorithm: algorithm as i32,
        purpose: pb::KeyPurpose::DerivationMaster as i32,
        source: Some(pb::import_key_request::Source::Wrapped(pb::WrappedKeyMaterial {
            transport_key: kref("city/3301/kek/import", 0),
            format: pb::WrapFormat::AesKeyWrap as i32,
            wrapped,
        })),
        expected_kcv: Some(pb::KeyCheckValue { method: kcv_method.into(), value: kcv }),
    })
    .await
    .map(|r| r.into_inner())
}

const MOHURD_ROLES: [&str; 11] = ["dcck", "dcmk", "damk", "dpk", "dlk", "dtk", "dulk", "duk", "dpuk", "drpk", "diak"];

async fn import_mohurd(so: &mut KeyServiceClient<Channel>) {
    for role in MOHURD_ROLES {
        import_master(so, &format!("city/3301/mohurd/{role}"), &h(MK)).await.unwrap();
    }
}

async fn derive(
    partner: &mut KeyServiceClient<Channel>,
    profile: &str,
    card: pb::CardIdentifiers,
) -> Result<pb::DeriveCardKeysResponse, tonic::Status> {
    partner
        .derive_card_keys(pb::DeriveCardKeysRequest {
            profile: profile.into(),
            card: Some(card),
            transport_key: kref("partner/factory-1/kek", 0),
            master_key_versions: Default::default(),
        })
        .await
        .map(|r| r.into_inner())
}

fn check_des_key(k: &pb::DerivedKey, expected: &str) {
    let clear = unwrap_export(&k.wrapped);
    assert_eq!(hex::encode_upper(unparity(&clear)), hex::encode_upper(unparity(&h(expected))), "role {}", k.role);
    let kcv = k.kcv.as_ref().unwrap();
    assert_eq!((kcv.method.as_str(), kcv.value.clone()), ("DES3_ZERO", des3_kcv(&h(expected))), "role {}", k.role);
    assert_eq!(k.format, pb::WrapFormat::AesKeyWrap as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pboc_one_and_two_level_match_vectors() {
    let mut e = env(DbKind::Sqlite).await;
    import_mohurd(&mut e.so).await;
    // VECTORS.md, PBOC / MOHURD: MK, D = 4567890123456701 -> 72AD5469... (raw), 73AD5468... (parity).
    let one = derive(
        &mut e.partner,
        "mohurd-epurse",
        pb::CardIdentifiers { asn: "4567890123456701".into(), ..Default::default() },
    )
    .await
    .unwrap();
    assert_eq!(one.keys.len(), 11);
    for k in &one.keys {
        check_des_key(k, "72AD54698CEE2935B0969956E2C718F0");
        check_des_key(k, "73AD54688CEF2934B0979857E3C719F1");
    }
    // A 10-byte ASN uses its rightmost 8 bytes.
    let ten = derive(
        &mut e.partner,
        "mohurd-epurse",
        pb::CardIdentifiers { asn: "33014567890123456701".into(), ..Default::default() },
    )
    .await
    .unwrap();
    check_des_key(&ten.keys[3], "72AD54698CEE2935B0969956E2C718F0");
    // Two levels: city factor 4567890123456701, then card factor 0000000000000001.
    let two = derive(
        &mut e.partner,
        "mohurd-epurse-2level",
        pb::CardIdentifiers { city: "4567890123456701".into(), asn: "0000000000000001".into(), ..Default::default() },
    )
    .await
    .unwrap();
    for k in &two.keys {
        check_des_key(k, "4370F489F8D632EC570B67135DDA16FB");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emv_options_a_and_b_match_vectors() {
    let mut e = env(DbKind::Sqlite).await;
    for r in ["imk-ac", "imk-smi", "imk-smc"] {
        import_master(&mut e.so, &format!("city/3301/emv/{r}"), &h(MK)).await.unwrap();
    }
    let card = |pan: &str, psn: &str| pb::CardIdentifiers { pan: pan.into(), psn: psn.into(), ..Default::default() };
    // VECTORS.md / pyemv kd.py: Option A, PAN 12345678901234567, PSN 01.
    let a = derive(&mut e.partner, "emv-icc", card("12345678901234567", "01")).await.unwrap();
    check_des_key(&a.keys[0], "73AD54688CEF2934B0979857E3C719F1");
    // pyemv kd.py module docstring: Option A, PAN 99012345678901234, PSN 45.
    let a2 = derive(&mut e.partner, "emv-icc", card("99012345678901234", "45")).await.unwrap();
    check_des_key(&a2.keys[0], "67F8292358083E5EA7AB7FDA58D53B6B");
    // pyemv kd.py derive_icc_mk_b docstring: Option B, PAN 12345678901234567, PSN 01.
    let b = derive(&mut e.partner, "emv-icc-option-b", card("12345678901234567", "01")).await.unwrap();
    check_des_key(&b.keys[0], "AD406D7F6D7570916D75E5DCAB8CF737");
    // Option B on a 16-digit PAN is Option A.
    let b16 = derive(&mut e.partner, "emv-icc-option-b", card("4567890123456701", "00")).await.unwrap();
    let a16 = derive(&mut e.partner, "emv-icc", card("4567890123456701", "00")).await.unwrap();
    assert_eq!(b16.keys[0].kcv, a16.keys[0].kcv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globalplatform_templates_match_vectors() {
    let mut e = env(DbKind::Sqlite).await;
    import_master(&mut e.so, "city/3301/ssd/master", &h(GP_MK)).await.unwrap();
    let card = pb::CardIdentifiers { kdd: "00010203040506070809".into(), ..Default::default() };
    // VECTORS.md / GlobalPlatformPro TestPlaintextKeys: KCVs per template.
    for (profile, expected) in
        [("gp-ssd-scp02", ["C33013", "6F4CA6", "BB8179"]), ("gp-ssd-scp02-visa2", ["2BE598", "58DA38", "3C328E"])]
    {
        let r = derive(&mut e.partner, profile, card.clone()).await.unwrap();
        let kcvs: Vec<String> = r.keys.iter().map(|k| k.kcv.clone().unwrap().value).collect();
        assert_eq!(kcvs, expected, "{profile}");
        // The wrapped keys match their KCVs.
        for k in &r.keys {
            assert_eq!(des3_kcv(&unwrap_export(&k.wrapped)), k.kcv.clone().unwrap().value);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_lacks_sm4_an10922_and_3des_wrapping() {
    let mut e = env_in(Module::SoftHsm, DbKind::Sqlite).await;
    let module = Module::SoftHsm.path().display().to_string();
    // SM4 keys cannot even be created on SoftHSM.
    let err =
        e.so.create_key(pb::CreateKeyRequest {
            name: "city/3301/mot/dpk".into(),
            algorithm: pb::KeyAlgorithm::Sm4 as i32,
            purpose: pb::KeyPurpose::DerivationMaster as i32,
            kcv_method: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&module) && err.message().contains("sm4"), "{}", err.message());
    // AN10922 needs a derivation SoftHSM does not have.
    for role in ["app-master", "app-read", "app-write"] {
        e.so.create_key(pb::CreateKeyRequest {
            name: format!("city/3301/desfire/{role}"),
            algorithm: pb::KeyAlgorithm::Aes128 as i32,
            purpose: pb::KeyPurpose::DerivationMaster as i32,
            kcv_method: String::new(),
        })
        .await
        .unwrap();
    }
    let err = derive(
        &mut e.partner,
        "desfire-an10922",
        pb::CardIdentifiers { uid: "04782E21801D80".into(), aid: "3042F5".into(), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("an10922") && err.message().contains(&module), "{}", err.message());
    // A 3DES transport key: SoftHSM cannot wrap under it.
    import_mohurd(&mut e.so).await;
    e.so.create_key(pb::CreateKeyRequest {
        name: "partner/factory-2/kek".into(),
        algorithm: pb::KeyAlgorithm::Des2 as i32,
        purpose: pb::KeyPurpose::TransportExport as i32,
        kcv_method: String::new(),
    })
    .await
    .unwrap();
    let err = e
        .partner
        .derive_card_keys(pb::DeriveCardKeysRequest {
            profile: "mohurd-epurse".into(),
            card: Some(pb::CardIdentifiers { asn: "4567890123456701".into(), ..Default::default() }),
            transport_key: kref("partner/factory-2/kek", 0),
            master_key_versions: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("CKM_DES3_ECB") && err.message().contains(&module), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_life_cycle() {
    let mut e = env(DbKind::Sqlite).await;
    let created =
        e.so.create_key(pb::CreateKeyRequest {
            name: "city/3301/mac/settlement".into(),
            algorithm: pb::KeyAlgorithm::Aes256 as i32,
            purpose: pb::KeyPurpose::Mac as i32,
            kcv_method: "AES_GP".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.version, created.state, created.origin.as_str()),
        (1, pb::KeyState::Active as i32, "generated")
    );
    assert_eq!(created.kcv.as_ref().unwrap().method, "AES_GP");
    // Creating it again is refused.
    let err =
        e.so.create_key(pb::CreateKeyRequest {
            name: created.name.clone(),
            algorithm: 4,
            purpose: 4,
            kcv_method: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    // Rotation: v2 active, v1 deprecated.
    let v2 = e.so.rotate_key(pb::RotateKeyRequest { name: created.name.clone() }).await.unwrap().into_inner();
    assert_eq!(v2.version, 2);
    assert_ne!(v2.kcv, created.kcv);
    let v1 = e.so.get_key(pb::GetKeyRequest { key: kref(&created.name, 1) }).await.unwrap().into_inner();
    assert_eq!(v1.state, pb::KeyState::Deprecated as i32);
    let latest = e.so.get_key(pb::GetKeyRequest { key: kref(&created.name, 0) }).await.unwrap().into_inner();
    assert_eq!(latest.version, 2);
    // Suspend, then destroy v1; the record stays.
    let s =
        e.so.set_key_state(pb::SetKeyStateRequest {
            key: kref(&created.name, 2),
            state: pb::KeyState::Suspended as i32,
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.state, pb::KeyState::Suspended as i32);
    let d =
        e.so.destroy_key(pb::DestroyKeyRequest { key: kref(&created.name, 1), reason: "retired".into() })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(d.state, pb::KeyState::Destroyed as i32);
    let err =
        e.so.destroy_key(pb::DestroyKeyRequest { key: kref(&created.name, 1), reason: "again".into() })
            .await
            .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Listing pages through everything in name order.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page =
            e.so.list_keys(pb::ListKeysRequest {
                name_prefix: String::new(),
                state: 0,
                purpose: 0,
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(page.keys.iter().map(|k| format!("{}@v{}", k.name, k.version)));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        [
            "city/3301/kek/import@v1",
            "city/3301/mac/settlement@v1",
            "city/3301/mac/settlement@v2",
            "partner/factory-1/kek@v1"
        ]
    );
    // Partners may not manage the catalogue.
    let err = e
        .partner
        .create_key(pb::CreateKeyRequest { name: "x/y".into(), algorithm: 2, purpose: 1, kcv_method: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_audited() {
    let mut e = env(DbKind::Sqlite).await;
    // A wrong expected KCV imports nothing.
    let wrapped = aes_kw::KekAes128::from(KEK_IMPORT).wrap_vec(&h(MK)).unwrap();
    let err =
        e.so.import_key(pb::ImportKeyRequest {
            name: "city/3301/mohurd/dpk".into(),
            algorithm: pb::KeyAlgorithm::Des2 as i32,
            purpose: pb::KeyPurpose::DerivationMaster as i32,
            source: Some(pb::import_key_request::Source::Wrapped(pb::WrappedKeyMaterial {
                transport_key: kref("city/3301/kek/import", 0),
                format: 0,
                wrapped,
            })),
            expected_kcv: Some(pb::KeyCheckValue { method: "DES3_ZERO".into(), value: "000000".into() }),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("08D7B4"), "{}", err.message());
    let missing = e.so.get_key(pb::GetKeyRequest { key: kref("city/3301/mohurd/dpk", 0) }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    import_mohurd(&mut e.so).await;
    let asn = |a: &str| pb::CardIdentifiers { asn: a.into(), ..Default::default() };
    let err = derive(&mut e.partner, "no-such-profile", asn("4567890123456701")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = derive(&mut e.partner, "mohurd-epurse", asn("45678901234567ZZ")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("card.asn"), "{}", err.message());
    let err = derive(&mut e.partner, "mohurd-epurse", asn("456789")).await.unwrap_err();
    assert!(err.message().contains("card.asn") && err.message().contains("8 or 10"), "{}", err.message());
    // A transport key of the wrong purpose.
    let err = e
        .partner
        .derive_card_keys(pb::DeriveCardKeysRequest {
            profile: "mohurd-epurse".into(),
            card: Some(asn("4567890123456701")),
            transport_key: kref("city/3301/kek/import", 0),
            master_key_versions: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("transport_key") && err.message().contains("transport_import"), "{}", err.message());
    // A suspended master key.
    e.so.set_key_state(pb::SetKeyStateRequest {
        key: kref("city/3301/mohurd/dtk", 1),
        state: pb::KeyState::Suspended as i32,
        reason: "incident".into(),
    })
    .await
    .unwrap();
    let err = derive(&mut e.partner, "mohurd-epurse", asn("4567890123456701")).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("city/3301/mohurd/dtk"), "{}", err.message());
    // Pinning the suspended version names its state.
    let err = e
        .partner
        .derive_card_keys(pb::DeriveCardKeysRequest {
            profile: "mohurd-epurse".into(),
            card: Some(asn("4567890123456701")),
            transport_key: kref("partner/factory-1/kek", 0),
            master_key_versions: [("city/3301/mohurd/dtk".to_owned(), 1u32)].into_iter().collect(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("suspended"), "{}", err.message());

    // Every refusal above is in the audit log, and the chain is intact.
    let store = kms::store::Store::connect(&DatabaseConfig::for_url(&e.setup.db.url)).await.unwrap();
    let records = kms::audit::read_range(&store, 1, 10_000).await.unwrap();
    let failed: Vec<_> = records.iter().filter(|r| r.outcome == "failed").collect();
    assert!(failed.iter().any(|r| r.action == "keys.ImportKey" && r.reason.contains("08D7B4")));
    assert!(failed.iter().filter(|r| r.action == "keys.DeriveCardKeys").count() >= 5, "{failed:#?}");
    assert_eq!(kms::audit::verify_chain(&store).await.unwrap().fault, None);
    drop(e.server);
}

fn header(batch_id: &str) -> pb::DeriveBatchRequest {
    pb::DeriveBatchRequest {
        item: Some(pb::derive_batch_request::Item::Header(pb::DeriveBatchHeader {
            batch_id: batch_id.into(),
            profile: "mohurd-epurse".into(),
            transport_key: kref("partner/factory-1/kek", 0),
            master_key_versions: Default::default(),
        })),
    }
}

fn card_msg(asn: String) -> pb::DeriveBatchRequest {
    pb::DeriveBatchRequest {
        item: Some(pb::derive_batch_request::Item::Card(pb::CardIdentifiers { asn, ..Default::default() })),
    }
}

async fn run_batch(
    partner: &mut KeyServiceClient<Channel>,
    batch_id: &str,
    cards: Vec<String>,
) -> Vec<pb::DeriveBatchResponse> {
    let mut msgs = vec![header(batch_id)];
    msgs.extend(cards.into_iter().map(card_msg));
    let mut stream = partner.derive_card_keys_batch(tokio_stream::iter(msgs)).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        out.push(r);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_ordered_per_item_and_idempotent() {
    for kind in ALL_DBS {
        let mut e = env(kind).await;
        import_mohurd(&mut e.so).await;
        let mut cards: Vec<String> = (0..70u64).map(|i| format!("{:016X}", 0x4567890123450000u64 + i)).collect();
        cards[33] = "not-hex".into();
        cards[0] = "4567890123456701".into();
        let first = run_batch(&mut e.partner, "factory-1-run-1", cards.clone()).await;
        assert_eq!(first.len(), 70, "{kind:?}");
        for (i, r) in first.iter().enumerate() {
            assert_eq!(r.index, i as u64);
            assert!(!r.replayed);
            match (&r.result, i) {
                (Some(pb::derive_batch_response::Result::Error(err)), 33) => {
                    assert_eq!(err.code, Code::InvalidArgument as i32);
                    assert!(err.message.contains("card.asn"), "{}", err.message);
                }
                (Some(pb::derive_batch_response::Result::Keys(k)), i) if i != 33 => assert_eq!(k.keys.len(), 11),
                other => panic!("item {i}: {other:?}"),
            }
        }
        let Some(pb::derive_batch_response::Result::Keys(k0)) = &first[0].result else { panic!() };
        check_des_key(&k0.keys[0], "72AD54698CEE2935B0969956E2C718F0");

        let store = kms::store::Store::connect(&DatabaseConfig::for_url(&e.setup.db.url)).await.unwrap();
        let derived_items = |records: &[kms::audit::AuditRecord]| -> usize {
            records
                .iter()
                .filter(|r| r.action == "keys.DeriveCardKeys" && r.outcome == "success")
                .map(|r| {
                    serde_json::from_str::<serde_json::Value>(&r.details).unwrap()["items"]
                        .as_array()
                        .map_or(0, |a| a.len())
                })
                .sum()
        };
        let before = kms::audit::read_range(&store, 1, 100_000).await.unwrap();
        assert_eq!(derived_items(&before), 70, "every card, including the refused one, is audited once");

        // The retry (say the connection broke) with more cards: the first 70
        // are answered from the record, only the new ones are derived.
        let mut more = cards.clone();
        more.push("4567890123459999".into());
        let second = run_batch(&mut e.partner, "factory-1-run-1", more).await;
        assert_eq!(second.len(), 71);
        assert!(second[..70].iter().all(|r| r.replayed));
        assert!(!second[70].replayed);
        assert_eq!(second[5].result, first[5].result);
        let after = kms::audit::read_range(&store, 1, 100_000).await.unwrap();
        assert_eq!(derived_items(&after), 71, "nothing was derived or audited twice");
        assert_eq!(kms::audit::verify_chain(&store).await.unwrap().fault, None);

        // The same id with a different card at a recorded index is refused for that item.
        let mut changed = cards.clone();
        changed[2] = "1111111111111111".into();
        let third = run_batch(&mut e.partner, "factory-1-run-1", changed[..3].to_vec()).await;
        assert!(
            matches!(&third[2].result, Some(pb::derive_batch_response::Result::Error(err)) if err.code == Code::FailedPrecondition as i32)
        );

        // The same id with other parameters is refused whole.
        let mut h = header("factory-1-run-1");
        if let Some(pb::derive_batch_request::Item::Header(hd)) = &mut h.item {
            hd.profile = "mohurd-epurse-2level".into();
        }
        let err = e.partner.derive_card_keys_batch(tokio_stream::iter(vec![h])).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    }
}

fn sm4_kcv(key: &[u8]) -> String {
    let c = sm4::Sm4::new_from_slice(key).unwrap();
    let mut b = GenericArray::from([0u8; 16]);
    c.encrypt_block(&mut b);
    hex::encode_upper(&b[..3])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_sim_sm4_jtt978_matches_vectors() {
    let mut e = env_in(Module::HsmSim, DbKind::Sqlite).await;
    // VECTORS.md: SM4 KCV of K = 0123...3210 is 2677F4.
    assert_eq!(sm4_kcv(&h(MK)), "2677F4");
    for role in MOHURD_ROLES {
        import_master_as(
            &mut e.so,
            &format!("city/3301/mot/{role}"),
            &h(MK),
            pb::KeyAlgorithm::Sm4,
            "SM4_ZERO",
            "2677F4".into(),
        )
        .await
        .unwrap();
    }
    let r = derive(
        &mut e.partner,
        "mot-epurse",
        pb::CardIdentifiers { asn: "4567890123456701".into(), ..Default::default() },
    )
    .await
    .unwrap();
    // VECTORS.md: SM4-ECB(MK, D || ~D) = ACE24A72D661E611877ADA764F16F1AA.
    for k in &r.keys {
        assert_eq!(hex::encode_upper(unwrap_export(&k.wrapped)), "ACE24A72D661E611877ADA764F16F1AA", "{}", k.role);
        let kcv = k.kcv.clone().unwrap();
        assert_eq!((kcv.method.as_str(), kcv.value), ("SM4_ZERO", sm4_kcv(&h("ACE24A72D661E611877ADA764F16F1AA"))));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_sim_an10922_matches_vectors() {
    let mut e = env_in(Module::HsmSim, DbKind::Sqlite).await;
    // libfreefare test_mifare_key_deriver_an10922.c, both AES-128 vectors.
    let cases = [
        (
            "00112233445566778899AABBCCDDEEFF",
            "04782E21801D80",
            "3042F5",
            "4E585020416275",
            "A8DD63A3B89D54B37CA802473FDA9175",
        ),
        ("F3F9377698707B688EAF84ABE39E3791", "04DEADBEEFFEED", "", "", "0BB408BAFF98B6EE9F2E1585777F6A51"),
    ];
    for (i, (mk, uid, aid, si, expected)) in cases.iter().enumerate() {
        for role in ["app-master", "app-read", "app-write"] {
            import_master_as(
                &mut e.so,
                &format!("city/3301/desfire/{role}"),
                &h(mk),
                pb::KeyAlgorithm::Aes128,
                "AES_ZERO",
                aes_kcv(&h(mk)),
            )
            .await
            .unwrap();
        }
        let r = derive(
            &mut e.partner,
            "desfire-an10922",
            pb::CardIdentifiers {
                uid: (*uid).into(),
                aid: (*aid).into(),
                system_identifier: (*si).into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        for k in &r.keys {
            assert_eq!(hex::encode_upper(unwrap_export(&k.wrapped)), *expected, "vector {i}, role {}", k.role);
            assert_eq!(k.kcv.clone().unwrap().value, aes_kcv(&h(expected)));
            assert_eq!(k.master_key.clone().unwrap().version, i as u32 + 1);
        }
    }
    // NXP AN10922 section 2.4.1 (via libfreefare): 2K3DES, M = UID || AID || "NXP A".
    for role in ["app-master", "app-read"] {
        import_master(&mut e.so, &format!("city/3301/desfire-legacy/{role}"), &h("00112233445566778899AABBCCDDEEFF"))
            .await
            .unwrap();
    }
    let card = |si: &str| pb::CardIdentifiers {
        uid: "04782E21801D80".into(),
        aid: "3042F5".into(),
        system_identifier: si.into(),
        ..Default::default()
    };
    let r = derive(&mut e.partner, "desfire-an10922-2k3des", card("4E58502041")).await.unwrap();
    for k in &r.keys {
        check_des_key(k, "16F9587D9E8910C96B9649D007107DD6");
    }
    // Inputs longer than 2K3DES allows are refused, naming the field.
    let err = derive(&mut e.partner, "desfire-an10922-2k3des", card("4E585020416275")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("card.system_identifier"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsm_sim_wraps_under_a_3des_transport_key() {
    let mut e = env_in(Module::HsmSim, DbKind::Sqlite).await;
    import_mohurd(&mut e.so).await;
    // A partner's 3DES transport key, delivered wrapped under the import KEK.
    let kek3 = h("89ABCDEF0123456776543210FEDCBA98");
    let wrapped = aes_kw::KekAes128::from(KEK_IMPORT).wrap_vec(&kek3).unwrap();
    e.so.import_key(pb::ImportKeyRequest {
        name: "partner/factory-3/kek".into(),
        algorithm: pb::KeyAlgorithm::Des2 as i32,
        purpose: pb::KeyPurpose::TransportExport as i32,
        source: Some(pb::import_key_request::Source::Wrapped(pb::WrappedKeyMaterial {
            transport_key: kref("city/3301/kek/import", 0),
            format: 0,
            wrapped,
        })),
        expected_kcv: Some(pb::KeyCheckValue { method: "DES3_ZERO".into(), value: des3_kcv(&kek3) }),
    })
    .await
    .unwrap();
    let r = e
        .partner
        .derive_card_keys(pb::DeriveCardKeysRequest {
            profile: "mohurd-epurse".into(),
            card: Some(pb::CardIdentifiers { asn: "4567890123456701".into(), ..Default::default() }),
            transport_key: kref("partner/factory-3/kek", 0),
            master_key_versions: Default::default(),
        })
        .await
        .unwrap()
        .into_inner();
    use des::cipher::BlockDecrypt;
    let c = des::TdesEde2::new_from_slice(&kek3).unwrap();
    for k in &r.keys {
        assert_eq!(k.format, pb::WrapFormat::Des3Ecb as i32);
        let mut clear = k.wrapped.clone();
        for block in clear.chunks_mut(8) {
            c.decrypt_block(GenericArray::from_mut_slice(block));
        }
        assert_eq!(
            hex::encode_upper(unparity(&clear)),
            hex::encode_upper(unparity(&h("72AD54698CEE2935B0969956E2C718F0")))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gp_kdf3_matches_vectors_where_the_module_has_sp800_108() {
    for module in kms_tests::token::ALL_MODULES {
        let mut e = env_in(module, DbKind::Sqlite).await;
        import_master_as(
            &mut e.so,
            "city/3301/ssd3/master",
            &h(GP_MK),
            pb::KeyAlgorithm::Aes128,
            "AES_ZERO",
            aes_kcv(&h(GP_MK)),
        )
        .await
        .unwrap();
        let card = pb::CardIdentifiers { kdd: "00010203040506070809".into(), ..Default::default() };
        let r = derive(&mut e.partner, "gp-ssd-scp03", card).await;
        match module {
            // SoftHSM has no CKM_SP800_108_COUNTER_KDF: refused, naming it.
            Module::SoftHsm => {
                let err = r.unwrap_err();
                assert_eq!(err.code(), Code::FailedPrecondition);
                assert!(err.message().contains("CKM_SP800_108_COUNTER_KDF"), "{}", err.message());
            }
            // GlobalPlatformPro TestPlaintextKeys.testDiversification_KDF3_SCP03_AES128.
            Module::HsmSim => {
                let r = r.unwrap();
                let kcvs: Vec<(String, String)> =
                    r.keys.iter().map(|k| k.kcv.clone().map(|c| (c.method, c.value)).unwrap()).collect();
                let expect = |v: &str| ("AES_GP".to_owned(), v.to_owned());
                assert_eq!(kcvs, vec![expect("E79C05"), expect("D1BD77"), expect("3FDE8C")]);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_batch_is_cut_off_at_the_configured_limit() {
    let mut e = env_with(Module::from_env(), DbKind::Sqlite, "[derive]\nmax_batch_cards = 5\nbatch_chunk = 2\n").await;
    let (so, partner) = (&mut e.so, &mut e.partner);
    import_mohurd(so).await;
    let mut msgs = vec![header("too-big")];
    msgs.extend((0..8u64).map(|i| card_msg(format!("{:016X}", 0x4567890123450000u64 + i))));
    let mut stream = partner.derive_card_keys_batch(tokio_stream::iter(msgs)).await.unwrap().into_inner();
    let mut done = 0;
    let err = loop {
        match stream.message().await {
            Ok(Some(_)) => done += 1,
            Ok(None) => panic!("the stream ended without refusing the sixth card"),
            Err(e) => break e,
        }
    };
    assert_eq!(done, 5);
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("derive.max_batch_cards (5)"), "{}", err.message());
}

// ----- production plans (quotas) --------------------------------------------

fn plan_request(tenant: &str, ranges: &[(&str, &str)], count: u64) -> pb::CreateProductionPlanRequest {
    pb::CreateProductionPlanRequest {
        tenant: tenant.into(),
        profile: "mohurd-epurse".into(),
        ranges: ranges.iter().map(|(a, b)| pb::CardRange { first_asn: (*a).into(), last_asn: (*b).into() }).collect(),
        count,
        valid_from: 0,
        valid_until: time::OffsetDateTime::now_utc().unix_timestamp() + 86_400,
        note: "order 2026-117".into(),
    }
}

fn outcomes(results: &[pb::DeriveBatchResponse]) -> (usize, Vec<(i32, String)>) {
    let mut ok = 0;
    let mut errors = Vec::new();
    for r in results {
        match &r.result {
            Some(pb::derive_batch_response::Result::Keys(_)) => ok += 1,
            Some(pb::derive_batch_response::Result::Error(e)) => errors.push((e.code, e.message.clone())),
            None => panic!("an item without result"),
        }
    }
    (ok, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_plans_bound_derivations() {
    use kms_proto::v1::admin_service_client::AdminServiceClient;
    for kind in ALL_DBS {
        let mut e = env_full(Module::from_env(), kind, "", true).await;
        import_mohurd(&mut e.so).await;
        let mut operator = AdminServiceClient::new(e.setup.channel(&e.server, "operator").await);
        let mut partner_admin = AdminServiceClient::new(e.setup.channel(&e.server, "issuance_partner").await);
        let card = |asn: &str| pb::CardIdentifiers { asn: asn.into(), ..Default::default() };

        // No plan yet: refused, nothing derived.
        let err = derive(&mut e.partner, "mohurd-epurse", card("3301000000000001")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("outside every live production plan"), "{err:?}");

        // Bad plans are refused whole, naming the field.
        for (req, want) in [
            (plan_request("city-3301", &[("330100000000000F", "3301000000000000")], 5), "is empty"),
            (
                plan_request(
                    "city-3301",
                    &[("3301000000000000", "33010000000000FF"), ("3301000000000080", "3301000000000100")],
                    5,
                ),
                "overlaps range 1",
            ),
            (plan_request("city-3301", &[], 5), "at least one range"),
            // The keys come from the ASN's rightmost 8 bytes: a range over
            // 10-byte ASNs would let aliases through, so it is refused.
            (
                plan_request("city-3301", &[("FFFF3301000000000000", "FFFF33010000000000FF")], 5),
                "ranges over 16 hex digits: the rightmost 8 bytes of the ASN",
            ),
            (plan_request("city-3301", &[("3301000000000000", "330100000000000F")], 0), "count"),
            (
                pb::CreateProductionPlanRequest {
                    profile: "no-such".into(),
                    ..plan_request("city-3301", &[("0001", "0002")], 1)
                },
                "no card profile",
            ),
        ] {
            let err = operator.create_production_plan(req).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains(want), "{want}: {err:?}");
        }
        // Partners cannot grant themselves plans.
        let err = partner_admin
            .create_production_plan(plan_request("city-3301", &[("3301000000000000", "330100000000000F")], 100))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);

        let plan = operator
            .create_production_plan(plan_request("city-3301", &[("3301000000000000", "330100000000000F")], 5))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((plan.count, plan.used, plan.state.as_str()), (5, 0, "active"));
        // A second live plan may not claim the same cards.
        let err = operator
            .create_production_plan(plan_request("city-3301", &[("3301000000000008", "3301000000000020")], 5))
            .await
            .unwrap_err();
        assert!(err.code() == Code::InvalidArgument && err.message().contains(&plan.id), "{err:?}");
        operator
            .create_production_plan(plan_request("other-city", &[("3301000000000000", "330100000000000F")], 9))
            .await
            .unwrap();

        // In range: derived and counted; out of range: refused. A 10-byte
        // ASN counts by the 8 bytes its keys come from: FFFF + an
        // out-of-range card is that card, refused.
        derive(&mut e.partner, "mohurd-epurse", card("3301000000000001")).await.unwrap();
        let err = derive(&mut e.partner, "mohurd-epurse", card("33013302000000000001")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("card 3302000000000001 is outside"), "{err:?}");
        let err = derive(&mut e.partner, "mohurd-epurse", card("3301000000000010")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

        // A batch of 10 cards in range with 4 left: 4 derived, 6 refused
        // with what remains; a retried batch consumes nothing more.
        let cards: Vec<String> = (2..12u64).map(|i| format!("33010000000000{i:02X}")).collect();
        let first = run_batch(&mut e.partner, "plan-batch-1", cards.clone()).await;
        let (ok, errors) = outcomes(&first);
        assert_eq!((ok, errors.len()), (4, 6), "{errors:?}");
        for (code, message) in &errors {
            assert_eq!(*code, Code::ResourceExhausted as i32, "{message}");
            assert!(message.contains("has no cards left (5 of 5 used)"), "{message}");
        }
        let again = run_batch(&mut e.partner, "plan-batch-1", cards).await;
        let (ok, errors) = outcomes(&again);
        assert_eq!((ok, errors.len()), (4, 6));
        assert!(
            again
                .iter()
                .filter(|r| matches!(&r.result, Some(pb::derive_batch_response::Result::Keys(_))))
                .all(|r| r.replayed)
        );
        let seen = partner_admin
            .get_production_plan(pb::GetProductionPlanRequest { id: plan.id.clone() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((seen.used, seen.state.as_str()), (5, "exhausted"));
        let err = derive(&mut e.partner, "mohurd-epurse", card("3301000000000001")).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("has no cards left (5 of 5 used)"), "{err:?}");

        // A partner sees its own tenant's plans only.
        let listed =
            partner_admin.list_production_plans(pb::ListProductionPlansRequest::default()).await.unwrap().into_inner();
        assert_eq!(listed.plans.iter().map(|p| p.tenant.as_str()).collect::<Vec<_>>(), ["city-3301"]);
        let all = operator.list_production_plans(pb::ListProductionPlansRequest::default()).await.unwrap().into_inner();
        assert_eq!(all.plans.len(), 2);

        // Revoked: the cards are outside every live plan again.
        let revoked = operator
            .revoke_production_plan(pb::RevokeProductionPlanRequest {
                id: plan.id.clone(),
                reason: "order cancelled".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(revoked.state, "revoked");
        let err = derive(&mut e.partner, "mohurd-epurse", card("3301000000000003")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_count_one_plan_exactly() {
    use kms_proto::v1::admin_service_client::AdminServiceClient;
    let kind = if std::env::var("KMS_TEST_POSTGRES_URL").is_ok() { DbKind::Postgres } else { DbKind::Sqlite };
    let mut e = env_full(Module::from_env(), kind, "[derive]\nbatch_chunk = 4\n", true).await;
    import_mohurd(&mut e.so).await;
    let config = e.setup.write_config();
    let second = Server::spawn(&config, e.setup.dir.path());
    let mut operator = AdminServiceClient::new(e.setup.channel(&e.server, "operator").await);
    let plan = operator
        .create_production_plan(plan_request("city-3301", &[("3301000000000000", "33010000000000FF")], 30))
        .await
        .unwrap()
        .into_inner();
    // Two batches of 25 cards and 10 single calls, alternating between the
    // replicas, all at once, against a plan of 30.
    let mut tasks = tokio::task::JoinSet::new();
    for (n, server) in [&e.server, &second].into_iter().enumerate() {
        let mut partner = KeyServiceClient::new(e.setup.channel(server, "issuance_partner").await);
        let cards: Vec<String> = (0..25u64).map(|i| format!("33010000000000{:02X}", n as u64 * 25 + i)).collect();
        tasks.spawn(async move { outcomes(&run_batch(&mut partner, &format!("replica-{n}"), cards).await).0 });
    }
    for i in 0..10u64 {
        let server = if i % 2 == 0 { &e.server } else { &second };
        let mut partner = KeyServiceClient::new(e.setup.channel(server, "issuance_partner").await);
        let asn = format!("33010000000000{:02X}", 0x80 + i);
        tasks.spawn(async move {
            let r = derive(&mut partner, "mohurd-epurse", pb::CardIdentifiers { asn, ..Default::default() }).await;
            match r {
                Ok(_) => 1,
                Err(s) => {
                    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                    0
                }
            }
        });
    }
    let mut derived = 0;
    while let Some(n) = tasks.join_next().await {
        derived += n.unwrap();
    }
    assert_eq!(derived, 30, "exactly the plan's count was derived");
    let seen = operator.get_production_plan(pb::GetProductionPlanRequest { id: plan.id }).await.unwrap().into_inner();
    assert_eq!(seen.used, 30);
    drop(second);
}
