//! The gRPC API: generated protobuf code and conversions to domain types.
//! **Invariant:** the only module that knows protobuf.

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("switchyard.v1");
}

/// Encoded descriptor set of `proto/`, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));

pub mod client;
pub mod convert;
