//! Starting the daemon: what is checked or built from the settings first (a
//! required LiteRT runtime, the source opener), then the running parts in
//! the order they depend on each other: the API's port (bound before
//! anything is written, so a port in use changes nothing on disk), the result store (disk guard, MQTT
//! outbox), the MQTT publisher, the pruner, the API keys and the HTTPS API,
//! GPIO, the capture and inference threads and the API task. [`Daemon`]
//! holds what the monitor and the shutdown need of them.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;

use super::{reload, API_GRACE};
use crate::api::{ApiError, ApiOptions, Server, TlsReloader};
use crate::capture::command::{CommandFormat, CommandOptions, CommandSource};
use crate::capture::files::{FilesOptions, FilesSource};
use crate::capture::negotiate::FormatPreference;
use crate::capture::v4l2::{V4l2Options, V4l2Source};
use crate::capture::FrameSource;
use crate::capture::MIN_REOPEN_AFTER;
use crate::config::{CaptureFormat, Settings, SourceKind, SourceSettings};
use crate::core::frame::PixelFormat;
use crate::core::ids;
use crate::core::shutdown::Shutdown;
use crate::gpio::runner::GpioRuntime;
use crate::modelstore::ModelStore;
use crate::mqtt::PublisherHandle;
use crate::pipeline::{
    capture_loop, spawn_inference, Backoff, FrameSlot, InferenceControl, InferenceSetup,
    SourceOpener, SourceReadiness,
};
use crate::state::{AppState, Check};
use crate::store::{Pruner, Store};

/// Build the source opener for the configured source; a source that waits
/// on something else (a `command` source's program) gives up on `stop`.
pub fn source_opener(s: &SourceSettings, stop: &Shutdown) -> SourceOpener {
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
                    // `config` refuses yuv420/nv12 for v4l2; if it ever let
                    // one through, the camera's own choice is the safe reading.
                    CaptureFormat::Yuv420 | CaptureFormat::Nv12 => FormatPreference::Auto,
                },
                buffers: s.buffers,
                // The device is reopened after this long without a frame
                // (a wedged driver). Not below 2 s: readiness reports the
                // stall after `stall_timeout_ms` already (the supervisor's
                // check), frames that come back end a stall without a
                // reopen, and an unplug fails the read at once; a dim
                // camera that slows down is not reopened in a loop.
                timeout_ms: s.stall_timeout_ms.max(MIN_REOPEN_AFTER.as_millis() as u64),
            };
            Box::new(move || {
                V4l2Source::open(opts.clone()).map(|s| Box::new(s) as Box<dyn FrameSource>)
            })
        }
        SourceKind::HttpMjpeg => {
            let opts = crate::capture::http_mjpeg::HttpMjpegOptions::from_settings(s);
            Box::new(move || {
                crate::capture::http_mjpeg::HttpMjpegSource::open(opts.clone())
                    .map(|s| Box::new(s) as Box<dyn FrameSource>)
            })
        }
        SourceKind::Command => {
            let opts = CommandOptions {
                stop: Some(stop.clone()),
                ..command_options(s)
            };
            Box::new(move || {
                CommandSource::open(opts.clone()).map(|s| Box::new(s) as Box<dyn FrameSource>)
            })
        }
    }
}

