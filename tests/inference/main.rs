//! Inference integration tests in one binary (one link of the crate instead
//! of one per file): golden outputs of both runtimes against the shared test
//! data, and the LiteRT runtime and runtime selection. cross/test.sh runs
//! this target under qemu-user for aarch64.
//!
//! `litert::xnnpack_runs_the_requested_number_of_os_threads` counts this
//! process's threads in a re-executed copy of this binary that runs only it
//! (`common::test_name`).

#[path = "../common/mod.rs"]
mod common;

mod golden;
mod litert;
mod yolo;
