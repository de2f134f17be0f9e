//! Motion gating figures (issue 18): whether gating is on for the active
//! model, and per source the last motion fraction, a moving-frame ratio and
//! the frames skipped as static. The prepare thread writes them; status and
//! `/metrics` read them. The global `frames_static` counter is in
//! [`super::Counters`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

/// Weight of the newest frame in the moving-frame ratio: it follows about
/// the last 50 measured frames (a few seconds of a camera).
const RATIO_NEW: f64 = 1.0 / 50.0;

/// Whether motion gating is on (the active model and `[motion]` decide; the
/// prepare thread sets it when it picks up a model).
#[derive(Debug, Default)]
pub struct MotionStatus {
    pub active: AtomicBool,
}

/// One source's motion figures.
#[derive(Debug, Default)]
pub struct MotionStats {
    /// Frames of this source not inferred because the scene was static.
    pub frames_static: AtomicU64,
    /// Frames of this source measured.
    pub frames_measured: AtomicU64,
    /// The last frame's changed fraction (f64 bits).
    fraction: AtomicU64,
    /// Moving average of "the frame was moving" (f64 bits, 0.0–1.0).
    moving_ratio: AtomicU64,
}

/// A source's figures as status shows them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MotionSourceSnapshot {
    pub source: String,
    /// Fraction of the last measured frame's pixels that changed.
    pub fraction: f64,
    /// Share of the recent frames (about the last 50) that were moving.
    pub moving_ratio: f64,
    pub frames_measured: u64,
    pub frames_static: u64,
}

/// The `motion` object of the status document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MotionSnapshot {
    pub active: bool,
    pub sources: Vec<MotionSourceSnapshot>,
}

impl MotionStats {
    /// Record a measured frame. Only its own prepare thread writes a
    /// source's figures, so the read-modify-write needs no lock.
    pub(crate) fn measured(&self, fraction: f64, moving: bool) {
        let n = self.frames_measured.fetch_add(1, Ordering::Relaxed);
        self.fraction.store(fraction.to_bits(), Ordering::Relaxed);
        let sample = if moving { 1.0 } else { 0.0 };
        let ratio = if n == 0 {
            sample
        } else {
            let old = f64::from_bits(self.moving_ratio.load(Ordering::Relaxed));
            old + (sample - old) * RATIO_NEW
        };
        self.moving_ratio.store(ratio.to_bits(), Ordering::Relaxed);
    }

    pub(crate) fn fraction(&self) -> f64 {
        f64::from_bits(self.fraction.load(Ordering::Relaxed))
    }

    pub(crate) fn moving_ratio(&self) -> f64 {
        f64::from_bits(self.moving_ratio.load(Ordering::Relaxed))
    }
}

impl super::AppState {
    /// The status document's `motion` object.
    pub(crate) fn motion_snapshot(&self) -> MotionSnapshot {
        MotionSnapshot {
            active: self.motion.active.load(Ordering::Relaxed),
            sources: self
                .source_stats()
                .iter()
                .map(|s| MotionSourceSnapshot {
                    source: s.name.clone(),
                    fraction: s.motion.fraction(),
                    moving_ratio: s.motion.moving_ratio(),
                    frames_measured: s.motion.frames_measured.load(Ordering::Relaxed),
                    frames_static: s.motion.frames_static.load(Ordering::Relaxed),
                })
                .collect(),
        }
    }

    /// Set whether gating is on; a change shows in the next status.
    pub(crate) fn set_motion_active(&self, on: bool) {
        if self.motion.active.swap(on, Ordering::Relaxed) != on {
            self.changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch the moving ratio not following the frames (stuck at its
    // first value, or counting static frames as moving).
    #[test]
    fn ratio_follows_the_recent_frames() {
        let m = MotionStats::default();
        m.measured(0.2, true);
        assert_eq!(m.moving_ratio(), 1.0);
        for _ in 0..300 {
            m.measured(0.0, false);
        }
        assert!(m.moving_ratio() < 0.01, "{}", m.moving_ratio());
        assert_eq!(m.fraction(), 0.0);
        for _ in 0..300 {
            m.measured(0.1, true);
        }
        assert!(m.moving_ratio() > 0.99);
        assert_eq!(m.frames_measured.load(Ordering::Relaxed), 601);
    }
}
