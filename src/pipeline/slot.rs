//! The latest-frame slot: the one hand-off between the capture thread, the
//! API and the inference thread. It owns [`FrameSlot`] (one frame, latest
//! wins; a queue of uploads ahead of it), what [`FrameSlot::take`] finds
//! ([`Taken`]), and the upload hand-off: [`ClassifyJob`] in, its result
//! record or a [`ClassifyError`] back on the job's channel.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::core::frame::Frame;
use crate::core::result::ResultRecord;
use crate::inference::InferenceError;
use crate::store::StoreError;

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
    frame: Option<Frame>,
    jobs: std::collections::VecDeque<ClassifyJob>,
    closed: bool,
}

/// Called after an upload is queued, for a consumer that waits elsewhere.
type JobWaker = Box<dyn Fn() + Send + Sync>;

/// A bounded (one frame) latest-frame-wins hand-off between two threads.
#[derive(Default)]
pub struct FrameSlot {
    state: Mutex<SlotState>,
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
}
