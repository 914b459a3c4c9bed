//! The local store: content-addressed blobs in OCI image-layout form, tags, snapshots, the cache index, locks, garbage collection.
