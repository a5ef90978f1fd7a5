//! The public API of the transit-card key service, package `kms.v1`.
//!
//! The `.proto` files under `proto/kms/v1/` are the source of truth; this
//! crate holds the Rust types and tonic clients/servers generated from them,
//! plus the encoded descriptor set that the server publishes through gRPC
//! reflection.

/// Generated code for package `kms.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("kms.v1");
}

/// The encoded `FileDescriptorSet` of every `kms.v1` file, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kms_v1_descriptor");
