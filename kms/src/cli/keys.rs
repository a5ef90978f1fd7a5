//! `kms keys ...`: the key catalogue from the operator's side.
//!
//! Every command prints either an aligned table or, with `--json`, one JSON
//! object per key version (JSON lines for `list`). Nothing here ever sees key
//! material: the catalogue holds only metadata, and an import carries the
//! key wrapped under a transport key.

use super::table;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::{ArgGroup, Args, ValueEnum};
use kms_proto::v1 as pb;
use kms_proto::v1::key_service_client::KeyServiceClient;
use tonic::transport::Channel;

use super::{ClientError, ClientOptions, call_error};

/// A key algorithm as spelled on the command line and in the CLI's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Algorithm {
    /// Double-length (2-key) triple DES.
    Des2,
    /// AES-128.
    Aes128,
    /// AES-192.
    Aes192,
    /// AES-256.
    Aes256,
    /// SM4 (needs a module that has it).
    Sm4,
}

impl Algorithm {
    fn to_proto(self) -> pb::KeyAlgorithm {
        match self {
            Algorithm::Des2 => pb::KeyAlgorithm::Des2,
            Algorithm::Aes128 => pb::KeyAlgorithm::Aes128,
            Algorithm::Aes192 => pb::KeyAlgorithm::Aes192,
            Algorithm::Aes256 => pb::KeyAlgorithm::Aes256,
            Algorithm::Sm4 => pb::KeyAlgorithm::Sm4,
        }
    }
}

/// The name of a wire algorithm value, as the CLI spells it.
pub fn algorithm_name(v: i32) -> String {
    match pb::KeyAlgorithm::try_from(v) {
        Ok(pb::KeyAlgorithm::Des2) => "des2".into(),
        Ok(pb::KeyAlgorithm::Aes128) => "aes128".into(),
        Ok(pb::KeyAlgorithm::Aes192) => "aes192".into(),
        Ok(pb::KeyAlgorithm::Aes256) => "aes256".into(),
        Ok(pb::KeyAlgorithm::Sm4) => "sm4".into(),
        Ok(pb::KeyAlgorithm::Unspecified) | Err(_) => format!("unknown({v})"),
    }
}

/// What a key may do, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Purpose {
    /// A master key that card keys are diversified from.
    DerivationMaster,
    /// A transport key that derived keys are wrapped under for export.
    TransportExport,
    /// A transport key that delivered keys are unwrapped with.
    TransportImport,
    /// A MAC key.
    Mac,
    /// An escrow key (AES) keeping copies of service-generated private keys.
    Escrow,
}

impl Purpose {
    fn to_proto(self) -> pb::KeyPurpose {
        match self {
            Purpose::DerivationMaster => pb::KeyPurpose::DerivationMaster,
            Purpose::TransportExport => pb::KeyPurpose::TransportExport,
            Purpose::TransportImport => pb::KeyPurpose::TransportImport,
            Purpose::Mac => pb::KeyPurpose::Mac,
            Purpose::Escrow => pb::KeyPurpose::Escrow,
        }
    }
}

fn purpose_name(v: i32) -> String {
    match pb::KeyPurpose::try_from(v) {
        Ok(pb::KeyPurpose::DerivationMaster) => "derivation-master".into(),
        Ok(pb::KeyPurpose::TransportExport) => "transport-export".into(),
        Ok(pb::KeyPurpose::TransportImport) => "transport-import".into(),
        Ok(pb::KeyPurpose::Mac) => "mac".into(),
        Ok(pb::KeyPurpose::Escrow) => "escrow".into(),
        Ok(pb::KeyPurpose::Unspecified) | Err(_) => format!("unknown({v})"),
    }
}

/// A key version's life-cycle state, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum State {
    /// Usable; the newest active version is the default.
    Active,
    /// Usable only when its version is named explicitly.
    Deprecated,
    /// Not usable until made active again.
    Suspended,
    /// The HSM object is gone (only as a `list` filter).
    Destroyed,
}

impl State {
    fn to_proto(self) -> pb::KeyState {
        match self {
            State::Active => pb::KeyState::Active,
            State::Deprecated => pb::KeyState::Deprecated,
            State::Suspended => pb::KeyState::Suspended,
            State::Destroyed => pb::KeyState::Destroyed,
        }
    }
}

