//! The inference thread: it owns [`inference_loop`] ((re)load the model,
//! publish its pre-processor to the prepare thread, take prepared frames and
//! uploads from the [`PreparedSlot`], run them, hand the results to the
//! [`ResultSink`]), [`InferenceControl`], the supervisor's requests to that
//! thread, and [`spawn_inference`], which starts it with its prepare thread.
//!
//! Why one file over 600 lines: some 300 of them are the tests that drive
//! the thread pair (prepare and inference) through reloads and shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::prepare_loop::{prepare_loop, Ahead, Next, PreparedFrame, PreparedSlot};
use super::privacy::PrivateFrame;
use super::sightings::{SightingPolicy, SightingStage};
use super::sink::{Keep, ResultSink};
use super::{effective_model, load_model, ClassifyError, ClassifyJob, FrameSlot, LoadedModel};
use crate::config::ModelSettings;
use crate::core::frame::PixelFormat;
use crate::core::ids;
use crate::core::shutdown::Worker;
use crate::gpio::trigger::Admission;
use crate::modelstore::ModelStore;
use crate::state::{AppState, Check, Counters};
use crate::store::{SnapshotGate, SnapshotRule, Store};

/// Requests from the supervisor to the inference thread.
#[derive(Debug, Default)]
pub struct InferenceControl {
    /// Reload the model (SIGHUP).
    pub reload: AtomicBool,
    /// New model settings to use from the next reload on, if they changed.
    pub pending: Mutex<Option<ModelSettings>>,
    /// Which results keep their frame (read when the thread starts; default off).
    pub snapshot_rule: Mutex<SnapshotRule>,
    /// Sightings and which frames are stored (read when the thread starts;
    /// default: no sightings, every frame stored).
    pub sightings: Mutex<SightingPolicy>,
    /// The GPIO trigger gate and rule outputs, when `[gpio]` configures any.
    pub gpio: std::sync::OnceLock<Arc<crate::gpio::runner::GpioHooks>>,
    /// Requested reloads carried out (counted after the load attempt), so a
    /// requester can wait for its own.
    pub reloads_done: std::sync::atomic::AtomicU64,
    /// Why the last requested reload kept the previous model (None: it loaded).
    pub last_reload_error: Mutex<Option<String>>,
    /// `[motion]` (issue 18; read when the thread starts): None, the
    /// default, gates nothing (`spotter bench`, tests); the daemon sets it.
    pub motion: Mutex<Option<crate::config::MotionConfig>>,
    /// Shadow evaluation of a candidate model (issue 22), shared by the API
    /// and the fleet worker.
    pub shadow: Arc<super::Shadow>,
    /// One model change at a time, whoever asks: the API (upload, activate,
    /// roll back, configuration reload) and the fleet worker (a rollout,
    /// through its health window).
    pub change: ModelChange,
}

/// The right to change the model, held by one requester at a time.
#[derive(Debug, Default)]
pub struct ModelChange(Arc<AtomicBool>);

impl ModelChange {
    /// The right until the guard drops; `None` while another change runs.
    pub fn try_begin(&self) -> Option<ChangeGuard> {
        self.0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| ChangeGuard(self.0.clone()))
    }
}

/// Held while a model change runs; dropping it lets the next one start.
#[derive(Debug)]
pub struct ChangeGuard(Arc<AtomicBool>);

impl Drop for ChangeGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What the inference thread works with; see [`spawn_inference`].
pub struct InferenceSetup {
    pub settings: ModelSettings,
    pub models: Option<ModelStore>,
    pub slot: Arc<FrameSlot>,
    pub store: Arc<Store>,
    pub state: Arc<AppState>,
    pub control: Arc<InferenceControl>,
    /// Pre-process the next frame on the prepare thread while the current
    /// one is invoked (the daemon's way); false: each frame is prepared on
    /// the inference thread before its invoke (for comparison in `bench`).
    pub ahead: bool,
}

