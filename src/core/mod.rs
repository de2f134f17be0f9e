//! Leaf types every layer shares and that import nothing else of the crate:
//! the result record, the captured frame, clock helpers, GPIO line types,
//! journald `MESSAGE_ID`s, crash-safe file replacement, the shutdown
//! token, zone polygons and the sighting record.

pub mod clock;
pub mod frame;
pub(crate) mod fsutil;
pub(crate) mod gpio;
pub mod ids;
pub mod result;
pub mod sighting;
pub(crate) mod shutdown;
pub mod zone;

/// The shared test data folder: `$SPOTTER_TESTDATA`, else `../shared/testdata`
/// beside the crate.
#[cfg(test)]
pub(crate) fn testdata() -> std::path::PathBuf {
    std::env::var_os("SPOTTER_TESTDATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
        })
}
