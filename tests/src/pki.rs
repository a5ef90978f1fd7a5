//! A throw-away PKI for tests: a CA with its key on the host (test
//! material only), the server's certificate, and client certificates for
//! any role. A second, foreign CA makes certificates the server must refuse.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Paths of a client's certificate and key.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Key (PEM).
    pub key: PathBuf,
}

/// A test CA.
pub struct TestPki {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate file.
    pub ca_pem: PathBuf,
}

impl TestPki {
    /// Makes a CA called `name`, writing files under `dir`.
    pub fn new(dir: &Path, name: &str) -> TestPki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        let ca_pem = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_pem, cert.pem()).unwrap();
        TestPki { dir: dir.to_owned(), name: name.to_owned(), issuer: Issuer::new(params, key), ca_pem }
    }

    fn write(&self, stem: &str, params: CertificateParams) -> ClientCert {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let c = ClientCert {
            cert: self.dir.join(format!("{}-{stem}.pem", self.name)),
            key: self.dir.join(format!("{}-{stem}.key", self.name)),
        };
        std::fs::write(&c.cert, cert.pem()).unwrap();
        std::fs::write(&c.key, key.serialize_pem()).unwrap();
        c
    }

    /// A server certificate for localhost / 127.0.0.1.
    pub fn server(&self) -> ClientCert {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.write("server", params)
    }

    /// A client certificate with the given role and tenant URI SANs (either
    /// may be left out to make a certificate the service must refuse).
    pub fn client(&self, name: &str, role: Option<&str>, tenant: Option<&str>) -> ClientCert {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if let Some(r) = role {
            params.subject_alt_names.push(SanType::URI(format!("urn:kms:role:{r}").try_into().unwrap()));
        }
        if let Some(t) = tenant {
            params.subject_alt_names.push(SanType::URI(format!("urn:kms:tenant:{t}").try_into().unwrap()));
        }
        self.write(name, params)
    }

    /// Signs an issuing CA's CSR as the offline root would (the test
    /// harness stands in for the ceremony): CA, path length 0, keyCertSign
    /// and cRLSign, five years. Returns the certificate as PEM.
    pub fn sign_issuing_ca(&self, csr_der: &[u8]) -> String {
        let der = rustls_pki_types::CertificateSigningRequestDer::from(csr_der.to_vec());
        let mut csr = rcgen::CertificateSigningRequestParams::from_der(&der).unwrap();
        csr.params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        csr.params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        csr.params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        csr.params.not_before = now - time::Duration::minutes(5);
        csr.params.not_after = now + time::Duration::days(5 * 365);
        csr.signed_by(&self.issuer).unwrap().pem()
    }
}