/// Start the prepare thread and the inference thread over `setup.slot`.
/// `workers` (prepare, inference) are the shutdown token's guards, held by
/// the threads until they return. The returned handle is the inference
/// thread's; it joins the prepare thread before it ends, so joining it joins
/// both.
pub(crate) fn spawn_inference(
    setup: InferenceSetup,
    workers: Option<(Worker, Worker)>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (prepare_worker, inference_worker) = match workers {
        Some((p, i)) => (Some(p), Some(i)),
        None => (None, None),
    };
    std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            let _worker = inference_worker;
            run_inference(setup, prepare_worker);
        })
}

/// The inference thread's body over the frame slot, frames prepared ahead:
/// starts the prepare thread, then runs [`run_inference`]'s loop on the
/// calling thread. Returns when the slot is closed and drained.
pub fn inference_loop(
    settings: ModelSettings,
    models: Option<ModelStore>,
    slot: Arc<FrameSlot>,
    store: Arc<Store>,
    state: Arc<AppState>,
    control: Arc<InferenceControl>,
) {
    let setup = InferenceSetup {
        settings,
        models,
        slot,
        store,
        state,
        control,
        ahead: true,
    };
    run_inference(setup, None);
}

/// Start the prepare thread (holding `prepare_worker`), run the inference
/// loop on this thread until the hand-off closes, then join the prepare
/// thread.
fn run_inference(setup: InferenceSetup, prepare_worker: Option<Worker>) {
    let InferenceSetup {
        settings,
        models,
        slot,
        store,
        state,
        control,
        ahead,
    } = setup;
    let handoff = Arc::new(PreparedSlot::new());
    let motion = control
        .motion
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let spawned = {
        let (handoff, state) = (handoff.clone(), state.clone());
        std::thread::Builder::new()
            .name("prepare".into())
            .spawn(move || {
                let _worker = prepare_worker;
                prepare_loop(slot, handoff, state, ahead, motion)
            })
    };
    let prepare = match spawned {
        Ok(h) => h,
        Err(e) => {
            // No thread to take frames: nothing can be inferred. Said once;
            // readiness stays failing ("starting") and the supervisor's
            // watchdog sees no inference progress.
            log::error!(spotter_error_kind = "thread"; "cannot start the prepare thread: {e}");
            return;
        }
    };
    inference_loop_body(settings, models, handoff, store, state, control);
    // The hand-off closed: the prepare thread has returned or is returning.
    if prepare.join().is_err() {
        log::error!("the prepare thread panicked");
    }
}

/// A camera frame the inference thread works on; when dropped (the
/// iteration is done with it, whichever way it ended) it is moved to its
/// source's latest-frame slot for viewers of the web page (issue 20).
struct ToViewers<'a> {
    state: &'a AppState,
    source: Arc<str>,
    frame: Option<crate::core::frame::Frame>,
}

impl std::ops::Deref for ToViewers<'_> {
    type Target = crate::core::frame::Frame;
    fn deref(&self) -> &Self::Target {
        // Set at construction and only taken in `drop`.
        self.frame.as_ref().expect("frame present until drop")
    }
}

impl Drop for ToViewers<'_> {
    fn drop(&mut self) {
        if let Some(f) = self.frame.take() {
            self.state.publish_frame(&self.source, f);
        }
    }
}

