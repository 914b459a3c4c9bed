//! kiln: build container images from Dockerfiles, run them, and move them to and from
//! registries. The library holds every behaviour; `src/main.rs` and `src/cli/` only parse
//! arguments and dispatch. The layout follows `../shared/DESIGN.md`: each module owns one
//! stage of the path of the data, and imports only the modules before it.

pub mod archive;
pub mod build;
pub mod context;
pub mod dockerfile;
pub mod image;
pub mod layer;
pub mod plan;
pub mod progress;
pub mod registry;
pub mod runtime;
pub mod store;
