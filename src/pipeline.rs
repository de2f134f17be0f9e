//! The pipeline: capture → infer → store.
//!
//! Capture and inference each run on their own OS thread (ioctls and model
//! invocations block), joined by a [`FrameSlot`]: a one-frame, latest-wins
//! hand-off. A frame that arrives while inference is busy replaces the waiting
//! one and the replaced frame is counted as dropped, so a slow model never
//! builds a queue. The inference thread stores each result in sled and
//! publishes it to the shared [`AppState`].
//!
//! The same slot carries [`ClassifyJob`]s (images uploaded to the API): the
//! inference thread runs them on its active model between two frames, before
//! the next frame, and replies on the job's channel. So an upload never runs
//! on the async runtime, never needs a second copy of the model, and never
//! sees a half-swapped model: swaps happen on the same thread, between items.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::capture::{CaptureError, FrameSource};
use crate::config::{Fit, ModelSettings, RuntimeSetting};
use crate::core::frame::{Frame, PixelFormat};
use crate::core::ids;
use crate::core::result::ResultRecord;
use crate::gpio::trigger::Admission;
use crate::inference::engine::{Engine, ModelOptions};
use crate::inference::modelfile::ModelFile;
use crate::inference::preprocess::{FitMode, Normalization};
use crate::inference::select::{open_runtime_for, RuntimeChoice};
use crate::inference::InferenceError;
use crate::modelstore::ModelStore;
use crate::state::{AppState, Check, Counters, ModelStatus};
use crate::store::{Snapshot, SnapshotGate, SnapshotRule, Store, StoreError};

/// What [`FrameSlot::take`] found.
#[derive(Debug)]
pub enum Taken {
    Frame(Frame),
    Job(ClassifyJob),
    Timeout,
    Closed,
}

/// Why an uploaded image got no result.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("no model is loaded")]
    NoModel,
    #[error(transparent)]
    Inference(#[from] InferenceError),
}

/// What the active model made of an uploaded image, and which model that was.
#[derive(Debug)]
pub struct Classified {
    pub output: crate::core::result::InferenceOutput,
    pub model_sha256: String,
    pub runtime: String,
}

/// An encoded image to run on the active model; the answer goes to `reply`.
#[derive(Debug)]
pub struct ClassifyJob {
    pub frame: Frame,
    pub reply: tokio::sync::oneshot::Sender<Result<Classified, ClassifyError>>,
}

#[derive(Debug, Default)]
struct SlotState {
    frame: Option<Frame>,
    jobs: std::collections::VecDeque<ClassifyJob>,
    closed: bool,
}

/// A bounded (one frame) latest-frame-wins hand-off between two threads.
#[derive(Debug, Default)]
pub struct FrameSlot {
    state: Mutex<SlotState>,
    ready: Condvar,
}

impl FrameSlot {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // A poisoned slot only means a thread panicked while holding it; the
        // Option<Frame> inside is still valid, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offer a frame. Returns true when it replaced a frame nobody had taken
    /// (that frame is dropped). Frames offered after `close` are discarded.
    pub fn put(&self, frame: Frame) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        let replaced = s.frame.replace(frame).is_some();
        drop(s);
        self.ready.notify_one();
        replaced
    }

    /// Queue an upload for the inference thread, unless `max_queued` jobs
    /// already wait or the slot is closed (then the job comes back).
    pub fn submit(&self, job: ClassifyJob, max_queued: usize) -> Result<(), ClassifyJob> {
        let mut s = self.lock();
        if s.closed || s.jobs.len() >= max_queued {
            return Err(job);
        }
        s.jobs.push_back(job);
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// Wait up to `timeout` for a job or a frame (jobs first). A closed slot
    /// still hands out what it holds before reporting `Closed`.
    pub fn take(&self, timeout: Duration) -> Taken {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(j) = s.jobs.pop_front() {
                return Taken::Job(j);
            }
            if let Some(f) = s.frame.take() {
                return Taken::Frame(f);
            }
            if s.closed {
                return Taken::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Taken::Timeout;
            }
            s = self
                .ready
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Stop accepting frames and wake the consumer.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }
}

