//! Shared daemon state: readiness checks, counters, the active model's
//! description and the last result. The pipeline writes it; the API and the
//! systemd notifier read it. Everything here is cheap to read and lock-light.
//! It also owns the event bus: every stored result and every change of
//! readiness or model is published (pre-serialised JSON) to the bounded
//! broadcast channel the API's `/api/v1/events` subscribers read, and the
//! `/api/v1/status` document, serialised once per change (`status`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Instant;

use serde::Serialize;

use crate::core::result::ResultRecord;

mod exposition;
// The latest frame per source and its focus figure (issue 20, web page).
pub(crate) mod frames;
pub(crate) mod gpio;
// Motion gating figures (issue 18, motion).
pub(crate) mod motion;
pub(crate) mod power;
mod status;

pub use exposition::render_metrics;

/// Events a slow subscriber may fall behind by before it is dropped.
pub const EVENT_BUS_CAPACITY: usize = 256;

/// One published event: its SSE event name and its JSON data.
#[derive(Debug, Clone)]
pub struct Event {
    /// `result`, `readiness` or `model`.
    pub name: &'static str,
    pub data: std::sync::Arc<str>,
}

/// One readiness check: ok, or failing with a human-readable reason.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub ok: bool,
    /// Why the check fails (or what it last saw when it passes).
    pub detail: String,
}

impl Check {
    pub(crate) fn failing(detail: impl Into<String>) -> Self {
        Check {
            ok: false,
            detail: detail.into(),
        }
    }
    pub fn passing(detail: impl Into<String>) -> Self {
        Check {
            ok: true,
            detail: detail.into(),
        }
    }
}

/// The three things `/readyz` requires.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Readiness {
    /// The source has delivered a frame recently; with several sources, at
    /// least one has (each one's own check is in `sources`).
    pub source: Check,
    /// A model is loaded and has passed its canary inference.
    pub model: Check,
    /// The store accepted a write.
    pub store: Check,
    /// Each registered source's own check, by name, in configuration order
    /// (several sources, issue 19). `source` is made from these.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceCheck>,
}

/// One source's readiness check, by name.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceCheck {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Readiness {
    pub(crate) fn ready(&self) -> bool {
        self.source.ok && self.model.ok && self.store.ok
    }

    /// The check of the source `name`, if it is registered.
    pub fn source_check(&self, name: &str) -> Option<&SourceCheck> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// Set the source `name`'s check and make `source` from all of them: a
    /// single source's check is `source` as is; with several, `source`
    /// passes while one passes and its detail names each source's state,
    /// so one lost camera does not make the daemon not-ready while another
    /// streams, and readiness says which is lost.
    pub(crate) fn set_source_check(&mut self, name: &str, check: Check) {
        match self.sources.iter_mut().find(|s| s.name == name) {
            Some(s) => {
                s.ok = check.ok;
                s.detail = check.detail;
            }
            None => self.sources.push(SourceCheck {
                name: name.to_string(),
                ok: check.ok,
                detail: check.detail,
            }),
        }
        self.source = match self.sources.as_slice() {
            [one] => Check {
                ok: one.ok,
                detail: one.detail.clone(),
            },
            all => {
                let up = all.iter().filter(|s| s.ok).count();
                let each: Vec<String> = all
                    .iter()
                    .map(|s| {
                        let state = if s.ok { "up" } else { "lost" };
                        format!("{} {state}: {}", s.name, s.detail)
                    })
                    .collect();
                Check {
                    ok: up > 0,
                    detail: format!("{up} of {} sources up; {}", all.len(), each.join("; ")),
                }
            }
        };
    }
}

/// One source's figures (several sources, issue 19): its capture thread
/// writes them, metrics, status and the supervisor read them.
#[derive(Debug)]
pub struct SourceStats {
    pub name: String,
    pub frames_captured: AtomicU64,
    /// Frames of this source replaced in its slot before inference took them.
    pub frames_dropped: AtomicU64,
    pub capture_errors: AtomicU64,
    /// Results stored for this source's frames.
    pub results_stored: AtomicU64,
    /// When the source last delivered a frame (for its stall detection).
    pub last_frame: std::sync::Mutex<Option<Instant>>,
    /// Milliseconds since `AppState::started` at which its capture thread
    /// last made progress (see `AppState::capture_beat_ms`).
    pub beat_ms: AtomicU64,
    /// Its description, e.g. `v4l2:/dev/video0 640x480 MJPG@30`.
    pub description: RwLock<String>,
    /// Motion gating (issue 18, motion): its frames skipped as static, the
    /// last motion fraction and the moving-frame ratio.
    pub motion: motion::MotionStats,
    /// Its latest frame for viewers, and the focus figure (issue 20).
    pub latest: frames::LatestFrame,
}