/// The states `kms keys set-state` can move a version to (`destroyed` is
/// `kms keys destroy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SettableState {
    /// Usable; the newest active version is the default.
    Active,
    /// Usable only when its version is named explicitly.
    Deprecated,
    /// Not usable until made active again.
    Suspended,
}

fn state_name(v: i32) -> String {
    match pb::KeyState::try_from(v) {
        Ok(pb::KeyState::Active) => "active".into(),
        Ok(pb::KeyState::Deprecated) => "deprecated".into(),
        Ok(pb::KeyState::Suspended) => "suspended".into(),
        Ok(pb::KeyState::Destroyed) => "destroyed".into(),
        Ok(pb::KeyState::Unspecified) | Err(_) => format!("unknown({v})"),
    }
}

/// How a wrapped key is encoded, as spelled on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WrapFormat {
    /// AES key wrap, RFC 3394.
    AesKeyWrap,
    /// AES key wrap with padding, RFC 5649.
    AesKeyWrapPad,
    /// Triple-DES ECB of the key bytes.
    Des3Ecb,
    /// SM4 ECB of the key bytes.
    Sm4Ecb,
}

impl WrapFormat {
    fn to_proto(self) -> pb::WrapFormat {
        match self {
            WrapFormat::AesKeyWrap => pb::WrapFormat::AesKeyWrap,
            WrapFormat::AesKeyWrapPad => pb::WrapFormat::AesKeyWrapPad,
            WrapFormat::Des3Ecb => pb::WrapFormat::Des3Ecb,
            WrapFormat::Sm4Ecb => pb::WrapFormat::Sm4Ecb,
        }
    }
}

/// The name of a wire wrap-format value, as the CLI spells it.
pub fn wrap_format_name(v: i32) -> String {
    match pb::WrapFormat::try_from(v) {
        Ok(pb::WrapFormat::AesKeyWrap) => "aes-key-wrap".into(),
        Ok(pb::WrapFormat::AesKeyWrapPad) => "aes-key-wrap-pad".into(),
        Ok(pb::WrapFormat::Des3Ecb) => "des3-ecb".into(),
        Ok(pb::WrapFormat::Sm4Ecb) => "sm4-ecb".into(),
        Ok(pb::WrapFormat::Unspecified) | Err(_) => format!("unknown({v})"),
    }
}

/// Parses `NAME` or `NAME@vN` (also `NAME@N`); no version means version 0,
/// the newest active one.
pub fn parse_key_ref(s: &str) -> Result<pb::KeyRef, ClientError> {
    let bad = |why: &str| ClientError::Usage(format!("key {s:?}: {why} (expected NAME or NAME@vN)"));
    let (name, version) = match s.rsplit_once('@') {
        None => (s, 0),
        Some((name, v)) => {
            let digits = v.strip_prefix('v').unwrap_or(v);
            let n: u32 = digits.parse().map_err(|_| bad("the version is not a number"))?;
            if n == 0 {
                return Err(bad("versions start at 1"));
            }
            (name, n)
        }
    };
    if name.is_empty() {
        return Err(bad("the name is empty"));
    }
    Ok(pb::KeyRef { name: name.to_owned(), version })
}

/// Parses `NAME@vN` where the version is required (set-state, destroy, pins).
pub fn parse_versioned_key_ref(s: &str) -> Result<pb::KeyRef, ClientError> {
    let r = parse_key_ref(s)?;
    if r.version == 0 {
        return Err(ClientError::Usage(format!("key {s:?}: name the version explicitly, as NAME@vN")));
    }
    Ok(r)
}

/// Parses a published key check value, `METHOD:HEX` (e.g. `DES3_ZERO:08D7B4`).
pub fn parse_kcv(s: &str) -> Result<pb::KeyCheckValue, ClientError> {
    let bad = |why: &str| ClientError::Usage(format!("KCV {s:?}: {why} (expected METHOD:HEX, e.g. DES3_ZERO:08D7B4)"));
    let (method, value) = s.split_once(':').ok_or_else(|| bad("no ':'"))?;
    if method.is_empty() {
        return Err(bad("the method is empty"));
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the value is not hex"));
    }
    Ok(pb::KeyCheckValue { method: method.to_ascii_uppercase(), value: value.to_ascii_uppercase() })
}

