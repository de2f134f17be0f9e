//! The latest-frame slot: the one hand-off between the capture threads, the
//! API and the inference thread. It owns [`FrameSlot`] (one frame per
//! source, latest wins; a queue of uploads ahead of them), what
//! [`FrameSlot::take`] finds ([`Taken`], with the frame's [`SourceTag`]),
//! and the upload hand-off: [`ClassifyJob`] in, its result record or a
//! [`ClassifyError`] back on the job's channel.
//!
//! Several sources (issue 19): each source has its own lane (one frame,
//! latest wins), and `take` serves the lanes round robin, starting after
//! the lane it served last. So a fast camera cannot starve a slow one:
//! every frame a source offers is taken before that source's next one
//! would replace it, as long as the consumer takes one frame per source
//! in the time the slowest source offers one.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::core::frame::Frame;
use crate::core::result::ResultRecord;
use crate::inference::InferenceError;
use crate::store::StoreError;

/// Which source a frame came from: its lane in the [`FrameSlot`] and its
/// name (results carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTag {
    pub lane: usize,
    pub name: Arc<str>,
}

/// What [`FrameSlot::take`] found.
#[derive(Debug)]
pub enum Taken {
    Frame(Frame, SourceTag),
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
    /// The result was to be stored and the write failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An encoded image to run on the active model; its result record (with
/// its id when stored) goes to `reply`.
#[derive(Debug)]
pub struct ClassifyJob {
    pub frame: Frame,
    /// Store the result (`?store=true`); otherwise it is only counted.
    pub store: bool,
    pub reply: tokio::sync::oneshot::Sender<Result<ResultRecord, ClassifyError>>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// One waiting frame per source (lane).
    lanes: Vec<Option<Frame>>,
    /// The lane the round robin looks at first.
    next: usize,
    jobs: std::collections::VecDeque<ClassifyJob>,
    closed: bool,
}

/// Called after an upload is queued, for a consumer that waits elsewhere.
type JobWaker = Box<dyn Fn() + Send + Sync>;

/// A bounded (one frame per source) latest-frame-wins hand-off between the
/// capture threads and the prepare thread.
pub struct FrameSlot {
    state: Mutex<SlotState>,
    /// The sources' names, by lane.
    names: Vec<Arc<str>>,
    ready: Condvar,
    /// Set once by the prepare thread's hand-off: an upload must not wait
    /// for a prepared frame to be taken.
    job_waker: std::sync::OnceLock<JobWaker>,
}

impl std::fmt::Debug for FrameSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSlot")
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl Default for FrameSlot {
    fn default() -> Self {
        FrameSlot::with_sources(&[crate::config::DEFAULT_SOURCE_NAME])
    }
}

impl FrameSlot {
    /// A slot for one source, named `default`.
    pub fn new() -> Self {
        Self::default()
    }

    /// A slot with one lane per source, in this order (at least one).
    pub fn with_sources<S: AsRef<str>>(names: &[S]) -> Self {
        let mut names: Vec<Arc<str>> = names.iter().map(|n| Arc::from(n.as_ref())).collect();
        if names.is_empty() {
            names.push(Arc::from(crate::config::DEFAULT_SOURCE_NAME));
        }
        FrameSlot {
            state: Mutex::new(SlotState {
                lanes: (0..names.len()).map(|_| None).collect(),
                ..SlotState::default()
            }),
            names,
            ready: Condvar::new(),
            job_waker: std::sync::OnceLock::new(),
        }
    }

    /// The lane of the source `name`.
    pub fn lane(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| &**n == name)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        // A poisoned slot only means a thread panicked while holding it; the
        // Option<Frame> inside is still valid, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offer a frame of the first source; see [`FrameSlot::put_lane`].
    pub fn put(&self, frame: Frame) -> bool {
        self.put_lane(0, frame)
    }

    /// Offer a frame of the source in `lane` (an unknown lane counts as the
    /// last). Returns true when it replaced a frame of that source nobody
    /// had taken (that frame is dropped). Frames offered after `close` are
    /// discarded.
    pub fn put_lane(&self, lane: usize, frame: Frame) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        let last = s.lanes.len() - 1;
        let replaced = s.lanes[lane.min(last)].replace(frame).is_some();
        drop(s);
        self.ready.notify_one();
        replaced
    }

    /// Queue an upload for the inference thread, unless `max_queued` jobs
    /// already wait or the slot is closed (then the job comes back, boxed:
    /// a refusal is rare and the job is large).
    pub(crate) fn submit(
        &self,
        job: ClassifyJob,
        max_queued: usize,
    ) -> Result<(), Box<ClassifyJob>> {
        let mut s = self.lock();
        if s.closed || s.jobs.len() >= max_queued {
            return Err(Box::new(job));
        }
        s.jobs.push_back(job);
        drop(s);
        self.ready.notify_one();
        if let Some(wake) = self.job_waker.get() {
            wake();
        }
        Ok(())
    }

