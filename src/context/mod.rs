//! Which files are in the build context, and their content hashes.

pub mod ignore;