/// `kms keys create`.
#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// Key name: 1-8 segments of [a-z0-9_-] separated by "/", e.g. city/3301/mohurd/dpk.
    pub name: String,
    /// Key algorithm.
    #[arg(long, value_enum)]
    pub algorithm: Algorithm,
    /// What the key may do (enforced in the catalogue and in the HSM's attributes).
    #[arg(long, value_enum)]
    pub purpose: Purpose,
    /// KCV method (DES3_ZERO, AES_ZERO, AES_GP, AES_CMAC, SM4_ZERO); default: the algorithm's.
    #[arg(long)]
    pub kcv_method: Option<String>,
}

/// `kms keys import`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("material").required(true).args(["wrapped_hex", "wrapped_file"])))]
pub struct ImportArgs {
    /// Key name; an existing name gets a new version.
    pub name: String,
    /// Algorithm of the delivered key.
    #[arg(long, value_enum)]
    pub algorithm: Algorithm,
    /// What the key may do.
    #[arg(long, value_enum)]
    pub purpose: Purpose,
    /// Transport key (purpose transport-import) the key is wrapped under, NAME or NAME@vN.
    #[arg(long, value_parser = parse_key_ref)]
    pub transport_key: pb::KeyRef,
    /// The wrapped key, hex.
    #[arg(long)]
    pub wrapped_hex: Option<String>,
    /// File holding the wrapped key: raw bytes, or hex text.
    #[arg(long)]
    pub wrapped_file: Option<PathBuf>,
    /// How the key is wrapped; default: the transport key's usual format.
    #[arg(long, value_enum)]
    pub format: Option<WrapFormat>,
    /// The KCV the key's owner published, METHOD:HEX; nothing is kept if it differs.
    #[arg(long, value_parser = parse_kcv)]
    pub kcv: pb::KeyCheckValue,
}

/// `kms keys adopt`.
#[derive(Debug, Clone, Args)]
pub struct AdoptArgs {
    /// Key name; an existing name gets a new version.
    pub name: String,
    /// CKA_LABEL of the object in the service's token (sensitive, non-extractable).
    #[arg(long)]
    pub label: String,
    /// Algorithm of the object.
    #[arg(long, value_enum)]
    pub algorithm: Algorithm,
    /// What the key may do.
    #[arg(long, value_enum)]
    pub purpose: Purpose,
    /// The KCV recorded at the ceremony, METHOD:HEX; nothing is kept if it differs.
    #[arg(long, value_parser = parse_kcv)]
    pub kcv: pb::KeyCheckValue,
}

/// `kms keys list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only names starting with this prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only versions in this state.
    #[arg(long, value_enum)]
    pub state: Option<State>,
    /// Only keys of this purpose.
    #[arg(long, value_enum)]
    pub purpose: Option<Purpose>,
    /// Versions per request, 1-500 (default: the server's, 100).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub page_size: Option<u32>,
    /// Stop after this many versions (default: follow the pages to the end).
    #[arg(long)]
    pub limit: Option<u64>,
}

/// `kms keys set-state`.
#[derive(Debug, Clone, Args)]
pub struct SetStateArgs {
    /// The version, NAME@vN.
    // why: the id "key" is taken by the client's --key (its private key).
    #[arg(id = "key_version", value_name = "NAME@vN", value_parser = parse_versioned_key_ref)]
    pub key: pb::KeyRef,
    /// The new state.
    #[arg(long, value_enum)]
    pub state: SettableState,
    /// Why (recorded in the audit log).
    #[arg(long)]
    pub reason: String,
}

/// `kms keys destroy`.
#[derive(Debug, Clone, Args)]
pub struct DestroyArgs {
    /// The version, NAME@vN.
    // why: the id "key" is taken by the client's --key (its private key).
    #[arg(id = "key_version", value_name = "NAME@vN", value_parser = parse_versioned_key_ref)]
    pub key: pb::KeyRef,
    /// Why (recorded in the audit log).
    #[arg(long)]
    pub reason: String,
    /// Do not ask for confirmation (required when standard input is not a terminal).
    #[arg(long)]
    pub yes: bool,
}

