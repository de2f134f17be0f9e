//! The capture thread: it owns [`capture_loop`] (open the source, retry with
//! [`Backoff`] while it is missing, stream frames into the slot, reopen after
//! errors) and the sleeps that keep the thread stoppable and its heartbeat
//! fresh while it waits on purpose.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::FrameSlot;
use crate::capture::{CaptureError, FrameSource};
use crate::core::ids;
use crate::state::{AppState, Check, Counters};

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
fn sleep_unless_stopped(stop: &AtomicBool, d: Duration) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::Frame;
    use crate::pipeline::{test_frame as frame, Taken};

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
