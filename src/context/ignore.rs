//! Placeholder: Docker's .dockerignore matcher lands here.