/// One `kms keys` command, parsed.
#[derive(Debug, Clone)]
pub enum KeysCommand {
    /// Generate a key in the HSM.
    Create(CreateArgs),
    /// Import a key delivered wrapped under a transport key.
    Import(ImportArgs),
    /// Adopt a key a ceremony made in the service's token.
    Adopt(AdoptArgs),
    /// Show one version (no version: the newest active one).
    Get(pb::KeyRef),
    /// List versions.
    List(ListArgs),
    /// Generate a new version of a key.
    Rotate(String),
    /// Change a version's state.
    SetState(SetStateArgs),
    /// Destroy a version's HSM object.
    Destroy(DestroyArgs),
    /// List the card profiles the service has loaded.
    Profiles,
}

/// Runs one `kms keys` command and returns what to print.
pub async fn run(opts: &ClientOptions, json: bool, command: KeysCommand) -> Result<String, ClientError> {
    if let KeysCommand::Destroy(args) = &command
        && !args.yes
        && !std::io::stdin().is_terminal()
    {
        // why: a script must say --yes; guessing an answer for it would be
        // the one mistake this command cannot undo.
        return Err(ClientError::Usage(format!(
            "refusing to destroy {} without --yes: standard input is not a terminal, so there is no one to ask",
            show_ref(&args.key)
        )));
    }
    let mut client = KeyServiceClient::new(opts.connect().await?);
    match command {
        KeysCommand::Create(a) => {
            let key = client
                .create_key(pb::CreateKeyRequest {
                    name: a.name,
                    algorithm: a.algorithm.to_proto() as i32,
                    purpose: a.purpose.to_proto() as i32,
                    kcv_method: a.kcv_method.unwrap_or_default(),
                })
                .await
                .map_err(|e| call_error("CreateKey", e))?
                .into_inner();
            Ok(show_keys(&[key], json))
        }
        KeysCommand::Import(a) => {
            let wrapped = wrapped_bytes(a.wrapped_hex.as_deref(), a.wrapped_file.as_deref())?;
            let key = client
                .import_key(pb::ImportKeyRequest {
                    name: a.name,
                    algorithm: a.algorithm.to_proto() as i32,
                    purpose: a.purpose.to_proto() as i32,
                    source: Some(pb::import_key_request::Source::Wrapped(pb::WrappedKeyMaterial {
                        transport_key: Some(a.transport_key),
                        format: a.format.map_or(pb::WrapFormat::Unspecified, WrapFormat::to_proto) as i32,
                        wrapped,
                    })),
                    expected_kcv: Some(a.kcv),
                })
                .await
                .map_err(|e| call_error("ImportKey", e))?
                .into_inner();
            Ok(show_keys(&[key], json))
        }
        KeysCommand::Adopt(a) => {
            let key = client
                .import_key(pb::ImportKeyRequest {
                    name: a.name,
                    algorithm: a.algorithm.to_proto() as i32,
                    purpose: a.purpose.to_proto() as i32,
                    source: Some(pb::import_key_request::Source::HsmObjectLabel(a.label)),
                    expected_kcv: Some(a.kcv),
                })
                .await
                .map_err(|e| call_error("ImportKey", e))?
                .into_inner();
            Ok(show_keys(&[key], json))
        }
        KeysCommand::Get(key) => {
            let key = get(&mut client, key).await?;
            Ok(show_keys(&[key], json))
        }
        KeysCommand::List(a) => list(&mut client, a, json).await,
        KeysCommand::Rotate(name) => {
            let key = client
                .rotate_key(pb::RotateKeyRequest { name })
                .await
                .map_err(|e| call_error("RotateKey", e))?
                .into_inner();
            Ok(show_keys(&[key], json))
        }
        KeysCommand::SetState(a) => {
            let state = match a.state {
                SettableState::Active => pb::KeyState::Active,
                SettableState::Deprecated => pb::KeyState::Deprecated,
                SettableState::Suspended => pb::KeyState::Suspended,
            };
            let key = client
                .set_key_state(pb::SetKeyStateRequest { key: Some(a.key), state: state as i32, reason: a.reason })
                .await
                .map_err(|e| call_error("SetKeyState", e))?
                .into_inner();
            Ok(show_keys(&[key], json))
        }
        KeysCommand::Destroy(a) => {
            if !a.yes {
                let current = get(&mut client, a.key.clone()).await?;
                confirm_destroy(&current)?;
            }
            let key = client
                .destroy_key(pb::DestroyKeyRequest { key: Some(a.key), reason: a.reason })
                .await
                .map_err(|e| call_error("DestroyKey", e))?
                .into_inner();
            Ok(show_keys(&[key], json))
        }
        KeysCommand::Profiles => {
            let r = client
                .list_card_profiles(pb::ListCardProfilesRequest {})
                .await
                .map_err(|e| call_error("ListCardProfiles", e))?
                .into_inner();
            Ok(show_profiles(&r.profiles, json))
        }
    }
}

