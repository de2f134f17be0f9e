//! The prepare thread: it owns [`prepare_loop`] (take frames and uploads from
//! the [`FrameSlot`], decode, resize and quantize each frame for the active
//! model while the inference thread invokes the previous one) and the
//! [`PreparedSlot`], the hand-off from this thread to the inference thread.
//!
//! Why a thread: at 1280×720 MJPEG, pre-processing costs 0.88 of a
//! MobileNet invoke on the 2-core build machine; done on the inference thread
//! before each invoke, the sustained rate was 1/(1.88 × invoke). Done here,
//! the next frame is ready when the invoke ends.
//!
//! Rules of the hand-off:
//! - **sources take turns**: frames come from the [`FrameSlot`] round robin
//!   over the sources; a fresher frame only ever replaces a waiting prepared
//!   frame of the same source, so the turn of a slow source is never given
//!   to a fast one here either.
//! - **latest frame wins**, as in the [`FrameSlot`]: one prepared frame
//!   waits at most; a newer one replaces it and the replaced one is counted
//!   (`frames_dropped` and `frames_superseded_prepared`). This thread prepares
//!   a frame as soon as the slot is empty; while a prepared frame waits it
//!   prepares a fresher one only when that can be done before the inference
//!   thread is expected to want it (from the inference thread's recent cycle
//!   and this thread's recent preparation time), at most once per invoke, so
//!   it never spins on frames nobody will use.
//! - **one model generation**: the inference thread publishes a
//!   [`PrepareSpec`] for each model it activates, with a generation number;
//!   every prepared frame carries the generation it was prepared for, and the
//!   inference thread feeds a tensor only to the model of that generation
//!   (any other frame is prepared again on the inference thread, from the
//!   frame it still carries). A frame prepared for the old model's input
//!   shape never reaches a new model.
//! - **uploads** ([`ClassifyJob`]) pass through unprepared, in order, one at
//!   a time (the [`FrameSlot`] bounds the queue behind them), ahead of any
//!   frame: a queued upload wakes this thread even while a prepared frame
//!   waits, and the inference thread takes uploads first, except right
//!   after an upload when a frame waits: then the frame (uploads and the
//!   camera alternate under upload load instead of the camera starving).
//! - **motion gating** (issue 18): a camera frame is first offered to the
//!   motion gate (`motion_gate.rs`); one it skips (a static scene) is
//!   dropped here, before any pre-processing, and counted as static, not
//!   as dropped.
//! - **shutdown**: when the [`FrameSlot`] is closed and drained this thread
//!   closes the hand-off (also if it panics), and the inference thread drains
//!   it and returns.
//!
//! Why a file of some 600 lines: about 220 of them are the tests that drive
//! the thread through hand-offs, uploads and the motion gate.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::motion_gate::MotionGating;
use super::{ClassifyJob, FrameSlot, SourceTag, Taken};
use crate::core::frame::Frame;
use crate::inference::engine::PrepareSpec;
use crate::inference::preprocess::Prepared;
use crate::inference::InferenceError;
use crate::state::{AppState, Counters};

/// How long a wait lasts before it is checked again (shutdown, new models).
const WAIT: Duration = Duration::from_millis(200);
/// Weight of the newest sample in the moving averages of durations.
const EWMA_NEW: f64 = 0.25;
/// Preparation-time estimates are padded by this factor before a fresher
/// frame is prepared in the time left of an invoke.
const PREP_MARGIN: f64 = 1.25;

/// How a frame was pre-processed on the prepare thread.
#[derive(Debug)]
pub(crate) struct Ahead {
    /// The model generation the tensor was prepared for.
    pub generation: u64,
    /// The geometry and timings, or why the frame could not be prepared.
    pub prepared: Result<Prepared, InferenceError>,
}

/// A frame and, when it was pre-processed ahead, its input tensor.
#[derive(Debug)]
pub(crate) struct PreparedFrame {
    pub frame: Frame,
    /// The source it came from.
    pub tag: SourceTag,
    /// `None`: not prepared (no model yet, or preparing ahead is off).
    pub ahead: Option<Ahead>,
    /// The input tensor's bytes when `ahead` is set.
    pub tensor: Vec<u8>,
}

/// What [`PreparedSlot::take`] found.
#[derive(Debug)]
pub(crate) enum Next {
    Frame(PreparedFrame),
    Job(ClassifyJob),
    Timeout,
    Closed,
}

