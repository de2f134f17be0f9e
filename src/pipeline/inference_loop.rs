//! The inference thread: it owns [`inference_loop`] ((re)load the model, take
//! frames and uploads from the slot, run them, hand the results to the
//! [`ResultSink`]) and [`InferenceControl`], the supervisor's requests to
//! that thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sink::{Keep, ResultSink};
use super::{
    effective_model, load_model, ClassifyError, ClassifyJob, FrameSlot, LoadedModel, Taken,
};
use crate::config::ModelSettings;
use crate::core::frame::PixelFormat;
use crate::core::ids;
use crate::gpio::trigger::Admission;
use crate::modelstore::ModelStore;
use crate::state::{AppState, Check, Counters};
use crate::store::{Snapshot, SnapshotGate, SnapshotRule, Store};

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

/// The inference thread's body: (re)load the model, take frames and uploads,
/// run them, deliver the results to the sink. Returns when the slot is
/// closed and drained.
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
    // `app` sets the GPIO hooks before it starts this thread.
    let gpio = control.gpio.get().cloned();
    let mut sink = ResultSink::new(store, state.clone(), gpio.clone());
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
        let frame = match slot.take(Duration::from_millis(200)) {
            Taken::Frame(f) => f,
            Taken::Job(job) => {
                classify_upload(job, active.as_mut(), &state, &mut sink);
                continue;
            }
            Taken::Timeout => continue,
            Taken::Closed => break,
        };
        let Some(model) = active.as_mut() else {
            continue;
        };
        // The trigger gate: frames it does not admit are counted and dropped.
        let trigger = match gpio
            .as_ref()
            .map(|g| g.admit(frame.captured_at, Instant::now()))
        {
            Some(Admission::Drop) => continue,
            Some(Admission::Infer { trigger }) => trigger,
            None => None,
        };
        let out = match model.engine.run(&frame) {
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
        let mut rec = sink.record(out, &frame, &model.status.sha256, &model.status.runtime);
        // Only frames the source delivered encoded are kept: re-encoding raw
        // frames would cost the inference thread a JPEG encode per snapshot.
        let snapshot = (frame.format == PixelFormat::Encoded
            && snapshots.admit(&rec, Instant::now()))
        .then_some(Snapshot { bytes: frame.data });
        let keep = Keep::Store {
            snapshot: snapshot.as_ref(),
            trigger,
        };
        // A failed write is counted, logged and shown in readiness by the sink.
        let _ = sink.deliver(&mut rec, keep);
    }
    log::debug!("inference thread drained and stopped");
}

/// Run an uploaded image on the active model and deliver its result, stored
/// when the job asks for it and its requester still waits; the record, or
/// why there is none, goes back on the job's channel.
fn classify_upload(
    job: ClassifyJob,
    model: Option<&mut LoadedModel>,
    state: &AppState,
    sink: &mut ResultSink,
) {
    let ClassifyJob {
        frame,
        store,
        reply,
    } = job;
    let res = match model {
        Some(m) => m
            .engine
            .run(&frame)
            .map_err(ClassifyError::from)
            .and_then(|output| {
                Counters::inc(&state.counters.inferences);
                let mut rec = sink.record(output, &frame, &m.status.sha256, &m.status.runtime);
                // A requester that gave up was already told the upload failed:
                // nothing is stored in its name.
                let keep = if store && !reply.is_closed() {
                    Keep::Store {
                        snapshot: None,
                        trigger: None,
                    }
                } else {
                    Keep::Discard
                };
                sink.deliver(&mut rec, keep)?;
                Ok(rec)
            }),
        None => Err(ClassifyError::NoModel),
    };
    // The requester may have given up (timeout, closed connection).
    let _ = reply.send(res);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuntimeSetting;
    use crate::core::frame::Frame;
    use crate::core::result::ResultRecord;
    use crate::core::testdata;
    use crate::metrics::StoreStats;
    use crate::state::render_metrics;

    // Would catch an upload's result bypassing the result sink, as uploads
    // did when the API built and stored their records itself: /metrics never
    // counted them and /api/v1/status never showed one as the last result.
    // Also catches an unstored upload taking the place of the last stored
    // result, or being counted as a store write.
    #[test]
    fn upload_results_reach_metrics_and_last_result() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(tmp.path()).unwrap());
        let state = Arc::new(AppState::new());
        let slot = Arc::new(FrameSlot::new());
        let mut model = crate::config::from_sources(vec![]).unwrap().model;
        model.path = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
        model.labels = Some(testdata().join("labels/labels_mobilenet_quant_v1_224.txt"));
        model.runtime = RuntimeSetting::Builtin;
        model.threads = 1;
        let thread = {
            let (slot, store, state) = (slot.clone(), store.clone(), state.clone());
            let control = Arc::new(InferenceControl::default());
            std::thread::spawn(move || inference_loop(model, None, slot, store, state, control))
        };
        let photo = std::fs::read(testdata().join("images/grace_hopper.bmp")).unwrap();
        // The thread loads the model before it takes its first job.
        let upload = |store: bool, seq: u64| -> ResultRecord {
            let (reply, answer) = tokio::sync::oneshot::channel();
            let frame = Frame::encoded(photo.clone(), seq, "api:test".into()).with_source("upload");
            let job = ClassifyJob {
                frame,
                store,
                reply,
            };
            slot.submit(job, 1).unwrap();
            answer.blocking_recv().unwrap().unwrap()
        };
        let count = |stage: &str| {
            let text = render_metrics(&state, &StoreStats::default());
            let prefix = format!("spotter_stage_latency_seconds_count{{stage=\"{stage}\"}} ");
            let line = text.lines().find_map(|l| l.strip_prefix(prefix.as_str()));
            line.map_or(0, |n| n.parse::<u64>().unwrap())
        };

        let stored = upload(true, 0);
        assert!(!stored.id.is_empty(), "{stored:?}");
        assert_eq!(stored.source, "upload");
        assert_eq!(count("invoke"), 1);
        assert_eq!(count("store"), 1);
        assert_eq!(state.last_result(), Some(stored.clone()));

        let unstored = upload(false, 1);
        assert!(unstored.id.is_empty(), "{unstored:?}");
        assert_eq!(count("invoke"), 2);
        assert_eq!(count("store"), 1, "an unstored upload timed a store");
        assert_eq!(state.last_result(), Some(stored));
        let c = state.counters.snapshot();
        assert_eq!((c.inferences, c.results_stored), (2, 1));

        slot.close();
        thread.join().unwrap();
    }
}