async fn get(client: &mut KeyServiceClient<Channel>, key: pb::KeyRef) -> Result<pb::Key, ClientError> {
    Ok(client.get_key(pb::GetKeyRequest { key: Some(key) }).await.map_err(|e| call_error("GetKey", e))?.into_inner())
}

async fn list(client: &mut KeyServiceClient<Channel>, a: ListArgs, json: bool) -> Result<String, ClientError> {
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut keys = Vec::new();
    let mut page_token = String::new();
    while (keys.len() as u64) < limit {
        let page = client
            .list_keys(pb::ListKeysRequest {
                name_prefix: a.prefix.clone().unwrap_or_default(),
                state: a.state.map_or(pb::KeyState::Unspecified, State::to_proto) as i32,
                purpose: a.purpose.map_or(pb::KeyPurpose::Unspecified, Purpose::to_proto) as i32,
                page_size: a.page_size.unwrap_or(0),
                page_token: page_token.clone(),
            })
            .await
            .map_err(|e| call_error("ListKeys", e))?
            .into_inner();
        let room = usize::try_from(limit - keys.len() as u64).unwrap_or(usize::MAX);
        keys.extend(page.keys.into_iter().take(room));
        if page.next_page_token.is_empty() {
            break;
        }
        if page.next_page_token == page_token {
            return Err(ClientError::Protocol {
                rpc: "ListKeys",
                message: "the same page token came back twice".into(),
            });
        }
        page_token = page.next_page_token;
    }
    if !json && keys.is_empty() {
        return Ok("no keys\n".into());
    }
    Ok(show_keys(&keys, json))
}

/// Reads the wrapped key of an import: hex from the flag, or a file of raw
/// bytes or hex text.
fn wrapped_bytes(hex_text: Option<&str>, file: Option<&std::path::Path>) -> Result<Vec<u8>, ClientError> {
    if let Some(text) = hex_text {
        return hex::decode(text.trim()).map_err(|e| ClientError::Usage(format!("--wrapped-hex: {e}")));
    }
    let Some(path) = file else {
        return Err(ClientError::Usage("give --wrapped-hex or --wrapped-file".into()));
    };
    let bytes = std::fs::read(path).map_err(|source| ClientError::Read {
        what: "wrapped key file",
        path: path.to_owned(),
        source,
    })?;
    // why: partners deliver either the binary blob or its hex dump; a random
    // wrapped key of 24+ bytes is never all hex digits by accident.
    let text: String = bytes.iter().filter(|b| !b.is_ascii_whitespace()).map(|&b| char::from(b)).collect();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return hex::decode(&text).map_err(|e| ClientError::Usage(format!("--wrapped-file {}: {e}", path.display())));
    }
    if bytes.is_empty() {
        return Err(ClientError::Usage(format!("--wrapped-file {} is empty", path.display())));
    }
    Ok(bytes)
}

fn confirm_destroy(key: &pb::Key) -> Result<(), ClientError> {
    let reference = format!("{}@v{}", key.name, key.version);
    let mut err = std::io::stderr();
    let prompt = format!(
        "{}\nThis destroys the HSM object of {reference}; the keys of cards issued under it can no longer be derived.\n\
         Type {reference} to confirm: ",
        show_keys(std::slice::from_ref(key), false).trim_end()
    );
    err.write_all(prompt.as_bytes())
        .and_then(|()| err.flush())
        .map_err(|source| ClientError::Write { what: "standard error".into(), source })?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|source| ClientError::Read {
        what: "confirmation",
        path: PathBuf::from("<stdin>"),
        source,
    })?;
    if answer.trim() == reference { Ok(()) } else { Err(ClientError::NotConfirmed) }
}

fn show_ref(r: &pb::KeyRef) -> String {
    if r.version == 0 { r.name.clone() } else { format!("{}@v{}", r.name, r.version) }
}

