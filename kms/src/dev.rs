//! `kms dev`: everything a local development instance needs, created on
//! first run in one data directory, then reused.
//!
//! - a token labelled `kms-dev` in the PKCS#11 module (SoftHSM's token
//!   directory lives inside the data directory), with random SO and user
//!   PINs in `so.pin` / `user.pin` (mode 0600);
//! - a development CA whose ECDSA P-256 key is generated in that token and
//!   never leaves it;
//! - a server certificate for `localhost` / `127.0.0.1`, an `admin` client
//!   certificate (role `operator`, tenant `dev`) and an `officer` one (role
//!   `security_officer`, for key ceremonies' online parts and issuing CAs),
//!   all signed by the CA in the token; their private keys are files (they
//!   are TLS keys of a development instance, not keys the service protects);
//! - `kms.toml` for the server, `client.toml` (operator) and
//!   `client-officer.toml` (security officer) for the CLI, and the SQLite
//!   database.
//!
//! Development only: the PINs and TLS keys sit in plain files.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;
use time::Duration;

use crate::hsm::signer::{HsmSigner, P256_PARAMS};
use crate::hsm::{HsmError, rv_name};

/// Token label of the development token.
pub const TOKEN_LABEL: &str = "kms-dev";
/// Label of the development CA key pair in the token.
pub const CA_KEY_LABEL: &str = "kms-dev-ca";
/// SoftHSM as Debian installs it.
pub const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Why the development instance could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No module was found.
    #[error("no PKCS#11 module: {0}")]
    NoModule(String),
    /// The module failed.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Ca(#[from] kms_ca::CaError),
    /// Key generation for a TLS key failed.
    #[error("TLS key: {0}")]
    Key(#[from] rcgen::Error),
}

/// Options for `kms dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// PKCS#11 module; `None` picks the default.
    pub module: Option<PathBuf>,
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Operations listen address.
    pub ops_listen: SocketAddr,
    /// Policy directory.
    pub policy_dir: PathBuf,
    /// Card profile directory.
    pub profiles_dir: PathBuf,
}

/// The files of a prepared data directory.
#[derive(Debug, Clone)]
pub struct DevLayout {
    /// The data directory (absolute).
    pub dir: PathBuf,
    /// The module in use.
    pub module: PathBuf,
    /// Environment the module needs.
    pub module_env: BTreeMap<String, String>,
    /// Server configuration.
    pub config: PathBuf,
    /// CLI profile.
    pub client_profile: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DevError + '_ {
    move |source| DevError::Io { path: path.to_owned(), source }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), DevError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io(path))?;
    f.write_all(data).map_err(io(path))
}

fn random_pin() -> Result<SecretString, DevError> {
    let mut b = [0u8; 12];
    getrandom::getrandom(&mut b).map_err(|e| DevError::NoModule(format!("no randomness: {e}")))?;
    Ok(SecretString::from(hex::encode(b)))
}

fn read_pin(path: &Path) -> Result<SecretString, DevError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    Ok(SecretString::from(text.trim().to_owned()))
}

fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

/// The default module: `KMS_DEV_MODULE`; else hsm-sim built beside this
/// binary (`cargo build -p hsm-sim`); else SoftHSM.
pub fn default_module() -> Result<PathBuf, DevError> {
    if let Ok(m) = std::env::var("KMS_DEV_MODULE") {
        return Ok(PathBuf::from(m));
    }
    if let Some(sim) = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.join("libhsm_sim.so")))
        && sim.is_file()
    {
        return Ok(sim);
    }
    let softhsm = PathBuf::from(SOFTHSM_MODULE);
    if softhsm.is_file() {
        return Ok(softhsm);
    }
    Err(DevError::NoModule(format!(
        "no libhsm_sim.so beside kms (cargo build -p hsm-sim) and no {SOFTHSM_MODULE}; or set KMS_DEV_MODULE"
    )))
}

