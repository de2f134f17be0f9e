//! The latest frame of each source, for viewers of the web page (issue 20),
//! and the focus figure last measured on it. The inference thread hands
//! each camera frame here when it is done with it (inferred, skipped as
//! static, gated, or failed): the frame is moved, not copied, so keeping it
//! costs a reference count and one short lock per frame whether or not
//! anyone watches. The API encodes it (and measures its focus) only when a
//! viewer asks, and writes the figure back for status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::core::frame::Frame;

/// One source's latest frame and focus figure.
#[derive(Debug)]
pub struct LatestFrame {
    frame: Mutex<Option<Arc<Frame>>>,
    /// The focus figure (f64 bits; NaN: none measured yet).
    focus: AtomicU64,
    /// The sequence number of the frame it was measured on.
    focus_seq: AtomicU64,
}

impl Default for LatestFrame {
    fn default() -> Self {
        LatestFrame {
            frame: Mutex::new(None),
            focus: AtomicU64::new(f64::NAN.to_bits()),
            focus_seq: AtomicU64::new(0),
        }
    }
}

/// A source's focus figure as status shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FocusSourceSnapshot {
    pub source: String,
    /// Variance of the Laplacian of the frame's small luma image (higher is
    /// sharper); `null` until a viewer fetched a frame.
    pub focus: Option<f64>,
    /// The frame it was measured on.
    pub frame_seq: Option<u64>,
}

/// The `focus` object of the status document.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FocusSnapshot {
    pub sources: Vec<FocusSourceSnapshot>,
}

impl LatestFrame {
    /// Keep `frame` as the latest (the one it replaces is freed after the
    /// lock is released).
    pub fn publish(&self, frame: Frame) {
        let new = Some(Arc::new(frame));
        let old = std::mem::replace(
            &mut *self.frame.lock().unwrap_or_else(|p| p.into_inner()),
            new,
        );
        drop(old);
    }

    /// The latest frame, if the source delivered one.
    pub fn get(&self) -> Option<Arc<Frame>> {
        self.frame.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Record the focus figure measured on frame `seq`.
    pub fn set_focus(&self, seq: u64, focus: f64) {
        self.focus_seq.store(seq, Ordering::Relaxed);
        self.focus.store(focus.to_bits(), Ordering::Relaxed);
    }

    /// The last focus figure and the frame it was measured on.
    pub fn focus(&self) -> Option<(u64, f64)> {
        let f = f64::from_bits(self.focus.load(Ordering::Relaxed));
        (!f.is_nan()).then(|| (self.focus_seq.load(Ordering::Relaxed), f))
    }
}

impl super::AppState {
    /// Hand a frame of the source `name` to its viewers (a source not
    /// registered, as in benchmarks, keeps none).
    pub(crate) fn publish_frame(&self, name: &str, frame: Frame) {
        let all = self.sources.read().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all.iter().find(|s| s.name == name) {
            s.latest.publish(frame);
        }
    }

    /// The status document's `focus` object.
    pub(crate) fn focus_snapshot(&self) -> FocusSnapshot {
        FocusSnapshot {
            sources: self
                .source_stats()
                .iter()
                .map(|s| {
                    let f = s.latest.focus();
                    FocusSourceSnapshot {
                        source: s.name.clone(),
                        focus: f.map(|f| f.1),
                        frame_seq: f.map(|f| f.0),
                    }
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a published frame copied (a new allocation per frame on the
    // hot path) or a stale one kept, and frames of an unknown source kept
    // anywhere.
    #[test]
    fn the_latest_frame_is_moved_in_and_replaced() {
        let s = super::super::AppState::new();
        let cam = s.register_source("cam");
        assert!(cam.latest.get().is_none());
        let f = Frame::encoded(vec![1, 2, 3], 7, "x".into());
        let ptr = f.data.as_ptr();
        s.publish_frame("cam", f);
        let got = cam.latest.get().unwrap();
        assert_eq!((got.seq, got.data.as_ptr()), (7, ptr));
        s.publish_frame("cam", Frame::encoded(vec![4], 8, "x".into()));
        assert_eq!(cam.latest.get().unwrap().seq, 8);
        s.publish_frame("other", Frame::encoded(vec![5], 9, "x".into()));
        assert_eq!(cam.latest.get().unwrap().seq, 8);
        assert_eq!(cam.latest.focus(), None);
        cam.latest.set_focus(8, 12.5);
        assert_eq!(cam.latest.focus(), Some((8, 12.5)));
        assert_eq!(s.focus_snapshot().sources[0].focus, Some(12.5));
    }
}
