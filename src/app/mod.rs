//! The supervisor: starts one thread or task per concern (capture, inference,
//! API, monitor), watches readiness and signals, and shuts everything down in
//! order on SIGTERM/SIGINT: stop capture, finish the inference in flight,
//! return GPIO outputs to their safe state, stop the MQTT publisher
//! (bounded), flush the store, close the listener, exit.

pub mod reload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::api::{ApiOptions, Server};
use crate::capture::files::{FilesOptions, FilesSource};
use crate::capture::negotiate::FormatPreference;
use crate::capture::v4l2::{V4l2Options, V4l2Source};
use crate::capture::FrameSource;
use crate::config::{self, CaptureFormat, Settings, SourceKind, SourceSettings};
use crate::core::ids;
use crate::modelstore::ModelStore;
use crate::pipeline::{
    capture_loop, inference_loop, Backoff, FrameSlot, SourceOpener, SourceReadiness,
};
use crate::state::{AppState, Check};
use crate::store::Store;
use crate::systemd::Notifier;

/// How long shutdown waits for the inference in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for open HTTP requests.
const API_GRACE: Duration = Duration::from_secs(1);

/// Build the source opener for the configured source.
pub fn source_opener(s: &SourceSettings) -> SourceOpener {
    match s.kind {
        SourceKind::Files => {
            let opts = FilesOptions {
                // `config` guarantees dir is set for a files source.
                dir: s.dir.clone().unwrap_or_default(),
                fps: s.fps,
                looping: s.looping,
            };
            Box::new(move || {
                FilesSource::open(opts.clone()).map(|s| Box::new(s) as Box<dyn FrameSource>)
            })
        }
        SourceKind::V4l2 => {
            let opts = V4l2Options {
                device: s.device.clone(),
                width: s.width,
                height: s.height,
                fps: s.fps.round().max(1.0) as u32,
                format: match s.format {
                    CaptureFormat::Auto => FormatPreference::Auto,
                    CaptureFormat::Mjpeg => FormatPreference::Mjpeg,
                    CaptureFormat::Yuyv => FormatPreference::Yuyv,
                },
                buffers: s.buffers,
                timeout_ms: s.stall_timeout_ms,
            };
            Box::new(move || {
                V4l2Source::open(opts.clone()).map(|s| Box::new(s) as Box<dyn FrameSource>)
            })
        }
    }
}

/// Threads for blocking work started from the async runtime (store reads,
/// key checks); more requests wait for one.
pub const MAX_BLOCKING_THREADS: usize = 8;

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

