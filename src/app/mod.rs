//! The supervisor: the daemon's composition. [`run`] sets up the process
//! (malloc tuning, the async runtime), then starts one thread or task per
//! concern (capture, inference, API, MQTT, GPIO, pruner; `start`), watches
//! readiness, the watchdog and signals (`monitor`), applies reloads
//! ([`reload`]) and shuts everything down in order on SIGTERM/SIGINT
//! (`shutdown`): stop capture, finish the inference in flight, return GPIO
//! outputs to their safe state, stop the MQTT publisher (bounded), flush the
//! store, close the listener, exit.

mod memory;
mod monitor;
pub mod reload;
mod secrets;
mod shutdown;
mod start;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::config::Settings;
use crate::core::ids;
use crate::state::AppState;
use crate::systemd::Notifier;

pub use monitor::stuck_thread;
pub use start::{check_required_runtime, source_opener};

/// How long shutdown waits for open HTTP requests.
const API_GRACE: Duration = Duration::from_secs(1);

/// Threads for blocking work started from the async runtime (store reads,
/// key checks); more requests wait for one.
pub(crate) const MAX_BLOCKING_THREADS: usize = 8;

/// Run the daemon until SIGTERM or SIGINT.
pub(crate) fn run(settings: Settings, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    memory::note_start_up_files();
    memory::tune_malloc();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Store reads and other blocking API work queue here instead of
        // growing tokio's default pool of up to 512 threads under load.
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("spotter-rt")
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(settings, config_path))
}

async fn run_async(settings: Settings, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let notifier = Notifier::from_env().unwrap_or_else(|e| {
        log::warn!("systemd notify disabled: {e}");
        Notifier::disabled()
    });
    check_required_runtime(&settings.model)?;
    let state = Arc::new(AppState::new());
    let files: Vec<String> = settings
        .files
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    log::info!(message_id = ids::STARTED; "spotter {} starting (config: {})", state.version, files.join(", "));

    let mut daemon = start::start(&settings, &state).await?;
    let exit = monitor::supervise(
        &settings,
        config_path.as_deref(),
        &state,
        &mut daemon,
        &notifier,
    )
    .await?;
    shutdown::shutdown(daemon, exit, &notifier).await
}
