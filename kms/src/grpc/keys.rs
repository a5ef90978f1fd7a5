//! `kms.v1.KeyService`: conversions between protobuf and domain types, and
//! the handlers (principal, parse, authorize, call the core).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kms_proto::v1 as pb;
use kms_proto::v1::key_service_server::KeyService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::authz::{self, Authorized, ContextValue, Resource};
use crate::card::CardInput;
use crate::core::Core;
use crate::core::batch::{Batch, ItemResult};
use crate::core::derive::{DeriveRequest, DerivedKey};
use crate::core::keys::{CreateKey, ImportKey, ImportSource};
use crate::error::{Error, Result};
use crate::hsm::keyops::WrapFormat;
use crate::keys::{Algorithm, KcvMethod, KeyName, KeyRecord, KeyRef, KeyState, ListFilter, Purpose};

/// The KeyService implementation.
pub struct KeyApi {
    shared: Shared,
}

impl KeyApi {
    /// Wraps the shared state.
    pub fn new(shared: Shared) -> KeyApi {
        KeyApi { shared }
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument { field: field.to_owned(), reason: reason.into() }
}

fn algorithm(field: &str, v: i32) -> Result<Algorithm> {
    match pb::KeyAlgorithm::try_from(v) {
        Ok(pb::KeyAlgorithm::Des2) => Ok(Algorithm::Des2),
        Ok(pb::KeyAlgorithm::Aes128) => Ok(Algorithm::Aes128),
        Ok(pb::KeyAlgorithm::Aes192) => Ok(Algorithm::Aes192),
        Ok(pb::KeyAlgorithm::Aes256) => Ok(Algorithm::Aes256),
        Ok(pb::KeyAlgorithm::Sm4) => Ok(Algorithm::Sm4),
        Ok(pb::KeyAlgorithm::Unspecified) | Err(_) => {
            Err(invalid(field, "must be DES2, AES128, AES192, AES256 or SM4"))
        }
    }
}

fn algorithm_to_pb(a: Algorithm) -> pb::KeyAlgorithm {
    match a {
        Algorithm::Des2 => pb::KeyAlgorithm::Des2,
        Algorithm::Aes128 => pb::KeyAlgorithm::Aes128,
        Algorithm::Aes192 => pb::KeyAlgorithm::Aes192,
        Algorithm::Aes256 => pb::KeyAlgorithm::Aes256,
        Algorithm::Sm4 => pb::KeyAlgorithm::Sm4,
    }
}

fn purpose(field: &str, v: i32, optional: bool) -> Result<Option<Purpose>> {
    match pb::KeyPurpose::try_from(v) {
        Ok(pb::KeyPurpose::DerivationMaster) => Ok(Some(Purpose::DerivationMaster)),
        Ok(pb::KeyPurpose::TransportExport) => Ok(Some(Purpose::TransportExport)),
        Ok(pb::KeyPurpose::TransportImport) => Ok(Some(Purpose::TransportImport)),
        Ok(pb::KeyPurpose::Mac) => Ok(Some(Purpose::Mac)),
        Ok(pb::KeyPurpose::Escrow) => Ok(Some(Purpose::Escrow)),
        Ok(pb::KeyPurpose::Unspecified) if optional => Ok(None),
        _ => Err(invalid(field, "must be DERIVATION_MASTER, TRANSPORT_EXPORT, TRANSPORT_IMPORT, MAC or ESCROW")),
    }
}

fn purpose_to_pb(p: Purpose) -> pb::KeyPurpose {
    match p {
        Purpose::DerivationMaster => pb::KeyPurpose::DerivationMaster,
        Purpose::TransportExport => pb::KeyPurpose::TransportExport,
        Purpose::TransportImport => pb::KeyPurpose::TransportImport,
        Purpose::Mac => pb::KeyPurpose::Mac,
        Purpose::Escrow => pb::KeyPurpose::Escrow,
    }
}

fn state(field: &str, v: i32, optional: bool) -> Result<Option<KeyState>> {
    match pb::KeyState::try_from(v) {
        Ok(pb::KeyState::Active) => Ok(Some(KeyState::Active)),
        Ok(pb::KeyState::Deprecated) => Ok(Some(KeyState::Deprecated)),
        Ok(pb::KeyState::Suspended) => Ok(Some(KeyState::Suspended)),
        Ok(pb::KeyState::Destroyed) if optional => Ok(Some(KeyState::Destroyed)),
        Ok(pb::KeyState::Unspecified) if optional => Ok(None),
        _ => Err(invalid(field, "must be ACTIVE, DEPRECATED or SUSPENDED (use DestroyKey to destroy)")),
    }
}

fn state_to_pb(s: KeyState) -> pb::KeyState {
    match s {
        KeyState::Active => pb::KeyState::Active,
        KeyState::Deprecated => pb::KeyState::Deprecated,
        KeyState::Suspended => pb::KeyState::Suspended,
        KeyState::Destroyed => pb::KeyState::Destroyed,
    }
}

fn format(field: &str, v: i32) -> Result<Option<WrapFormat>> {
    match pb::WrapFormat::try_from(v) {
        Ok(pb::WrapFormat::Unspecified) => Ok(None),
        Ok(pb::WrapFormat::AesKeyWrap) => Ok(Some(WrapFormat::AesKeyWrap)),
        Ok(pb::WrapFormat::AesKeyWrapPad) => Ok(Some(WrapFormat::AesKeyWrapPad)),
        Ok(pb::WrapFormat::Des3Ecb) => Ok(Some(WrapFormat::Des3Ecb)),
        Ok(pb::WrapFormat::Sm4Ecb) => Ok(Some(WrapFormat::Sm4Ecb)),
        Err(_) => Err(invalid(field, format!("unknown wrap format {v}"))),
    }
}

fn format_to_pb(name: &str) -> pb::WrapFormat {
    match name {
        "AesKeyWrap" => pb::WrapFormat::AesKeyWrap,
        "AesKeyWrapPad" => pb::WrapFormat::AesKeyWrapPad,
        "Des3Ecb" => pb::WrapFormat::Des3Ecb,
        "Sm4Ecb" => pb::WrapFormat::Sm4Ecb,
        _ => pb::WrapFormat::Unspecified,
    }
}

fn key_ref(field: &str, r: Option<pb::KeyRef>) -> Result<KeyRef> {
    let r = r.ok_or_else(|| invalid(field, "is required"))?;
    Ok(KeyRef {
        name: KeyName::parse(&format!("{field}.name"), &r.name)?,
        version: (r.version != 0).then_some(r.version),
    })
}

fn exact_version(field: &str, r: &KeyRef) -> Result<u32> {
    r.version.ok_or_else(|| invalid(&format!("{field}.version"), "must name a version"))
}

/// Converts a catalogue record to its protobuf form.
pub fn key_to_pb(r: &KeyRecord) -> pb::Key {
    pb::Key {
        name: r.name.as_str().to_owned(),
        version: r.version,
        algorithm: algorithm_to_pb(r.algorithm) as i32,
        purpose: purpose_to_pb(r.purpose) as i32,
        state: state_to_pb(r.state) as i32,
        kcv: Some(pb::KeyCheckValue { method: r.kcv.method.as_str().to_owned(), value: r.kcv.value.clone() }),
        created_by: r.created_by.clone(),
        created_at_ms: r.created_at,
        updated_at_ms: r.updated_at,
        module: r.module.clone(),
        object_id: r.object_id.clone(),
        origin: r.origin.clone(),
    }
}

fn card_input(c: Option<pb::CardIdentifiers>) -> Result<CardInput> {
    let c = c.ok_or_else(|| invalid("card", "is required"))?;
    Ok(CardInput {
        asn: c.asn,
        city: c.city,
        pan: c.pan,
        psn: c.psn,
        kdd: c.kdd,
        uid: c.uid,
        aid: c.aid,
        system_identifier: c.system_identifier,
    })
}

fn derive_request(
    profile: String,
    transport: Option<pb::KeyRef>,
    pins: std::collections::HashMap<String, u32>,
) -> Result<DeriveRequest> {
    if profile.is_empty() {
        return Err(invalid("profile", "is required"));
    }
    let mut parsed = BTreeMap::new();
    for (name, version) in pins {
        if version == 0 {
            return Err(invalid("master_key_versions", format!("{name}: version must be at least 1")));
        }
        parsed.insert(KeyName::parse("master_key_versions", &name)?, version);
    }
    Ok(DeriveRequest { profile, transport: key_ref("transport_key", transport)?, pins: parsed })
}

fn derived_to_pb(keys: &[DerivedKey], transport: &KeyRecord) -> pb::DeriveCardKeysResponse {
    pb::DeriveCardKeysResponse {
        keys: keys
            .iter()
            .map(|k| pb::DerivedKey {
                role: k.role.clone(),
                master_key: Some(pb::KeyRef { name: k.master_key.clone(), version: k.master_version }),
                algorithm: Algorithm::from_stored(&k.algorithm)
                    .map(algorithm_to_pb)
                    .unwrap_or(pb::KeyAlgorithm::Unspecified) as i32,
                kcv: Some(pb::KeyCheckValue { method: k.kcv_method.clone(), value: k.kcv.clone() }),
                wrapped: hex::decode(&k.wrapped).unwrap_or_default(),
                format: format_to_pb(&k.format) as i32,
            })
            .collect(),
        transport_key: Some(pb::KeyRef { name: transport.name.as_str().to_owned(), version: transport.version }),
    }
}

fn page_token(after: Option<(String, u32)>) -> String {
    after.map(|(n, v)| hex::encode(format!("{n}\n{v}"))).unwrap_or_default()
}

fn parse_page_token(t: &str) -> Result<Option<(String, u32)>> {
    if t.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("page_token", "not a token from a previous response");
    let text = String::from_utf8(hex::decode(t).map_err(|_| bad())?).map_err(|_| bad())?;
    let (n, v) = text.split_once('\n').ok_or_else(bad)?;
    Ok(Some((n.to_owned(), v.parse().map_err(|_| bad())?)))
}

fn key_resource(name: &KeyName) -> Resource {
    Resource::Key(name.as_str().to_owned())
}

type BatchStream = ReceiverStream<std::result::Result<pb::DeriveBatchResponse, Status>>;

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> std::result::Result<Response<pb::Key>, Status> {
        self.shared
            .handle("KeyService/CreateKey", request, |core, principal, req| async move {
                let name = KeyName::parse("name", &req.name)?;
                let algorithm = algorithm("algorithm", req.algorithm)?;
                let purpose =
                    purpose("purpose", req.purpose, false)?.ok_or_else(|| invalid("purpose", "is required"))?;
                let kcv_method = KcvMethod::parse_for("kcv_method", &req.kcv_method, algorithm)?;
                let proof = core.authorize::<authz::CreateKey>(&principal, &key_resource(&name)).await?;
                let r = core.create_key(&proof, CreateKey { name, algorithm, purpose, kcv_method }).await?;
                Ok(key_to_pb(&r))
            })
            .await
    }

