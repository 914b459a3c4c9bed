//! OCI image types (digests, descriptors, manifests, indexes, configs) and image references.