#[derive(Default)]
struct State {
    frame: Option<PreparedFrame>,
    /// At most one upload waits here; the rest wait in the `FrameSlot`.
    job: Option<ClassifyJob>,
    closed: bool,
    /// A model the inference thread activated, not yet picked up.
    model: Option<(u64, PrepareSpec)>,
    /// Tensor buffers given back, reused (at most [`SPARE_BUFFERS`]).
    spare: Vec<Vec<u8>>,
    /// When the inference thread took its current item (None: it waits).
    busy_since: Option<Instant>,
    /// Moving average of how long it spends on an item.
    cycle: Duration,
    /// The inference thread's last item was an upload: when a frame waits
    /// too, the frame goes next, so a steady stream of uploads cannot starve
    /// the camera (each gets at least every other invoke).
    last_was_job: bool,
}

/// Tensor buffers kept for reuse: one being prepared, one waiting, one in
/// the inference thread's hands.
const SPARE_BUFFERS: usize = 3;

/// The hand-off from the prepare thread to the inference thread; see the
/// module documentation.
#[derive(Default)]
pub(crate) struct PreparedSlot {
    state: Mutex<State>,
    changed: Condvar,
}

impl std::fmt::Debug for PreparedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("PreparedSlot")
            .field("frame", &s.frame.as_ref().map(|p| p.frame.seq))
            .field("job", &s.job.is_some())
            .field("closed", &s.closed)
            .finish_non_exhaustive()
    }
}

fn ewma(old: Duration, new: Duration) -> Duration {
    if old.is_zero() {
        new
    } else {
        old.mul_f64(1.0 - EWMA_NEW) + new.mul_f64(EWMA_NEW)
    }
}

impl PreparedSlot {
    pub(crate) fn new() -> PreparedSlot {
        PreparedSlot::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data, valid even if a holder panicked.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, s: MutexGuard<'a, State>, d: Duration) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(s, d)
            .unwrap_or_else(|e| e.into_inner())
            .0
    }

    /// The inference thread activated `spec`'s model as `generation`: frames
    /// prepared from now on are for it.
    pub(crate) fn publish_model(&self, generation: u64, spec: PrepareSpec) {
        self.lock().model = Some((generation, spec));
        self.changed.notify_all();
    }

    fn take_model(&self) -> Option<(u64, PrepareSpec)> {
        self.lock().model.take()
    }

    /// A tensor buffer to prepare into (a spare one when there is one).
    fn buffer(&self) -> Vec<u8> {
        self.lock().spare.pop().unwrap_or_default()
    }

    /// Give a tensor buffer back for reuse.
    pub(crate) fn recycle(&self, tensor: Vec<u8>) {
        let mut s = self.lock();
        if s.spare.len() < SPARE_BUFFERS && tensor.capacity() > 0 {
            s.spare.push(tensor);
        }
    }

    /// Offer a frame. Returns true when it replaced a waiting one (dropped,
    /// its buffer kept for reuse).
    pub(super) fn put(&self, frame: PreparedFrame) -> bool {
        let mut s = self.lock();
        let old = s.frame.replace(frame);
        let replaced = old.is_some();
        if let Some(old) = old {
            if s.spare.len() < SPARE_BUFFERS && old.tensor.capacity() > 0 {
                s.spare.push(old.tensor);
            }
        }
        drop(s);
        self.changed.notify_all();
        replaced
    }

    /// Wake the prepare thread (an upload was queued in the `FrameSlot`).
    fn wake(&self) {
        let _s = self.lock();
        self.changed.notify_all();
    }

    /// Pass an upload on, waiting while another one waits (the inference
    /// thread takes jobs first, so the wait is at most one item).
    fn push_job(&self, job: ClassifyJob) {
        let mut s = self.lock();
        while s.job.is_some() && !s.closed {
            s = self.wait(s, WAIT);
        }
        if s.closed {
            // Only this thread closes the hand-off, after its last push;
            // the requester is told the pipeline stopped by the dropped reply.
            return;
        }
        s.job = Some(job);
        drop(s);
        self.changed.notify_all();
    }

    /// The inference thread's side: wait up to `timeout` for an upload or a
    /// frame (uploads first). A closed hand-off still hands out what it holds.
    pub(crate) fn take(&self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        if let Some(b) = s.busy_since.take() {
            s.cycle = ewma(s.cycle, b.elapsed());
        }
        self.changed.notify_all();
        loop {
            let frame_turn = s.last_was_job && s.frame.is_some();
            let job = if frame_turn { None } else { s.job.take() };
            let next = if let Some(j) = job {
                Next::Job(j)
            } else if let Some(f) = s.frame.take() {
                Next::Frame(f)
            } else if s.closed {
                return Next::Closed;
            } else {
                let now = Instant::now();
                if now >= deadline {
                    return Next::Timeout;
                }
                s = self.wait(s, deadline - now);
                continue;
            };
            s.last_was_job = matches!(next, Next::Job(_));
            s.busy_since = Some(Instant::now());
            drop(s);
            self.changed.notify_all();
            return next;
        }
    }