/// Run the daemon until SIGTERM or SIGINT.
pub fn run(settings: Settings, config_path: Option<PathBuf>) -> anyhow::Result<()> {
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

fn one_line_status(state: &AppState, fps: f64) -> String {
    let r = state.readiness();
    let c = state.counters.snapshot();
    let model = state
        .model()
        .map(|m| format!("{} on {}", short_name(&m.path), m.runtime))
        .unwrap_or_else(|| "no model".into());
    let last = state
        .last_result()
        .map(|l| match (l.classes.first(), l.detections.first()) {
            (Some(c), _) => format!("{} {:.2}", c.label, c.score),
            (None, Some(d)) => format!("{} {:.2} ({} boxes)", d.label, d.score, l.detections.len()),
            _ => "nothing above threshold".into(),
        })
        .unwrap_or_else(|| "none yet".into());
    let head = if r.ready() {
        "ready".to_string()
    } else {
        let mut failing = Vec::new();
        for (name, check) in [
            ("source", &r.source),
            ("model", &r.model),
            ("store", &r.store),
        ] {
            if !check.ok {
                failing.push(format!("{name}: {}", check.detail));
            }
        }
        format!("NOT READY ({})", failing.join("; "))
    };
    format!(
        "{head}; {fps:.1} fps; {model}; last: {last}; dropped {}; errors {}",
        c.frames_dropped,
        c.inference_errors + c.store_errors + c.capture_errors
    )
}

/// The READY event, with what a technician checks first as fields: the
/// source, the model and runtime, and the latest label and score (when a
/// result exists yet: readiness does not wait for one).
fn log_ready(state: &AppState, line: &str) {
    let ms = state.started.elapsed().as_millis();
    let source = state.source();
    let (sha, runtime) = state
        .model()
        .map(|m| (m.sha256, m.runtime))
        .unwrap_or_default();
    let top = state
        .last_result()
        .and_then(|l| match (l.classes.first(), l.detections.first()) {
            (Some(c), _) => Some((c.label.clone(), c.score)),
            (None, Some(d)) => Some((d.label.clone(), d.score)),
            _ => None,
        });
    match top {
        Some((label, score)) => log::info!(
            message_id = ids::READY, spotter_source = source.as_str(), spotter_model_sha256 = sha.as_str(),
            spotter_runtime = runtime.as_str(), spotter_label = label.as_str(), spotter_score = format!("{score:.3}").as_str();
            "ready after {ms} ms: {line}"
        ),
        None => log::info!(
            message_id = ids::READY, spotter_source = source.as_str(), spotter_model_sha256 = sha.as_str(),
            spotter_runtime = runtime.as_str();
            "ready after {ms} ms: {line}"
        ),
    }
}

fn short_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Re-read the configuration files (if the daemon was started with some)
/// and apply them; without files only the model is reloaded. `cause` names
/// the trigger in the log. Err: why the files were refused (nothing changed).
async fn reload_config(
    config_path: Option<&std::path::Path>,
    running: &mut config::Settings,
    handles: &crate::app::reload::Handles<'_>,
    cause: &str,
) -> Result<crate::app::reload::Outcome, String> {
    log::info!("{cause}: reloading the configuration");
    match config_path.map(config::load) {
        Some(Ok(new)) => Ok(crate::app::reload::apply(running, &new, handles).await),
        Some(Err(e)) => {
            log::error!(
                "{cause}: configuration not reloaded, the running settings stay in force: {e}"
            );
            Err(e.to_string())
        }
        None => {
            handles.control.reload.store(true, Ordering::Relaxed);
            log::info!("{cause}: no configuration file; reloading the model");
            Ok(crate::app::reload::Outcome::default())
        }
    }
}

/// Which pipeline thread, if any, has made no progress for more than half the
/// watchdog interval (so a ping is still due before systemd's deadline).
pub fn stuck_thread(
    capture_age: Duration,
    infer_age: Duration,
    interval: Duration,
) -> Option<&'static str> {
    let limit = interval / 2;
    if capture_age > limit {
        Some("capture")
    } else if infer_age > limit {
        Some("inference")
    } else {
        None
    }
}