/// The MQTT publisher's state, for `/api/v1/status` and `/metrics`. The
/// publisher writes it; the outbox's own counters are read live.
#[derive(Debug, Default)]
pub struct MqttStatus {
    pub enabled: std::sync::atomic::AtomicBool,
    pub connected: std::sync::atomic::AtomicBool,
    /// Results handed to the broker (resends after a reconnect included).
    pub published: AtomicU64,
    /// Results the broker acknowledged (and that left the outbox).
    pub acked: AtomicU64,
    /// Results the broker refused with an MQTT 5 error reason (removed).
    pub rejected: AtomicU64,
    /// Successful connections after the first.
    pub reconnects: AtomicU64,
    /// The last connection failure, cleared on connect.
    pub last_error: RwLock<Option<String>>,
    /// `host:port` of the broker (set once when the publisher starts).
    pub broker: RwLock<String>,
    /// The store's MQTT outbox, set by the publisher when it starts.
    pub outbox: std::sync::OnceLock<std::sync::Arc<dyn OutboxGauge>>,
    /// Bumped by [`MqttStatus::set_error`] (for the status cache's key).
    pub(crate) error_changes: AtomicU64,
}

/// What status and metrics read of the MQTT outbox (the store's `Outbox`
/// implements it; state does not depend on the store).
pub trait OutboxGauge: Send + Sync + std::fmt::Debug {
    /// Records waiting to be published.
    fn len(&self) -> usize;
    /// No records waiting.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Their total size in bytes.
    fn bytes(&self) -> u64;
    /// Records dropped because the outbox was full.
    fn dropped(&self) -> u64;
}

/// A point-in-time view of [`MqttStatus`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct MqttSnapshot {
    pub enabled: bool,
    pub connected: bool,
    pub broker: String,
    pub outbox_records: usize,
    pub outbox_bytes: u64,
    pub published: u64,
    pub acked: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
}

impl MqttStatus {
    pub(crate) fn set_error(&self, e: Option<String>) {
        *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = e;
        self.error_changes.fetch_add(1, Ordering::Release);
    }