/// Whether `module` is hsm-sim.
fn is_hsm_sim(module: &Path) -> bool {
    module.file_name().is_some_and(|n| n == "libhsm_sim.so")
}

/// hsm-sim's default vendor numbers (hsm-sim/README.md), for the service's
/// `[hsm.vendor]` table.
pub const HSM_SIM_VENDOR: &str = "[hsm.vendor]\nsm4_key_gen = 0x80000107\nsm4_ecb = 0x80000108\nsm4_cbc = 0x80000109\n\
    sm4_mac = 0x8000010A\nsm4_ecb_encrypt_data = 0x8000010B\nsm3 = 0x80000301\nsm2_key_pair_gen = 0x80000200\n\
    sm2_sign = 0x80000201\nsm2_encrypt = 0x80000202\nsm4_key_type = 0x80000002\nkey_xor = 0x80000500\n\
    retail_mac = 0x80000400\nan10922_aes128 = 0x80000600\nan10922_des2 = 0x80000601\n";

/// Step 1, before any thread exists: directories, the module's own
/// configuration, and the environment it needs. Returns the layout.
pub fn prepare_layout(opts: &DevOptions) -> Result<DevLayout, DevError> {
    std::fs::create_dir_all(&opts.data_dir).map_err(io(&opts.data_dir))?;
    let dir = std::fs::canonicalize(&opts.data_dir).map_err(io(&opts.data_dir))?;
    let module = match &opts.module {
        Some(m) => m.clone(),
        None => default_module()?,
    };
    let mut module_env = BTreeMap::new();
    if is_hsm_sim(&module) {
        let conf = dir.join("hsm-sim.toml");
        let text = "# Written by kms dev: one slot whose token lives in hsm-tokens/.\n[[slot]]\nid = 0\ndir = \"hsm-tokens\"\n";
        std::fs::write(&conf, text).map_err(io(&conf))?;
        module_env.insert("HSM_SIM_CONF".to_owned(), conf.display().to_string());
    } else if module.to_string_lossy().contains("softhsm") {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).map_err(io(&tokens))?;
        let conf = dir.join("softhsm2.conf");
        let text = format!(
            "# Written by kms dev.\ndirectories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            tokens.display()
        );
        std::fs::write(&conf, text).map_err(io(&conf))?;
        module_env.insert("SOFTHSM2_CONF".to_owned(), conf.display().to_string());
    }
    Ok(DevLayout { config: dir.join("kms.toml"), client_profile: dir.join("client.toml"), dir, module, module_env })
}

fn find_slot(ctx: &Pkcs11, module: &str, label: &str) -> Result<Option<Slot>, HsmError> {
    for slot in ctx.get_slots_with_token().map_err(|e| HsmError::from_cryptoki(module, e))? {
        if let Ok(info) = ctx.get_token_info(slot)
            && info.token_initialized()
            && info.label().trim_end() == label
        {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

fn free_slot(ctx: &Pkcs11, module: &str) -> Result<Slot, DevError> {
    for slot in ctx.get_slots_with_token().map_err(|e| HsmError::from_cryptoki(module, e))? {
        if let Ok(info) = ctx.get_token_info(slot)
            && !info.token_initialized()
        {
            return Ok(slot);
        }
    }
    Err(DevError::NoModule(format!("{module} has no uninitialised token slot for {TOKEN_LABEL:?}")))
}

fn ensure_ca_key(session: &Session, module: &str) -> Result<(), HsmError> {
    let existing = session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Label(CA_KEY_LABEL.as_bytes().to_vec())])
        .map_err(|e| HsmError::from_cryptoki(module, e))?;
    if !existing.is_empty() {
        return Ok(());
    }
    let label = Attribute::Label(CA_KEY_LABEL.as_bytes().to_vec());
    let id = Attribute::Id(CA_KEY_LABEL.as_bytes().to_vec());
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        label.clone(),
        id.clone(),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        label,
        id,
    ];
    session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(|e| HsmError::from_cryptoki(module, e))?;
    Ok(())
}