    async fn import_key(
        &self,
        request: Request<pb::ImportKeyRequest>,
    ) -> std::result::Result<Response<pb::Key>, Status> {
        self.shared
            .handle("KeyService/ImportKey", request, |core, principal, req| async move {
                let name = KeyName::parse("name", &req.name)?;
                let algorithm = algorithm("algorithm", req.algorithm)?;
                let purpose =
                    purpose("purpose", req.purpose, false)?.ok_or_else(|| invalid("purpose", "is required"))?;
                let kcv = req.expected_kcv.ok_or_else(|| invalid("expected_kcv", "is required"))?;
                let method = KcvMethod::parse_for("expected_kcv.method", &kcv.method, algorithm)?;
                if kcv.value.len() != 6 || hex::decode(&kcv.value).is_err() {
                    return Err(invalid("expected_kcv.value", "must be 3 bytes of hex"));
                }
                let source = match req.source {
                    Some(pb::import_key_request::Source::Wrapped(w)) => ImportSource::Wrapped {
                        transport: key_ref("wrapped.transport_key", w.transport_key)?,
                        format: format("wrapped.format", w.format)?,
                        wrapped: w.wrapped,
                    },
                    Some(pb::import_key_request::Source::HsmObjectLabel(label)) => {
                        if label.is_empty() || label.len() > 256 {
                            return Err(invalid("hsm_object_label", "must be 1-256 bytes"));
                        }
                        ImportSource::HsmObject { label }
                    }
                    None => return Err(invalid("source", "one of wrapped or hsm_object_label is required")),
                };
                let cmd =
                    ImportKey { name: name.clone(), algorithm, purpose, source, expected_kcv: (method, kcv.value) };
                let r = match &cmd.source {
                    ImportSource::Wrapped { .. } => {
                        let proof = core.authorize::<authz::ImportKey>(&principal, &key_resource(&name)).await?;
                        core.import_key(&proof, cmd).await?
                    }
                    ImportSource::HsmObject { .. } => {
                        let proof = core.authorize::<authz::AdoptKey>(&principal, &key_resource(&name)).await?;
                        core.adopt_key(&proof, cmd).await?
                    }
                };
                Ok(key_to_pb(&r))
            })
            .await
    }

