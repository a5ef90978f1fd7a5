//! The certificate authority from a test's side: configuration, an issuing
//! CA stood up in the token and signed by the harness root, CSRs made by
//! OpenSSL, and clients with and without a certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

use kms_proto::v1 as pb;
use kms_proto::v1::certificate_service_client::CertificateServiceClient;
use kms_proto::v1::key_service_client::KeyServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::pki::ClientCert;
use crate::server::{Server, Setup};

/// The escrow key the test configuration names (`[ca] escrow_key`, see
/// `server::Setup`).
pub const ESCROW_KEY: &str = "city/3301/ca/escrow";
/// The issuing CA's name.
pub const ISSUER: &str = "city-3301-2026";

/// Runs openssl in `dir`; returns (success, stdout + stderr).
pub fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs openssl in `dir` and panics with its output unless it succeeds.
pub fn openssl_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, text) = openssl(dir, args);
    assert!(ok, "openssl {args:?} failed:\n{text}");
    text
}

/// PEM of a DER object.
pub fn pem(label: &str, der: &[u8]) -> String {
    kms_ca::pem(label, der)
}

/// A key and a CSR made by OpenSSL (the reader's or server's side).
pub struct Csr {
    /// The private key file (PEM).
    pub key: PathBuf,
    /// The CSR (DER).
    pub der: Vec<u8>,
}

/// Makes a key (`ec`: P-256, `rsa1024`, `rsa2048`) and a CSR for `subject`
/// with OpenSSL; `extra` goes to `openssl req` (e.g. `-addext ...`).
pub fn make_csr(dir: &Path, stem: &str, key: &str, subject: &str, extra: &[&str]) -> Csr {
    let key_path = dir.join(format!("{stem}.key"));
    let csr_path = dir.join(format!("{stem}.csr"));
    let mut args: Vec<String> = vec!["req".into(), "-new".into(), "-nodes".into()];
    match key {
        "ec" => args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"].map(String::from)),
        "rsa1024" => args.extend(["-newkey", "rsa:1024"].map(String::from)),
        "rsa2048" => args.extend(["-newkey", "rsa:2048"].map(String::from)),
        other => panic!("key {other}"),
    }
    args.extend(["-keyout".into(), key_path.display().to_string(), "-subj".into(), subject.into()]);
    args.extend(["-outform".into(), "DER".into(), "-out".into(), csr_path.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl_ok(dir, &refs);
    Csr { key: key_path, der: std::fs::read(&csr_path).unwrap() }
}

/// Writes a file under `dir`.
pub fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A CertificateService client as a principal with `role`.
pub async fn certs_client(setup: &Setup, server: &Server, role: &str) -> CertificateServiceClient<Channel> {
    CertificateServiceClient::new(setup.channel(server, role).await)
}

/// A channel without a client certificate (how a reader enrolls).
pub async fn anonymous(setup: &Setup, server: &Server) -> CertificateServiceClient<Channel> {
    let ca = std::fs::read(&setup.pki.ca_pem).unwrap();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{}", server.grpc_port))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    CertificateServiceClient::new(channel)
}

/// Creates the issuing CA [`ISSUER`] in the token, has the harness root
/// sign it, activates it, and creates the escrow key. Returns the issuing
/// CA's certificate file (PEM) for `openssl verify -untrusted`.
pub async fn stand_up_ca(setup: &Setup, server: &Server, key_type: &str) -> PathBuf {
    let issuing = add_issuer(setup, server, ISSUER, key_type).await;
    let mut keys = KeyServiceClient::new(setup.channel(server, "security_officer").await);
    keys.create_key(pb::CreateKeyRequest {
        name: ESCROW_KEY.into(),
        algorithm: pb::KeyAlgorithm::Aes256 as i32,
        purpose: pb::KeyPurpose::Escrow as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    issuing
}

/// Creates and activates issuer `name` (key of `key_type` in the token,
/// certificate from the harness root); returns its certificate file.
pub async fn add_issuer(setup: &Setup, server: &Server, name: &str, key_type: &str) -> PathBuf {
    let mut so = certs_client(setup, server, "security_officer").await;
    let created = so
        .create_issuer(pb::CreateIssuerRequest {
            name: name.into(),
            common_name: "Hangzhou Transit Issuing CA 2026".into(),
            organization: "Hangzhou City Card".into(),
            country: "CN".into(),
            key_type: key_type.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let issuer = created.issuer.unwrap();
    assert_eq!(issuer.state, pb::IssuerState::Pending as i32);
    let dir = setup.dir.path();
    // The CSR is signed by the HSM key: OpenSSL checks it.
    let csr_path = write(dir, &format!("{name}.csr"), &created.csr);
    openssl_ok(dir, &["req", "-inform", "DER", "-in", &csr_path.display().to_string(), "-verify", "-noout"]);
    let cert_pem = setup.pki.sign_issuing_ca(&created.csr);
    let root = std::fs::read(&setup.pki.ca_pem).unwrap();
    let active = so
        .activate_issuer(pb::ActivateIssuerRequest {
            name: name.into(),
            certificate: cert_pem.clone().into_bytes(),
            chain: root,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.state, pb::IssuerState::Active as i32);
    assert_eq!(active.crl_url, format!("http://crl.test/crl/{name}.crl"));
    assert_eq!(active.key_type, key_type);
    // Activating twice is refused and changes nothing.
    let again = so
        .activate_issuer(pb::ActivateIssuerRequest {
            name: name.into(),
            certificate: cert_pem.clone().into_bytes(),
            chain: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    write(dir, &format!("{name}.pem"), cert_pem)
}

/// The client certificate file with its chain, for mTLS as an issued cert.
pub fn client_with_chain(dir: &Path, stem: &str, issued: &pb::IssuedCertificate, key: &Path) -> ClientCert {
    let mut text = pem("CERTIFICATE", &issued.certificate.as_ref().unwrap().der);
    for c in &issued.chain[..1] {
        text.push_str(&pem("CERTIFICATE", c));
    }
    ClientCert { cert: write(dir, &format!("{stem}-chain.pem"), text), key: key.to_owned() }
}

/// Issues a client-tls certificate for a new OpenSSL key with subject
/// `/CN=<name>`, role `role` and tenant `city-3301`, as an operator, and
/// returns it with the client files (certificate + issuing CA, key) for mTLS.
pub async fn issue_client_tls(
    setup: &Setup,
    server: &Server,
    name: &str,
    role: &str,
) -> (pb::IssuedCertificate, ClientCert) {
    let dir = setup.dir.path();
    let csr = make_csr(dir, name, "ec", &format!("/CN={name}"), &[]);
    let issued = certs_client(setup, server, "operator")
        .await
        .issue_server_certificate(pb::IssueServerCertificateRequest {
            csr: csr.der.clone(),
            profile: "client-tls".into(),
            role: role.into(),
            tenant: "city-3301".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let client = client_with_chain(dir, name, &issued, &csr.key);
    (issued, client)
}
