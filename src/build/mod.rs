//! Scheduling and executing the plan: a worker pool runs every step whose inputs are
//! ready; executors for COPY/ADD ([`copy`]), RUN (with the runtime) and metadata.

pub mod add;
pub mod copy;
pub mod exec;
pub mod key;
pub mod mounts;
pub mod remote;
mod run;

pub use exec::{build, host_platform, BuildError, BuildOptions, Built};
pub use mounts::{cache_mounts_dir, SecretSource};
pub use remote::{RemoteCache, RemoteStep, StepRecord};
