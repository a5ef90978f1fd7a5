//! Every RPC, called as every shipped role, against the table below of who
//! may call what (`policies/*.cedar`). A call is "allowed" when it is not
//! refused with PERMISSION_DENIED by policy (it may still fail on its
//! input); a denied call changes nothing and leaves one `denied` audit
//! record.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kms::config::DatabaseConfig;
use kms::store::Store;
use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_client::AdminServiceClient;
use kms_proto::v1::certificate_service_client::CertificateServiceClient;
use kms_proto::v1::key_service_client::KeyServiceClient;
use kms_tests::DbKind;
use kms_tests::ca::{ISSUER, issue_client_tls, stand_up_ca};
use kms_tests::server::Setup;
use sqlx::Row;
use tonic::transport::Channel;
use tonic::{Code, Status};

const ROLES: [&str; 5] = ["security_officer", "operator", "auditor", "issuance_partner", "reader"];
const SO: u8 = 1;
const OP: u8 = 2;
const AUD: u8 = 4;
const PARTNER: u8 = 8;
const READER: u8 = 16;
const ALL: u8 = SO | OP | AUD | PARTNER | READER;

/// (RPC, roles allowed). EnrollReader is not here: it takes no client
/// certificate (its principal is the enrollment token; see certs.rs).
const TABLE: &[(&str, u8)] = &[
    ("admin.WhoAmI", ALL),
    ("admin.GetStatus", SO | OP | AUD),
    ("admin.GetCapabilities", SO | OP | AUD),
    ("admin.ReloadPolicies", SO),
    ("admin.CreateProductionPlan", SO | OP),
    ("admin.GetProductionPlan", SO | OP | AUD | PARTNER),
    ("admin.ListProductionPlans", SO | OP | AUD | PARTNER),
    ("admin.RevokeProductionPlan", SO | OP),
    ("admin.QueryAudit", SO | AUD),
    ("admin.VerifyAudit", SO | AUD),
    ("admin.ExportAudit", SO | AUD),
    ("keys.CreateKey", SO),
    ("keys.ImportKey", SO),
    ("keys.ImportKey(adopt)", SO),
    ("keys.GetKey", SO | OP | AUD),
    ("keys.ListKeys", SO | OP | AUD),
    ("keys.RotateKey", SO),
    ("keys.SetKeyState", SO),
    ("keys.DestroyKey", SO),
    ("keys.ListCardProfiles", SO | OP | AUD | PARTNER),
    ("keys.DeriveCardKeys", PARTNER),
    ("keys.DeriveCardKeysBatch", PARTNER),
    ("certs.CreateIssuer", SO),
    ("certs.ActivateIssuer", SO),
    ("certs.RetireIssuer", SO),
    ("certs.ListIssuers", SO | OP | AUD),
    ("certs.ListCertificateProfiles", SO | OP | AUD),
    ("certs.CreateEnrollmentToken", SO | OP),
    ("certs.RenewCertificate", ALL),
    ("certs.IssueServerCertificate", SO | OP),
    ("certs.RevokeCertificate", SO | OP),
    ("certs.GetCertificate", SO | OP | AUD),
    ("certs.ListCertificates", SO | OP | AUD),
    ("certs.GetCaChain", ALL),
    ("certs.GetCrl", ALL),
];

fn bit(role: &str) -> u8 {
    match role {
        "security_officer" => SO,
        "operator" => OP,
        "auditor" => AUD,
        "issuance_partner" => PARTNER,
        "reader" => READER,
        other => panic!("role {other}"),
    }
}

fn key(name: &str) -> Option<pb::KeyRef> {
    Some(pb::KeyRef { name: name.into(), version: 0 })
}

/// A request naming a version, as state changes must (validated before
/// authorization).
fn version(name: &str) -> Option<pb::KeyRef> {
    Some(pb::KeyRef { name: name.into(), version: 1 })
}

