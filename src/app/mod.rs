//! The supervisor: the daemon's composition. [`run`] sets up the process
//! (malloc tuning, the async runtime), then starts one thread or task per
//! concern (capture, inference, API, MQTT, GPIO, pruner; `start`), watches
//! readiness, the watchdog and signals (`monitor`), applies reloads
//! ([`reload`]) and shuts everything down in order on SIGTERM/SIGINT
//! (`shutdown`): stop capture, finish the inference in flight, return GPIO
//! outputs to their safe state, stop the MQTT publisher (bounded), flush the
//! store, close the listener, exit.

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

/// The daemon's malloc settings (glibc), each unless the environment sets
/// its own (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, or any
/// `GLIBC_TUNABLES`), which then wins:
/// - 2 arenas: glibc gives each thread that allocates concurrently its own
///   arena, up to 8 per core, and with the API, capture, inference, sled and
///   LiteRT threads the heap fragments over many of them.
/// - a fixed 256 KiB mmap threshold: blocks at least that large (decoded
///   frames, upload bodies, sled's 512 KiB write buffers) are mapped and
///   returned to the kernel when freed. glibc's default raises the threshold
///   to the largest block freed so far, after which such blocks come from
///   the arenas, and the holes they leave keep RSS at its high-water mark.
///   In the soak test (benches/soak.sh, 5 minutes, dev build) RSS after
///   warm-up went from 60.8 -> 61.7 MiB and 58.6 -> 60.8 MiB in two runs
///   without it to a flat 52-54 MiB with it, at the same request and frame
///   rates.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| {
            std::env::var_os(name).is_none() && std::env::var_os("GLIBC_TUNABLES").is_none()
        };
        // SAFETY: mallopt only sets allocator tunables; it is called before
        // the daemon starts its threads.
        unsafe {
            if unset("MALLOC_ARENA_MAX") {
                nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
            }
            if unset("MALLOC_MMAP_THRESHOLD_") {
                nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 256 << 10);
            }
        }
    }
}

/// How often the monitor returns the allocator's free pages to the kernel.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Return free memory inside glibc's arenas to the kernel (`malloc_trim`).
/// glibc gives back only the free top of a thread arena's heap, so holes
/// that short-lived buffers (responses, decoded frames below the mmap
/// threshold, sled's pages) leave in the middle of an arena stay resident.
/// In the soak test's load anonymous memory stepped up by about 2 MiB at a
/// time for several minutes after start (26 -> 35 MiB, mostly sled's page
/// cache filling) and one `malloc_trim(0)` in that daemon gave back 3.9 MiB
/// (the second arena 10.1 -> 5.8 MiB). Called every [`TRIM_EVERY`] by the
/// monitor (a walk over the arenas' free chunks, holding each arena's lock
/// briefly).
pub(crate) fn trim_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only takes glibc's arena locks and madvises free
    // pages; it is safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub(crate) fn run(settings: Settings, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    tune_malloc();
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