    pub(crate) fn snapshot(&self) -> MqttSnapshot {
        let outbox = self.outbox.get();
        MqttSnapshot {
            enabled: self.enabled.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            broker: self
                .broker
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            outbox_records: outbox.map(|o| o.len()).unwrap_or(0),
            outbox_bytes: outbox.map(|o| o.bytes()).unwrap_or(0),
            published: self.published.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dropped: outbox.map(|o| o.dropped()).unwrap_or(0),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Description of the active model, for status and results.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelStatus {
    pub path: String,
    pub sha256: String,
    pub kind: String,
    pub runtime: String,
    /// Why this runtime was chosen (e.g. "auto: libLiteRt.so loaded from ...").
    pub runtime_reason: String,
    pub input_shape: Vec<usize>,
    pub input_dtype: String,
    pub labels: usize,
}

/// Monotonic counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub frames_captured: AtomicU64,
    /// Frames replaced in the latest-frame-wins slot before inference took them.
    pub frames_dropped: AtomicU64,
    pub inferences: AtomicU64,
    pub inference_errors: AtomicU64,
    pub results_stored: AtomicU64,
    pub store_errors: AtomicU64,
    pub capture_errors: AtomicU64,
    /// Frames not inferred because the scene was static (motion gating,
    /// issue 18).
    pub frames_static: AtomicU64,
    /// Frames not inferred because the SoC was over `power.hot_above_c`
    /// and inference ran at `power.hot_max_fps` (issue 22).
    pub frames_skipped_hot: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub(crate) struct CounterSnapshot {
    pub frames_captured: u64,
    pub frames_dropped: u64,
    pub inferences: u64,
    pub inference_errors: u64,
    pub results_stored: u64,
    pub store_errors: u64,
    pub capture_errors: u64,
    pub frames_static: u64,
    pub frames_skipped_hot: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CounterSnapshot {
            frames_captured: g(&self.frames_captured),
            frames_dropped: g(&self.frames_dropped),
            inferences: g(&self.inferences),
            inference_errors: g(&self.inference_errors),
            results_stored: g(&self.results_stored),
            store_errors: g(&self.store_errors),
            capture_errors: g(&self.capture_errors),
            frames_static: g(&self.frames_static),
            frames_skipped_hot: g(&self.frames_skipped_hot),
        }
    }
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by every concern of the daemon.
#[derive(Debug)]
pub struct AppState {
    pub started: Instant,
    pub version: &'static str,
    pub readiness: RwLock<Readiness>,
    /// Description of the source, e.g. `files:/srv/demo (2 fps, loop)`.
    pub source: RwLock<String>,
    pub model: RwLock<Option<ModelStatus>>,
    pub counters: Counters,
    pub last_result: RwLock<Option<ResultRecord>>,
    /// When the source last delivered a frame (for stall detection).
    pub last_frame: std::sync::Mutex<Option<Instant>>,
    pub metrics: crate::metrics::Metrics,
    /// Milliseconds since `started` at which the capture thread last made
    /// progress (a frame, a handled error, a retry wait).
    pub capture_beat_ms: AtomicU64,
    /// Milliseconds since `started` at which the inference thread last made
    /// progress (a frame processed, or an idle wait that returned).
    pub inference_beat_ms: AtomicU64,
    /// Whether the system clock was synchronized at the last check.
    pub clock_synchronized: std::sync::atomic::AtomicBool,
    /// New results and state changes, for event subscribers (bounded).
    pub events: tokio::sync::broadcast::Sender<Event>,
    /// The MQTT publisher (all zero and `enabled: false` without one).
    pub mqtt: MqttStatus,
    /// GPIO trigger and outputs (all zero and `enabled: false` without).
    pub gpio: gpio::GpioStatus,
    /// Each source's figures, in configuration order (several sources,
    /// issue 19; empty until the daemon registers its sources).
    pub sources: RwLock<Vec<std::sync::Arc<SourceStats>>>,
    /// How many sightings are open per source (issue 18): the prepare
    /// thread infers every frame of a source with one open (motion gating
    /// never skips them); the result sink sets it.
    open_sightings: RwLock<std::collections::BTreeMap<String, usize>>,
    /// Whether motion gating is on for the active model (issue 18, motion).
    pub motion: motion::MotionStatus,
    /// SoC temperature and throttling flags (issue 22), from the monitor.
    pub power: power::PowerStatus,
    /// Bumped by every setter of a field the status document shows that
    /// its key cannot compare cheaply (see `status`).
    generation: AtomicU64,
    status_cache: status::StatusCache,
    /// Privacy masks (issue 23): what snapshots, the page's frames and the
    /// model's input hide; set at start (nothing masked by default).
    privacy: RwLock<std::sync::Arc<crate::image::mask::Privacy>>,
}

impl AppState {
    pub fn new() -> Self {
        AppState {
            started: Instant::now(),
            version: env!("CARGO_PKG_VERSION"),
            readiness: RwLock::new(Readiness {
                source: Check::failing("starting: no frame yet"),
                model: Check::failing("starting: no model loaded yet"),
                store: Check::failing("starting: store not opened yet"),
                sources: Vec::new(),
            }),
            source: RwLock::new(String::new()),
            model: RwLock::new(None),
            counters: Counters::default(),
            last_result: RwLock::new(None),
            last_frame: std::sync::Mutex::new(None),
            metrics: crate::metrics::Metrics::new(),
            capture_beat_ms: AtomicU64::new(0),
            inference_beat_ms: AtomicU64::new(0),
            clock_synchronized: std::sync::atomic::AtomicBool::new(true),
            events: tokio::sync::broadcast::channel(EVENT_BUS_CAPACITY).0,
            mqtt: MqttStatus::default(),
            gpio: Default::default(),
            sources: RwLock::new(Vec::new()),
            open_sightings: RwLock::new(Default::default()),
            motion: Default::default(),
            power: Default::default(),
            generation: AtomicU64::new(0),
            status_cache: Default::default(),
            privacy: RwLock::default(),
        }
    }

    /// Current readiness. A poisoned lock only means a writer panicked while
    /// holding it; the value is still a complete `Readiness`, so use it.
    pub(crate) fn readiness(&self) -> Readiness {
        self.readiness
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update_readiness(&self, f: impl FnOnce(&mut Readiness)) {
        let mut guard = self.readiness.write().unwrap_or_else(|e| e.into_inner());
        let before = guard.clone();
        f(&mut guard);
        if *guard != before {
            let now = guard.clone();
            drop(guard);
            self.changed();
            self.publish(
                "readiness",
                || serde_json::json!({"ready": now.ready(), "checks": now}),
            );
        }
    }

    /// Publish an event to the subscribers, if there are any (the data is
    /// only serialised then).
    pub(crate) fn publish<T: Serialize>(&self, name: &'static str, data: impl FnOnce() -> T) {
        if self.events.receiver_count() == 0 {
            return;
        }
        match serde_json::to_string(&data()) {
            // No subscriber left between the check and the send is fine.
            Ok(json) => drop(self.events.send(Event {
                name,
                data: json.into(),
            })),
            Err(e) => log::error!("cannot encode a {name} event: {e}"),
        }
    }

    /// Publish a sighting's start or end to event subscribers
    /// (`sighting_started` / `sighting_ended`, data: the sighting).
    /// Public for the API's event tests (issue 18, surfaces).
    pub fn sighting_changed(&self, ev: &crate::core::sighting::SightingEvent) {
        self.publish(ev.event.event_name(), || &ev.sighting);
    }

    /// Set how many sightings of `source` are open.
    pub(crate) fn set_open_sightings(&self, source: &str, n: usize) {
        let mut m = self
            .open_sightings
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if n == 0 {
            m.remove(source);
        } else {
            m.insert(source.to_owned(), n);
        }
    }

    /// Whether a sighting of `source` is open.
    pub(crate) fn sighting_open(&self, source: &str) -> bool {
        self.open_sightings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(source)
    }

    pub fn model(&self) -> Option<ModelStatus> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Set the active model, then publish it: a subscriber that reads
    /// [`AppState::model`] on the event sees the new one.
    pub(crate) fn set_model(&self, m: Option<ModelStatus>) {
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = m.clone();
        self.changed();
        self.publish("model", || m);
    }

    pub(crate) fn source(&self) -> String {
        self.source
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_source(&self, s: String) {
        *self.source.write().unwrap_or_else(|e| e.into_inner()) = s;
        self.changed();
    }

    /// Register the source `name` (its check starts failing, "no frame
    /// yet") and return its figures; registering a name again returns the
    /// same figures.
    pub fn register_source(&self, name: &str) -> std::sync::Arc<SourceStats> {
        let mut all = self.sources.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.iter().find(|s| s.name == name) {
            return s.clone();
        }
        let stats = std::sync::Arc::new(SourceStats {
            name: name.to_string(),
            frames_captured: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            capture_errors: AtomicU64::new(0),
            results_stored: AtomicU64::new(0),
            last_frame: std::sync::Mutex::new(None),
            beat_ms: AtomicU64::new(self.started.elapsed().as_millis() as u64),
            description: RwLock::new(String::new()),
            motion: Default::default(),
            latest: Default::default(),
        });
        all.push(stats.clone());
        drop(all);
        self.update_readiness(|r| {
            r.set_source_check(name, Check::failing("starting: no frame yet"))
        });
        stats
    }

    /// The registered sources' figures.
    pub fn source_stats(&self) -> Vec<std::sync::Arc<SourceStats>> {
        self.sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Set one source's description; the daemon's `source` becomes it (one
    /// source) or each named source's (several: `name: description, …`).
    pub fn set_source_description(&self, stats: &SourceStats, desc: String) {
        *stats.description.write().unwrap_or_else(|e| e.into_inner()) = desc.clone();
        let all = self.source_stats();
        let joined = if all.len() <= 1 {
            desc
        } else {
            all.iter()
                .map(|s| {
                    let d = s.description.read().unwrap_or_else(|e| e.into_inner());
                    format!("{}: {}", s.name, d)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.set_source(joined);
    }

    /// A result of the source `name` was stored (uploads and unknown
    /// names count nowhere).
    pub(crate) fn count_source_result(&self, name: &str) {
        let all = self.sources.read().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.iter().find(|s| s.name == name) {
            Counters::inc(&s.results_stored);
        }
    }

    /// The longest time any registered source's capture thread has made no
    /// progress (the shared beat when none is registered).
    pub(crate) fn capture_age(&self) -> std::time::Duration {
        let all = self.source_stats();
        if all.is_empty() {
            return self.since_beat(&self.capture_beat_ms);
        }
        all.iter()
            .map(|s| self.since_beat(&s.beat_ms))
            .max()
            .unwrap_or_default()
    }

    /// Record progress of a pipeline thread (see `capture_beat_ms`).
    pub(crate) fn beat(&self, which: &AtomicU64) {
        which.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long ago a pipeline thread last made progress.
    pub(crate) fn since_beat(&self, which: &AtomicU64) -> std::time::Duration {
        let now = self.started.elapsed().as_millis() as u64;
        std::time::Duration::from_millis(now.saturating_sub(which.load(Ordering::Relaxed)))
    }

    pub(crate) fn last_result(&self) -> Option<ResultRecord> {
        self.last_result
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Record the newest stored result and publish it as a `result` event.
    pub fn set_last_result(&self, r: ResultRecord) {
        self.publish("result", || &r);
        *self.last_result.write().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.changed();
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

// --- Privacy masks (issue 23) ---
impl AppState {
    /// The privacy masks in force (one short read lock and a reference count).
    pub(crate) fn privacy(&self) -> std::sync::Arc<crate::image::mask::Privacy> {
        self.privacy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Put `privacy` in force for the frames that follow.
    pub(crate) fn set_privacy(&self, privacy: crate::image::mask::Privacy) {
        *self.privacy.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(privacy);
    }
}
