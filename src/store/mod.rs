//! Result store (sled).
