//! Spotter: a camera inference appliance.
//!
//! V4L2 camera (or a replay folder) → quantized TFLite model → results in sled
//! → HTTPS API, supervised by systemd. `main.rs` is a thin CLI over this crate.

pub mod api;
pub mod app;
pub mod backup;
pub mod bench;
pub mod capture;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod fsutil;
pub mod gpio;
pub mod ids;
pub mod inference;
pub mod keys;
pub mod localapi;
pub mod logging;
pub mod metrics;
pub mod modelstore;
pub mod mqtt;
pub mod pipeline;
pub mod reload;
pub mod result;
pub mod state;
pub mod store;
pub mod systemd;
