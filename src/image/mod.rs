//! OCI image types (digests, descriptors, manifests, indexes, configs) and image references.
//!
//! Everything here is plain data with serde mappings that use the exact JSON names of the OCI
//! image-spec and docker; maps are `BTreeMap` and fields keep spec order, so serializing the same
//! value always gives the same bytes (and so the same digest).

pub mod config;
pub mod digest;
pub mod media;
pub mod oci;
pub mod reference;
pub mod timestamp;

pub use config::{ContainerConfig, EmptyObject, Healthcheck, History, ImageConfig, RootFs};
pub use digest::{Digest, DigestError, Sha256Hasher};
pub use oci::{host_architecture, Descriptor, Index, Manifest, Platform};
pub use reference::{Reference, ReferenceError};