    /// The prepare thread's side: wait until it is time to take from `slot`
    /// (this hand-off has no frame, or an upload waits there and none here,
    /// or a fresher frame can be prepared before the inference thread wants
    /// one, once per item it takes). `None`: closed; `Some(None)`: take from
    /// any source; `Some(Some(lane))`: a fresher frame of that source only
    /// (the one whose frame waits here).
    fn wait_turn(
        &self,
        slot: &FrameSlot,
        prep: Duration,
        fresher_for: &mut Option<Instant>,
    ) -> Option<Option<usize>> {
        let mut s = self.lock();
        let mut planned = None;
        loop {
            if s.closed {
                return None;
            }
            if s.frame.is_none() || (s.job.is_none() && slot.has_job()) {
                return Some(None);
            }
            let now = Instant::now();
            match s.busy_since {
                Some(b) if *fresher_for != Some(b) && !prep.is_zero() => {
                    let start = (b + s.cycle).checked_sub(prep.mul_f64(PREP_MARGIN));
                    match start {
                        Some(start) if planned == Some(b) && now >= start => {
                            *fresher_for = Some(b);
                            return Some(s.frame.as_ref().map(|f| f.tag.lane));
                        }
                        Some(start) if now < start => {
                            planned = Some(b);
                            s = self.wait(s, (start - now).min(WAIT));
                        }
                        // No time for a fresher frame during this item.
                        _ => {
                            *fresher_for = Some(b);
                            s = self.wait(s, WAIT);
                        }
                    }
                }
                _ => s = self.wait(s, WAIT),
            }
        }
    }

    /// No more items: the inference thread drains what is left and stops.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }
}