/// Exponential backoff between retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }
    /// The delay to wait now; doubles the next one up to the maximum.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Sleep up to `d`, returning early (true) when `stop` is set.
pub fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(50)));
    }
    true
}

/// Like [`sleep_unless_stopped`], recording capture-thread progress while it
/// waits: waiting on purpose (backoff, a finished replay) is not a hang.
fn sleep_with_beats(stop: &AtomicBool, state: &AppState, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        state.beat(&state.capture_beat_ms);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return stop.load(Ordering::Relaxed);
        }
        if sleep_unless_stopped(stop, left.min(Duration::from_millis(250))) {
            return true;
        }
    }
}

/// Opens a source; called again after every failure.
pub type SourceOpener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// The capture thread's body: open the source (retrying with backoff while it
/// is missing), stream frames into the slot, and reopen after errors. The
/// daemon stays up meanwhile; readiness carries the reason.
pub fn capture_loop(
    mut open: SourceOpener,
    slot: Arc<FrameSlot>,
    state: Arc<AppState>,
    stop: Arc<AtomicBool>,
    mut backoff: Backoff,
) {
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        state.beat(&state.capture_beat_ms);
        let mut source = match open() {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    log::warn!(message_id = ids::SOURCE_UNAVAILABLE, spotter_error_kind = "source_open"; "source unavailable, retrying with backoff: {msg}");
                    last_error = Some(msg.clone());
                }
                Counters::inc(&state.counters.capture_errors);
                state.update_readiness(|r| r.source = Check::failing(msg));
                if sleep_with_beats(&stop, &state, backoff.next_delay()) {
                    break;
                }
                continue;
            }
        };
        let desc = source.describe();
        state.set_source(desc.clone());
        let mut first = true;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let next = source.next_frame();
            state.beat(&state.capture_beat_ms);
            match next {
                Ok(frame) => {
                    if first {
                        if last_error.take().is_some() {
                            log::info!(message_id = ids::SOURCE_RECOVERED, spotter_source = desc.as_str(); "source recovered: {desc}");
                        } else {
                            log::info!(spotter_source = desc.as_str(); "source streaming: {desc}");
                        }
                        state.update_readiness(|r| {
                            r.source = Check::passing(format!("streaming from {desc}"))
                        });
                        backoff.reset();
                        first = false;
                    }
                    *state.last_frame.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now());
                    Counters::inc(&state.counters.frames_captured);
                    if slot.put(frame) {
                        Counters::inc(&state.counters.frames_dropped);
                    }
                }
                Err(CaptureError::Finished) => {
                    log::info!(spotter_source = desc.as_str(); "source finished its single pass");
                    state.update_readiness(|r| {
                        r.source = Check::failing(format!("{desc}: finished (loop = false)"))
                    });
                    while !sleep_with_beats(&stop, &state, Duration::from_secs(3600)) {}
                    return;
                }
                Err(e @ CaptureError::File { .. }) => {
                    // One unreadable file in a replay folder: count it, go on.
                    Counters::inc(&state.counters.capture_errors);
                    log::warn!(spotter_source = desc.as_str(); "skipping frame: {e}");
                }
                Err(e) => {
                    let msg = e.to_string();
                    log::warn!(message_id = ids::SOURCE_LOST, spotter_source = desc.as_str(), spotter_error_kind = "source_lost"; "source lost: {msg}");
                    Counters::inc(&state.counters.capture_errors);
                    state.update_readiness(|r| r.source = Check::failing(msg.clone()));
                    last_error = Some(msg);
                    drop(source);
                    if sleep_with_beats(&stop, &state, backoff.next_delay()) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// A loaded, canary-checked model and its description.
pub struct LoadedModel {
    pub engine: Engine,
    pub status: ModelStatus,
}

fn fit_mode(f: Fit) -> FitMode {
    match f {
        Fit::Stretch => FitMode::Stretch,
        Fit::Crop => FitMode::Crop,
        Fit::Letterbox => FitMode::Letterbox,
    }
}

pub fn runtime_choice(r: RuntimeSetting) -> RuntimeChoice {
    match r {
        RuntimeSetting::Auto => RuntimeChoice::Auto,
        RuntimeSetting::Litert => RuntimeChoice::Litert,
        RuntimeSetting::Builtin => RuntimeChoice::Builtin,
    }
}

/// Read, load and canary-check the configured model.
pub fn load_model(m: &ModelSettings) -> Result<LoadedModel, InferenceError> {
    let file = ModelFile::read(&m.path)?;
    let (runtime, reason) = open_runtime_for(
        runtime_choice(m.runtime),
        m.litert_lib.as_deref(),
        &file,
        m.threads,
    )?;
    let opts = ModelOptions {
        path: m.path.clone(),
        labels: m.labels.clone(),
        threads: m.threads,
        top_k: m.top_k,
        min_score: m.min_score,
        fit: fit_mode(m.fit),
        normalization: match (m.input_mean, m.input_std) {
            (Some(mean), Some(std)) => Some(Normalization::uniform(mean, std)),
            _ => None,
        },
        label_filter: m.label_filter.clone(),
        max_pixels: m.max_pixels,
        jpeg_scaling: m.jpeg_scaling,
    };
    let mut engine = Engine::load(&opts, runtime, &file)?;
    engine.canary()?;
    let info = engine.info();
    let status = ModelStatus {
        path: m.path.display().to_string(),
        sha256: info.sha256.clone(),
        kind: info.kind.to_string(),
        runtime: info.runtime.to_string(),
        runtime_reason: reason,
        input_shape: info.input.shape.clone(),
        input_dtype: format!("{:?}", info.input.dtype).to_lowercase(),
        labels: info.labels,
    };
    Ok(LoadedModel { engine, status })
}

/// Nanoseconds since the Unix epoch (0 for times before it).
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Requests from the supervisor to the inference thread.
#[derive(Debug, Default)]
pub struct InferenceControl {
    /// Reload the model (SIGHUP).
    pub reload: AtomicBool,
    /// New model settings to use from the next reload on, if they changed.
    pub pending: Mutex<Option<ModelSettings>>,
    /// Which results keep their frame (read when the thread starts; default off).
    pub snapshot_rule: Mutex<SnapshotRule>,
    /// The GPIO trigger gate and rule outputs, when `[gpio]` configures any.
    pub gpio: std::sync::OnceLock<Arc<crate::gpio::runner::GpioHooks>>,
    /// Requested reloads carried out (counted after the load attempt), so a
    /// requester can wait for its own.
    pub reloads_done: std::sync::atomic::AtomicU64,
    /// Why the last requested reload kept the previous model (None: it loaded).
    pub last_reload_error: Mutex<Option<String>>,
}

/// The model settings to load: the active managed version (see
/// [`crate::modelstore`]) overrides the configured path and labels.
pub fn effective_model(settings: &ModelSettings, models: Option<&ModelStore>) -> ModelSettings {
    let mut m = settings.clone();
    match models.map(|ms| ms.active()) {
        Some(Ok(Some(active))) => {
            m.path = active.model;
            m.labels = active.labels;
        }
        Some(Err(e)) => {
            log::error!(spotter_error_kind = "model_store"; "ignoring managed model versions: {e}")
        }
        _ => {}
    }
    m
}

/// The inference thread's body: (re)load the model, take frames, run them,
/// store results. Returns when the slot is closed and drained.
pub fn inference_loop(
    mut settings: ModelSettings,
    models: Option<ModelStore>,
    slot: Arc<FrameSlot>,
    store: Arc<Store>,
    state: Arc<AppState>,
    control: Arc<InferenceControl>,
) {
    let mut active: Option<LoadedModel> = None;
    let mut next_attempt = Instant::now();
    let mut last_store_us = 0u64;
    let mut last_infer_error: Option<String> = None;
    let mut clock_checked: Option<Instant> = None;
    let mut snapshots = SnapshotGate::new(
        control
            .snapshot_rule
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
    );
    loop {
        // The clock's sync state is a system call: refresh it at most once a second.
        if clock_checked.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            let ok = crate::core::clock::clock_synchronized();
            let was = state.clock_synchronized.swap(ok, Ordering::Relaxed);
            if ok != was || clock_checked.is_none() {
                if ok {
                    log::info!("system clock synchronized; result timestamps are trustworthy");
                } else {
                    log::warn!(message_id = ids::CLOCK_UNSYNCHRONIZED; "system clock not synchronized: results are marked clock_synchronized = false");
                }
            }
            clock_checked = Some(Instant::now());
        }
        let reload = control.reload.swap(false, Ordering::Relaxed);
        if reload {
            if let Some(new) = control
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                settings = new;
            }
        }
        if reload || (active.is_none() && Instant::now() >= next_attempt) {
            let wanted = effective_model(&settings, models.as_ref());
            match load_model(&wanted) {
                Ok(m) => {
                    log::info!(
                        message_id = ids::MODEL_ACTIVATED,
                        spotter_model_sha256 = m.status.sha256.as_str(),
                        spotter_runtime = m.status.runtime.as_str();
                        "model active: {} ({}, {}; {})", m.status.path, m.status.kind, m.status.runtime, m.status.runtime_reason
                    );
                    state.set_model(Some(m.status.clone()));
                    state.update_readiness(|r| {
                        r.model = Check::passing(format!(
                            "{} passed its canary on {}",
                            m.status.path, m.status.runtime
                        ))
                    });
                    active = Some(m);
                    if reload {
                        *control
                            .last_reload_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = None;
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    log::error!(
                        message_id = ids::MODEL_REJECTED, spotter_error_kind = "model_load",
                        spotter_model_path:display = wanted.path.display();
                        "model rejected: {msg}"
                    );
                    if reload {
                        *control
                            .last_reload_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
                    }
                    if active.is_none() {
                        state.update_readiness(|r| r.model = Check::failing(msg));
                    }
                    next_attempt = Instant::now() + Duration::from_millis(settings.retry_ms);
                }
            }
            if reload {
                control.reloads_done.fetch_add(1, Ordering::Release);
            }
        }
        state.beat(&state.inference_beat_ms);
        let frame =
            match slot.take(Duration::from_millis(200)) {
                Taken::Frame(f) => f,
                Taken::Job(job) => {
                    let res =
                        match active.as_mut() {
                            Some(m) => m.engine.run(&job.frame).map_err(ClassifyError::from).map(
                                |output| {
                                    Counters::inc(&state.counters.inferences);
                                    state.metrics.count_inference(&m.status.sha256);
                                    Classified {
                                        output,
                                        model_sha256: m.status.sha256.clone(),
                                        runtime: m.status.runtime.clone(),
                                    }
                                },
                            ),
                            None => Err(ClassifyError::NoModel),
                        };
                    // The requester may have given up (timeout, closed connection).
                    let _ = job.reply.send(res);
                    continue;
                }
                Taken::Timeout => continue,
                Taken::Closed => break,
            };
        let Some(model) = active.as_mut() else {
            continue;
        };
        // The trigger gate: frames it does not admit are counted and dropped.
        let trigger = match control
            .gpio
            .get()
            .map(|g| g.admit(frame.captured_at, Instant::now()))
        {
            Some(Admission::Drop) => continue,
            Some(Admission::Infer { trigger }) => trigger,
            None => None,
        };
        let mut out = match model.engine.run(&frame) {
            Ok(o) => {
                last_infer_error = None;
                o
            }
            Err(e) => {
                Counters::inc(&state.counters.inference_errors);
                let msg = e.to_string();
                if last_infer_error.as_deref() != Some(msg.as_str()) {
                    log::warn!(spotter_error_kind = "inference", spotter_origin = frame.origin.as_str(); "inference failed: {msg}");
                    last_infer_error = Some(msg);
                }
                continue;
            }
        };
        Counters::inc(&state.counters.inferences);
        out.latency.store_us = last_store_us;
        let clock_ok = state.clock_synchronized.load(Ordering::Relaxed);
        // CLOCK_BOOTTIME at capture, from the wall-clock age of the frame.
        let age = SystemTime::now()
            .duration_since(frame.captured_at)
            .unwrap_or_default();
        let frame_boottime_ns =
            crate::core::clock::boottime_ns().saturating_sub(age.as_nanos() as u64);
        let mut rec = ResultRecord {
            id: String::new(),
            ts_ns: unix_ns(frame.captured_at),
            source: state.source(),
            origin: frame.origin,
            frame_seq: frame.seq,
            model_sha256: model.status.sha256.clone(),
            runtime: model.status.runtime.clone(),
            classes: out.classes,
            detections: out.detections,
            image_width: out.image_width,
            image_height: out.image_height,
            latency: out.latency,
            clock_synchronized: clock_ok,
            boottime_ns: frame_boottime_ns,
        };
        // Only frames the source delivered encoded are kept: re-encoding raw
        // frames would cost the inference thread a JPEG encode per snapshot.
        let snapshot = (frame.format == PixelFormat::Encoded
            && snapshots.admit(&rec, Instant::now()))
        .then_some(Snapshot { bytes: frame.data });
        let t = Instant::now();
        match store.insert_with_snapshot(&mut rec, snapshot.as_ref()) {
            Ok(_) => {
                last_store_us = t.elapsed().as_micros() as u64;
                Counters::inc(&state.counters.results_stored);
                state.metrics.observe_latency(&rec.latency);
                state.metrics.count_inference(&rec.model_sha256);
                if !state.readiness().store.ok {
                    state.update_readiness(|r| r.store = Check::passing("last write succeeded"));
                }
                if let Some(g) = control.gpio.get() {
                    g.stored(&rec, trigger, Instant::now());
                }
                state.set_last_result(rec);
            }
            Err(e) => {
                Counters::inc(&state.counters.store_errors);
                let msg = e.to_string();
                // A full disk (or a database poisoned by a write error) is
                // logged once by the store, with its MESSAGE_ID.
                if state.readiness().store.ok
                    && !matches!(e, StoreError::DiskFull { .. } | StoreError::Poisoned { .. })
                {
                    log::error!(spotter_error_kind = "store_write"; "store write failed: {msg}");
                }
                state.update_readiness(|r| r.store = Check::failing(msg));
            }
        }
    }
    log::debug!("inference thread drained and stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::PixelFormat;

    fn frame(seq: u64) -> Frame {
        Frame {
            data: vec![],
            format: PixelFormat::Rgb8,
            width: 1,
            height: 1,
            stride: 3,
            seq,
            captured_at: SystemTime::now(),
            origin: "test".into(),
        }
    }

    // Would catch a queue forming behind a slow model: only the newest frame
    // survives, and every replaced one is reported as dropped.
    #[test]
    fn slot_keeps_latest_and_reports_drops() {
        let slot = FrameSlot::new();
        assert!(!slot.put(frame(1)));
        assert!(slot.put(frame(2)));
        assert!(slot.put(frame(3)));
        match slot.take(Duration::from_millis(10)) {
            Taken::Frame(f) => assert_eq!(f.seq, 3),
            other => panic!("expected a frame, got {other:?}"),
        }
        assert!(matches!(
            slot.take(Duration::from_millis(10)),
            Taken::Timeout
        ));
    }

    // Would catch shutdown losing the frame in hand or hanging the consumer.
    #[test]
    fn close_drains_then_reports_closed_and_refuses_new_frames() {
        let slot = Arc::new(FrameSlot::new());
        slot.put(frame(7));
        slot.close();
        assert!(!slot.put(frame(8)));
        assert!(matches!(slot.take(Duration::from_secs(5)), Taken::Frame(f) if f.seq == 7));
        assert!(matches!(slot.take(Duration::from_secs(5)), Taken::Closed));
    }

    // Would catch a consumer sleeping through a close from another thread.
    #[test]
    fn close_wakes_a_waiting_consumer() {
        let slot = Arc::new(FrameSlot::new());
        let s2 = slot.clone();
        let h = std::thread::spawn(move || s2.take(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(50));
        slot.close();
        assert!(matches!(h.join().unwrap(), Taken::Closed));
    }

    // Would catch a retry storm (no growth) or unbounded waits (no cap).
    #[test]
    fn backoff_doubles_to_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<u128> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    struct Scripted(Vec<Result<Frame, CaptureError>>);
    impl FrameSource for Scripted {
        fn describe(&self) -> String {
            "scripted".into()
        }
        fn next_frame(&mut self) -> Result<Frame, CaptureError> {
            if self.0.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
                return Err(CaptureError::Finished);
            }
            self.0.remove(0)
        }
    }

    // Would catch a missing camera killing the capture thread instead of
    // leaving the daemon up, not ready, and retrying until it appears.
    #[test]
    fn capture_retries_missing_source_then_streams() {
        let state = Arc::new(AppState::new());
        let slot = Arc::new(FrameSlot::new());
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let a2 = attempts.clone();
        let opener: SourceOpener = Box::new(move || {
            if a2.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(CaptureError::DeviceMissing {
                    device: "/dev/video9".into(),
                })
            } else {
                Ok(Box::new(Scripted(vec![Ok(frame(0)), Ok(frame(1))])) as Box<dyn FrameSource>)
            }
        });
        let (st, sl, sp) = (state.clone(), slot.clone(), stop.clone());
        let h = std::thread::spawn(move || {
            capture_loop(
                opener,
                sl,
                st,
                sp,
                Backoff::new(Duration::from_millis(10), Duration::from_millis(20)),
            )
        });
        let got = slot.take(Duration::from_secs(10));
        assert!(matches!(got, Taken::Frame(_)), "{got:?}");
        assert!(attempts.load(Ordering::SeqCst) >= 3);
        // Once the scripted source finishes, the source check fails with the reason.
        let deadline = Instant::now() + Duration::from_secs(10);
        while state.readiness().source.ok && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            state.readiness().source.detail.contains("finished"),
            "{:?}",
            state.readiness().source
        );
        assert!(state.counters.capture_errors.load(Ordering::Relaxed) >= 2);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }

    // Would catch a missing source leaving the readiness reason empty or stale.
    #[test]
    fn missing_source_is_reported_in_readiness() {
        let state = Arc::new(AppState::new());
        let slot = Arc::new(FrameSlot::new());
        let stop = Arc::new(AtomicBool::new(false));
        let opener: SourceOpener = Box::new(|| {
            Err(CaptureError::DeviceMissing {
                device: "/dev/video9".into(),
            })
        });
        let (st, sl, sp) = (state.clone(), slot.clone(), stop.clone());
        let h = std::thread::spawn(move || {
            capture_loop(
                opener,
                sl,
                st,
                sp,
                Backoff::new(Duration::from_millis(10), Duration::from_millis(10)),
            )
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !state.readiness().source.detail.contains("/dev/video9") && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        let r = state.readiness();
        assert!(!r.source.ok);
        assert!(r.source.detail.contains("/dev/video9"), "{:?}", r.source);
        stop.store(true, Ordering::Relaxed);
        h.join().unwrap();
    }
}
