//! Spotter: a camera inference appliance.
//!
//! V4L2 camera (or a replay folder) → quantized TFLite model → results in sled
//! → HTTPS API, supervised by systemd. `main.rs` is a thin CLI over this crate.
//!
//! # Layout
//!
//! Modules form layers; **a lower layer never imports a higher one** (nor a
//! module of its own layer). `layering` (a test) parses every `crate::` path
//! and fails on an edge that goes up or sideways; `docs/architecture.md`
//! shows the threads and flows.
//!
//! | layer | module | owns |
//! |---|---|---|
//! | 0 | [`core`] | leaf types: result record, frame, clock, GPIO line types, `MESSAGE_ID`s, atomic file writes, the shutdown token |
//! | 1 | [`config`] | every settings type: TOML files and drop-ins validated into `Settings` |
//! | 2 | [`metrics`] | accumulating Prometheus metrics and the store figures they render (a sink) |
//! | 2 | [`image`] | image formats shared by capture and inference: sniffing and decoding JPEG/PNG/BMP, MJPEG header repair, YUYV → RGB, privacy masks |
//! | 2 | [`logging`] | journald or stderr logging, level changes |
//! | 2 | [`systemd`] | `sd_notify` and the unit generator |
//! | 2 | [`power`] | SoC temperature and the firmware's throttling and under-voltage flags, read from sysfs |
//! | 3 | [`state`] | readiness, counters, model, last result, event bus, `/metrics` exposition (a sink) |
//! | 4 | [`capture`] | frame sources: V4L2 cameras, replayed folders, a program's output (`command`) |
//! | 4 | [`inference`] | runtimes (LiteRT, built-in TF Lite), pre- and post-processing |
//! | 4 | [`store`] | sled: results, snapshots, outbox, retention, disk floors, backups, the audit trail |
//! | 4 | [`gpio`] | trigger input, rule outputs, status LED |
//! | 4 | [`keys`] | API keys on disk |
//! | 4 | [`modelstore`] | model versions on disk: install (bare or signed bundles), activate, roll back |
//! | 4 | [`sightings`] | sightings from per-frame results (the tracker) and motion gating |
//! | 5 | [`pipeline`] | the capture and inference threads, the latest-frame slot, the result sink |
//! | 5 | [`support`] | the support bundle: one tar.gz of version, redacted config, checks, status, metrics, journal, store, model, disk and power |
//! | 6 | [`mqtt`] | store-and-forward publishing to a broker |
//! | 6 | [`api`] | the HTTPS server: routes, auth, limits, errors |
//! | 6 | [`fleet`] | model rollout commands from the broker: download, verify, activate, health window, roll back |
//! | 7 | [`app`] | the composition root: wiring, monitor, reload, shutdown |
//! | 7 | [`tools`] | `doctor`, `bench`, the wear benchmark, the local-API client |
//! | 8 | [`cli`] | the command line |
//! | 9 | `fuzz` | (tests only) the fuzz engine and a target per parser of untrusted bytes |
//!
//! # Visibility
//!
//! Items are `pub(crate)` by default. What is `pub` is the surface the binary
//! (`main.rs`: [`cli`]) and the integration tests under `tests/` use, and
//! nothing more: a test that needs a new item makes that item `pub`, not its
//! neighbours. Modules nothing outside the crate reaches are `pub(crate)`.

pub mod api;
pub mod app;
pub(crate) mod capture;
pub mod cli;
pub mod config;
pub mod core;
pub(crate) mod fleet;
pub(crate) mod gpio;
pub(crate) mod image;
pub mod inference;
pub mod keys;
pub(crate) mod logging;
pub(crate) mod metrics;
pub mod modelstore;
pub(crate) mod mqtt;
pub mod pipeline;
pub mod power;
pub mod sightings;
pub mod state;
pub mod store;
pub mod support;
pub(crate) mod systemd;
pub mod tools;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod layering;
