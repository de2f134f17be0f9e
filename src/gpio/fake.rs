//! An in-process GPIO board for tests: they push edges onto input lines and
//! read back every level an output line was driven to, with its time.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{EdgeEvent, Gpio, GpioError, InputConfig, InputLine, LineId, OutputLine};

#[derive(Debug, Default)]
struct Board {
    /// Edges queued per input line (bounded like the kernel's event buffer).
    edges: HashMap<LineId, VecDeque<EdgeEvent>>,
    levels: HashMap<LineId, bool>,
    /// Every level each output was driven to, with when.
    history: HashMap<LineId, Vec<(Instant, bool)>>,
    requested: Vec<LineId>,
    /// Lines whose request fails, with the errno it fails with.
    failing: HashMap<LineId, i32>,
}

/// Edges a fake input line holds before the oldest are lost (as the kernel's
/// line event buffer would).
pub(crate) const FAKE_EDGE_BUFFER: usize = 64;

/// The test's handle on the fake board; clone it into [`FakeGpio::new`].
#[derive(Debug, Clone, Default)]
pub(crate) struct FakeBoard {
    inner: Arc<(Mutex<Board>, Condvar)>,
}

impl FakeBoard {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        // Tests only: a panic elsewhere leaves the maps usable.
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An edge on `line` at `at` (the level follows it).
    pub(crate) fn edge(&self, line: &LineId, rising: bool, at: Instant) {
        let mut b = self.lock();
        b.levels.insert(line.clone(), rising);
        let q = b.edges.entry(line.clone()).or_default();
        if q.len() == FAKE_EDGE_BUFFER {
            q.pop_front();
        }
        q.push_back(EdgeEvent { rising, at });
        drop(b);
        self.inner.1.notify_all();
    }

    /// Set a level without an edge (the state before the daemon started).
    pub(crate) fn set_level(&self, line: &LineId, high: bool) {
        self.lock().levels.insert(line.clone(), high);
    }

    /// The levels `line` was driven to, oldest first.
    pub(crate) fn history(&self, line: &LineId) -> Vec<(Instant, bool)> {
        self.lock().history.get(line).cloned().unwrap_or_default()
    }

    /// The level `line` is at now (outputs: last driven; inputs: last edge).
    pub(crate) fn level(&self, line: &LineId) -> Option<bool> {
        self.lock().levels.get(line).copied()
    }

    /// Make requests of `line` fail with this errno.
    pub(crate) fn fail_requests(&self, line: &LineId, errno: i32) {
        self.lock().failing.insert(line.clone(), errno);
    }
}

/// The [`Gpio`] view of a [`FakeBoard`].
#[derive(Debug, Clone)]
pub(crate) struct FakeGpio {
    board: FakeBoard,
}

impl FakeGpio {
    pub(crate) fn new(board: FakeBoard) -> Self {
        FakeGpio { board }
    }

    fn request(&self, line: &LineId) -> Result<(), GpioError> {
        let mut b = self.board.lock();
        if let Some(errno) = b.failing.get(line) {
            return Err(GpioError::from_os(
                line,
                "/dev/fake",
                *errno,
                "refused".into(),
            ));
        }
        if b.requested.contains(line) {
            return Err(GpioError::Busy {
                line: line.to_string(),
            });
        }
        b.requested.push(line.clone());
        Ok(())
    }
}

impl Gpio for FakeGpio {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn input(&mut self, cfg: &InputConfig) -> Result<Box<dyn InputLine>, GpioError> {
        self.request(&cfg.line)?;
        Ok(Box::new(FakeInput {
            board: self.board.clone(),
            line: cfg.line.clone(),
        }))
    }

    fn output(
        &mut self,
        line: &LineId,
        initial_high: bool,
    ) -> Result<Box<dyn OutputLine>, GpioError> {
        self.request(line)?;
        let mut out = FakeOutput {
            board: self.board.clone(),
            line: line.clone(),
        };
        out.set_high(initial_high)?;
        Ok(Box::new(out))
    }
}

struct FakeInput {
    board: FakeBoard,
    line: LineId,
}

impl InputLine for FakeInput {
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<EdgeEvent>, GpioError> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.board.inner;
        let mut b = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(ev) = b.edges.get_mut(&self.line).and_then(|q| q.pop_front()) {
                return Ok(Some(ev));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            b = cv
                .wait_timeout(b, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn is_high(&mut self) -> Result<bool, GpioError> {
        Ok(self.board.level(&self.line).unwrap_or(false))
    }
}

struct FakeOutput {
    board: FakeBoard,
    line: LineId,
}

impl OutputLine for FakeOutput {
    fn set_high(&mut self, high: bool) -> Result<(), GpioError> {
        let mut b = self.board.lock();
        b.levels.insert(self.line.clone(), high);
        b.history
            .entry(self.line.clone())
            .or_default()
            .push((Instant::now(), high));
        Ok(())
    }
}