/// The `command` source's options from `[source]` (kind = "command").
fn command_options(s: &SourceSettings) -> CommandOptions {
    let raw = |format| CommandFormat::Raw {
        format,
        width: s.width,
        height: s.height,
    };
    let format = match s.format {
        CaptureFormat::Yuv420 => raw(PixelFormat::I420),
        CaptureFormat::Nv12 => raw(PixelFormat::Nv12),
        CaptureFormat::Yuyv => raw(PixelFormat::Yuyv),
        // `config` refuses auto for a command; mjpeg is its default.
        CaptureFormat::Mjpeg | CaptureFormat::Auto => CommandFormat::Mjpeg,
    };
    CommandOptions::new(
        s.command.clone(),
        format,
        usize::try_from(s.max_frame_bytes).unwrap_or(usize::MAX),
        // As for V4L2: the program is restarted after 2 s without a frame at
        // the earliest, so a slow camera is not restarted in a loop.
        s.stall_timeout().max(MIN_REOPEN_AFTER),
    )
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

/// The running daemon's parts, as [`start`] leaves them.
pub(super) struct Daemon {
    pub(super) store: Arc<Store>,
    pub(super) mqtt: Option<PublisherHandle>,
    /// The model rollout worker (issue 22), a worker of `shutdown`.
    pub(super) rollout: Option<JoinHandle<()>>,
    pub(super) pruner: Pruner,
    pub(super) tls: TlsReloader,
    pub(super) control: Arc<InferenceControl>,
    /// Reload requests from the API (one at a time).
    pub(super) reloads: mpsc::Receiver<reload::Request>,
    pub(super) gpio: Option<GpioRuntime>,
    /// The one shutdown token: the capture thread, the inference thread
    /// (through the slot it closes) and the API task obey it; the pipeline
    /// threads count as its workers until they return.
    pub(super) shutdown: Shutdown,
    /// The one writer of each source's readiness check (the monitor asks
    /// them to report a stall), in configuration order.
    pub(super) source_readiness: Vec<Arc<SourceReadiness>>,
    /// One capture thread per source.
    pub(super) capture: Vec<JoinHandle<()>>,
    pub(super) inference: JoinHandle<()>,
    pub(super) api_task: tokio::task::JoinHandle<Result<(), ApiError>>,
}

/// Start every part of the daemon; Err: one could not start (what has
/// started stops as it is dropped).
pub(super) async fn start(settings: &Settings, state: &Arc<AppState>) -> anyhow::Result<Daemon> {
    // The port first: a port in use stops the start before anything (store,
    // keys, TLS files) is written.
    let listener = Server::listen(settings.api.listen)
        .await
        .with_context(|| format!("starting the HTTPS API on {}", settings.api.listen))?;
    crate::core::fsutil::create_private_dir(&settings.daemon.state_dir, crate::keys::KEYS_FILE)
        .with_context(|| {
            format!(
                "creating state directory {}",
                settings.daemon.state_dir.display()
            )
        })?;
    // Issue 23: no secret file others can read.
    super::secrets::check_secret_files(settings)?;
    let store = open_store(settings)?;
    // Issue 23: the audit trail's own retention.
    store.set_audit_limits(crate::store::AuditLimits::from_settings(&settings.audit));
    // ... and the records `spotter keys`/`spotter model` left meanwhile.
    if let Err(e) = store.audit_take_pending(&settings.daemon.state_dir) {
        log::warn!("audit records of the command line not stored: {e}");
    }
    // Rollout commands (issue 22): the MQTT client feeds the worker
    // started once the pipeline's handles exist.
    let rollout_on = settings.rollout.enabled && store.outbox().is_some();
    let (commands_tx, commands_rx) = crate::fleet::channel();
    let mqtt = start_mqtt(settings, &store, state, rollout_on.then_some(commands_tx));
    match store.check_writable() {
        Ok(()) => state.update_readiness(|r| {
            r.store = Check::passing(format!("{} writable", settings.store.dir.display()))
        }),
        Err(e) => state.update_readiness(|r| r.store = Check::failing(e.to_string())),
    }
    let pruner = Pruner::spawn(
        store.clone(),
        crate::store::Retention::from_settings(&settings.store).with_sightings(&settings.sightings),
        crate::store::DEFAULT_PRUNE_EVERY,
    )
    .context("starting the result store pruner")?;

    crate::keys::ensure_initial_admin_key(&settings.daemon.state_dir)
        .context("preparing API keys")?;
    let server = bind_api(settings, state, &store, listener).await?;
    // Privacy masks (issue 23), in force before the first frame.
    state.set_privacy(crate::image::mask::Privacy::from_settings(
        &settings.privacy_masks,
        &settings.privacy,
    ));
    // One lane per source, served round robin.
    let names: Vec<&str> = settings.sources.iter().map(|s| s.name.as_str()).collect();
    let slot = Arc::new(FrameSlot::with_sources(&names));
    let control = Arc::new(InferenceControl {
        snapshot_rule: std::sync::Mutex::new(crate::store::SnapshotRule::from_settings(
            &settings.store,
        )),
        // Sightings and the storage policy (issue 18).
        sightings: std::sync::Mutex::new(crate::pipeline::SightingPolicy {
            settings: settings
                .sightings
                .enabled
                .then(|| settings.sightings.clone()),
            zones: settings.zones.clone(),
            keep: settings.store.keep_frames,
            sample_s: settings.store.frame_sample_s,
        }),
        motion: std::sync::Mutex::new(Some(settings.motion.clone())),
        ..Default::default()
    });
    // One API reload at a time; a second is refused while one waits.
    let (reload_tx, reloads) = mpsc::channel::<reload::Request>(1);
    let server = server
        .with_pipeline(crate::api::PipelineHandle {
            slot: slot.clone(),
            control: control.clone(),
            models: ModelStore::new(&settings.daemon.state_dir),
            model: settings.model.clone(),
        })
        .with_reloads(reload_tx)
        .with_support(Arc::new(settings.clone()));
    log::info!(
        "HTTPS API listening on https://{} (certificate SHA-256 {})",
        server.local_addr(),
        server.cert_fingerprint()
    );

    // GPIO before the pipeline threads: outputs go to their safe state
    // first (after a crash too), and a trigger gates frames from the start.
    let gpio = start_gpio(settings, state, &control)?;
    let shutdown = Shutdown::new();
    // Shutdown closes the slot: the inference thread finishes the item in
    // hand and returns; uploads still queued are refused.
    shutdown.on_trigger({
        let slot = slot.clone();
        move || slot.close()
    });
    let source_readiness: Vec<Arc<SourceReadiness>> = settings
        .sources
        .iter()
        .enumerate()
        .map(|(lane, s)| {
            Arc::new(SourceReadiness::new(
                state,
                &s.name,
                lane,
                s.stall_timeout(),
            ))
        })
        .collect();
    // The code that set up the store, keys, TLS and the listener has run:
    // let it go before the model load adds its own peak (`memory`).
    super::memory::release_code_pages_logged("set-up");
    let (capture, inference) = spawn_pipeline(
        settings,
        &slot,
        &store,
        state,
        &control,
        &shutdown,
        &source_readiness,
    )?;

    let rollout = match (rollout_on, store.outbox()) {
        (true, Some(outbox)) => Some(
            crate::fleet::spawn(
                crate::fleet::Fleet {
                    settings: settings.rollout.clone(),
                    device_id: crate::mqtt::Resolved::new(settings.mqtt.clone(), None).device_id,
                    dir: settings.daemon.state_dir.join("rollout"),
                    models: ModelStore::new(&settings.daemon.state_dir),
                    model: settings.model.clone(),
                    signing: settings.signing.clone(),
                    control: control.clone(),
                    state: state.clone(),
                    outbox: outbox.clone(),
                    shutdown: shutdown.clone(),
                },
                commands_rx,
            )
            .context("starting the model rollout worker")?,
        ),
        _ => None,
    };
    let tls = server.tls_reloader();
    let api_task = tokio::spawn(server.run(shutdown.watch()));
    Ok(Daemon {
        store,
        mqtt,
        rollout,
        pruner,
        tls,
        control,
        reloads,
        gpio,
        shutdown,
        source_readiness,
        capture,
        inference,
        api_task,
    })
}

/// The result store, with its disk-space guard and, when MQTT is enabled,
/// its outbox.
fn open_store(settings: &Settings) -> anyhow::Result<Arc<Store>> {
    let s = &settings.store;
    let mut store = Store::open_with_cache(&s.dir, s.flush_every_ms, s.cache_bytes)
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
    Ok(Arc::new(store))
}

/// The MQTT publisher, if the store has an outbox. MQTT problems never stop
/// the daemon: results queue in the outbox.
fn start_mqtt(
    settings: &Settings,
    store: &Store,
    state: &Arc<AppState>,
    commands: Option<crate::mqtt::Commands>,
) -> Option<PublisherHandle> {
    store.outbox().and_then(|outbox| {
        let mut resolved = crate::mqtt::Resolved::new(settings.mqtt.clone(), None);
        if commands.is_some() {
            resolved.command_topics =
                crate::fleet::topics(&resolved.device_id, &settings.rollout.groups);
        }
        match crate::mqtt::spawn(resolved, outbox.clone(), state.clone(), commands) {
            Ok(handle) => Some(handle),
            Err(e) => {
                log::error!(message_id = ids::MQTT_CONFIG_FAILED, spotter_error_kind = "mqtt_config"; "{e}; results queue in the outbox until this is fixed and Spotter restarts");
                state.mqtt.set_error(Some(e.to_string()));
                None
            }
        }
    })
}

/// The HTTPS API on its bound listener, with its access limits.
async fn bind_api(
    settings: &Settings,
    state: &Arc<AppState>,
    store: &Arc<Store>,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<Server> {
    let server = Server::with_listener(
        listener,
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
            body_timeout: Duration::from_millis(settings.api.body_timeout_ms),
            body_min_rate: settings.api.body_min_bytes_per_s,
            body_budget_bytes: settings.api.body_budget_bytes,
            max_connections_per_address: settings.api.max_connections_per_address,
            max_handshakes_per_address: settings.api.max_handshakes_per_address,
            tls_handshake_timeout: Duration::from_millis(settings.api.tls_handshake_timeout_ms),
            session_idle: Duration::from_secs(settings.api.session_idle_s),
            session_max: Duration::from_secs(settings.api.session_max_s),
            max_frame_viewers: settings.api.max_frame_viewers,
            frame_max_fps: settings.api.frame_max_fps,
            backup: settings.backup.clone(),
            signing: settings.signing.clone(),
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
    Ok(server)
}

/// GPIO, when the configuration has any; its hooks go to the inference
/// thread's control. A GPIO that cannot start stops the daemon.
fn start_gpio(
    settings: &Settings,
    state: &Arc<AppState>,
    control: &InferenceControl,
) -> anyhow::Result<Option<GpioRuntime>> {
    if !settings.gpio.enabled() {
        return Ok(None);
    }
    let started = crate::gpio::open_backend(settings.gpio.backend)
        .and_then(|backend| GpioRuntime::start(&settings.gpio, backend, state.clone()));
    match started {
        Ok(rt) => {
            // Set once, before the inference thread starts; cannot already be set.
            let _ = control.gpio.set(rt.hooks.clone());
            Ok(Some(rt))
        }
        Err(e) => {
            log::error!(message_id = ids::GPIO_FAILED, spotter_error_kind = "gpio"; "{e}");
            Err(anyhow::Error::new(e).context("starting GPIO ([gpio] in the configuration)"))
        }
    }
}

/// The capture threads (one per source), the prepare and inference threads.
fn spawn_pipeline(
    settings: &Settings,
    slot: &Arc<FrameSlot>,
    store: &Arc<Store>,
    state: &Arc<AppState>,
    control: &Arc<InferenceControl>,
    shutdown: &Shutdown,
    source_readiness: &[Arc<SourceReadiness>],
) -> anyhow::Result<(Vec<JoinHandle<()>>, JoinHandle<()>)> {
    let mut capture = Vec::with_capacity(settings.sources.len());
    for (source, readiness) in settings.sources.iter().zip(source_readiness) {
        let (slot, state, stop) = (slot.clone(), state.clone(), shutdown.clone());
        // The first source's thread keeps the name it always had.
        let thread = if capture.is_empty() {
            "capture".to_string()
        } else {
            format!("capture-{}", source.name)
        };
        // Worker names are 'static: one small string per configured source,
        // made once per daemon start, is leaked for the shutdown message
        // ("capture-yard did not stop").
        let worker = shutdown.worker(Box::leak(thread.clone().into_boxed_str()));
        let readiness = readiness.clone();
        let opener = source_opener(source, shutdown);
        let backoff = Backoff::new(
            Duration::from_millis(source.retry_initial_ms),
            Duration::from_millis(source.retry_max_ms),
        );
        let handle = std::thread::Builder::new()
            .name(thread)
            .spawn(move || {
                let _worker = worker;
                capture_loop(opener, slot, state, readiness, stop, backoff)
            })
            .with_context(|| format!("spawning the capture thread of source {}", source.name))?;
        capture.push(handle);
    }
    // Shadow runs (issue 22) register their thread with the token.
    control.shadow.attach_shutdown(shutdown.clone());
    // The prepare thread (frames pre-processed during the invoke before)
    // and the inference thread; joining the latter joins both.
    let inference = spawn_inference(
        InferenceSetup {
            settings: settings.model.clone(),
            models: Some(ModelStore::new(&settings.daemon.state_dir)),
            slot: slot.clone(),
            store: store.clone(),
            state: state.clone(),
            control: control.clone(),
            ahead: true,
        },
        Some((shutdown.worker("prepare"), shutdown.worker("inference"))),
    )
    .context("spawning the inference thread")?;
    Ok((capture, inference))
}
