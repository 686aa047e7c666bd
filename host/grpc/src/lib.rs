//! weft's gRPC edge (`weft.v1`): tonic services generic over the model's
//! [`Controller`] trait, protobuf <-> model conversion ([`convert`]), and the
//! one place where errors become status codes ([`status`]). Prost types do
//! not leave this crate except through the generated client, which the CLI
//! and tests use.

pub mod audit;
pub mod auth;
pub mod authority;
pub mod client;
pub mod codec;
pub mod convert;
pub mod server;
pub mod status;
pub mod tls;

/// Generated protobuf types, services and clients for `weft.v1`.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("weft.v1");

    /// Encoded descriptors for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("weft_v1_descriptor");
}

pub use weft_model::api::Controller;