    async fn get_key(&self, request: Request<pb::GetKeyRequest>) -> std::result::Result<Response<pb::Key>, Status> {
        self.shared
            .handle("KeyService/GetKey", request, |core, principal, req| async move {
                let key = key_ref("key", req.key)?;
                let proof = core.authorize::<authz::GetKey>(&principal, &key_resource(&key.name)).await?;
                Ok(key_to_pb(&core.get_key(&proof, &key).await?))
            })
            .await
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> std::result::Result<Response<pb::ListKeysResponse>, Status> {
        self.shared
            .handle("KeyService/ListKeys", request, |core, principal, req| async move {
                let filter = ListFilter {
                    name_prefix: req.name_prefix.clone(),
                    state: state("state", req.state, true)?,
                    purpose: purpose("purpose", req.purpose, true)?,
                };
                let page_size = match req.page_size {
                    0 => 100,
                    n @ 1..=500 => n,
                    _ => return Err(invalid("page_size", "must be 0-500")),
                };
                let after = parse_page_token(&req.page_token)?;
                let proof = core.authorize::<authz::ListKeys>(&principal, &Resource::Key(req.name_prefix)).await?;
                let (keys, next) = core.list_keys(&proof, &filter, after, page_size).await?;
                Ok(pb::ListKeysResponse {
                    keys: keys.iter().map(key_to_pb).collect(),
                    next_page_token: page_token(next),
                })
            })
            .await
    }

    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> std::result::Result<Response<pb::Key>, Status> {
        self.shared
            .handle("KeyService/RotateKey", request, |core, principal, req| async move {
                let name = KeyName::parse("name", &req.name)?;
                let proof = core.authorize::<authz::RotateKey>(&principal, &key_resource(&name)).await?;
                Ok(key_to_pb(&core.rotate_key(&proof, name).await?))
            })
            .await
    }

    async fn set_key_state(
        &self,
        request: Request<pb::SetKeyStateRequest>,
    ) -> std::result::Result<Response<pb::Key>, Status> {
        self.shared
            .handle("KeyService/SetKeyState", request, |core, principal, req| async move {
                let key = key_ref("key", req.key)?;
                let version = exact_version("key", &key)?;
                let new = state("state", req.state, false)?.ok_or_else(|| invalid("state", "is required"))?;
                let proof = core.authorize::<authz::SetKeyState>(&principal, &key_resource(&key.name)).await?;
                Ok(key_to_pb(&core.set_key_state(&proof, key.name, version, new, req.reason).await?))
            })
            .await
    }

    async fn destroy_key(
        &self,
        request: Request<pb::DestroyKeyRequest>,
    ) -> std::result::Result<Response<pb::Key>, Status> {
        self.shared
            .handle("KeyService/DestroyKey", request, |core, principal, req| async move {
                let key = key_ref("key", req.key)?;
                let version = exact_version("key", &key)?;
                let proof = core.authorize::<authz::DestroyKey>(&principal, &key_resource(&key.name)).await?;
                Ok(key_to_pb(&core.destroy_key(&proof, key.name, version, req.reason).await?))
            })
            .await
    }

    async fn list_card_profiles(
        &self,
        request: Request<pb::ListCardProfilesRequest>,
    ) -> std::result::Result<Response<pb::ListCardProfilesResponse>, Status> {
        self.shared
            .handle("KeyService/ListCardProfiles", request, |core, principal, _req| async move {
                let proof =
                    core.authorize::<authz::ListCardProfiles>(&principal, &Resource::CardProfile("*".into())).await?;
                let profiles = core.list_card_profiles(&proof);
                Ok(pb::ListCardProfilesResponse {
                    profiles: profiles
                        .all()
                        .map(|p| pb::CardProfile {
                            name: p.name.clone(),
                            description: p.description.clone(),
                            identifiers: p.identifiers.iter().map(|i| i.as_str().to_owned()).collect(),
                            roles: p
                                .roles
                                .iter()
                                .map(|r| pb::CardKeyRole {
                                    role: r.name.clone(),
                                    description: r.description.clone(),
                                    method: r.method.as_str().to_owned(),
                                    master_key: r.master_key.as_str().to_owned(),
                                    algorithm: algorithm_to_pb(r.method.algorithm()) as i32,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn derive_card_keys(
        &self,
        request: Request<pb::DeriveCardKeysRequest>,
    ) -> std::result::Result<Response<pb::DeriveCardKeysResponse>, Status> {
        self.shared
            .handle("KeyService/DeriveCardKeys", request, |core, principal, req| async move {
                let dreq = derive_request(req.profile, req.transport_key, req.master_key_versions)?;
                let input = card_input(req.card)?;
                // why: no card identifier here: which cards a tenant may
                // have is the production plans' job (checked on the form
                // the keys are derived from, per card, batches included).
                let context = [
                    ("batch", ContextValue::Bool(false)),
                    ("transport_key", ContextValue::Str(dreq.transport.name.as_str().to_owned())),
                ];
                let proof = core
                    .authorize_in::<authz::DeriveCardKeys>(
                        &principal,
                        &Resource::CardProfile(dreq.profile.clone()),
                        &context,
                    )
                    .await?;
                let (plan, keys) = core.derive_card_keys(&proof, dreq, input).await?;
                Ok(derived_to_pb(&keys, &plan.transport))
            })
            .await
    }

    type DeriveCardKeysBatchStream = BatchStream;

    async fn derive_card_keys_batch(
        &self,
        request: Request<Streaming<pb::DeriveBatchRequest>>,
    ) -> std::result::Result<Response<BatchStream>, Status> {
        let detail = self.shared.client_error_detail;
        self.shared
            .handle("KeyService/DeriveCardKeysBatch", request, |core, principal, mut stream| async move {
                let first = stream.message().await.map_err(|s| invalid("header", s.message().to_owned()))?;
                let header = match first.and_then(|m| m.item) {
                    Some(pb::derive_batch_request::Item::Header(h)) => h,
                    _ => return Err(invalid("header", "the first message of a batch must be its header")),
                };
                let dreq = derive_request(header.profile, header.transport_key, header.master_key_versions)?;
                let context = [
                    ("batch", ContextValue::Bool(true)),
                    ("transport_key", ContextValue::Str(dreq.transport.name.as_str().to_owned())),
                ];
                let proof = core
                    .authorize_in::<authz::DeriveCardKeys>(
                        &principal,
                        &Resource::CardProfile(dreq.profile.clone()),
                        &context,
                    )
                    .await?;
                let batch = core.open_batch(&proof, header.batch_id, dreq).await?;
                let chunk = core.derive_limits.batch_chunk;
                let (tx, rx) = mpsc::channel(chunk);
                tokio::spawn(run_batch(core, proof, batch, stream, tx, detail));
                Ok(ReceiverStream::new(rx))
            })
            .await
    }
}

type ResultSender = mpsc::Sender<std::result::Result<pb::DeriveBatchResponse, Status>>;

/// A chunk whose commit runs in the background: its first index and the
/// task that records it and returns its results.
struct InFlight {
    first_index: u64,
    commit: tokio::task::JoinHandle<Result<Vec<ItemResult>>>,
}

/// Reads cards, processes them chunk by chunk and sends results. Reading
/// pauses while results wait to be sent, so memory stays flat (at most two
/// chunks: one being derived, one being recorded).
///
/// Pipelined: chunk N is derived in the HSM while chunk N-1 is recorded;
/// chunk N-1's results are sent only once its record is committed.
async fn run_batch(
    core: Arc<Core>,
    proof: Authorized<authz::DeriveCardKeys>,
    batch: Batch,
    mut stream: Streaming<pb::DeriveBatchRequest>,
    tx: ResultSender,
    detail: bool,
) {
    let run = BatchRun { core, proof: Arc::new(proof), batch: Arc::new(batch), tx, detail };
    let chunk = run.core.derive_limits.batch_chunk;
    let max = run.core.derive_limits.max_batch_cards;
    let mut next_index = 0u64;
    let mut in_flight: Option<InFlight> = None;
    let mut buffer: Vec<CardInput> = Vec::with_capacity(chunk);
    loop {
        let message = if buffer.is_empty() {
            stream.message().await
        } else {
            match tokio::time::timeout(Duration::from_millis(5), stream.message()).await {
                Ok(m) => m,
                Err(_) => {
                    if !run.flush(&mut next_index, &mut buffer, &mut in_flight).await {
                        return;
                    }
                    continue;
                }
            }
        };
        let card = match message {
            Ok(Some(pb::DeriveBatchRequest { item: Some(pb::derive_batch_request::Item::Card(c)) })) => c,
            Ok(Some(_)) => {
                run.finish(&mut in_flight).await;
                let _ =
                    run.tx.send(Err(Status::invalid_argument("every message after the header must be a card"))).await;
                return;
            }
            Ok(None) => {
                if run.flush(&mut next_index, &mut buffer, &mut in_flight).await {
                    run.finish(&mut in_flight).await;
                }
                return;
            }
            Err(status) => {
                tracing::info!(batch = %run.batch.id, %status, "batch stream ended by the client");
                run.finish(&mut in_flight).await;
                return;
            }
        };
        if next_index + buffer.len() as u64 >= max {
            if run.flush(&mut next_index, &mut buffer, &mut in_flight).await && run.finish(&mut in_flight).await {
                let _ = run
                    .tx
                    .send(Err(Status::invalid_argument(format!(
                        "batch exceeds derive.max_batch_cards ({max}); cards after {max} were not read"
                    ))))
                    .await;
            }
            return;
        }
        buffer.push(card_input(Some(card)).unwrap_or_default());
        if buffer.len() >= chunk && !run.flush(&mut next_index, &mut buffer, &mut in_flight).await {
            return;
        }
    }
}

struct BatchRun {
    core: Arc<Core>,
    proof: Arc<Authorized<authz::DeriveCardKeys>>,
    batch: Arc<Batch>,
    tx: ResultSender,
    detail: bool,
}

impl BatchRun {
    fn error(&self, e: &Error) -> Status {
        super::status::to_status(e, "KeyService/DeriveCardKeysBatch", self.detail)
    }

    /// Derives the buffered cards while the previous chunk is recorded,
    /// sends the previous chunk's results, then starts recording this one.
    /// False when the stream must stop.
    async fn flush(&self, next_index: &mut u64, buffer: &mut Vec<CardInput>, in_flight: &mut Option<InFlight>) -> bool {
        if buffer.is_empty() {
            return true;
        }
        let cards = std::mem::take(buffer);
        let n = cards.len() as u64;
        let prepared = self.core.prepare_chunk(&self.batch, *next_index, cards).await;
        if !self.finish(in_flight).await {
            return false;
        }
        let prepared = match prepared {
            Ok(p) => p,
            Err(e) => {
                let _ = self.tx.send(Err(self.error(&e))).await;
                return false;
            }
        };
        let (core, proof, batch) = (self.core.clone(), self.proof.clone(), self.batch.clone());
        *in_flight = Some(InFlight {
            first_index: *next_index,
            commit: tokio::spawn(async move { core.commit_chunk(&proof, &batch, prepared).await }),
        });
        *next_index += n;
        true
    }

    /// Waits for the chunk being recorded and sends its results. False when
    /// the stream must stop.
    async fn finish(&self, in_flight: &mut Option<InFlight>) -> bool {
        let Some(InFlight { first_index, commit }) = in_flight.take() else {
            return true;
        };
        let results = match commit.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let _ = self.tx.send(Err(self.error(&e))).await;
                return false;
            }
            Err(join) => {
                let e = Error::Hsm(crate::hsm::HsmError::Worker(join.to_string()));
                let _ = self.tx.send(Err(self.error(&e))).await;
                return false;
            }
        };
        for (i, r) in results.into_iter().enumerate() {
            let index = first_index + i as u64;
            let response = match r {
                ItemResult::Keys { keys, replayed } => pb::DeriveBatchResponse {
                    index,
                    replayed,
                    result: Some(pb::derive_batch_response::Result::Keys(derived_to_pb(
                        &keys,
                        &self.batch.plan.transport,
                    ))),
                },
                ItemResult::Failed { code, message, replayed } => pb::DeriveBatchResponse {
                    index,
                    replayed,
                    result: Some(pb::derive_batch_response::Result::Error(pb::ItemError {
                        code: code as i32,
                        message,
                    })),
                },
            };
            if self.tx.send(Ok(response)).await.is_err() {
                return false;
            }
        }
        true
    }
}
