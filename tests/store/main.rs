//! Result-store integration tests in one binary (one link of the crate
//! instead of one per file): backups, crash safety, a full disk, export while
//! the daemon runs, paging, retention and the flash-wear measurement.
//!
//! `store_crash::store_survives_sigkill_at_random_moments` re-executes this
//! binary to run only the ignored `store_crash::crash_child_writer`
//! (`common::test_name`). `store_wear::store_wear_figures` (ignored) reads
//! this process's write_bytes: run it alone, as its module doc says.

#[path = "../common/mod.rs"]
mod common;

mod store_backup;
mod store_crash;
mod store_disk_floor;
mod store_enospc;
mod store_export_live;
mod store_query;
mod store_retention;
mod store_wear;