/// `runtime = "litert"` demands LiteRT: without a loadable library the daemon
/// refuses to start (it would never become ready), naming what it looked for.
/// `auto` falls back instead, and says so when the model loads.
pub fn check_required_runtime(m: &crate::config::ModelSettings) -> anyhow::Result<()> {
    if m.runtime != crate::config::RuntimeSetting::Litert {
        return Ok(());
    }
    let Some(path) = crate::inference::select::resolve_litert_lib(m.litert_lib.as_deref()) else {
        let searched: Vec<String> = crate::inference::select::default_litert_paths()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        anyhow::bail!(
            "model.runtime = \"litert\" but no libLiteRt.so was found (looked in {}; set model.litert_lib, --litert-lib or SPOTTER_LITERT_LIB, or run scripts/setup-litert.sh)",
            searched.join(", ")
        );
    };
    // Loaded once for the life of the process, never probed and dropped (see
    // `litert::preload`: unloading it crashes the process at exit).
    crate::inference::litert::preload(&path)
        .map_err(|e| anyhow::anyhow!("model.runtime = \"litert\" but {e}"))?;
    Ok(())
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

    std::fs::create_dir_all(&settings.daemon.state_dir).with_context(|| {
        format!(
            "creating state directory {}",
            settings.daemon.state_dir.display()
        )
    })?;
    let mut store = Store::open_with(&settings.store.dir, settings.store.flush_every_ms)
        .with_context(|| {
            format!(
                "opening the result store in {}",
                settings.store.dir.display()
            )
        })?
        .with_guard(crate::store::DiskGuard::new(
            Box::new(crate::store::Statvfs),
            settings.store.min_free_bytes,
            Duration::from_secs(1),
        ));
    if settings.mqtt.enabled {
        let limits = crate::store::OutboxLimits {
            max_records: settings.mqtt.outbox_max_records,
            max_bytes: settings.mqtt.outbox_max_bytes,
        };
        store = store
            .with_outbox(limits)
            .context("opening the MQTT outbox")?;
    }
    let store = Arc::new(store);
    // MQTT problems never stop the daemon: results queue in the outbox.
    let mqtt = store.outbox().and_then(|outbox| {
        let resolved = crate::mqtt::Resolved::new(settings.mqtt.clone(), None);
        match crate::mqtt::spawn(resolved, outbox.clone(), state.clone()) {
            Ok(handle) => Some(handle),
            Err(e) => {
                log::error!(message_id = ids::MQTT_CONFIG_FAILED, spotter_error_kind = "mqtt_config"; "{e}; results queue in the outbox until this is fixed and Spotter restarts");
                state.mqtt.set_error(Some(e.to_string()));
                None
            }
        }
    });
    match store.check_writable() {
        Ok(()) => state.update_readiness(|r| {
            r.store = Check::passing(format!("{} writable", settings.store.dir.display()))
        }),
        Err(e) => state.update_readiness(|r| r.store = Check::failing(e.to_string())),
    }
    let pruner = crate::store::Pruner::spawn(
        store.clone(),
        crate::store::Retention::from_settings(&settings.store),
        crate::store::DEFAULT_PRUNE_EVERY,
    )
    .context("starting the result store pruner")?;

    crate::keys::ensure_initial_admin_key(&settings.daemon.state_dir)
        .context("preparing API keys")?;
    let server = Server::bind(
        ApiOptions {
            listen: settings.api.listen,
            cert: settings.api.cert.clone(),
            key: settings.api.key.clone(),
            client_ca: settings.api.client_ca.clone(),
            client_auth: settings.api.client_auth,
            state_dir: settings.daemon.state_dir.clone(),
            max_connections: settings.api.max_connections,
            header_read_timeout: Duration::from_millis(settings.api.header_read_timeout_ms),
            keep_alive_idle: Duration::from_millis(settings.api.keep_alive_idle_ms),
            max_results_limit: settings.api.max_results_limit,
            max_concurrent_uploads: settings.api.max_concurrent_uploads,
            upload_queue: settings.api.upload_queue,
            max_upload_pixels: settings.api.max_upload_pixels,
            max_model_bytes: settings.api.max_model_bytes,
            max_event_subscribers: settings.api.max_event_subscribers,
            event_heartbeat: Duration::from_millis(settings.api.event_heartbeat_ms),
        },
        state.clone(),
        store.clone(),
    )
    .await
    .with_context(|| format!("starting the HTTPS API on {}", settings.api.listen))?
    .with_access(crate::api::AccessOptions {
        auth_fail_rate_per_s: settings.api.auth_fail_rate_per_s,
        auth_fail_burst: settings.api.auth_fail_burst,
        key_rate_per_s: settings.api.key_rate_per_s,
        key_burst: settings.api.key_burst,
        max_body_bytes: settings.api.max_body_bytes,
        cors_allowed_origins: settings.api.cors_allowed_origins.clone(),
    })
    .context("API access options")?
    .with_shutdown_grace(API_GRACE);
    let slot = Arc::new(FrameSlot::new());
    let control = Arc::new(crate::pipeline::InferenceControl {
        snapshot_rule: std::sync::Mutex::new(crate::store::SnapshotRule::from_settings(
            &settings.store,
        )),
        ..Default::default()
    });
    // One API reload at a time; a second is refused while one waits.
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<crate::app::reload::Request>(1);
    let server = server
        .with_pipeline(crate::api::PipelineHandle {
            slot: slot.clone(),
            control: control.clone(),
            models: ModelStore::new(&settings.daemon.state_dir),
            model: settings.model.clone(),
        })
        .with_reloads(reload_tx);
    log::info!(
        "HTTPS API listening on https://{} (certificate SHA-256 {})",
        server.local_addr(),
        server.cert_fingerprint()
    );

    // GPIO before the pipeline threads: outputs go to their safe state
    // first (after a crash too), and a trigger gates frames from the start.
    let gpio = if settings.gpio.enabled() {
        let started = crate::gpio::open_backend(settings.gpio.backend).and_then(|backend| {
            crate::gpio::runner::GpioRuntime::start(&settings.gpio, backend, state.clone())
        });
        match started {
            Ok(rt) => {
                // Set once, before the inference thread starts; cannot already be set.
                let _ = control.gpio.set(rt.hooks.clone());
                Some(rt)
            }
            Err(e) => {
                log::error!(message_id = ids::GPIO_FAILED, spotter_error_kind = "gpio"; "{e}");
                return Err(
                    anyhow::Error::new(e).context("starting GPIO ([gpio] in the configuration)")
                );
            }
        }
    } else {
        None
    };

    let stop = Arc::new(AtomicBool::new(false));
    let source_readiness = Arc::new(SourceReadiness::default());

    let capture = {
        let (slot, state, stop) = (slot.clone(), state.clone(), stop.clone());
        let readiness = source_readiness.clone();
        let opener = source_opener(&settings.source);
        let backoff = Backoff::new(
            Duration::from_millis(settings.source.retry_initial_ms),
            Duration::from_millis(settings.source.retry_max_ms),
        );
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture_loop(opener, slot, state, readiness, stop, backoff))
            .context("spawning the capture thread")?
    };
    let inference = {
        let (slot, store, state, control) =
            (slot.clone(), store.clone(), state.clone(), control.clone());
        let model = settings.model.clone();
        let models = Some(ModelStore::new(&settings.daemon.state_dir));
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || inference_loop(model, models, slot, store, state, control))
            .context("spawning the inference thread")?
    };

    let tls = server.tls_reloader();
    let mut running = settings.clone();
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut api_task = tokio::spawn(server.run(shutdown_rx));

    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let stall = settings.source.stall_timeout();
    let watchdog = Notifier::watchdog_interval();
    if let Some(wd) = watchdog {
        log::info!("systemd watchdog active: pings while capture and inference make progress (interval {} ms)", wd.as_millis());
    }
    let mut stalled: Option<&'static str> = None;
    // Set when the store must be reopened (see `Store::restart_due`).
    let mut restart_store = false;
    let mut was_ready = false;
    let mut last_status = Instant::now() - Duration::from_secs(60);
    let mut fps_window = (Instant::now(), 0u64);
    let mut fps = 0.0;

    let api_result = loop {
        tokio::select! {
            _ = sigterm.recv() => break None,
            _ = sigint.recv() => break None,
            _ = sighup.recv() => {
                let handles = crate::app::reload::Handles { tls: &tls, pruner: &pruner, control: &control };
                let _ = reload_config(config_path.as_deref(), &mut running, &handles, "SIGHUP").await;
            }
            Some(req) = reload_rx.recv() => {
                let handles = crate::app::reload::Handles { tls: &tls, pruner: &pruner, control: &control };
                let outcome = reload_config(config_path.as_deref(), &mut running, &handles, "API").await;
                // The requester may have gone (closed connection): nothing to tell.
                let _ = req.reply.send(outcome);
            }
            res = &mut api_task => break Some(res),
            _ = tick.tick() => {
                if store.restart_due() {
                    log::warn!(
                        message_id = ids::DISK_SPACE_RECOVERED;
                        "disk space is back but the result store refuses writes since an I/O error; exiting so systemd restarts Spotter with the store reopened"
                    );
                    restart_store = true;
                    break None;
                }
                // Stall detection: frames stopped without the source reporting an error.
                source_readiness.check_stall(&state, stall);
                if let Some(wd) = watchdog {
                    // Ping only while both pipeline threads make progress; a
                    // missing camera keeps the capture thread retrying, which
                    // counts as progress, so only a real hang stops the pings.
                    let capture_age = state.since_beat(&state.capture_beat_ms);
                    let infer_age = state.since_beat(&state.inference_beat_ms);
                    match (stuck_thread(capture_age, infer_age, wd), stalled) {
                        (None, _) => {
                            notifier.watchdog();
                            stalled = None;
                        }
                        (Some(which), None) => {
                            log::error!(
                                message_id = ids::WATCHDOG_STALL, spotter_error_kind = "watchdog_stall", spotter_thread = which;
                                "watchdog stall: the {which} thread made no progress for {} ms; withholding WATCHDOG=1 so systemd restarts the service",
                                capture_age.max(infer_age).as_millis()
                            );
                            stalled = Some(which);
                        }
                        (Some(_), Some(_)) => {}
                    }
                }
                let now_ready = state.readiness().ready();
                let elapsed = fps_window.0.elapsed();
                if elapsed >= Duration::from_secs(2) {
                    let n = state.counters.snapshot().frames_captured;
                    fps = (n - fps_window.1) as f64 / elapsed.as_secs_f64();
                    fps_window = (Instant::now(), n);
                }
                if now_ready != was_ready || last_status.elapsed() >= Duration::from_secs(5) {
                    let line = one_line_status(&state, fps);
                    if now_ready && !was_ready {
                        log_ready(&state, &line);
                        notifier.ready(&line);
                    } else {
                        if !now_ready && was_ready {
                            log::warn!("not ready: {line}");
                        }
                        notifier.status(&line);
                    }
                    was_ready = now_ready;
                    last_status = Instant::now();
                }
            }
        }
    };

    // Shutdown protocol: stop, drain, flush, close, exit.
    log::info!(message_id = ids::STOPPING; "stopping: capture, then inference in flight, then store flush, then API");
    notifier.stopping();
    stop.store(true, Ordering::Relaxed);
    slot.close();
    let drained = tokio::task::spawn_blocking(move || inference.join());
    if tokio::time::timeout(DRAIN_TIMEOUT, drained).await.is_err() {
        log::warn!(
            "inference did not finish within {} s; flushing anyway",
            DRAIN_TIMEOUT.as_secs()
        );
    }
    if let Some(gpio) = gpio {
        // After the last result: nothing switches an output on again.
        let _ = tokio::task::spawn_blocking(move || gpio.shutdown()).await;
    }
    if let Some(mqtt) = mqtt {
        // After the last result is stored: it goes out if the broker is up.
        let _ = tokio::task::spawn_blocking(move || mqtt.stop()).await;
    }
    let _ = tokio::task::spawn_blocking(move || pruner.stop()).await;
    let flushed = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.flush()).await
    };
    match flushed {
        Ok(Ok(())) => log::info!("store flushed"),
        Ok(Err(e)) => log::error!("store flush failed: {e}"),
        Err(e) => log::error!("store flush task failed: {e}"),
    }
    let _ = shutdown_tx.send(true);
    if api_result.is_none()
        && tokio::time::timeout(API_GRACE + Duration::from_millis(500), &mut api_task)
            .await
            .is_err()
    {
        log::warn!("API did not stop within its grace period");
    }
    // The capture thread may be blocked in a pacing sleep or an ioctl with a
    // timeout; it checks the stop flag between frames. Don't wait for it.
    drop(capture);
    // The API task and the pipeline threads have let go of their handles;
    // this is the store's last owner (a poisoned sled must not be dropped).
    store.close();
    match api_result {
        Some(Ok(Ok(()))) => anyhow::bail!("the HTTPS API stopped unexpectedly"),
        Some(Ok(Err(e))) => Err(anyhow::Error::new(e).context("the HTTPS API failed")),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("the HTTPS API task panicked")),
        None if restart_store => anyhow::bail!("the result store needs reopening after a write error (see the DISK_FULL log entry); exiting for systemd to restart Spotter"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch pings continuing while a pipeline thread hangs (systemd
    // would never restart a wedged daemon), or pings stopping while both work.
    #[test]
    fn watchdog_withholds_pings_only_for_a_stuck_thread() {
        let ms = Duration::from_millis;
        let wd = Duration::from_secs(10);
        assert_eq!(stuck_thread(ms(100), ms(100), wd), None);
        assert_eq!(stuck_thread(ms(4_999), ms(4_999), wd), None);
        assert_eq!(stuck_thread(ms(5_001), ms(100), wd), Some("capture"));
        assert_eq!(stuck_thread(ms(100), ms(5_001), wd), Some("inference"));
    }
}
