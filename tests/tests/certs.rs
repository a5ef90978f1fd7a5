//! The certificate authority end to end: an issuing CA whose key is made in
//! the token, signed by the harness root; server and client certificates;
//! reader enrollment with tokens and dual certificates; renewal; revocation
//! and CRLs. Everything the CA produces is checked with OpenSSL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use kms::audit;
use kms::config::DatabaseConfig;
use kms::store::Store;
use kms_proto::v1 as pb;
use kms_proto::v1::admin_service_client::AdminServiceClient;
use kms_proto::v1::certificate_service_client::CertificateServiceClient;
use kms_tests::ca::{
    ISSUER, add_issuer, anonymous, certs_client, client_with_chain, issue_client_tls, make_csr, openssl, openssl_ok,
    pem, stand_up_ca, write,
};
use kms_tests::server::{Server, Setup};
use kms_tests::token::Module;
use kms_tests::{DbKind, http_get, http_get_bytes};
use tonic::Code;

async fn count_certificates(setup: &Setup, server: &Server) -> usize {
    let mut auditor = certs_client(setup, server, "auditor").await;
    let page = auditor
        .list_certificates(pb::ListCertificatesRequest { page_size: 500, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    page.certificates.len()
}

async fn audit_records(setup: &Setup) -> Vec<audit::AuditRecord> {
    let store = Store::connect(&DatabaseConfig::for_url(&setup.db.url)).await.unwrap();
    let n = audit::count(&store).await.unwrap();
    audit::read_range(&store, 1, n).await.unwrap()
}

fn modules() -> Vec<Module> {
    vec![Module::from_env()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuing_ca_in_the_hsm_issues_server_and_client_certificates() {
    for module in modules() {
        let setup = Setup::with_module(module, DbKind::Sqlite).await;
        let server = setup.start();
        let dir = setup.dir.path().to_owned();
        let issuing = stand_up_ca(&setup, &server, "ec-p256").await;
        let root = setup.pki.ca_pem.display().to_string();
        let untrusted = issuing.display().to_string();
        let mut op = certs_client(&setup, &server, "operator").await;

        // server-tls: the operator adds the names; OpenSSL verifies the chain.
        let csr = make_csr(&dir, "web", "ec", "/CN=kms.city.example", &[]);
        let issued = op
            .issue_server_certificate(pb::IssueServerCertificateRequest {
                csr: csr.der.clone(),
                profile: "server-tls".into(),
                names: vec!["kms.city.example".into(), "10.0.0.7".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let cert = issued.certificate.as_ref().unwrap();
        let path = write(&dir, "web.pem", pem("CERTIFICATE", &cert.der));
        let out =
            openssl_ok(&dir, &["verify", "-CAfile", &root, "-untrusted", &untrusted, &path.display().to_string()]);
        assert!(out.contains("OK"), "{out}");
        let text = openssl_ok(&dir, &["x509", "-in", &path.display().to_string(), "-noout", "-text"]);
        for needle in [
            "TLS Web Server Authentication",
            "DNS:kms.city.example",
            "IP Address:10.0.0.7",
            "CA:FALSE",
            "http://crl.test/crl/city-3301-2026.crl",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }

        // The chain as the service hands it out: issuing CA, then root.
        let chain = op.get_ca_chain(pb::GetCaChainRequest { issuer: ISSUER.into() }).await.unwrap().into_inner();
        assert_eq!(chain.certificates.len(), 2);
        assert_eq!(chain.pem.matches("BEGIN CERTIFICATE").count(), 2);
        let chain_path = write(&dir, "served-chain.pem", &chain.pem);
        let out = openssl_ok(
            &dir,
            &["verify", "-CAfile", &root, "-untrusted", &chain_path.display().to_string(), &path.display().to_string()],
        );
        assert!(out.contains("OK"), "{out}");

        // client-tls: the role comes from the request and the profile, not
        // the CSR; the certificate authenticates to the service over mTLS.
        let (_, client) = issue_client_tls(&setup, &server, "bureau-7", "issuance_partner").await;
        let channel = setup.client_options(&server, &client).connect().await.unwrap();
        // The holder renews it over mTLS: same subject and role, new key.
        let fresh = make_csr(&dir, "bureau2", "ec", "/CN=bureau-7", &[]);
        let renewed = CertificateServiceClient::new(channel.clone())
            .renew_certificate(pb::RenewCertificateRequest { csr: fresh.der.clone(), dual: false })
            .await
            .unwrap()
            .into_inner()
            .signing
            .unwrap()
            .certificate
            .unwrap();
        assert_eq!((renewed.role.as_str(), renewed.profile.as_str()), ("issuance_partner", "client-tls"));
        let who = AdminServiceClient::new(channel).who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
        let who = who.principal.unwrap();
        assert_eq!(
            (who.name.as_str(), who.role.as_str(), who.tenant.as_str()),
            ("bureau-7", "issuance_partner", "city-3301")
        );

        // Bad input: a clear error naming the reason, nothing issued, audited.
        let before = count_certificates(&setup, &server).await;
        let mut tampered = make_csr(&dir, "tampered", "ec", "/CN=tampered.city.example", &[]).der;
        let n = tampered.len();
        tampered[n - 5] ^= 0x01;
        let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
            ("wrongly signed", tampered, "server-tls", "signature"),
            (
                "asks to be a CA",
                make_csr(&dir, "ca", "ec", "/CN=evil.city.example", &["-addext", "basicConstraints=critical,CA:TRUE"])
                    .der,
                "server-tls",
                "ca_requested",
            ),
            ("weak key", make_csr(&dir, "weak", "rsa1024", "/CN=weak.city.example", &[]).der, "server-tls", "RSA"),
            (
                "forbidden extension",
                make_csr(&dir, "ext", "ec", "/CN=ext.city.example", &["-addext", "1.2.3.4.5=ASN1:UTF8String:x"]).der,
                "server-tls",
                "forbidden_extension",
            ),
            (
                "operator role via client-tls without a role",
                make_csr(&dir, "norole", "ec", "/CN=norole", &[]).der,
                "client-tls",
                "role",
            ),
            ("not DER at all", b"hello".to_vec(), "server-tls", "csr"),
            (
                "subject attribute outside the profile",
                make_csr(&dir, "subj", "ec", "/CN=subj.city.example/serialNumber=12345", &[]).der,
                "server-tls",
                "subject_not_allowed",
            ),
            (
                "wildcard name",
                make_csr(
                    &dir,
                    "wild",
                    "ec",
                    "/CN=wild.city.example",
                    &["-addext", "subjectAltName=DNS:*.city.example"],
                )
                .der,
                "server-tls",
                "san_not_allowed",
            ),
        ];
        for (what, der, profile, needle) in cases {
            let err = op
                .issue_server_certificate(pb::IssueServerCertificateRequest {
                    csr: der,
                    profile: profile.into(),
                    names: if profile == "server-tls" { vec!["x.city.example".into()] } else { vec![] },
                    tenant: "city-3301".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
            assert!(err.message().contains(needle), "{what}: {:?} lacks {needle:?}", err.message());
        }
        let err = op
            .issue_server_certificate(pb::IssueServerCertificateRequest {
                csr: make_csr(&dir, "long", "ec", "/CN=long.city.example", &[]).der,
                validity_days: 36_500,
                names: vec!["long.city.example".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("validity_too_long"), "{}", err.message());
        assert_eq!(count_certificates(&setup, &server).await, before, "a refused CSR left a certificate");
        let failed = audit_records(&setup)
            .await
            .into_iter()
            .filter(|r| r.action == "certs.IssueCertificate" && r.outcome == "failed")
            .count();
        assert!(failed >= 9, "refusals were not audited ({failed})");

        // A second issuer (RSA-3072 key in the token) is active alongside;
        // retiring the first stops its issuance but not its CRL.
        let rsa_issuing = add_issuer(&setup, &server, "city-3301-2027", "rsa-3072").await;
        let csr = make_csr(&dir, "web2", "ec", "/CN=kms2.city.example", &[]);
        let issued = op
            .issue_server_certificate(pb::IssueServerCertificateRequest {
                csr: csr.der.clone(),
                issuer: "city-3301-2027".into(),
                names: vec!["kms2.city.example".into()],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let path = write(&dir, "web2.pem", pem("CERTIFICATE", &issued.certificate.as_ref().unwrap().der));
        let rsa_untrusted = rsa_issuing.display().to_string();
        let out =
            openssl_ok(&dir, &["verify", "-CAfile", &root, "-untrusted", &rsa_untrusted, &path.display().to_string()]);
        assert!(out.contains("OK"), "{out}");
        let text = openssl_ok(&dir, &["x509", "-in", &path.display().to_string(), "-noout", "-text"]);
        assert!(text.contains("sha256WithRSAEncryption"), "{text}");
        let mut so = certs_client(&setup, &server, "security_officer").await;
        let retired = so.retire_issuer(pb::RetireIssuerRequest { name: ISSUER.into() }).await.unwrap().into_inner();
        assert_eq!(retired.state, pb::IssuerState::Retired as i32);
        let err = op
            .issue_server_certificate(pb::IssueServerCertificateRequest {
                csr: csr.der.clone(),
                issuer: ISSUER.into(),
                names: vec!["kms2.city.example".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        let crl = http_get_bytes(server.ops_port, &format!("/crl/{ISSUER}.crl"));
        let crl_path = write(&dir, "retired.crl", &crl);
        let out = openssl_ok(
            &dir,
            &[
                "crl",
                "-inform",
                "DER",
                "-in",
                &crl_path.display().to_string(),
                "-CAfile",
                &untrusted,
                "-noout",
                "-verify",
            ],
        );
        assert!(out.contains("verify OK"), "{out}");
        assert!(http_get(server.ops_port, "/crl/no-such-issuer.crl").starts_with("HTTP/1.1 404"));

        // SM2 issuing CAs are refused before any key is made; a pending
        // issuer has no CRL yet.
        let err = so
            .create_issuer(pb::CreateIssuerRequest {
                name: "city-3301-sm2".into(),
                common_name: "SM2 CA".into(),
                key_type: "sm2".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        so.create_issuer(pb::CreateIssuerRequest {
            name: "city-3301-next".into(),
            common_name: "Next CA".into(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert!(http_get(server.ops_port, "/crl/city-3301-next.crl").starts_with("HTTP/1.1 404"));

        // Policy: an issuance partner may not issue certificates, nor learn
        // which serials exist.
        let mut partner = certs_client(&setup, &server, "issuance_partner").await;
        let err = partner
            .issue_server_certificate(pb::IssueServerCertificateRequest { csr: csr.der.clone(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        for serial in [renewed.serial.clone(), "0123456789ABCDEF".into()] {
            let err = partner.get_certificate(pb::GetCertificateRequest { serial }).await.unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_enrolls_with_a_token_gets_dual_certificates_and_is_revoked() {
    let module = Module::from_env();
    let setup = Setup::with_module(module, DbKind::Sqlite).await;
    let server = setup.start();
    let dir = setup.dir.path().to_owned();
    let issuing = stand_up_ca(&setup, &server, "ec-p256").await;
    let root = setup.pki.ca_pem.display().to_string();
    let untrusted = issuing.display().to_string();
    let mut op = certs_client(&setup, &server, "operator").await;
    let token = |serial: &str| pb::CreateEnrollmentTokenRequest {
        reader_serial: serial.into(),
        profiles: vec!["reader-sign".into(), "reader-encrypt".into()],
        ..Default::default()
    };
    let t1 = op.create_enrollment_token(token("R3301000123")).await.unwrap().into_inner();
    assert!(t1.token.starts_with("kmset."), "{}", t1.token);

    // The encryption key comes back in CMS to the reader's signing key.
    // SoftHSM 2.6 cannot wrap under CKM_AES_CBC_PAD, which every envelope
    // needs, so there dual certificates are refused cleanly; hsm-sim does
    // both recipient kinds (ECDH for EC readers, RSA-OAEP for RSA readers).
    let dual = module == Module::HsmSim;
    let reader = make_csr(&dir, "reader", "ec", "/CN=R3301000123", &[]);
    let mut anon = anonymous(&setup, &server).await;
    let enroll = |csr: Vec<u8>, token: String, dual: bool| pb::EnrollReaderRequest {
        csr,
        authorization: Some(pb::enroll_reader_request::Authorization::Token(token)),
        dual,
        ..Default::default()
    };

    // A token bound to another reader is refused and not consumed.
    let other = make_csr(&dir, "other", "ec", "/CN=R3301000999", &[]);
    let err = anon.enroll_reader(enroll(other.der.clone(), t1.token.clone(), dual)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("subject_mismatch"), "{}", err.message());
    // A made-up token is not recognised.
    let err =
        anon.enroll_reader(enroll(reader.der.clone(), "kmset.0011223344556677.00".into(), dual)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    if !dual {
        let err = anon.enroll_reader(enroll(reader.der.clone(), t1.token.clone(), true)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("CKM_AES_CBC_PAD"), "{}", err.message());
    }

    let got = anon.enroll_reader(enroll(reader.der.clone(), t1.token.clone(), dual)).await.unwrap().into_inner();
    let signing = got.signing.as_ref().unwrap().certificate.as_ref().unwrap().clone();
    assert_eq!((signing.role.as_str(), signing.tenant.as_str()), ("reader", "city-3301"));
    let sign_path = write(&dir, "reader-sign.pem", pem("CERTIFICATE", &signing.der));
    let out =
        openssl_ok(&dir, &["verify", "-CAfile", &root, "-untrusted", &untrusted, &sign_path.display().to_string()]);
    assert!(out.contains("OK"), "{out}");
    let mut enc_path = None;
    if dual {
        enc_path = Some(check_envelope(&dir, "ec", &got, &reader.key, &sign_path, (&root, &untrusted)));
        let t2 = op.create_enrollment_token(token("R3301000124")).await.unwrap().into_inner();
        let rsa = make_csr(&dir, "reader-rsa", "rsa2048", "/CN=R3301000124", &[]);
        let got = anon.enroll_reader(enroll(rsa.der.clone(), t2.token, true)).await.unwrap().into_inner();
        let rsa_sign = got.signing.as_ref().unwrap().certificate.as_ref().unwrap();
        let rsa_sign_path = write(&dir, "reader-rsa-sign.pem", pem("CERTIFICATE", &rsa_sign.der));
        check_envelope(&dir, "rsa", &got, &rsa.key, &rsa_sign_path, (&root, &untrusted));
    } else {
        assert!(got.encryption.is_none() && got.encryption_key_envelope.is_empty());
    }

    // An expired token is refused (and says so).
    let t3 = op.create_enrollment_token(token("R3301000125")).await.unwrap().into_inner();
    let store = Store::connect(&DatabaseConfig::for_url(&setup.db.url)).await.unwrap();
    sqlx::query("UPDATE enrollment_tokens SET expires_at = 1 WHERE id = $1")
        .bind(&t3.token_id)
        .execute(store.pool())
        .await
        .unwrap();
    let late = make_csr(&dir, "late", "ec", "/CN=R3301000125", &[]);
    let err = anon.enroll_reader(enroll(late.der.clone(), t3.token.clone(), false)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("expired"), "{}", err.message());

    // The token is spent.
    let err = anon.enroll_reader(enroll(reader.der.clone(), t1.token.clone(), dual)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already used"), "{}", err.message());

    // Renewal over mTLS with the reader's certificate: same subject, new key.
    let reader_client = client_with_chain(&dir, "reader", got.signing.as_ref().unwrap(), &reader.key);
    let mut as_reader =
        CertificateServiceClient::new(setup.client_options(&server, &reader_client).connect().await.unwrap());
    let same_key = as_reader
        .renew_certificate(pb::RenewCertificateRequest { csr: reader.der.clone(), dual: false })
        .await
        .unwrap_err();
    assert_eq!(same_key.code(), Code::InvalidArgument, "{same_key:?}");
    let renewed_csr = make_csr(&dir, "reader2", "ec", "/CN=R3301000123", &[]);
    let renewed = as_reader
        .renew_certificate(pb::RenewCertificateRequest { csr: renewed_csr.der.clone(), dual: false })
        .await
        .unwrap()
        .into_inner();
    let renewed = renewed.signing.unwrap().certificate.unwrap();
    assert_eq!(renewed.subject, signing.subject);
    assert_ne!(renewed.serial, signing.serial);

    // Revocation: the CRL over plain HTTP verifies and names the reader.
    let revoked = op
        .revoke_certificate(pb::RevokeCertificateRequest {
            serial: signing.serial.clone(),
            reason: pb::RevocationReason::KeyCompromise as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(revoked.status, pb::CertificateStatus::Revoked as i32);
    assert_eq!(revoked.revocation_reason, "keyCompromise");
    let crl = http_get_bytes(server.ops_port, &format!("/crl/{ISSUER}.crl"));
    let crl_path = write(&dir, "issuer.crl", &crl);
    let crl_pem = write(&dir, "issuer-crl.pem", pem("X509 CRL", &crl));
    let out = openssl_ok(
        &dir,
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            &crl_path.display().to_string(),
            "-CAfile",
            &untrusted,
            "-noout",
            "-verify",
            "-text",
        ],
    );
    assert!(out.contains("verify OK"), "{out}");
    assert!(out.contains(&signing.serial), "{out}");
    assert!(out.contains("Key Compromise"), "{out}");
    let bundle = write(
        &dir,
        "trust.pem",
        format!(
            "{}{}",
            std::fs::read_to_string(&setup.pki.ca_pem).unwrap(),
            std::fs::read_to_string(&issuing).unwrap()
        ),
    );
    let check = |cert: &Path| {
        openssl(
            &dir,
            &[
                "verify",
                "-crl_check",
                "-CAfile",
                &bundle.display().to_string(),
                "-CRLfile",
                &crl_pem.display().to_string(),
                &cert.display().to_string(),
            ],
        )
    };
    let (ok, text) = check(&sign_path);
    assert!(!ok && text.contains("revoked"), "a revoked reader verified:\n{text}");
    if let Some(enc_path) = &enc_path {
        let (ok, text) = check(enc_path);
        assert!(ok, "the unrevoked encryption certificate failed:\n{text}");
    }
    // The same CRL over gRPC.
    let grpc = op.get_crl(pb::GetCrlRequest { issuer: ISSUER.into() }).await.unwrap().into_inner();
    assert_eq!(grpc.crl, crl);
    assert_eq!(grpc.entries, 1);

    // A revoked certificate no longer authenticates, so it cannot renew.
    let err = as_reader
        .renew_certificate(pb::RenewCertificateRequest { csr: renewed_csr.der.clone(), dual: false })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked") || err.message().is_empty(), "{err:?}");

    // Every issuance, renewal, revocation and token use is in the audit log.
    let records = audit_records(&setup).await;
    for action in
        ["certs.CreateEnrollmentToken", "certs.EnrollReader", "certs.RenewCertificate", "certs.RevokeCertificate"]
    {
        assert!(records.iter().any(|r| r.action == action && r.outcome == "success"), "{action} not audited");
    }
    assert!(
        records.iter().any(|r| r.action == "certs.EnrollReader" && r.outcome != "success"),
        "refused enrollment not audited"
    );
}

/// Checks a dual enrollment: both certificates chain to the root, they name
/// each other, and OpenSSL opens the CMS envelope with the reader's signing
/// key to the PKCS#8 key of the encryption certificate. Returns the
/// encryption certificate's file.
fn check_envelope(
    dir: &Path,
    stem: &str,
    got: &pb::EnrollReaderResponse,
    reader_key: &Path,
    sign_path: &Path,
    (root, untrusted): (&str, &str),
) -> std::path::PathBuf {
    let signing = got.signing.as_ref().unwrap().certificate.as_ref().unwrap();
    let encryption = got.encryption.as_ref().unwrap().certificate.as_ref().unwrap();
    assert_eq!(signing.paired_serial, encryption.serial);
    assert_eq!(encryption.paired_serial, signing.serial);
    let enc_path = write(dir, &format!("{stem}-enc.pem"), pem("CERTIFICATE", &encryption.der));
    let out = openssl_ok(dir, &["verify", "-CAfile", root, "-untrusted", untrusted, &enc_path.display().to_string()]);
    assert!(out.contains("OK"), "{out}");
    let text = openssl_ok(dir, &["x509", "-in", &enc_path.display().to_string(), "-noout", "-text"]);
    assert!(text.contains("Key Encipherment") || text.contains("Key Agreement"), "{text}");
    let p7m = write(dir, &format!("{stem}-key.p7m"), &got.encryption_key_envelope);
    let out_key = format!("{stem}-key.der");
    openssl_ok(
        dir,
        &[
            "cms",
            "-decrypt",
            "-inform",
            "DER",
            "-in",
            &p7m.display().to_string(),
            "-inkey",
            &reader_key.display().to_string(),
            "-recip",
            &sign_path.display().to_string(),
            "-out",
            &out_key,
        ],
    );
    let from_key = openssl_ok(dir, &["pkey", "-inform", "DER", "-in", &out_key, "-pubout"]);
    let from_cert = openssl_ok(dir, &["x509", "-in", &enc_path.display().to_string(), "-noout", "-pubkey"]);
    assert_eq!(from_key.trim(), from_cert.trim(), "the enveloped key is not the encryption certificate's");
    enc_path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_enrolls_with_an_external_ministry_certificate() {
    let setup = Setup::new(DbKind::Sqlite).await;
    let server = setup.start();
    let dir = setup.dir.path().to_owned();
    let issuing = stand_up_ca(&setup, &server, "ec-p256").await;
    let mut anon = anonymous(&setup, &server).await;
    // The reader holds a certificate of the ministry's CA (a configured
    // external trust anchor) and signs its CSR for the city CA with it.
    let ministry = setup.ministry.client("R3301000555", None, None);
    openssl_ok(&dir, &["x509", "-in", &ministry.cert.display().to_string(), "-outform", "DER", "-out", "ministry.der"]);
    let ministry_der = std::fs::read(dir.join("ministry.der")).unwrap();
    let sign = |csr: &[u8], stem: &str, key: &Path| {
        let csr_path = write(&dir, &format!("{stem}.bin"), csr);
        let sig = dir.join(format!("{stem}.sig"));
        openssl_ok(
            &dir,
            &[
                "dgst",
                "-sha256",
                "-sign",
                &key.display().to_string(),
                "-out",
                &sig.display().to_string(),
                &csr_path.display().to_string(),
            ],
        );
        std::fs::read(sig).unwrap()
    };
    let external = |csr: Vec<u8>, certificates: Vec<Vec<u8>>, csr_signature: Vec<u8>| pb::EnrollReaderRequest {
        csr,
        authorization: Some(pb::enroll_reader_request::Authorization::External(pb::ExternalCredential {
            certificates,
            csr_signature,
        })),
        ..Default::default()
    };
    let csr = make_csr(&dir, "ext-reader", "ec", "/CN=R3301000555", &[]);

    // A signature over other bytes, a certificate of a CA that is not an
    // external anchor, and a CSR for another reader are all refused.
    let wrong = sign(b"something else", "wrong", &ministry.key);
    let err = anon.enroll_reader(external(csr.der.clone(), vec![ministry_der.clone()], wrong)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let city = setup.pki.client("R3301000555", None, None);
    openssl_ok(&dir, &["x509", "-in", &city.cert.display().to_string(), "-outform", "DER", "-out", "city.der"]);
    let city_der = std::fs::read(dir.join("city.der")).unwrap();
    let sig = sign(&csr.der, "city", &city.key);
    let err = anon.enroll_reader(external(csr.der.clone(), vec![city_der], sig)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let other = make_csr(&dir, "ext-other", "ec", "/CN=R3301000556", &[]);
    let sig = sign(&other.der, "other", &ministry.key);
    let err = anon.enroll_reader(external(other.der.clone(), vec![ministry_der.clone()], sig)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("subject_mismatch"), "{}", err.message());

    let sig = sign(&csr.der, "good", &ministry.key);
    let got = anon.enroll_reader(external(csr.der.clone(), vec![ministry_der], sig)).await.unwrap().into_inner();
    let cert = got.signing.unwrap().certificate.unwrap();
    assert_eq!((cert.role.as_str(), cert.tenant.as_str()), ("reader", "city-3301"));
    assert!(cert.requested_by.starts_with("external:R3301000555"), "{}", cert.requested_by);
    let path = write(&dir, "ext.pem", pem("CERTIFICATE", &cert.der));
    let out = openssl_ok(
        &dir,
        &[
            "verify",
            "-CAfile",
            &setup.pki.ca_pem.display().to_string(),
            "-untrusted",
            &issuing.display().to_string(),
            &path.display().to_string(),
        ],
    );
    assert!(out.contains("OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_another_replica_within_the_refresh_interval() {
    // Two replicas on one database: a client certificate revoked through
    // the first stops authenticating there at once, and on the second
    // within `ca.revocation_refresh_ms` (1 s in the test configuration).
    let setup = Setup::new(DbKind::Sqlite).await;
    let config = setup.write_config();
    let first = Server::spawn(&config, setup.dir.path());
    stand_up_ca(&setup, &first, "ec-p256").await;
    let mut op = certs_client(&setup, &first, "operator").await;
    let (issued, client) = issue_client_tls(&setup, &first, "auditor-9", "auditor").await;
    let second = Server::spawn(&config, setup.dir.path());
    let who = |server: &Server| {
        let opts = setup.client_options(server, &client);
        async move {
            let channel = opts.connect().await.unwrap();
            AdminServiceClient::new(channel).who_am_i(pb::WhoAmIRequest {}).await.map(|_| ()).map_err(|e| e.code())
        }
    };
    assert_eq!(who(&first).await, Ok(()));
    assert_eq!(who(&second).await, Ok(()));
    op.revoke_certificate(pb::RevokeCertificateRequest {
        serial: issued.certificate.unwrap().serial,
        reason: pb::RevocationReason::PrivilegeWithdrawn as i32,
    })
    .await
    .unwrap();
    assert_eq!(who(&first).await, Err(Code::Unauthenticated));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match who(&second).await {
            Err(Code::Unauthenticated) => break,
            other => {
                assert!(std::time::Instant::now() < deadline, "the second replica still accepts it: {other:?}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}