/// One key version as JSON (the shape of `--json` output).
pub fn key_json(k: &pb::Key) -> serde_json::Value {
    let kcv = k.kcv.clone().unwrap_or_default();
    serde_json::json!({
        "name": k.name,
        "version": k.version,
        "algorithm": algorithm_name(k.algorithm),
        "purpose": purpose_name(k.purpose),
        "state": state_name(k.state),
        "kcv": {"method": kcv.method, "value": kcv.value},
        "origin": k.origin,
        "created_by": k.created_by,
        "created_at_ms": k.created_at_ms,
        "updated_at_ms": k.updated_at_ms,
        "module": k.module,
        "object_id": k.object_id,
    })
}

/// Key versions as JSON lines, or as an aligned table.
pub fn show_keys(keys: &[pb::Key], json: bool) -> String {
    if json {
        let mut out = String::new();
        for k in keys {
            out.push_str(&key_json(k).to_string());
            out.push('\n');
        }
        return out;
    }
    let header = ["NAME", "VERSION", "ALGORITHM", "PURPOSE", "STATE", "KCV", "ORIGIN"].map(String::from).to_vec();
    let mut rows = vec![header];
    for k in keys {
        let kcv = k.kcv.clone().unwrap_or_default();
        rows.push(vec![
            k.name.clone(),
            k.version.to_string(),
            algorithm_name(k.algorithm),
            purpose_name(k.purpose),
            state_name(k.state),
            format!("{}:{}", kcv.method, kcv.value),
            k.origin.clone(),
        ]);
    }
    table(&rows)
}

fn show_profiles(profiles: &[pb::CardProfile], json: bool) -> String {
    if json {
        let mut out = String::new();
        for p in profiles {
            let v = serde_json::json!({
                "name": p.name,
                "description": p.description,
                "identifiers": p.identifiers,
                "roles": p.roles.iter().map(|r| serde_json::json!({
                    "role": r.role, "description": r.description, "method": r.method,
                    "master_key": r.master_key, "algorithm": algorithm_name(r.algorithm),
                })).collect::<Vec<_>>(),
            });
            out.push_str(&v.to_string());
            out.push('\n');
        }
        return out;
    }
    if profiles.is_empty() {
        return "no card profiles\n".into();
    }
    let mut out = String::new();
    for p in profiles {
        out.push_str(&format!("{}  (identifiers: {})\n  {}\n", p.name, p.identifiers.join(", "), p.description));
        let mut rows = vec![["ROLE", "METHOD", "MASTER KEY", "ALGORITHM", "DESCRIPTION"].map(String::from).to_vec()];
        for r in &p.roles {
            rows.push(vec![
                r.role.clone(),
                r.method.clone(),
                r.master_key.clone(),
                algorithm_name(r.algorithm),
                r.description.clone(),
            ]);
        }
        for line in table(&rows).lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refs() {
        let r = parse_key_ref("city/3301/mohurd/dpk").map_err(|e| e.to_string());
        assert_eq!(r, Ok(pb::KeyRef { name: "city/3301/mohurd/dpk".into(), version: 0 }));
        let r = parse_key_ref("partner/p1/kek@v3").map_err(|e| e.to_string());
        assert_eq!(r, Ok(pb::KeyRef { name: "partner/p1/kek".into(), version: 3 }));
        assert!(parse_key_ref("k@v0").is_err());
        assert!(parse_key_ref("k@vx").is_err());
        assert!(parse_key_ref("@v1").is_err());
        assert!(parse_versioned_key_ref("k").is_err());
    }

    #[test]
    fn kcvs() {
        let k = parse_kcv("des3_zero:08d7b4").map_err(|e| e.to_string());
        assert_eq!(k, Ok(pb::KeyCheckValue { method: "DES3_ZERO".into(), value: "08D7B4".into() }));
        assert!(parse_kcv("08D7B4").is_err());
        assert!(parse_kcv("AES_ZERO:xyz").is_err());
    }

    #[test]
    fn table_is_aligned() {
        let rows = vec![vec!["A".to_string(), "BB".into(), "C".into()], vec!["AAA".into(), "B".into(), "C".into()]];
        assert_eq!(table(&rows), "A    BB  C\nAAA  B   C\n");
    }
}