/// Calls `rpc` on `channel` with a minimal request; the status if it
/// failed. `serial` is a certificate the CA issued.
async fn call(rpc: &str, channel: Channel, serial: &str) -> Result<(), Status> {
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut keys = KeyServiceClient::new(channel.clone());
    let mut certs = CertificateServiceClient::new(channel);
    let plan = || pb::CreateProductionPlanRequest {
        tenant: "city-3301".into(),
        profile: "mohurd-epurse".into(),
        ranges: vec![pb::CardRange { first_asn: "3301000000000000".into(), last_asn: "3301000000000001".into() }],
        count: 1,
        valid_from: 0,
        valid_until: time::OffsetDateTime::now_utc().unix_timestamp() + 3600,
        note: String::new(),
    };
    match rpc {
        "admin.WhoAmI" => admin.who_am_i(pb::WhoAmIRequest {}).await.map(drop),
        "admin.GetStatus" => admin.get_status(pb::GetStatusRequest {}).await.map(drop),
        "admin.GetCapabilities" => admin.get_capabilities(pb::GetCapabilitiesRequest {}).await.map(drop),
        "admin.ReloadPolicies" => admin.reload_policies(pb::ReloadPoliciesRequest {}).await.map(drop),
        "admin.CreateProductionPlan" => admin.create_production_plan(plan()).await.map(drop),
        "admin.GetProductionPlan" => {
            admin.get_production_plan(pb::GetProductionPlanRequest { id: "plan-none".into() }).await.map(drop)
        }
        "admin.ListProductionPlans" => {
            admin.list_production_plans(pb::ListProductionPlansRequest::default()).await.map(drop)
        }
        "admin.RevokeProductionPlan" => admin
            .revoke_production_plan(pb::RevokeProductionPlanRequest { id: "plan-none".into(), reason: "x".into() })
            .await
            .map(drop),
        "admin.QueryAudit" => admin.query_audit(pb::QueryAuditRequest::default()).await.map(drop),
        "admin.VerifyAudit" => admin.verify_audit(pb::VerifyAuditRequest::default()).await.map(drop),
        "admin.ExportAudit" => {
            let mut stream = admin.export_audit(pb::ExportAuditRequest::default()).await?.into_inner();
            stream.message().await.map(drop)
        }
        "keys.CreateKey" => keys
            .create_key(pb::CreateKeyRequest {
                name: "table/created".into(),
                algorithm: pb::KeyAlgorithm::Aes128 as i32,
                purpose: pb::KeyPurpose::Mac as i32,
                kcv_method: String::new(),
            })
            .await
            .map(drop),
        "keys.ImportKey" | "keys.ImportKey(adopt)" => {
            let source = if rpc.ends_with("(adopt)") {
                pb::import_key_request::Source::HsmObjectLabel("no-such-object".into())
            } else {
                pb::import_key_request::Source::Wrapped(pb::WrappedKeyMaterial {
                    transport_key: key("table/no-transport"),
                    format: pb::WrapFormat::AesKeyWrap as i32,
                    wrapped: vec![0; 24],
                })
            };
            keys.import_key(pb::ImportKeyRequest {
                name: "table/imported".into(),
                algorithm: pb::KeyAlgorithm::Aes128 as i32,
                purpose: pb::KeyPurpose::Mac as i32,
                source: Some(source),
                expected_kcv: Some(pb::KeyCheckValue { method: "AES_ZERO".into(), value: "000000".into() }),
            })
            .await
            .map(drop)
        }
        "keys.GetKey" => keys.get_key(pb::GetKeyRequest { key: key("table/none") }).await.map(drop),
        "keys.ListKeys" => keys.list_keys(pb::ListKeysRequest::default()).await.map(drop),
        "keys.RotateKey" => keys.rotate_key(pb::RotateKeyRequest { name: "table/none".into() }).await.map(drop),
        "keys.SetKeyState" => keys
            .set_key_state(pb::SetKeyStateRequest {
                key: version("table/none"),
                state: pb::KeyState::Suspended as i32,
                reason: "x".into(),
            })
            .await
            .map(drop),
        "keys.DestroyKey" => {
            keys.destroy_key(pb::DestroyKeyRequest { key: version("table/none"), reason: "x".into() }).await.map(drop)
        }
        "keys.ListCardProfiles" => keys.list_card_profiles(pb::ListCardProfilesRequest {}).await.map(drop),
        "keys.DeriveCardKeys" => keys
            .derive_card_keys(pb::DeriveCardKeysRequest {
                profile: "mohurd-epurse".into(),
                card: Some(pb::CardIdentifiers { asn: "3301000000000001".into(), ..Default::default() }),
                transport_key: key("table/no-transport"),
                master_key_versions: Default::default(),
            })
            .await
            .map(drop),
        "keys.DeriveCardKeysBatch" => {
            let header = pb::DeriveBatchRequest {
                item: Some(pb::derive_batch_request::Item::Header(pb::DeriveBatchHeader {
                    batch_id: "table-batch".into(),
                    profile: "mohurd-epurse".into(),
                    transport_key: key("table/no-transport"),
                    master_key_versions: Default::default(),
                })),
            };
            let mut stream = keys.derive_card_keys_batch(tokio_stream::iter(vec![header])).await?.into_inner();
            stream.message().await.map(drop)
        }
        "certs.CreateIssuer" => certs
            .create_issuer(pb::CreateIssuerRequest { name: "table-issuer".into(), ..Default::default() })
            .await
            .map(drop),
        "certs.ActivateIssuer" => certs
            .activate_issuer(pb::ActivateIssuerRequest { name: "table-issuer".into(), ..Default::default() })
            .await
            .map(drop),
        "certs.RetireIssuer" => {
            certs.retire_issuer(pb::RetireIssuerRequest { name: "table-issuer".into() }).await.map(drop)
        }
        "certs.ListIssuers" => certs.list_issuers(pb::ListIssuersRequest {}).await.map(drop),
        "certs.ListCertificateProfiles" => {
            certs.list_certificate_profiles(pb::ListCertificateProfilesRequest {}).await.map(drop)
        }
        "certs.CreateEnrollmentToken" => certs
            .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                profiles: vec!["reader-sign".into()],
                reader_serial: "TABLE-1".into(),
                issuer: ISSUER.into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "certs.RenewCertificate" => {
            certs.renew_certificate(pb::RenewCertificateRequest { csr: vec![0x30], dual: false }).await.map(drop)
        }
        "certs.IssueServerCertificate" => certs
            .issue_server_certificate(pb::IssueServerCertificateRequest {
                csr: vec![0x30],
                profile: "server-tls".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "certs.RevokeCertificate" => {
            certs.revoke_certificate(pb::RevokeCertificateRequest { serial: serial.into(), reason: 0 }).await.map(drop)
        }
        "certs.GetCertificate" => {
            certs.get_certificate(pb::GetCertificateRequest { serial: serial.into() }).await.map(drop)
        }
        "certs.ListCertificates" => certs.list_certificates(pb::ListCertificatesRequest::default()).await.map(drop),
        "certs.GetCaChain" => certs.get_ca_chain(pb::GetCaChainRequest { issuer: ISSUER.into() }).await.map(drop),
        "certs.GetCrl" => certs.get_crl(pb::GetCrlRequest { issuer: ISSUER.into() }).await.map(drop),
        other => panic!("no call for {other}"),
    }
}

async fn denied_records(store: &Store) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE outcome = 'denied'")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_as_every_role_matches_the_table() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    stand_up_ca(&setup, &server, "ec-p256").await;
    let (issued, _) = issue_client_tls(&setup, &server, "table-subject", "auditor").await;
    let serial = issued.certificate.unwrap().serial;
    let store = Store::connect(&DatabaseConfig::for_url(&setup.db.url)).await.unwrap();
    let mut channels = Vec::new();
    for role in ROLES {
        channels.push((role, setup.channel(&server, role).await));
    }
    let mut wrong = Vec::new();
    for (rpc, allowed) in TABLE {
        // Denied roles first: their calls must change nothing that the
        // allowed call then finds.
        let mut order: Vec<&(&str, Channel)> = channels.iter().collect();
        order.sort_by_key(|(role, _)| allowed & bit(role) != 0);
        for (role, channel) in order {
            let before = denied_records(&store).await;
            let result = call(rpc, channel.clone(), &serial).await;
            let was_allowed = !matches!(&result, Err(s) if s.code() == Code::PermissionDenied);
            let should = allowed & bit(role) != 0;
            if was_allowed != should {
                wrong.push(format!(
                    "{rpc} as {role}: expected {}, got {result:?}",
                    if should { "allowed" } else { "denied" }
                ));
                continue;
            }
            if let Err(s) = &result {
                assert_ne!(s.code(), Code::Unimplemented, "{rpc} as {role}: {s:?}");
            }
            if !should {
                let after = denied_records(&store).await;
                assert_eq!(after, before + 1, "{rpc} as {role}: one denied audit record");
            }
        }
    }
    assert!(wrong.is_empty(), "calls that disagree with the table:\n{}", wrong.join("\n"));

    // What the denied calls would have made does not exist: the one key
    // and the one plan are the allowed callers' (one each).
    let mut so = KeyServiceClient::new(setup.channel(&server, "security_officer").await);
    let listed = so
        .list_keys(pb::ListKeysRequest { name_prefix: "table/".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.iter().map(|k| (k.name.as_str(), k.version)).collect::<Vec<_>>(), [("table/created", 1)]);
    let mut admin = AdminServiceClient::new(setup.channel(&server, "security_officer").await);
    let plans = admin.list_production_plans(pb::ListProductionPlansRequest::default()).await.unwrap().into_inner();
    assert_eq!(plans.plans.len(), 1, "only the security officer's plan (the operator's overlapped it)");
}
