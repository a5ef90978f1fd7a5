//! Hand-over to the service: the `handover` step writes a file listing
//! the ceremony's keys (label, algorithm, purpose, KCV) and records its
//! SHA-256 in the signed transcript. `ceremony handover import` checks the
//! transcript (signatures, chain, closing entry, the key fingerprint from
//! the witnesses' summary), finds the file's hash in a `handover` entry,
//! and registers each key in the service's catalogue by adopting the token
//! object with that label (`ImportKey` with `hsm_object_label`), the
//! service checking the KCV again. The service relabels an adopted
//! object, so importing the same file twice fails at its first key.

use std::path::Path;

use kms::cli::{ClientError, ClientOptions, call_error};
use kms_proto::v1 as pb;
use kms_proto::v1::key_service_client::KeyServiceClient;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::CeremonyError;
use crate::transcript;

/// Largest hand-over file read.
pub const MAX_HANDOVER_BYTES: u64 = 1 << 20;

#[derive(Debug, Deserialize)]
struct HandoverFile {
    format: String,
    ceremony: String,
    keys: Vec<HandoverKey>,
}

#[derive(Debug, Deserialize)]
struct HandoverKey {
    name: String,
    label: String,
    algorithm: String,
    purpose: String,
    kcv: crate::backup::KcvJson,
}

/// One key's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Adopted {
    /// Catalogue name.
    pub name: String,
    /// Version the service gave it.
    pub version: u32,
    /// KCV the service computed.
    pub kcv: String,
}

fn algorithm(s: &str) -> Option<pb::KeyAlgorithm> {
    Some(match s {
        "DES2" => pb::KeyAlgorithm::Des2,
        "AES128" => pb::KeyAlgorithm::Aes128,
        "AES192" => pb::KeyAlgorithm::Aes192,
        "AES256" => pb::KeyAlgorithm::Aes256,
        "SM4" => pb::KeyAlgorithm::Sm4,
        _ => return None,
    })
}

fn purpose(s: &str) -> Option<pb::KeyPurpose> {
    Some(match s {
        "derivation_master" => pb::KeyPurpose::DerivationMaster,
        "transport_export" => pb::KeyPurpose::TransportExport,
        "transport_import" => pb::KeyPurpose::TransportImport,
        "mac" => pb::KeyPurpose::Mac,
        "escrow" => pb::KeyPurpose::Escrow,
        _ => return None,
    })
}

/// Checks `file` against the transcript and registers its keys.
pub fn import(
    file: &Path,
    transcript_path: &Path,
    key_fingerprint: &str,
    client: &ClientOptions,
) -> Result<Vec<Adopted>, CeremonyError> {
    let meta = std::fs::metadata(file).map_err(CeremonyError::file(file))?;
    if meta.len() > MAX_HANDOVER_BYTES {
        return Err(CeremonyError::Refused(format!("{}: too large for a hand-over file", file.display())));
    }
    let bytes = std::fs::read(file).map_err(CeremonyError::file(file))?;
    let verified = transcript::verify(transcript_path, key_fingerprint, None)?;
    if verified.closing != "ceremony-completed" {
        return Err(CeremonyError::Refused(format!(
            "transcript {} ends with {}: keys of an aborted ceremony are not handed over",
            transcript_path.display(),
            verified.closing
        )));
    }
    let sha = hex::encode(Sha256::digest(&bytes));
    // The entries searched are the ones verified (the file is read once).
    let recorded = verified
        .records
        .iter()
        .any(|e| e["event"] == "handover" && e["details"]["sha256"].as_str() == Some(sha.as_str()));
    if !recorded {
        return Err(CeremonyError::Refused(format!(
            "{} (SHA-256 {sha}) is not the hand-over file recorded in {}",
            file.display(),
            transcript_path.display()
        )));
    }
    let handover: HandoverFile = serde_json::from_slice(&bytes)
        .map_err(|e| CeremonyError::Refused(format!("{}: not a hand-over file: {e}", file.display())))?;
    if handover.format != "kms-ceremony-handover/1" || handover.ceremony != verified.ceremony {
        return Err(CeremonyError::Refused(format!("{}: format or ceremony does not match", file.display())));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CeremonyError::file("tokio runtime"))?;
    runtime.block_on(register(handover.keys, client)).map_err(|e| CeremonyError::Refused(e.to_string()))
}

async fn register(keys: Vec<HandoverKey>, client: &ClientOptions) -> Result<Vec<Adopted>, ClientError> {
    let mut service = KeyServiceClient::new(client.connect().await?);
    let mut adopted = Vec::new();
    for k in keys {
        let (Some(algorithm), Some(purpose)) = (algorithm(&k.algorithm), purpose(&k.purpose)) else {
            return Err(ClientError::Usage(format!("{}: unknown algorithm or purpose", k.name)));
        };
        let key = service
            .import_key(pb::ImportKeyRequest {
                name: k.name.clone(),
                algorithm: algorithm as i32,
                purpose: purpose as i32,
                source: Some(pb::import_key_request::Source::HsmObjectLabel(k.label)),
                expected_kcv: Some(pb::KeyCheckValue { method: k.kcv.method, value: k.kcv.value }),
            })
            .await
            .map_err(|e| call_error("ImportKey", e))?
            .into_inner();
        adopted.push(Adopted {
            name: key.name,
            version: key.version,
            kcv: key.kcv.map(|c| c.value).unwrap_or_default(),
        });
    }
    Ok(adopted)
}
