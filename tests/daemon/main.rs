//! The `spotter` binary as a process, in one test binary (one link of the
//! crate instead of one per file): the daemon end to end, its crash safety,
//! journald output, MQTT, SIGHUP reload, the shipped systemd unit and
//! generator, `spotter bench` and `spotter classify`; a `command` source
//! (ffmpeg) end to end; a YOLO detector end to
//! end; model swaps in the inference loop; the latest frame a viewer of
//! the web page fetches (issue 20); privacy masks on every stored or shown
//! picture (issue 23); the web interface in a headless
//! browser; power and heat readings from a fake sysfs, shadow evaluation of
//! a candidate model, and model rollout over the broker from a local HTTPS
//! bundle server (issue 22).

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod check_config;
mod classify;
// The binary's code layout (issue 21).
mod code_layout;
mod command_source;
mod daemon;
mod daemon_crash;
mod frames;
mod http_mjpeg;
mod journald;
mod model_swap;
mod mqtt;
mod power;
mod privacy;
mod rollout;
mod shadow;
mod sightings;
mod sighup;
mod sources;
// The support bundle (issue 22).
mod support_bundle;
mod systemd_unit;
mod web;
mod webdriver;
mod yolo;
