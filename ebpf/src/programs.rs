//! The compiled program objects, embedded at build time (see `build.rs`).

/// The isolation classifiers `from_container` and `to_container` with their maps.
pub static ISOLATION: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/isolation.o"));

/// A classifier the verifier rejects on purpose; tests load it to check that the verifier's
/// log reaches the caller.
pub static BAD_FOR_TESTS: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/bad_for_tests.o"));

pub(crate) const FROM_CONTAINER: &str = "from_container";
pub(crate) const TO_CONTAINER: &str = "to_container";
