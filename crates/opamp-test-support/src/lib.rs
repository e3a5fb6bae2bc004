//! Test support for the opamp-rs workspace (not published).
//!
//! Published crates must build and test from their packed `.crate` alone, so none of their
//! tests may read a file outside the crate. The checks that the repository's own files stay
//! valid (the `examples/` configs) live here instead, in `tests/`.