/// Closes the hand-off when the prepare thread ends, by return or panic.
struct CloseOnDrop(Arc<PreparedSlot>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The prepare thread's body; see the module documentation. With `ahead`
/// false frames pass through unprepared (the inference thread prepares each
/// before its invoke, the path before this thread existed). Returns when the
/// `FrameSlot` is closed and drained, after closing `out`. `motion`: the
/// `[motion]` settings (None: no gating); a frame the motion gate skips is
/// neither prepared nor handed on (`motion_gate.rs`).
/// The heat slowdown's pacing: admits a frame when at least the slowdown's
/// interval has passed since the last admitted one (all sources together).
#[derive(Debug, Default)]
struct HeatGate {
    last: Option<Instant>,
}

impl HeatGate {
    /// Whether to infer a frame taken at `now` under `interval` (`None`:
    /// full rate, every frame).
    fn admit(&mut self, interval: Option<Duration>, now: Instant) -> bool {
        let Some(every) = interval else {
            return true;
        };
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < every)
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

pub(crate) fn prepare_loop(
    slot: Arc<FrameSlot>,
    out: Arc<PreparedSlot>,
    state: Arc<AppState>,
    ahead: bool,
    motion: Option<crate::config::MotionConfig>,
) {
    let _close = CloseOnDrop(out.clone());
    slot.set_job_waker({
        let out = Arc::downgrade(&out);
        Box::new(move || {
            if let Some(out) = out.upgrade() {
                out.wake();
            }
        })
    });
    let mut model: Option<(u64, PrepareSpec)> = None;
    let mut prep_time = Duration::ZERO;
    let mut fresher_for = None;
    let mut gating = MotionGating::new(motion);
    let mut heat = HeatGate::default();
    while let Some(only) = out.wait_turn(&slot, prep_time, &mut fresher_for) {
        let (frame, tag) = match slot.take_from(WAIT, only) {
            Taken::Frame(f, tag) => (f, tag),
            Taken::Job(job) => {
                out.push_job(job);
                continue;
            }
            Taken::Timeout => continue,
            Taken::Closed => break,
        };
        if let Some(m) = out.take_model() {
            gating.model_changed(m.1.detector, &state);
            model = Some(m);
        }
        // While the SoC is too hot (issue 22): at most `power.hot_max_fps`
        // frames are prepared and inferred; the others skip the decode too.
        if !heat.admit(state.heat_interval(), Instant::now()) {
            Counters::inc(&state.counters.frames_skipped_hot);
            state.publish_frame(&tag.name, frame);
            continue;
        }
        if let Some((_, spec)) = &model {
            if !gating.admit(&frame, &tag, &state, spec.max_pixels) {
                // Not inferred, still the source's latest frame (issue 20).
                state.publish_frame(&tag.name, frame);
                continue;
            }
        }
        let mut tensor = Vec::new();
        let ahead = match model.as_mut().filter(|_| ahead) {
            Some((generation, spec)) => {
                tensor = out.buffer();
                let t = Instant::now();
                // Privacy masks (issue 23): the model sees the masked frame.
                let privacy = state.privacy();
                let masks = privacy.inference_masks(&tag.name);
                let prepared = spec.prepare_masked(&frame, &mut tensor, masks);
                prep_time = ewma(prep_time, t.elapsed());
                Some(Ahead {
                    generation: *generation,
                    prepared,
                })
            }
            None => None,
        };
        let item = PreparedFrame {
            frame,
            tag,
            ahead,
            tensor,
        };
        if out.put(item) {
            Counters::inc(&state.counters.frames_dropped);
            state.metrics.count_superseded_prepared();
        }
    }
    log::debug!("prepare thread drained and stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{test_frame as frame, test_tag};

    fn raw(seq: u64) -> PreparedFrame {
        PreparedFrame {
            frame: frame(seq),
            tag: test_tag(),
            ahead: None,
            tensor: Vec::new(),
        }
    }

    // Would catch the heat slowdown letting frames through faster than its
    // interval, holding back frames at full rate, or staying paced after it.
    #[test]
    fn the_heat_gate_paces_frames_only_while_slowed() {
        let mut g = HeatGate::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert!((0..5).all(|i| g.admit(None, t0 + ms(i))));
        let every = Some(ms(500));
        let admitted: Vec<u64> = (0..40)
            .map(|i| i * 50)
            .filter(|&t| g.admit(every, t0 + ms(10 + t)))
            .collect();
        assert_eq!(admitted, vec![0, 500, 1000, 1500]);
        assert!(g.admit(None, t0 + ms(2100)) && g.admit(None, t0 + ms(2101)));
    }

    // Would catch a queue forming between the two threads: only the newest
    // prepared frame waits and each replaced one is reported.
    #[test]
    fn newest_prepared_frame_wins() {
        let s = PreparedSlot::new();
        assert!(!s.put(raw(1)));
        assert!(s.put(raw(2)));
        match s.take(Duration::from_millis(10)) {
            Next::Frame(f) => assert_eq!(f.frame.seq, 2),
            other => panic!("expected a frame, got {other:?}"),
        }
        assert!(matches!(s.take(Duration::from_millis(10)), Next::Timeout));
        s.close();
        assert!(matches!(s.take(Duration::from_millis(10)), Next::Closed));
    }

    // Would catch the prepare thread spinning on frames nobody will use:
    // while a prepared frame waits and there is no time for a fresher one,
    // it waits for the inference thread to take it.
    #[test]
    fn prepare_thread_waits_while_a_frame_waits_without_time_for_another() {
        let s = Arc::new(PreparedSlot::new());
        s.put(raw(1));
        let t = {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut fresher = None;
                s.wait_turn(&FrameSlot::new(), Duration::from_secs(5), &mut fresher)
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "the prepare thread did not wait");
        assert!(matches!(s.take(Duration::ZERO), Next::Frame(_)));
        assert!(t.join().unwrap().is_some());
    }

    // Would catch uploads losing their priority over camera frames: an
    // upload queued while a prepared frame waits for the inference thread is
    // handed on at once and taken before that frame (uploads alternated
    // with frames when the prepare thread only woke for a taken frame).
    #[test]
    fn an_upload_overtakes_a_waiting_prepared_frame() {
        let state = Arc::new(AppState::new());
        let slot = Arc::new(FrameSlot::new());
        let out = Arc::new(PreparedSlot::new());
        let prepare = {
            let (slot, out, state) = (slot.clone(), out.clone(), state.clone());
            std::thread::spawn(move || prepare_loop(slot, out, state, true, None))
        };
        slot.put(frame(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.lock().frame.is_none() {
            assert!(Instant::now() < deadline, "frame not handed on");
            std::thread::sleep(Duration::from_millis(2));
        }
        slot.put(frame(2));
        let (reply, _answer) = tokio::sync::oneshot::channel();
        let job = ClassifyJob {
            frame: frame(3),
            store: false,
            reply,
        };
        slot.submit(job, 1).unwrap();
        while out.lock().job.is_none() {
            assert!(Instant::now() < deadline, "upload not handed on");
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(matches!(out.take(Duration::ZERO), Next::Job(j) if j.frame.seq == 3));
        assert!(matches!(out.take(Duration::ZERO), Next::Frame(f) if f.frame.seq == 1));
        slot.close();
        while !matches!(out.take(Duration::from_secs(5)), Next::Closed) {}
        prepare.join().unwrap();
    }

    // Would catch the camera starving under upload load (bench scenario 8
    // measured ~1 frame/s of 10 while uploads kept a job always waiting):
    // right after an upload, a waiting frame goes before the next upload,
    // and with no upload just taken, uploads still go first.
    #[test]
    fn after_an_upload_a_waiting_frame_goes_next() {
        let out = PreparedSlot::new();
        let job = |seq| {
            let (reply, _answer) = tokio::sync::oneshot::channel();
            ClassifyJob {
                frame: frame(seq),
                store: false,
                reply,
            }
        };
        out.put(raw(1));
        out.lock().job = Some(job(10));
        assert!(matches!(out.take(Duration::ZERO), Next::Job(j) if j.frame.seq == 10));
        out.lock().job = Some(job(11));
        assert!(matches!(out.take(Duration::ZERO), Next::Frame(f) if f.frame.seq == 1));
        assert!(matches!(out.take(Duration::ZERO), Next::Job(j) if j.frame.seq == 11));
        // No frame waiting: uploads follow each other.
        out.lock().job = Some(job(12));
        assert!(matches!(out.take(Duration::ZERO), Next::Job(j) if j.frame.seq == 12));
    }

    /// A model's pre-processing for an 8×8 RGB input, as a detector or not.
    fn spec(detector: bool) -> PrepareSpec {
        use crate::inference::preprocess::{FitMode, Normalization, Preprocessor};
        use crate::inference::{DType, TensorSpec};
        let input = TensorSpec {
            name: "input".into(),
            shape: vec![1, 8, 8, 3],
            dtype: DType::U8,
            quant: None,
        };
        PrepareSpec {
            prep: Preprocessor::new(&input, FitMode::Stretch, Normalization::uniform(0.0, 1.0))
                .unwrap(),
            max_pixels: 1 << 20,
            tensor_len: 8 * 8 * 3,
            detector,
        }
    }

    /// A 64×48 textured RGB frame, the same picture whatever `seq`.
    fn scene(seq: u64) -> Frame {
        let (w, h) = (64u32, 48u32);
        let data = (0..w * h * 3).map(|i| ((i * 7) % 251) as u8).collect();
        Frame {
            data,
            width: w,
            height: h,
            stride: w * 3,
            ..frame(seq)
        }
    }

    // Issue 18. Would catch motion gating not wired into the prepare thread
    // or not following a model swap: with a detector active, a
    // repeat of a static frame is neither prepared nor handed on and is
    // counted as static; after a swap to a classifier the same frame is
    // handed on again.
    #[test]
    fn static_frames_stop_here_while_a_detector_is_active() {
        let state = Arc::new(AppState::new());
        let slot = Arc::new(FrameSlot::new());
        let out = Arc::new(PreparedSlot::new());
        let motion = Some(crate::config::MotionConfig::default());
        out.publish_model(1, spec(true));
        let prepare = {
            let (slot, out, state) = (slot.clone(), out.clone(), state.clone());
            std::thread::spawn(move || prepare_loop(slot, out, state, true, motion))
        };
        let wait = Duration::from_secs(10);
        slot.put(scene(1));
        match out.take(wait) {
            Next::Frame(f) => {
                assert_eq!(f.frame.seq, 1);
                assert!(f.ahead.is_some_and(|a| a.prepared.is_ok()));
            }
            other => panic!("the first frame was not handed on: {other:?}"),
        }
        assert!(state
            .motion
            .active
            .load(std::sync::atomic::Ordering::Relaxed));
        slot.put(scene(2));
        let deadline = Instant::now() + wait;
        while state
            .counters
            .frames_static
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            assert!(
                Instant::now() < deadline,
                "the static frame was not skipped"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(matches!(out.take(Duration::from_millis(50)), Next::Timeout));
        // A classifier is activated: gating is off by default for it.
        out.publish_model(2, spec(false));
        slot.put(scene(3));
        match out.take(wait) {
            Next::Frame(f) => {
                assert_eq!(f.frame.seq, 3);
                assert_eq!(f.ahead.map(|a| a.generation), Some(2));
            }
            other => panic!("the classifier's frame was not handed on: {other:?}"),
        }
        assert_eq!(
            state
                .counters
                .frames_static
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        slot.close();
        while !matches!(out.take(Duration::from_secs(5)), Next::Closed) {}
        prepare.join().unwrap();
    }
}
