//! GPIO counters and latency figures: written by the GPIO threads and the
//! inference thread's hooks, read by `/api/v1/status` and `/metrics`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use serde::Serialize;

/// Latency samples kept for the status figures.
const LATENCY_SAMPLES: usize = 256;

#[derive(Debug, Default)]
pub(crate) struct Samples(VecDeque<u64>);

impl Samples {
    pub(crate) fn push(&mut self, us: u64) {
        if self.0.len() == LATENCY_SAMPLES {
            self.0.pop_front();
        }
        self.0.push_back(us);
    }

    fn figure(&self) -> LatencyFigure {
        let mut sorted: Vec<u64> = self.0.iter().copied().collect();
        sorted.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        LatencyFigure {
            last_ms: self.0.back().copied().map(ms),
            median_ms: (!sorted.is_empty()).then(|| ms(sorted[sorted.len() / 2])),
            samples: sorted.len(),
        }
    }
}

/// Last and median of the recent latency samples, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencyFigure {
    pub last_ms: Option<f64>,
    pub median_ms: Option<f64>,
    /// How many recent samples the median is over (at most 256).
    pub samples: usize,
}

/// GPIO counters and latency figures, for `/api/v1/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct GpioStatus {
    pub enabled: AtomicBool,
    pub backend: RwLock<String>,
    pub mode: RwLock<String>,
    /// Edges that started a burst or changed the gate.
    pub triggers: AtomicU64,
    /// Triggers that arrived while a burst was running (dropped, not queued).
    pub triggers_busy: AtomicU64,
    /// Edges refused as contact bounce.
    pub triggers_bounce: AtomicU64,
    /// Frames the trigger gate dropped without inference.
    pub frames_gated: AtomicU64,
    /// Times a rule switched an output on.
    pub outputs_switched: AtomicU64,
    pub errors: AtomicU64,
    pub last_error: RwLock<Option<String>>,
    pub(crate) to_stored: Mutex<Samples>,
    pub(crate) to_output: Mutex<Samples>,
}

/// A point-in-time view of [`GpioStatus`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpioSnapshot {
    pub enabled: bool,
    pub backend: String,
    pub mode: String,
    pub triggers: u64,
    pub triggers_busy: u64,
    pub triggers_bounce: u64,
    pub frames_gated: u64,
    pub outputs_switched: u64,
    pub errors: u64,
    pub last_error: Option<String>,
    pub trigger_to_stored: LatencyFigure,
    pub trigger_to_output: LatencyFigure,
}

impl GpioStatus {
    pub(crate) fn snapshot(&self) -> GpioSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let read = |l: &RwLock<String>| l.read().unwrap_or_else(|e| e.into_inner()).clone();
        GpioSnapshot {
            enabled: self.enabled.load(Ordering::Relaxed),
            backend: read(&self.backend),
            mode: read(&self.mode),
            triggers: g(&self.triggers),
            triggers_busy: g(&self.triggers_busy),
            triggers_bounce: g(&self.triggers_bounce),
            frames_gated: g(&self.frames_gated),
            outputs_switched: g(&self.outputs_switched),
            errors: g(&self.errors),
            last_error: self
                .last_error
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            trigger_to_stored: self
                .to_stored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .figure(),
            trigger_to_output: self
                .to_output
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .figure(),
        }
    }
}
