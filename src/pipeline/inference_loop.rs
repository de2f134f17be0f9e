//! The inference thread: it owns [`inference_loop`] ((re)load the model, take
//! frames and uploads from the slot, run them, store the results) and
//! [`InferenceControl`], the supervisor's requests to that thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{
    effective_model, load_model, Classified, ClassifyError, FrameSlot, LoadedModel, Taken,
};
use crate::config::ModelSettings;
use crate::core::frame::PixelFormat;
use crate::core::ids;
use crate::core::result::ResultRecord;
use crate::gpio::trigger::Admission;
use crate::modelstore::ModelStore;
use crate::state::{AppState, Check, Counters};
use crate::store::{Snapshot, SnapshotGate, SnapshotRule, Store, StoreError};

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
            source: frame.source,
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