/// Step 2: the token, the CA key in it, certificates and configuration
/// files. Idempotent: what exists is kept.
pub fn bootstrap(opts: &DevOptions, layout: &DevLayout) -> Result<(), DevError> {
    let dir = &layout.dir;
    let module = layout.module.display().to_string();
    let ctx = Pkcs11::new(&layout.module).map_err(|e| DevError::NoModule(format!("{module}: {e}")))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| HsmError::from_cryptoki(&module, e))?;
    let so_pin_path = dir.join("so.pin");
    let user_pin_path = dir.join("user.pin");
    let slot = match find_slot(&ctx, &module, TOKEN_LABEL)? {
        Some(slot) => slot,
        None => {
            let so_pin = random_pin()?;
            let user_pin = random_pin()?;
            let slot = free_slot(&ctx, &module)?;
            ctx.init_token(slot, &so_pin, TOKEN_LABEL).map_err(|e| HsmError::from_cryptoki(&module, e))?;
            // why: SoftHSM gives an initialised token a new slot id.
            let slot = find_slot(&ctx, &module, TOKEN_LABEL)?.ok_or_else(|| {
                DevError::NoModule(format!("{module}: token {TOKEN_LABEL:?} vanished after C_InitToken"))
            })?;
            let so = ctx.open_rw_session(slot).map_err(|e| HsmError::from_cryptoki(&module, e))?;
            so.login(UserType::So, Some(&so_pin)).map_err(|e| HsmError::from_cryptoki(&module, e))?;
            so.init_pin(&user_pin).map_err(|e| HsmError::from_cryptoki(&module, e))?;
            drop(so);
            use secrecy::ExposeSecret;
            write_private(&so_pin_path, so_pin.expose_secret().as_bytes())?;
            write_private(&user_pin_path, user_pin.expose_secret().as_bytes())?;
            slot
        }
    };
    let user_pin = read_pin(&user_pin_path)?;
    let session = ctx.open_rw_session(slot).map_err(|e| HsmError::from_cryptoki(&module, e))?;
    match session.login(UserType::User, Some(&user_pin)) {
        Ok(()) => {}
        Err(cryptoki::error::Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(cryptoki::error::Error::Pkcs11(rv, function)) => {
            return Err(DevError::Hsm(HsmError::Login {
                module: module.clone(),
                label: TOKEN_LABEL.into(),
                failure: crate::hsm::Pkcs11Failure { rv, function },
            }));
        }
        Err(e) => return Err(HsmError::from_cryptoki(&module, e).into()),
    }
    ensure_ca_key(&session, &module)?;
    let signer = HsmSigner::find(&session, &module, CA_KEY_LABEL, TOKEN_LABEL)?;

    let ca_pem = dir.join("ca.pem");
    if !ca_pem.is_file() {
        let ca = kms_ca::dev_root(&signer, "kms development CA", Duration::days(3650))?;
        std::fs::write(&ca_pem, ca.pem).map_err(io(&ca_pem))?;
        // A new CA invalidates certificates from an older one.
        for f in ["server.pem", "admin.pem", "officer.pem"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    let ca_text = std::fs::read_to_string(&ca_pem).map_err(io(&ca_pem))?;
    let ca_der = pem_to_der(&ca_text).ok_or_else(|| DevError::Io {
        path: ca_pem.clone(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a PEM certificate"),
    })?;

    let server_pem = dir.join("server.pem");
    if !server_pem.is_file() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let cert = kms_ca::issue_server_tls(&names, &key, &ca_der, &signer, Duration::days(825))?;
        write_private(&dir.join("server.key"), key.serialize_pem().as_bytes())?;
        std::fs::write(&server_pem, format!("{}{}", cert.pem, ca_text)).map_err(io(&server_pem))?;
    }
    for (name, role) in CLIENTS {
        let pem = dir.join(format!("{name}.pem"));
        if pem.is_file() {
            continue;
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let identity = kms_ca::ClientIdentity { name: (*name).into(), role: (*role).into(), tenant: "dev".into() };
        let cert = kms_ca::issue_client_tls(&identity, &key, &ca_der, &signer, Duration::days(825))?;
        write_private(&dir.join(format!("{name}.key")), key.serialize_pem().as_bytes())?;
        std::fs::write(&pem, cert.pem).map_err(io(&pem))?;
    }
    drop(signer);
    drop(session);
    drop(ctx);

    let mut env = String::new();
    for (k, v) in &layout.module_env {
        env.push_str(&format!("{k} = {v:?}\n"));
    }
    let config = format!(
        "# Written by `kms dev` on every start; edit the flags, not this file.\n\
         # Development only: PINs and TLS keys are plain files in this directory.\n\n\
         [server]\nlisten = \"{listen}\"\nready_file = \"ready.json\"\n\n\
         [tls]\ncert = \"server.pem\"\nkey = \"server.key\"\nclient_ca = \"ca.pem\"\n\n\
         [hsm]\nmodule = {module}\ntoken_label = \"{TOKEN_LABEL}\"\npin_file = \"user.pin\"\npool_size = 4\n\n\
         [hsm.module_env]\n{env}\n{vendor}\n\
         [database]\nurl = \"sqlite://kms.db\"\n\n\
         [policy]\ndir = {policy}\n\n\
         [profiles]\ndir = {profiles}\n\n\
         [ca]\nprofiles_dir = {cert_profiles}\ncrl_base_url = \"http://{ops}/crl\"\nescrow_key = \"dev/ca/escrow\"\n\n\
         # Development only: derivations need no production plan here.\n\
         [plans]\nrequired = false\n\n\
         [ops]\nlisten = \"{ops}\"\n",
        listen = opts.listen,
        module = toml_str(&layout.module),
        policy = toml_str(&opts.policy_dir),
        profiles = toml_str(&opts.profiles_dir),
        cert_profiles = toml_str(&opts.policy_dir.join("certificates")),
        vendor = if is_hsm_sim(&layout.module) { HSM_SIM_VENDOR } else { "" },
        ops = opts.ops_listen,
    );
    std::fs::write(&layout.config, config).map_err(io(&layout.config))?;
    let host = if opts.listen.ip().is_unspecified() { "127.0.0.1".to_owned() } else { opts.listen.ip().to_string() };
    for (name, role) in CLIENTS {
        let client = format!(
            "# Written by `kms dev`: how the CLI reaches the development instance as {name} ({role}).\n\
             endpoint = \"https://{host}:{port}\"\nca = \"ca.pem\"\ncert = \"{name}.pem\"\nkey = \"{name}.key\"\n",
            port = opts.listen.port()
        );
        let path = if *name == "admin" {
            layout.client_profile.clone()
        } else {
            layout.client_profile.with_file_name(format!("client-{name}.toml"))
        };
        std::fs::write(&path, client).map_err(io(&path))?;
    }
    Ok(())
}

/// The development client identities: file stem and role. `admin` is the
/// default profile (`client.toml`); the others get `client-<stem>.toml`.
const CLIENTS: &[(&str, &str)] = &[("admin", "operator"), ("officer", "security_officer")];

fn pem_to_der(text: &str) -> Option<Vec<u8>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(text.as_bytes()).ok().map(|c| c.to_vec())
}

/// Text shown when a `CKR_` error surfaces during bootstrap.
pub fn explain(e: &DevError) -> String {
    match e {
        DevError::Hsm(h) => match h.pkcs11_failure() {
            Some(f) => format!("{e} ({})", rv_name(f.rv)),
            None => e.to_string(),
        },
        _ => e.to_string(),
    }
}
