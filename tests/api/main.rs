//! HTTPS API integration tests in one binary (one link of the crate instead
//! of one per file): a real `Server` in this process (`api_harness`) for
//! routes, authentication, events, connection limits, TLS and reload; the
//! real daemon (`common`) for uploads and model management; the web
//! interface's pages and key routes (`web_pages`).
//!
//! The rate-limit tests stay in their own binary (tests/api_ratelimit.rs):
//! they install a process-wide logger and assert on everything it captured.

#[path = "../api_harness/mod.rs"]
mod api_harness;
#[path = "../common/mod.rs"]
mod common;

mod api;
mod api_audit;
mod api_auth;
// Encrypted backups (issue 23).
mod api_backup;
mod api_classify;
mod api_events;
mod api_frames;
mod api_keys;
mod api_limits;
mod api_session;
mod api_sightings;
// The support bundle (issue 22).
mod api_support;
mod api_tls;
mod dos_body;
mod dos_conn;
mod reload;
mod web_pages;
