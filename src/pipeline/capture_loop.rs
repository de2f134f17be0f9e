//! The capture thread: it owns [`capture_loop`] (open the source, retry with
//! [`Backoff`] while it is missing, stream frames into the slot, reopen after
//! errors), the sleeps that keep the thread stoppable and its heartbeat
//! fresh while it waits on purpose, and the source check of readiness
//! ([`SourceReadiness`]).
//!
//! Each source has its own capture thread, its own lane of the slot and its
//! own [`SourceReadiness`] (which knows its name, lane, figures and stall
//! timeout); its log events carry `spotter_source_name`.
//!
//! Each source's check has one writer, its [`SourceReadiness`]: the capture loop
//! reports what it sees (source missing, streaming, lost, finished), and the
//! supervisor asks it, on its tick, to report a stall. The stall is the one
//! thing the capture thread cannot report itself: it happens while the
//! thread is blocked in the source's `next_frame`, so the request runs on the
//! supervisor's thread, but through this type, which keeps whether the check
//! shows a stall as a flag (no message is parsed) and clears it with the next
//! frame ("frames flowing again") or the capture thread's next report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::FrameSlot;
use crate::capture::{CaptureError, FrameSource};
use crate::core::ids;
use crate::core::shutdown::Shutdown;
use crate::state::{AppState, Check, Counters, SourceStats};

/// Exponential backoff between retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }
    /// The delay to wait now; doubles the next one up to the maximum.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Sleep up to `d`, returning early (true) when shutdown starts, recording
/// capture-thread progress while it waits: waiting on purpose (backoff, a
/// finished replay) is not a hang.
fn sleep_with_beats(stop: &Shutdown, state: &AppState, src: &SourceStats, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    loop {
        beat(state, src);
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return stop.is_triggered();
        }
        if stop.sleep(left.min(Duration::from_millis(250))) {
            return true;
        }
    }
}

/// Record capture progress: the source's own beat (the watchdog looks at
/// the oldest) and the daemon's.
fn beat(state: &AppState, src: &SourceStats) {
    state.beat(&src.beat_ms);
    state.beat(&state.capture_beat_ms);
}

/// The writer of one source's readiness check (and so of
/// `readiness.source`). See the module documentation.
#[derive(Debug)]
pub struct SourceReadiness {
    /// Whether the check shows a stall. Read and changed only inside
    /// `update_readiness`, under the readiness lock, with the check itself.
    stalled: AtomicBool,
    /// The source's figures (its name among them).
    stats: Arc<SourceStats>,
    /// Its lane in the frame slot.
    lane: usize,
    /// No frame for this long is a stall.
    stall: Duration,
}

impl SourceReadiness {
    /// Register the source `name` (lane `lane` of the slot, stalled after
    /// `stall` without a frame) with `state`.
    pub fn new(state: &AppState, name: &str, lane: usize, stall: Duration) -> SourceReadiness {
        SourceReadiness {
            stalled: AtomicBool::new(false),
            stats: state.register_source(name),
            lane,
            stall,
        }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.stats.name
    }

    /// The capture thread's report: replaces whatever the check said, a
    /// stall included.
    fn report(&self, state: &AppState, check: Check) {
        state.update_readiness(|r| {
            self.stalled.store(false, Ordering::Relaxed);
            r.set_source_check(&self.stats.name, check);
        });
    }

    /// A frame arrived (after `last_frame` was updated): a stall is over.
    fn frame_arrived(&self, state: &AppState) {
        if !self.stalled.load(Ordering::Relaxed) {
            return;
        }
        state.update_readiness(|r| {
            if self.stalled.swap(false, Ordering::Relaxed) {
                r.set_source_check(&self.stats.name, Check::passing("frames flowing again"));
            }
        });
    }

    /// The supervisor's request, with the source's own stall timeout.
    pub(crate) fn check(&self, state: &AppState) {
        self.check_stall(state, self.stall);
    }