    /// Call `wake` (without this slot's lock held) after each queued upload;
    /// only the first waker set is kept.
    pub(crate) fn set_job_waker(&self, wake: JobWaker) {
        let _ = self.job_waker.set(wake);
    }

    /// Whether an upload waits.
    pub(crate) fn has_job(&self) -> bool {
        !self.lock().jobs.is_empty()
    }

    /// Wait up to `timeout` for a job or a frame (jobs first, then the
    /// sources round robin). A closed slot still hands out what it holds
    /// before reporting `Closed`.
    pub fn take(&self, timeout: Duration) -> Taken {
        self.take_from(timeout, None)
    }

    /// [`FrameSlot::take`], with `only`: frames of that lane alone (jobs
    /// still first), for a fresher frame of the source whose frame waits.
    pub(crate) fn take_from(&self, timeout: Duration, only: Option<usize>) -> Taken {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(j) = s.jobs.pop_front() {
                return Taken::Job(j);
            }
            let n = s.lanes.len();
            let pick = match only {
                Some(l) => Some(l.min(n - 1)).filter(|&l| s.lanes[l].is_some()),
                None => (0..n)
                    .map(|k| (s.next + k) % n)
                    .find(|&l| s.lanes[l].is_some()),
            };
            if let Some(lane) = pick {
                if only.is_none() {
                    s.next = (lane + 1) % n;
                }
                if let Some(f) = s.lanes[lane].take() {
                    let tag = SourceTag {
                        lane,
                        name: self.names[lane].clone(),
                    };
                    return Taken::Frame(f, tag);
                }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::test_frame as frame;

    // Would catch a queue forming behind a slow model: only the newest frame
    // survives, and every replaced one is reported as dropped.
    #[test]
    fn slot_keeps_latest_and_reports_drops() {
        let slot = FrameSlot::new();
        assert!(!slot.put(frame(1)));
        assert!(slot.put(frame(2)));
        assert!(slot.put(frame(3)));
        match slot.take(Duration::from_millis(10)) {
            Taken::Frame(f, _) => assert_eq!(f.seq, 3),
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
        assert!(matches!(slot.take(Duration::from_secs(5)), Taken::Frame(f, _) if f.seq == 7));
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

    /// Feed a slot of two sources on a fixed schedule, `fast` offering a
    /// frame every step and `slow` every `every`-th, and take one item per
    /// step; the frames taken per source.
    fn taken_per_source(steps: u64, every: u64) -> (u64, u64, u64) {
        let slot = FrameSlot::with_sources(&["fast", "slow"]);
        let (mut fast, mut slow, mut slow_offered) = (0, 0, 0);
        for step in 0..steps {
            slot.put_lane(0, frame(step));
            if step % every == 0 {
                slot.put_lane(1, frame(step));
                slow_offered += 1;
            }
            match slot.take(Duration::ZERO) {
                Taken::Frame(_, tag) if &*tag.name == "fast" => fast += 1,
                Taken::Frame(_, tag) => {
                    assert_eq!((&*tag.name, tag.lane), ("slow", 1));
                    slow += 1
                }
                other => panic!("expected a frame, got {other:?}"),
            }
        }
        (fast, slow, slow_offered)
    }

    // Would catch a fast camera starving a slow one (a slot that always
    // serves the first source with a frame): under a fixed schedule the slow
    // source gets every frame it offers and the fast one the rest, and two
    // sources at the same rate share equally.
    #[test]
    fn sources_are_served_round_robin_in_proportion() {
        let (fast, slow, offered) = taken_per_source(300, 3);
        assert_eq!(slow, offered, "every slow frame is taken");
        assert_eq!(fast + slow, 300);
        assert_eq!(fast, 200);
        let (a, b, _) = taken_per_source(300, 1);
        assert_eq!((a, b), (150, 150));
    }

    // Would catch one source's frame replacing another's (lanes mixed up) or
    // a restricted take handing out another source's frame.
    #[test]
    fn each_source_keeps_its_own_latest_frame() {
        let slot = FrameSlot::with_sources(&["a", "b"]);
        assert_eq!(slot.lane("b"), Some(1));
        assert!(!slot.put_lane(0, frame(1)));
        assert!(!slot.put_lane(1, frame(2)));
        assert!(slot.put_lane(0, frame(3)));
        match slot.take_from(Duration::ZERO, Some(1)) {
            Taken::Frame(f, tag) => assert_eq!((f.seq, &*tag.name), (2, "b")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            slot.take_from(Duration::ZERO, Some(1)),
            Taken::Timeout
        ));
        assert!(matches!(slot.take(Duration::ZERO), Taken::Frame(f, _) if f.seq == 3));
    }
}
