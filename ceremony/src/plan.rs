//! The ceremony plan: a TOML file naming the module and token, the
//! officers and their credentials, the keys, and the steps in order.
//! [`Plan::load`] checks all of it (unknown steps, officers or keys,
//! quorums that cannot be met, inconsistent parameters) before anything
//! touches the token. `docs/ceremony.md` documents every field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kms::config::VendorMechanisms;
use kms::keys::{Algorithm, Purpose};
use serde::Deserialize;

use crate::credential::Credential;
use crate::error::CeremonyError;

/// Largest plan file read.
pub const MAX_PLAN_BYTES: u64 = 1 << 20;
/// Most officers in one plan.
pub const MAX_OFFICERS: usize = 32;
/// Most key components or backup shares.
pub const MAX_PARTS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    ceremony: RawCeremony,
    hsm: RawHsm,
    #[serde(default, rename = "officer")]
    officers: Vec<RawOfficer>,
    #[serde(default, rename = "key")]
    keys: Vec<RawKey>,
    #[serde(default, rename = "step")]
    steps: Vec<Step>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCeremony {
    name: String,
    #[serde(default = "default_quorum")]
    quorum: usize,
}

fn default_quorum() -> usize {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHsm {
    module: PathBuf,
    token: String,
    #[serde(default)]
    module_env: BTreeMap<String, String>,
    #[serde(default)]
    vendor: VendorMechanisms,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOfficer {
    name: String,
    credential: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    label: String,
    algorithm: String,
    purpose: String,
    #[serde(default)]
    kcv: Option<String>,
    #[serde(default)]
    backup: bool,
}

/// The HSM the ceremony uses.
#[derive(Debug, Clone)]
pub struct HsmPlan {
    /// PKCS#11 module path.
    pub module: PathBuf,
    /// Token label.
    pub token: String,
    /// Environment set for the module before it is loaded.
    pub module_env: BTreeMap<String, String>,
    /// Vendor mechanism numbers (SM4, key XOR, ...).
    pub vendor: VendorMechanisms,
}

/// A named officer.
#[derive(Debug, Clone)]
pub struct Officer {
    /// Name, as the transcript records it.
    pub name: String,
    /// Their passphrase's PBKDF2 record.
    pub credential: Credential,
}

/// A key the plan makes, imports, backs up or hands over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPlan {
    /// The plan's name for it (steps refer to it).
    pub name: String,
    /// CKA_LABEL in the token; the catalogue name at hand-over.
    pub label: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// Purpose (sets the HSM usage flags).
    pub purpose: Purpose,
    /// The KCV the key's owner published (import steps check it).
    pub kcv: Option<String>,
    /// Whether the key may be backed up: made extractable only under a
    /// trusted (SO-made) key. Otherwise it is never extractable.
    pub backup: bool,
}

impl KeyPlan {
    /// How the key may leave the token.
    pub fn export(&self) -> kms::hsm::keyops::Export {
        if self.backup { kms::hsm::keyops::Export::TrustedWrapOnly } else { kms::hsm::keyops::Export::Never }
    }
}

/// One step of a plan.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Step {
    /// Initialise the token (label from `[hsm]`), set SO and user PINs.
    TokenInit {
        /// Re-initialise a token that is already initialised (erases it).
        #[serde(default)]
        wipe: bool,
        /// Officers who must authorise it (default: the ceremony's quorum).
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Generate a master key in the token, optionally as components.
    GenerateKey {
        /// The key (a `[[key]]` name).
        key: String,
        /// Number of components (0: none, the key never leaves the HSM
        /// except wrapped; otherwise 2 to 16, one per custodian).
        #[serde(default)]
        components: usize,
        /// The custodians, one per component, in order.
        #[serde(default)]
        custodians: Vec<String>,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Import a key from components entered by custodians in turn.
    ImportComponents {
        /// The key (a `[[key]]` name with its published `kcv`).
        key: String,
        /// The custodians, one per component, in order.
        custodians: Vec<String>,
        /// Each component's published KCV, in the custodians' order.
        component_kcvs: Vec<String>,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Import a key wrapped under a transport key already in the token.
    ImportWrapped {
        /// The key (a `[[key]]` name with its published `kcv`).
        key: String,
        /// The transport key (a `[[key]]` name, purpose `transport_import`).
        transport: String,
        /// File holding the wrapped key, hex.
        wrapped_file: PathBuf,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Back up keys under a fresh backup key split among custodians.
    Backup {
        /// The keys (`[[key]]` names).
        keys: Vec<String>,
        /// Share holders, one share each.
        custodians: Vec<String>,
        /// Shares needed to restore.
        threshold: usize,
        /// The backup file to write.
        output: PathBuf,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Restore a backup into the token from `threshold` shares.
    Restore {
        /// The backup file.
        input: PathBuf,
        /// The share holders present, in the order they enter shares.
        custodians: Vec<String>,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Generate the root CA key in the token and self-sign its certificate.
    RootCa {
        /// CKA_LABEL of the key pair.
        label: String,
        /// `ec-p256`, `ec-p384`, `rsa-3072` or `rsa-4096`.
        key_type: String,
        /// Subject attributes: `C`, `ST`, `L`, `O`, `OU`, `CN`.
        subject: BTreeMap<String, String>,
        /// Validity in days.
        validity_days: u32,
        /// Certificate file to write (PEM).
        output: PathBuf,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Sign an issuing CA's CSR with the root.
    SignCsr {
        /// The root's CKA_LABEL.
        root_label: String,
        /// The root certificate (PEM).
        root_certificate: PathBuf,
        /// The CSR (PEM or DER).
        csr: PathBuf,
        /// Validity in days (cut to the root's).
        validity_days: u32,
        /// pathLenConstraint (absent: none).
        #[serde(default)]
        path_len: Option<u8>,
        /// Permitted dNSName subtrees.
        #[serde(default)]
        permitted_dns: Vec<String>,
        /// Excluded dNSName subtrees.
        #[serde(default)]
        excluded_dns: Vec<String>,
        /// CRL distribution point written into the certificate.
        #[serde(default)]
        crl_url: Option<String>,
        /// Certificate file to write (PEM).
        output: PathBuf,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Issue the root's CRL.
    RootCrl {
        /// The root's CKA_LABEL.
        root_label: String,
        /// The root certificate (PEM).
        root_certificate: PathBuf,
        /// CRL number (must grow from one CRL to the next).
        number: u64,
        /// nextUpdate, in days from now.
        validity_days: u32,
        /// Revoked serial numbers, hex (reason unspecified).
        #[serde(default)]
        revoked: Vec<String>,
        /// CRL file to write (PEM).
        output: PathBuf,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
    /// Write the hand-over file `ceremony handover import` reads (its
    /// SHA-256 goes into the signed transcript).
    Handover {
        /// The keys (`[[key]]` names).
        keys: Vec<String>,
        /// The file to write.
        output: PathBuf,
        /// Officers who must authorise it.
        #[serde(default)]
        quorum: Option<usize>,
    },
}

impl Step {
    /// The step's type name, as plans and transcripts spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::TokenInit { .. } => "token-init",
            Step::GenerateKey { .. } => "generate-key",
            Step::ImportComponents { .. } => "import-components",
            Step::ImportWrapped { .. } => "import-wrapped",
            Step::Backup { .. } => "backup",
            Step::Restore { .. } => "restore",
            Step::RootCa { .. } => "root-ca",
            Step::SignCsr { .. } => "sign-csr",
            Step::RootCrl { .. } => "root-crl",
            Step::Handover { .. } => "handover",
        }
    }

    fn quorum(&self) -> Option<usize> {
        match self {
            Step::TokenInit { quorum, .. }
            | Step::GenerateKey { quorum, .. }
            | Step::ImportComponents { quorum, .. }
            | Step::ImportWrapped { quorum, .. }
            | Step::Backup { quorum, .. }
            | Step::Restore { quorum, .. }
            | Step::RootCa { quorum, .. }
            | Step::SignCsr { quorum, .. }
            | Step::RootCrl { quorum, .. }
            | Step::Handover { quorum, .. } => *quorum,
        }
    }
}

/// A checked plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The plan file.
    pub path: PathBuf,
    /// SHA-256 of the plan file, recorded in the transcript.
    pub sha256: [u8; 32],
    /// The ceremony's name.
    pub name: String,
    /// Officers needed for a step that names no quorum.
    pub quorum: usize,
    /// The HSM.
    pub hsm: HsmPlan,
    /// Officers.
    pub officers: Vec<Officer>,
    /// Keys by plan name.
    pub keys: BTreeMap<String, KeyPlan>,
    /// Steps in order.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Reads and checks a plan file.
    pub fn load(path: &Path) -> Result<Plan, CeremonyError> {
        let fail = |reason: String| CeremonyError::Plan { path: path.to_owned(), reason };
        let meta = std::fs::metadata(path).map_err(CeremonyError::file(path))?;
        if meta.len() > MAX_PLAN_BYTES {
            return Err(fail(format!("{} bytes is more than the {MAX_PLAN_BYTES} a plan may have", meta.len())));
        }
        let text = std::fs::read_to_string(path).map_err(CeremonyError::file(path))?;
        let sha256 = <sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()).into();
        let raw: RawPlan = toml::from_str(&text).map_err(|e| fail(e.to_string().trim_end().to_owned()))?;
        Plan::check(path, raw, sha256).map_err(fail)
    }

    fn check(path: &Path, raw: RawPlan, sha256: [u8; 32]) -> Result<Plan, String> {
        if raw.ceremony.name.trim().is_empty() || raw.ceremony.name.len() > 128 {
            return Err("ceremony.name must be 1-128 characters".into());
        }
        if raw.hsm.token.is_empty() || raw.hsm.token.len() > 32 {
            return Err("hsm.token must be 1-32 bytes (a PKCS#11 token label)".into());
        }
        if raw.officers.len() > MAX_OFFICERS {
            return Err(format!("{} officers; at most {MAX_OFFICERS}", raw.officers.len()));
        }
        let mut officers = Vec::new();
        for o in raw.officers {
            if o.name.is_empty() || !o.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                return Err(format!("officer {:?}: a name is letters, digits, '-', '_' or '.'", o.name));
            }
            if officers.iter().any(|x: &Officer| x.name == o.name) {
                return Err(format!("officer {:?} is listed twice", o.name));
            }
            let credential =
                Credential::parse(&o.credential).map_err(|e| format!("officer {:?}: credential: {e}", o.name))?;
            officers.push(Officer { name: o.name, credential });
        }
        let mut keys = BTreeMap::new();
        let mut labels = BTreeSet::new();
        for k in raw.keys {
            let algorithm = Algorithm::from_stored(&k.algorithm).map_err(|_| {
                format!("key {:?}: algorithm {:?} is not one of DES2, AES128, AES192, AES256, SM4", k.name, k.algorithm)
            })?;
            let purpose = Purpose::from_stored(&k.purpose).map_err(|_| {
                format!(
                    "key {:?}: purpose {:?} is not one of derivation_master, transport_export, transport_import, mac, escrow",
                    k.name, k.purpose
                )
            })?;
            purpose.check_algorithm(algorithm).map_err(|e| format!("key {:?}: {e}", k.name))?;
            kms::keys::KeyName::parse("label", &k.label).map_err(|e| format!("key {:?}: label: {e}", k.name))?;
            if let Some(kcv) = &k.kcv
                && (kcv.len() != 6 || hex::decode(kcv).is_err())
            {
                return Err(format!("key {:?}: kcv {kcv:?} must be 6 hex digits", k.name));
            }
            if !labels.insert(k.label.clone()) {
                return Err(format!("key {:?}: label {:?} is used by another key", k.name, k.label));
            }
            let plan = KeyPlan {
                name: k.name.clone(),
                label: k.label,
                algorithm,
                purpose,
                kcv: k.kcv.map(|s| s.to_uppercase()),
                backup: k.backup,
            };
            if keys.insert(k.name.clone(), plan).is_some() {
                return Err(format!("key {:?} is listed twice", k.name));
            }
        }
        let plan = Plan {
            path: path.to_owned(),
            sha256,
            name: raw.ceremony.name,
            quorum: raw.ceremony.quorum,
            hsm: HsmPlan {
                module: raw.hsm.module,
                token: raw.hsm.token,
                module_env: raw.hsm.module_env,
                vendor: raw.hsm.vendor,
            },
            officers,
            keys,
            steps: raw.steps,
        };
        if plan.steps.is_empty() {
            return Err("the plan has no [[step]]".into());
        }
        for (i, step) in plan.steps.iter().enumerate() {
            plan.check_step(i, step).map_err(|e| format!("step {} ({}): {e}", i + 1, step.kind()))?;
        }
        plan.check_labels()?;
        Ok(plan)
    }

    fn check_step(&self, index: usize, step: &Step) -> Result<(), String> {
        let quorum = self.quorum_of(step);
        // why: dual control. Only publishing a CRL and writing the
        // hand-over file may be done by one officer.
        let least = if matches!(step, Step::RootCrl { .. } | Step::Handover { .. }) { 1 } else { 2 };
        if quorum < least {
            return Err(format!("a quorum of {quorum} is below the {least} officers this step needs"));
        }
        if quorum > self.officers.len() {
            return Err(format!("needs {quorum} officers but the plan names only {}", self.officers.len()));
        }
        match step {
            Step::TokenInit { .. } => {
                if index != 0 {
                    return Err("token-init must be the first step".into());
                }
            }
            Step::GenerateKey { key, components, custodians, .. } => {
                if self.key(key)?.kcv.is_some() {
                    return Err(format!("key {key:?} has a published kcv, which only import steps check; remove it"));
                }
                if *components == 0 {
                    if !custodians.is_empty() {
                        return Err("custodians are named but components = 0".into());
                    }
                } else {
                    if !(2..=MAX_PARTS).contains(components) {
                        return Err(format!("components must be 0 or 2 to {MAX_PARTS}"));
                    }
                    if custodians.len() != *components {
                        return Err(format!(
                            "{components} components need {components} custodians, not {}",
                            custodians.len()
                        ));
                    }
                    self.custodians(custodians)?;
                }
            }
            Step::ImportComponents { key, custodians, component_kcvs, .. } => {
                let k = self.key(key)?;
                if k.kcv.is_none() {
                    return Err(format!("key {key:?} has no published kcv to check the combined key against"));
                }
                if !(2..=MAX_PARTS).contains(&custodians.len()) {
                    return Err(format!("2 to {MAX_PARTS} custodians, one per component"));
                }
                self.custodians(custodians)?;
                if component_kcvs.len() != custodians.len() {
                    return Err(format!("{} component_kcvs for {} custodians", component_kcvs.len(), custodians.len()));
                }
                for kcv in component_kcvs {
                    if kcv.len() != 6 || hex::decode(kcv).is_err() {
                        return Err(format!("component kcv {kcv:?} must be 6 hex digits"));
                    }
                }
            }
            Step::ImportWrapped { key, transport, .. } => {
                let k = self.key(key)?;
                if k.kcv.is_none() {
                    return Err(format!("key {key:?} has no published kcv"));
                }
                let t = self.key(transport)?;
                if t.purpose != Purpose::TransportImport {
                    return Err(format!("transport key {transport:?} has purpose {}, not transport_import", t.purpose));
                }
            }
            Step::Backup { keys, custodians, threshold, .. } => {
                if keys.is_empty() {
                    return Err("no keys to back up".into());
                }
                for k in keys {
                    if !self.key(k)?.backup {
                        return Err(format!("key {k:?} is not marked backup = true, so it is never extractable"));
                    }
                }
                if !(2..=MAX_PARTS).contains(&custodians.len()) {
                    return Err(format!("2 to {MAX_PARTS} custodians, one share each"));
                }
                self.custodians(custodians)?;
                if *threshold < 2 || *threshold > custodians.len() {
                    return Err(format!("threshold {threshold} must be 2 to {} (the custodians)", custodians.len()));
                }
            }
            Step::Restore { custodians, .. } => {
                // why: a backup is restored into an empty token only.
                if !(index == 0 || (index == 1 && matches!(self.steps[0], Step::TokenInit { .. }))) {
                    return Err(
                        "restore must be the first step, or follow token-init: it restores into an empty token".into(),
                    );
                }
                if custodians.len() < 2 || custodians.len() > MAX_PARTS {
                    return Err(format!("2 to {MAX_PARTS} share holders"));
                }
                self.custodians(custodians)?;
            }
            Step::RootCa { key_type, subject, validity_days, .. } => {
                let kt: kms_ca::KeyType =
                    key_type.parse().map_err(|_| format!("key_type {key_type:?} is not known"))?;
                if matches!(kt, kms_ca::KeyType::Sm2) {
                    return Err("SM2 roots are not supported (the certificate code has no SM2 signer)".into());
                }
                if matches!(kt, kms_ca::KeyType::Rsa2048) {
                    return Err(
                        "a root key is ec-p256, ec-p384, rsa-3072 or rsa-4096 (RSA-2048 is too weak for a root)".into(),
                    );
                }
                crate::steps::subject(subject)?;
                if *validity_days == 0 || *validity_days > 30 * 365 {
                    return Err("validity_days must be 1 to 10950".into());
                }
            }
            Step::SignCsr { validity_days, .. } | Step::RootCrl { validity_days, .. } => {
                if *validity_days == 0 || *validity_days > 30 * 365 {
                    return Err("validity_days must be 1 to 10950".into());
                }
                if let Step::RootCrl { revoked, number, .. } = step {
                    if *number == 0 {
                        return Err("number must be at least 1".into());
                    }
                    for s in revoked {
                        if hex::decode(s).map(|b| b.is_empty() || b.len() > 20).unwrap_or(true) {
                            return Err(format!("revoked serial {s:?} must be 1-20 bytes of hex"));
                        }
                    }
                }
            }
            Step::Handover { keys, .. } => {
                if keys.is_empty() {
                    return Err("no keys to hand over".into());
                }
                for k in keys {
                    self.key(k)?;
                }
            }
        }
        Ok(())
    }

    /// Follows the labels the steps create and use: none is made twice, a
    /// root key does not take a key's label, and after token-init (which
    /// leaves the token empty) a step uses only what an earlier step made.
    /// The token's own contents are checked when the ceremony starts.
    fn check_labels(&self) -> Result<(), String> {
        let fresh = matches!(self.steps.first(), Some(Step::TokenInit { .. }));
        // After a restore the token holds the backup's keys, which only the
        // backup file names: they are checked when the file is read.
        let mut restored = false;
        let mut made: BTreeSet<&str> = BTreeSet::new();
        let key_labels: BTreeSet<&str> = self.keys.values().map(|k| k.label.as_str()).collect();
        for (i, step) in self.steps.iter().enumerate() {
            let at = |e: String| format!("step {} ({}): {e}", i + 1, step.kind());
            let need = |label: &str| {
                if fresh && !restored && !made.contains(label) {
                    Err(at(format!(
                        "{label:?} is not in the token then: token-init empties it and no earlier step makes it"
                    )))
                } else {
                    Ok(())
                }
            };
            let mut created: Vec<&str> = Vec::new();
            match step {
                Step::GenerateKey { key, .. } | Step::ImportComponents { key, .. } => {
                    created.push(&self.key(key)?.label)
                }
                Step::ImportWrapped { key, transport, .. } => {
                    need(&self.key(transport)?.label)?;
                    created.push(&self.key(key)?.label);
                }
                Step::Backup { keys, .. } | Step::Handover { keys, .. } => {
                    for k in keys {
                        need(&self.key(k)?.label)?;
                    }
                }
                Step::RootCa { label, .. } => {
                    if key_labels.contains(label.as_str()) {
                        return Err(at(format!("label {label:?} is also a [[key]]'s label")));
                    }
                    created.push(label);
                }
                Step::SignCsr { root_label, .. } | Step::RootCrl { root_label, .. } => need(root_label)?,
                Step::TokenInit { .. } => {}
                Step::Restore { .. } => restored = true,
            }
            for label in created {
                if !made.insert(label) {
                    return Err(at(format!("{label:?} is made by an earlier step of this plan")));
                }
            }
        }
        Ok(())
    }

    /// Labels the steps create, in order (restores excluded: their labels
    /// are in the backup file).
    pub fn created_labels(&self) -> Vec<String> {
        let mut out = Vec::new();
        for step in &self.steps {
            match step {
                Step::GenerateKey { key, .. }
                | Step::ImportComponents { key, .. }
                | Step::ImportWrapped { key, .. } => {
                    if let Ok(k) = self.key(key) {
                        out.push(k.label.clone());
                    }
                }
                Step::RootCa { label, .. } => out.push(label.clone()),
                _ => {}
            }
        }
        out
    }

    /// Officers a step needs.
    pub fn quorum_of(&self, step: &Step) -> usize {
        step.quorum().unwrap_or(self.quorum)
    }

    /// A key by plan name.
    pub fn key(&self, name: &str) -> Result<&KeyPlan, String> {
        self.keys.get(name).ok_or_else(|| format!("key {name:?} is not a [[key]] of the plan"))
    }

    /// An officer by name.
    pub fn officer(&self, name: &str) -> Option<&Officer> {
        self.officers.iter().find(|o| o.name == name)
    }

    fn custodians(&self, names: &[String]) -> Result<(), String> {
        for (i, n) in names.iter().enumerate() {
            if self.officer(n).is_none() {
                return Err(format!("custodian {n:?} is not an [[officer]] of the plan"));
            }
            if names[..i].contains(n) {
                return Err(format!("custodian {n:?} is named twice (split knowledge needs different people)"));
            }
        }
        Ok(())
    }

    /// A path in the plan, relative to the plan file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        match self.path.parent() {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> String {
        Credential::new(&secrecy::SecretString::from("x"), [1; 16]).to_string()
    }

    fn plan(steps: &str) -> Result<Plan, String> {
        let c = credential();
        let text = format!(
            r#"
[ceremony]
name = "test"
[hsm]
module = "/nonexistent.so"
token = "t"
[[officer]]
name = "alice"
credential = "{c}"
[[officer]]
name = "bob"
credential = "{c}"
[[officer]]
name = "carol"
credential = "{c}"
[[key]]
name = "dpk"
label = "city/3301/mohurd/dpk"
algorithm = "DES2"
purpose = "derivation_master"
backup = true
[[key]]
name = "delivered"
label = "city/3301/mohurd/delivered"
algorithm = "DES2"
purpose = "derivation_master"
kcv = "08D7B4"
[[key]]
name = "kek"
label = "city/3301/kek"
algorithm = "AES128"
purpose = "transport_import"
{steps}"#
        );
        let raw: RawPlan = toml::from_str(&text).map_err(|e| e.to_string())?;
        Plan::check(Path::new("plan.toml"), raw, [0; 32])
    }

    #[test]
    fn a_good_plan_loads() -> Result<(), String> {
        let p = plan(
            r#"
[[step]]
type = "token-init"
[[step]]
type = "generate-key"
key = "dpk"
components = 3
custodians = ["alice", "bob", "carol"]
[[step]]
type = "backup"
keys = ["dpk"]
custodians = ["alice", "bob", "carol"]
threshold = 2
output = "backup.json"
"#,
        )?;
        assert_eq!(p.steps.len(), 3);
        assert_eq!(p.quorum_of(&p.steps[0]), 2);
        Ok(())
    }

    #[test]
    fn bad_plans_name_the_problem() {
        let cases = [
            ("[[step]]\ntype = \"make-coffee\"\n", "unknown variant `make-coffee`"),
            ("[[step]]\ntype = \"generate-key\"\nkey = \"nope\"\n", "key \"nope\" is not a [[key]]"),
            (
                "[[step]]\ntype = \"generate-key\"\nkey = \"dpk\"\ncomponents = 3\ncustodians = [\"alice\", \"bob\", \"mallory\"]\n",
                "custodian \"mallory\" is not an [[officer]]",
            ),
            ("[[step]]\ntype = \"token-init\"\nquorum = 4\n", "needs 4 officers but the plan names only 3"),
            (
                "[[step]]\ntype = \"generate-key\"\nkey = \"dpk\"\ncomponents = 2\ncustodians = [\"alice\", \"alice\"]\n",
                "named twice",
            ),
            (
                "[[step]]\ntype = \"backup\"\nkeys = [\"dpk\"]\ncustodians = [\"alice\", \"bob\"]\nthreshold = 3\noutput = \"b\"\n",
                "threshold 3 must be 2 to 2",
            ),
            ("[[step]]\ntype = \"generate-key\"\nkey = \"dpk\"\ncolour = \"red\"\n", "unknown field `colour`"),
            (
                "[[step]]\ntype = \"import-wrapped\"\nkey = \"delivered\"\ntransport = \"dpk\"\nwrapped_file = \"w\"\n",
                "not transport_import",
            ),
            (
                "[[step]]\ntype = \"generate-key\"\nkey = \"dpk\"\n[[step]]\ntype = \"token-init\"\n",
                "must be the first step",
            ),
            ("", "no [[step]]"),
        ];
        for (steps, want) in cases {
            let e = plan(steps).err().unwrap_or_else(|| format!("accepted: {steps}"));
            assert!(e.contains(want), "{steps}\n=> {e}\nwanted {want}");
        }
    }
}