    /// The supervisor's request: fail a passing check when the source has
    /// delivered frames but none for longer than `stall`.
    pub(crate) fn check_stall(&self, state: &AppState, stall: Duration) {
        let name = self.stats.name.as_str();
        let mut newly = None;
        state.update_readiness(|r| {
            // Read under the readiness lock: a frame that arrives meanwhile
            // either counts here or clears the stall right after.
            let last = *self
                .stats
                .last_frame
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let Some(age) = last.map(|t| t.elapsed()) else {
                return;
            };
            let ok = r.source_check(name).is_some_and(|c| c.ok);
            if ok && age > stall {
                let detail = format!("stalled: no frame for {:.1} s", age.as_secs_f64());
                r.set_source_check(name, Check::failing(detail.clone()));
                self.stalled.store(true, Ordering::Relaxed);
                newly = Some(detail);
            }
        });
        if let Some(detail) = newly {
            log::warn!(message_id = ids::SOURCE_STALLED, spotter_source_name = name, spotter_error_kind = "source_stalled"; "source {name} {detail}");
        }
    }
}

/// Opens a source; called again after every failure.
pub type SourceOpener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, CaptureError> + Send>;

/// The capture thread's body: open the source (retrying with backoff while it
/// is missing), stream frames into the slot, and reopen after errors. The
/// daemon stays up meanwhile; readiness (through `readiness`) carries the
/// reason.
pub fn capture_loop(
    mut open: SourceOpener,
    slot: Arc<FrameSlot>,
    state: Arc<AppState>,
    readiness: Arc<SourceReadiness>,
    stop: Shutdown,
    mut backoff: Backoff,
) {
    let src = readiness.stats.clone();
    let name = src.name.as_str();
    let capture_error = || {
        Counters::inc(&state.counters.capture_errors);
        Counters::inc(&src.capture_errors);
    };
    let mut last_error: Option<String> = None;
    while !stop.is_triggered() {
        beat(&state, &src);
        let mut source = match open() {
            Ok(s) => s,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    log::warn!(message_id = ids::SOURCE_UNAVAILABLE, spotter_source_name = name, spotter_error_kind = "source_open"; "source {name} unavailable, retrying with backoff: {msg}");
                    last_error = Some(msg.clone());
                }
                capture_error();
                readiness.report(&state, Check::failing(msg));
                if sleep_with_beats(&stop, &state, &src, backoff.next_delay()) {
                    break;
                }
                continue;
            }
        };
        let desc = source.describe();
        state.set_source_description(&src, desc.clone());
        let mut first = true;
        loop {
            if stop.is_triggered() {
                return;
            }
            let next = source.next_frame();
            beat(&state, &src);
            match next {
                Ok(frame) => {
                    let now = Some(Instant::now());
                    *src.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = now;
                    *state.last_frame.lock().unwrap_or_else(|e| e.into_inner()) = now;
                    if first {
                        if last_error.take().is_some() {
                            log::info!(message_id = ids::SOURCE_RECOVERED, spotter_source = desc.as_str(), spotter_source_name = name; "source {name} recovered: {desc}");
                        } else {
                            log::info!(spotter_source = desc.as_str(), spotter_source_name = name; "source {name} streaming: {desc}");
                        }
                        readiness.report(&state, Check::passing(format!("streaming from {desc}")));
                        backoff.reset();
                        first = false;
                    } else {
                        readiness.frame_arrived(&state);
                    }
                    Counters::inc(&state.counters.frames_captured);
                    Counters::inc(&src.frames_captured);
                    if slot.put_lane(readiness.lane, frame) {
                        Counters::inc(&state.counters.frames_dropped);
                        Counters::inc(&src.frames_dropped);
                    }
                }
                Err(CaptureError::Finished) => {
                    log::info!(spotter_source = desc.as_str(), spotter_source_name = name; "source {name} finished its single pass");
                    let finished = format!("{desc}: finished (loop = false)");
                    readiness.report(&state, Check::failing(finished));
                    while !sleep_with_beats(&stop, &state, &src, Duration::from_secs(3600)) {}
                    return;
                }
                // A source that gave up waiting because shutdown started:
                // not a loss; returning drops (stops) it.
                Err(_) if stop.is_triggered() => return,
                Err(e @ CaptureError::File { .. }) => {
                    // One unreadable file in a replay folder: count it, go on.
                    capture_error();
                    log::warn!(spotter_source = desc.as_str(), spotter_source_name = name; "source {name}: skipping frame: {e}");
                }
                Err(e) => {
                    let msg = e.to_string();
                    log::warn!(message_id = ids::SOURCE_LOST, spotter_source = desc.as_str(), spotter_source_name = name, spotter_error_kind = "source_lost"; "source {name} lost: {msg}");
                    capture_error();
                    readiness.report(&state, Check::failing(msg.clone()));
                    last_error = Some(msg);
                    drop(source);
                    if sleep_with_beats(&stop, &state, &src, backoff.next_delay()) {
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

    /// A source that blocks in `next_frame` until the test feeds it a frame,
    /// and finishes when the test drops its sender.
    struct Fed(std::sync::mpsc::Receiver<Frame>);
    impl FrameSource for Fed {
        fn describe(&self) -> String {
            "fed".into()
        }
        fn next_frame(&mut self) -> Result<Frame, CaptureError> {
            self.0.recv().map_err(|_| CaptureError::Finished)
        }
    }

    fn missing() -> CaptureError {
        CaptureError::DeviceMissing {
            device: "/dev/video9".into(),
        }
    }

    /// A capture thread over `open`, retrying after 10 ms up to `max_backoff_ms`.
    struct Running {
        state: Arc<AppState>,
        slot: Arc<FrameSlot>,
        readiness: Arc<SourceReadiness>,
        stop: Shutdown,
        thread: std::thread::JoinHandle<()>,
    }

    impl Running {
        fn start(open: SourceOpener, max_backoff_ms: u64) -> Running {
            let state = Arc::new(AppState::new());
            let slot = Arc::new(FrameSlot::new());
            let readiness = Arc::new(SourceReadiness::new(
                &state,
                "default",
                0,
                Duration::from_secs(60),
            ));
            let stop = Shutdown::new();
            let backoff = Backoff::new(
                Duration::from_millis(10),
                Duration::from_millis(max_backoff_ms),
            );
            let thread = std::thread::spawn({
                let (st, sl, rd, sp) =
                    (state.clone(), slot.clone(), readiness.clone(), stop.clone());
                move || capture_loop(open, sl, st, rd, sp, backoff)
            });
            Running {
                state,
                slot,
                readiness,
                stop,
                thread,
            }
        }

        /// The source check once `done` holds for it (or after 10 s).
        fn source_when(&self, done: impl Fn(&Check) -> bool) -> Check {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done(&self.state.readiness().source) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            self.state.readiness().source
        }

        fn stop(self) {
            self.stop.trigger();
            self.thread.join().unwrap();
        }
    }

    // Would catch a missing camera killing the capture thread instead of
    // leaving the daemon up, not ready, and retrying until it appears.
    #[test]
    fn capture_retries_missing_source_then_streams() {
        let attempts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let a2 = attempts.clone();
        let opener: SourceOpener = Box::new(move || {
            if a2.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(missing())
            } else {
                Ok(Box::new(Scripted(vec![Ok(frame(0)), Ok(frame(1))])) as Box<dyn FrameSource>)
            }
        });
        let run = Running::start(opener, 20);
        let got = run.slot.take(Duration::from_secs(10));
        assert!(matches!(got, Taken::Frame(..)), "{got:?}");
        assert!(attempts.load(Ordering::SeqCst) >= 3);
        // Once the scripted source finishes, the source check fails with the reason.
        let source = run.source_when(|c| !c.ok);
        assert!(source.detail.contains("finished"), "{source:?}");
        assert!(run.state.counters.capture_errors.load(Ordering::Relaxed) >= 2);
        run.stop();
    }

    // Would catch a missing source leaving the readiness reason empty or stale.
    #[test]
    fn missing_source_is_reported_in_readiness() {
        let run = Running::start(Box::new(|| Err(missing())), 10);
        let source = run.source_when(|c| c.detail.contains("/dev/video9"));
        assert!(!source.ok);
        assert!(source.detail.contains("/dev/video9"), "{source:?}");
        run.stop();
    }

    // Would catch a stall going unreported while the capture thread is
    // blocked in the source (only the supervisor's request can report it), a
    // stall reported before any frame or while frames are recent, and a
    // stall that stays after frames come back.
    #[test]
    fn stall_is_reported_on_request_and_cleared_by_the_next_frame() {
        let (feed, fed) = std::sync::mpsc::channel();
        let mut fed = Some(fed);
        let opener: SourceOpener = Box::new(move || match fed.take() {
            Some(rx) => Ok(Box::new(Fed(rx)) as Box<dyn FrameSource>),
            None => Err(missing()),
        });
        let run = Running::start(opener, 10);
        let stall = Duration::from_millis(30);
        // No frame yet: nothing to call a stall.
        std::thread::sleep(stall * 2);
        run.readiness.check_stall(&run.state, stall);
        assert_eq!(
            run.state.readiness().source.detail,
            "starting: no frame yet"
        );

        feed.send(frame(0)).unwrap();
        let source = run.source_when(|c| c.ok);
        assert_eq!(source.detail, "streaming from fed");
        run.readiness
            .check_stall(&run.state, Duration::from_secs(60));
        assert!(
            run.state.readiness().source.ok,
            "a recent frame is no stall"
        );

        // The capture thread now waits in next_frame; the supervisor asks.
        std::thread::sleep(stall * 2);
        run.readiness.check_stall(&run.state, stall);
        let source = run.state.readiness().source;
        assert!(!source.ok);
        assert!(
            source.detail.starts_with("stalled: no frame for "),
            "{source:?}"
        );

        feed.send(frame(1)).unwrap();
        let source = run.source_when(|c| c.ok);
        assert_eq!(source.detail, "frames flowing again");

        // The source ends: the capture thread's report replaces the check.
        drop(feed);
        let source = run.source_when(|c| !c.ok);
        assert_eq!(source.detail, "fed: finished (loop = false)");
        run.stop();
    }

    /// The defaults a 15 fps camera gets from the configuration.
    fn camera_defaults() -> crate::config::SourceSettings {
        let s = crate::config::from_sources(vec![(
            std::path::PathBuf::from("/etc/spotter/spotter.toml"),
            "[source]\nfps = 15.0\n".into(),
        )])
        .unwrap();
        s.source
    }

    // Would catch a stall threshold that is not the source's own (a fixed
    // 5 s), a stall reported before the threshold, or one missed after it;
    // and a default that cannot be seen within 1 s at 15 fps with the
    // supervisor's 250 ms tick.
    #[test]
    fn stall_is_detected_at_the_sources_threshold() {
        let cam = camera_defaults();
        let stall = cam.stall_timeout();
        assert!(
            stall + Duration::from_millis(250) < Duration::from_secs(1),
            "{stall:?}"
        );
        let (feed, fed) = std::sync::mpsc::channel();
        let mut fed = Some(fed);
        let opener: SourceOpener = Box::new(move || match fed.take() {
            Some(rx) => Ok(Box::new(Fed(rx)) as Box<dyn FrameSource>),
            None => Err(missing()),
        });
        let state = Arc::new(AppState::new());
        let slot = Arc::new(FrameSlot::with_sources(&["cam"]));
        let readiness = Arc::new(SourceReadiness::new(&state, "cam", 0, stall));
        let stop = Shutdown::new();
        let thread = std::thread::spawn({
            let (st, sl, rd, sp) = (state.clone(), slot.clone(), readiness.clone(), stop.clone());
            let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(10));
            move || capture_loop(opener, sl, st, rd, sp, b)
        });
        let cam_ok = |state: &AppState| state.readiness().source_check("cam").unwrap().ok;
        feed.send(frame(0)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cam_ok(&state) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Right after a frame: well under the threshold, no stall.
        readiness.check(&state);
        assert!(cam_ok(&state));
        // Past the threshold without a frame: stalled, by name.
        std::thread::sleep(stall + Duration::from_millis(50));
        readiness.check(&state);
        let r = state.readiness();
        let check = r.source_check("cam").unwrap();
        assert!(!check.ok && check.detail.starts_with("stalled"), "{r:?}");
        assert!(!r.source.ok, "the only source stalled: {r:?}");
        // Frames again: the check passes at once.
        feed.send(frame(1)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cam_ok(&state) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(cam_ok(&state));
        stop.trigger();
        drop(feed);
        thread.join().unwrap();
    }

    /// A camera that streams until `present` is cleared (then its read
    /// fails, as an unplugged V4L2 device does) and cannot be opened until
    /// it is set again.
    struct Pluggable(Arc<AtomicBool>, u64);
    impl FrameSource for Pluggable {
        fn describe(&self) -> String {
            "pluggable".into()
        }
        fn next_frame(&mut self) -> Result<Frame, CaptureError> {
            std::thread::sleep(Duration::from_millis(5));
            if !self.0.load(Ordering::SeqCst) {
                return Err(CaptureError::DeviceMissing {
                    device: "/dev/video7".into(),
                });
            }
            self.1 += 1;
            Ok(frame(self.1))
        }
    }

    // Would catch a camera that comes back staying lost for long (the old
    // 30 s backoff cap): with the default reopen settings, a camera gone
    // for a few seconds streams again within 2 s of coming back.
    #[test]
    fn lost_camera_resumes_within_two_seconds_of_coming_back() {
        let cam = camera_defaults();
        let present = Arc::new(AtomicBool::new(true));
        let p2 = present.clone();
        let opener: SourceOpener = Box::new(move || {
            if p2.load(Ordering::SeqCst) {
                Ok(Box::new(Pluggable(p2.clone(), 0)) as Box<dyn FrameSource>)
            } else {
                Err(missing())
            }
        });
        let state = Arc::new(AppState::new());
        let slot = Arc::new(FrameSlot::with_sources(&["cam"]));
        let readiness = Arc::new(SourceReadiness::new(&state, "cam", 0, cam.stall_timeout()));
        let stop = Shutdown::new();
        let backoff = Backoff::new(
            Duration::from_millis(cam.retry_initial_ms),
            Duration::from_millis(cam.retry_max_ms),
        );
        let thread = std::thread::spawn({
            let (st, sl, rd, sp) = (state.clone(), slot.clone(), readiness.clone(), stop.clone());
            move || capture_loop(opener, sl, st, rd, sp, backoff)
        });
        let wait = |ok: bool, within: Duration| {
            let deadline = Instant::now() + within;
            while state.readiness().source_check("cam").unwrap().ok != ok {
                assert!(Instant::now() < deadline, "cam ok != {ok} after {within:?}");
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        wait(true, Duration::from_secs(10));
        present.store(false, Ordering::SeqCst);
        wait(false, Duration::from_secs(10));
        // Gone long enough for the backoff to reach its cap.
        std::thread::sleep(Duration::from_secs(3));
        present.store(true, Ordering::SeqCst);
        let back = Instant::now();
        wait(true, Duration::from_secs(2));
        eprintln!(
            "camera streaming again {:?} after it came back",
            back.elapsed()
        );
        stop.trigger();
        thread.join().unwrap();
    }
}