/// The inference thread's body: (re)load the model, take prepared frames and
/// uploads, run them, deliver the results to the sink. Returns when the
/// hand-off is closed and drained.
fn inference_loop_body(
    mut settings: ModelSettings,
    models: Option<ModelStore>,
    input: Arc<PreparedSlot>,
    store: Arc<Store>,
    state: Arc<AppState>,
    control: Arc<InferenceControl>,
) {
    let mut active: Option<LoadedModel> = None;
    // Counts model activations; prepared frames carry the one they were prepared for.
    let mut generation = 0u64;
    let mut next_attempt = Instant::now();
    // `app` sets the GPIO hooks before it starts this thread.
    let gpio = control.gpio.get().cloned();
    let policy = control
        .sightings
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut sightings = SightingStage::new(policy, store.clone(), state.clone(), gpio.clone());
    let mut expired_at = Instant::now();
    let mut sink = ResultSink::with_writer(store, state.clone(), gpio.clone());
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
                    generation += 1;
                    input.publish_model(generation, m.engine.prepare_spec());
                    control
                        .shadow
                        .bind(models.clone(), settings.clone(), state.clone());
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
        // Sightings of sources that deliver no frame (or only skipped ones)
        // still end on time.
        if expired_at.elapsed() >= Duration::from_millis(200) {
            sightings.expire(crate::core::clock::unix_ns(std::time::SystemTime::now()) as i64);
            expired_at = Instant::now();
        }
        let PreparedFrame {
            frame,
            tag,
            ahead,
            tensor,
        } = match input.take(Duration::from_millis(200)) {
            Next::Frame(f) => f,
            Next::Job(job) => {
                classify_upload(job, active.as_mut(), &state, &mut sink);
                continue;
            }
            Next::Timeout => continue,
            Next::Closed => break,
        };
        // However this iteration ends, the frame then goes to its viewers.
        let frame = ToViewers {
            state: &state,
            source: tag.name.clone(),
            frame: Some(frame),
        };
        let Some(model) = active.as_mut() else {
            input.recycle(tensor);
            continue;
        };
        // The trigger gate: frames it does not admit are counted and dropped.
        let trigger = match gpio
            .as_ref()
            .map(|g| g.admit(frame.captured_at, Instant::now()))
        {
            Some(Admission::Drop) => {
                input.recycle(tensor);
                continue;
            }
            Some(Admission::Infer { trigger }) => trigger,
            None => None,
        };
        // A tensor only goes to the model generation it was prepared for;
        // any other frame is prepared here, from the frame itself.
        let ran = match ahead {
            Some(Ahead {
                generation: g,
                prepared,
            }) if g == generation => prepared.and_then(|p| model.engine.run_prepared(&tensor, &p)),
            _ => model
                .engine
                .run_masked(&frame, state.privacy().inference_masks(&tag.name)),
        };
        input.recycle(tensor);
        let out = match ran {
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
        control
            .shadow
            .offer(&frame, &tag.name, &out, &model.status.sha256);
        let mut rec = sink.record(out, &frame, &model.status.sha256, &model.status.runtime);
        rec.source_name = tag.name.to_string();
        let t_ns = i64::try_from(rec.ts_ns).unwrap_or(i64::MAX);
        let (events, stored) = sightings.observe(&rec);
        // What may be kept of the frame: privacy masks filled (issue 23).
        let private = PrivateFrame::new(
            state.privacy(),
            &frame,
            &tag.name,
            &rec,
            settings.max_pixels,
        );
        // Only frames the source delivered encoded are kept (see
        // `PrivateFrame::result_snapshot`).
        let snapshot = (stored
            && frame.format == PixelFormat::Encoded
            && snapshots.admit(&rec, Instant::now()))
        .then(|| private.result_snapshot())
        .flatten();
        let keep = match stored {
            true => Keep::Store {
                snapshot: snapshot.as_ref(),
                trigger,
            },
            false => Keep::Discard,
        };
        // Written on the sink's writer thread, under the id returned now; a
        // failed write is counted, logged and shown in readiness by the sink.
        let id = sink.hand_off(rec, keep);
        sightings.apply(events, Some(&private), t_ns, id.as_deref());
    }
    sightings.close_all();
    // The shadow thread (if any) ends with the inference thread.
    control.shadow.stop();
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
                rec.source_name = crate::config::UPLOAD_SOURCE_NAME.to_string();
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

    // Would catch two model changes running at once (an API upload and a
    // rollout interleaving their activations) or a change that never lets
    // the next one start once it is done.
    #[test]
    fn one_model_change_at_a_time() {
        let c = ModelChange::default();
        let first = c.try_begin().expect("free at first");
        assert!(c.try_begin().is_none(), "a second change started");
        drop(first);
        assert!(
            c.try_begin().is_some(),
            "still taken after the guard dropped"
        );
    }
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
        let thread = spawn_inference(
            InferenceSetup {
                settings: model,
                models: None,
                slot: slot.clone(),
                store: store.clone(),
                state: state.clone(),
                control: Arc::new(InferenceControl::default()),
                ahead: true,
            },
            None,
        )
        .unwrap();
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
        assert_eq!(stored.source_name, "upload");
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

    fn model_settings(name: &str) -> ModelSettings {
        let mut model = crate::config::from_sources(vec![]).unwrap().model;
        model.path = testdata().join(format!("models/classification/{name}.tflite"));
        model.labels = Some(testdata().join("labels/labels_mobilenet_quant_v1_224.txt"));
        model.runtime = RuntimeSetting::Builtin;
        model.threads = 1;
        model
    }

    fn photo(name: &str, seq: u64) -> Frame {
        let bytes = std::fs::read(testdata().join("images").join(name)).unwrap();
        Frame::encoded(bytes, seq, format!("test:{name}"))
    }

    /// Poll `done` for up to 60 s.
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // Would catch the prepared path giving other results than preparing each
    // frame before its invoke (a tensor from another frame, a stale buffer, a
    // lost mapping): for several photos, one at a time, both ways give the
    // record an engine run on the same frame gives.
    #[test]
    fn results_prepared_ahead_equal_the_unpipelined_ones() {
        let photos = ["grace_hopper.bmp", "cat.bmp", "hot_dog.jpg", "chelsea.png"];
        let settings = model_settings("mobilenet_v1_0.25_128_quant");
        let mut engine = load_model(&settings).unwrap().engine;
        let golden: Vec<_> = photos
            .iter()
            .map(|p| engine.run(&photo(p, 0)).unwrap().classes)
            .collect();
        for ahead in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let state = Arc::new(AppState::new());
            let slot = Arc::new(FrameSlot::new());
            let thread = spawn_inference(
                InferenceSetup {
                    settings: settings.clone(),
                    models: None,
                    slot: slot.clone(),
                    store: Arc::new(Store::open(tmp.path()).unwrap()),
                    state: state.clone(),
                    control: Arc::new(InferenceControl::default()),
                    ahead,
                },
                None,
            )
            .unwrap();
            for (i, p) in photos.iter().enumerate() {
                slot.put(photo(p, i as u64 + 1));
                wait_for("the result", || {
                    state
                        .last_result()
                        .is_some_and(|r| r.frame_seq == i as u64 + 1)
                });
                let rec = state.last_result().unwrap();
                assert_eq!(rec.classes, golden[i], "ahead {ahead}, {p}");
            }
            slot.close();
            thread.join().unwrap();
            assert_eq!(state.counters.snapshot().inference_errors, 0);
        }
    }

    // Would catch a tensor prepared for the previous model's input shape
    // being fed to a new model after a reload: a frame prepared for another
    // generation is prepared again for the active model (same record as an
    // engine run), and a tensor of the wrong length is refused and counted,
    // never copied into the input.
    #[test]
    fn frames_prepared_for_another_model_never_reach_the_active_one() {
        let old = load_model(&model_settings("mobilenet_v1_0.25_128_quant")).unwrap();
        let new_settings = model_settings("mobilenet_v1_0.5_160_quant");
        let mut new = load_model(&new_settings).unwrap();
        let frame = photo("grace_hopper.bmp", 1);
        let expected = new.engine.run(&frame).unwrap().classes;
        let mut old_spec = old.engine.prepare_spec();
        let mut tensor = Vec::new();
        let prepared = old_spec.prepare(&frame, &mut tensor).unwrap();
        assert_ne!(tensor.len(), new.engine.prepare_spec().tensor_len);

        let tmp = tempfile::tempdir().unwrap();
        let state = Arc::new(AppState::new());
        let input = Arc::new(PreparedSlot::new());
        let thread = {
            let (input, state) = (input.clone(), state.clone());
            let store = Arc::new(Store::open(tmp.path()).unwrap());
            let control = Arc::new(InferenceControl::default());
            std::thread::spawn(move || {
                inference_loop_body(new_settings, None, input, store, state, control)
            })
        };
        // Generation 0: prepared before the thread's first model (generation 1).
        input.put(PreparedFrame {
            frame: frame.clone(),
            tag: crate::pipeline::test_tag(),
            ahead: Some(Ahead {
                generation: 0,
                prepared: Ok(prepared),
            }),
            tensor: tensor.clone(),
        });
        wait_for("the result", || state.last_result().is_some());
        assert_eq!(state.last_result().unwrap().classes, expected);
        // Labelled with the active generation but the old shape: refused.
        let mut second = frame.clone();
        second.seq = 2;
        input.put(PreparedFrame {
            frame: second,
            tag: crate::pipeline::test_tag(),
            ahead: Some(Ahead {
                generation: 1,
                prepared: Ok(prepared),
            }),
            tensor,
        });
        wait_for("the refusal", || {
            state.counters.snapshot().inference_errors == 1
        });
        assert_eq!(state.last_result().unwrap().frame_seq, 1);
        input.close();
        thread.join().unwrap();
    }

    // Would catch the prepare thread keeping a stale prepared frame while
    // newer ones arrive during a long invoke, or dropping one silently: with
    // invokes far longer than a preparation, a fresher frame replaces the
    // waiting one, and each replacement is counted as a dropped frame.
    #[test]
    fn superseded_prepared_frames_are_dropped_and_counted() {
        let engine = load_model(&model_settings("mobilenet_v1_0.25_128_quant"))
            .unwrap()
            .engine;
        let state = Arc::new(AppState::new());
        let slot = Arc::new(FrameSlot::new());
        let out = Arc::new(PreparedSlot::new());
        out.publish_model(1, engine.prepare_spec());
        let prepare = {
            let (slot, out, state) = (slot.clone(), out.clone(), state.clone());
            std::thread::spawn(move || prepare_loop(slot, out, state, true, None))
        };
        let feeding = Arc::new(AtomicBool::new(true));
        let feeder = {
            let (slot, feeding) = (slot.clone(), feeding.clone());
            std::thread::spawn(move || {
                let mut seq = 0;
                while feeding.load(Ordering::Relaxed) {
                    seq += 1;
                    slot.put(photo("grace_hopper.bmp", seq));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        // The test plays the inference thread, with 400 ms "invokes".
        let mut seqs = Vec::new();
        for _ in 0..4 {
            match out.take(Duration::from_secs(30)) {
                Next::Frame(f) => {
                    assert!(matches!(
                        f.ahead,
                        Some(Ahead {
                            generation: 1,
                            prepared: Ok(_)
                        })
                    ));
                    seqs.push(f.frame.seq);
                    out.recycle(f.tensor);
                }
                other => panic!("expected a frame, got {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(400));
        }
        feeding.store(false, Ordering::Relaxed);
        feeder.join().unwrap();
        slot.close();
        while !matches!(out.take(Duration::from_secs(5)), Next::Closed) {}
        prepare.join().unwrap();
        let superseded = state.metrics.superseded_prepared();
        assert!(superseded >= 1, "no prepared frame superseded: {seqs:?}");
        assert_eq!(state.counters.snapshot().frames_dropped, superseded);
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    }

    // Would catch the prepare thread outliving shutdown or not counting as
    // one of the token's workers: after the trigger both threads return and
    // the token has no live worker left.
    #[test]
    fn shutdown_joins_the_prepare_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let slot = Arc::new(FrameSlot::new());
        let stop = crate::core::shutdown::Shutdown::new();
        stop.on_trigger({
            let slot = slot.clone();
            move || slot.close()
        });
        let state = Arc::new(AppState::new());
        let thread = spawn_inference(
            InferenceSetup {
                settings: model_settings("mobilenet_v1_0.25_128_quant"),
                models: None,
                slot: slot.clone(),
                store: Arc::new(Store::open(tmp.path()).unwrap()),
                state: state.clone(),
                control: Arc::new(InferenceControl::default()),
                ahead: true,
            },
            Some((stop.worker("prepare"), stop.worker("inference"))),
        )
        .unwrap();
        let mut live = stop.live_workers();
        live.sort_unstable();
        assert_eq!(live, ["inference", "prepare"]);
        slot.put(photo("cat.bmp", 1));
        wait_for("a result", || state.last_result().is_some());
        stop.trigger();
        assert!(stop.wait_workers(Duration::from_secs(30)).is_empty());
        thread.join().unwrap();
    }
}
