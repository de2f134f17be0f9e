//! Motion detection on a small luma image, for gating inference.
//!
//! The caller hands in each frame as a small greyscale image (a JPEG decoded
//! at 1/8 scale, a YUV frame's luma subsampled); the detector compares it
//! with a running background and says whether enough of the scene changed.
//! What it tolerates, by construction:
//! - **global lighting changes** (a cloud, auto-exposure): the mean
//!   difference between frame and background is taken off every pixel before
//!   thresholding, so a uniform brightening moves nothing;
//! - **slow changes** (the sun across a room): the background follows each
//!   frame with weight `1/adapt_frames`;
//! - **sensor noise**: a pixel counts as changed only beyond
//!   `pixel_threshold` levels, and the frame as moving only when more than
//!   `min_area` of its pixels changed.
//!
//! The decision to skip a frame (static scene, no open sighting, not yet
//! `max_idle_s` since the last inference) is the pipeline's; this module owns
//! the measurement and [`Gate`], the rule itself, as pure functions.

/// Tuning of the detector; the defaults suit a 1/8-scale image of a camera
/// frame (80×60 for 640×480).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionSettings {
    /// Levels (0–255) a pixel must differ from the background, after the
    /// global brightness change is removed.
    pub pixel_threshold: u8,
    /// Fraction of the pixels that must change for the frame to be moving.
    pub min_area: f64,
    /// The background moves 1/`adapt_frames` of the way to each frame.
    pub adapt_frames: u32,
}

impl Default for MotionSettings {
    fn default() -> MotionSettings {
        MotionSettings {
            pixel_threshold: 20,
            min_area: 0.005,
            adapt_frames: 20,
        }
    }
}

/// What the detector measured for one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    /// Fraction of the pixels that changed.
    pub fraction: f64,
    /// `fraction` above `min_area` (or the first frame, or a size change).
    pub moving: bool,
}

/// A running background and the settings it is compared with.
#[derive(Debug, Clone)]
pub struct MotionDetector {
    settings: MotionSettings,
    size: (u32, u32),
    /// Background in 1/256 levels (fixed point), one per pixel.
    background: Vec<u32>,
}

impl MotionDetector {
    pub fn new(settings: MotionSettings) -> MotionDetector {
        MotionDetector {
            settings,
            size: (0, 0),
            background: Vec::new(),
        }
    }

    /// Compare the `w`×`h` luma image `luma` (rows of `w` bytes) with the
    /// background, then update the background. The first frame, and a
    /// frame of another size, count as moving and start a new background.
    pub fn feed(&mut self, luma: &[u8], w: u32, h: u32) -> Motion {
        let n = (w as usize * h as usize).min(luma.len());
        let luma = &luma[..n];
        if (w, h) != self.size || self.background.len() != n || n == 0 {
            self.size = (w, h);
            self.background = luma.iter().map(|&p| u32::from(p) << 8).collect();
            return Motion {
                fraction: 1.0,
                moving: true,
            };
        }
        // The mean difference, in 1/256 levels: the global lighting change.
        let sum: i64 = luma
            .iter()
            .zip(&self.background)
            .map(|(&p, &b)| (i64::from(p) << 8) - i64::from(b))
            .sum();
        let shift = sum / n as i64;
        let threshold = i64::from(self.settings.pixel_threshold) << 8;
        let changed = luma
            .iter()
            .zip(&self.background)
            .filter(|(&p, &b)| ((i64::from(p) << 8) - i64::from(b) - shift).abs() > threshold)
            .count();
        let k = i64::from(self.settings.adapt_frames.max(1));
        for (b, &p) in self.background.iter_mut().zip(luma) {
            let target = i64::from(p) << 8;
            let cur = i64::from(*b);
            // Moves at least one step toward the frame, so it converges.
            let step = (target - cur) / k;
            let step = if step == 0 {
                (target - cur).signum()
            } else {
                step
            };
            *b = (cur + step).clamp(0, 255 << 8) as u32;
        }
        let fraction = changed as f64 / n as f64;
        Motion {
            fraction,
            moving: fraction > self.settings.min_area,
        }
    }
}

/// Whether a frame is inferred: always while it moves or a sighting of its
/// source is open, else once every `max_idle_ns` (slow changes the motion
/// detector adapts to are still looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gate {
    pub max_idle_ns: i64,
    last_inferred_ns: Option<i64>,
}

impl Gate {
    pub fn new(max_idle_s: u64) -> Gate {
        Gate {
            max_idle_ns: i64::try_from(max_idle_s)
                .unwrap_or(i64::MAX / 1_000_000_000)
                .saturating_mul(1_000_000_000),
            last_inferred_ns: None,
        }
    }

    /// Decide for a frame captured at `t_ns`; an inferred frame restarts the
    /// idle clock.
    pub fn infer(&mut self, t_ns: i64, moving: bool, sighting_open: bool) -> bool {
        let idle = self
            .last_inferred_ns
            .is_none_or(|last| t_ns.saturating_sub(last) >= self.max_idle_ns);
        let go = moving || sighting_open || idle;
        if go {
            self.last_inferred_ns = Some(t_ns);
        }
        go
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 80;
    const H: u32 = 60;

    /// A textured background with deterministic noise of ±`noise` levels.
    fn scene(seed: u64, noise: i32, brightness: i32) -> Vec<u8> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..W * H)
            .map(|i| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let n = ((s >> 33) % (2 * noise as u64 + 1)) as i32 - noise;
                let (x, y) = ((i % W) as i32, (i / W) as i32);
                (30 + x + y + n + brightness).clamp(0, 255) as u8
            })
            .collect()
    }

    /// The scene with a bright square of `side` pixels at (`x`, `y`).
    fn with_object(mut img: Vec<u8>, x: u32, y: u32, side: u32) -> Vec<u8> {
        for r in y..y + side {
            for c in x..x + side {
                img[(r * W + c) as usize] = 240;
            }
        }
        img
    }

    // Would catch a detector that calls camera noise motion (never gating)
    // or misses an object a tenth of the frame wide (never inferring it).
    #[test]
    fn noise_is_static_and_an_object_is_motion() {
        let mut d = MotionDetector::new(MotionSettings::default());
        assert!(d.feed(&scene(0, 4, 0), W, H).moving, "first frame");
        for i in 1..50 {
            let m = d.feed(&scene(i, 4, 0), W, H);
            assert!(!m.moving, "noise frame {i}: {m:?}");
        }
        let m = d.feed(&with_object(scene(99, 4, 0), 30, 20, 8), W, H);
        assert!(m.moving, "{m:?}");
        assert!(m.fraction > 0.01);
    }

    // Would catch a global lighting change (auto-exposure, a cloud) or a
    // slow drift being taken for motion: both stay static.
    #[test]
    fn lighting_changes_are_not_motion() {
        let mut d = MotionDetector::new(MotionSettings::default());
        d.feed(&scene(0, 3, 0), W, H);
        // A sudden +40 levels everywhere.
        assert!(!d.feed(&scene(1, 3, 40), W, H).moving);
        // A slow drift of one level per frame over 100 frames.
        for i in 0..100 {
            let m = d.feed(&scene(2 + i, 3, 40 - i as i32), W, H);
            assert!(!m.moving, "drift frame {i}: {m:?}");
        }
    }

    // Would catch a background that never adapts: an object that stays
    // (a parked car) stops being motion after a while.
    #[test]
    fn an_object_that_stays_becomes_background() {
        let mut d = MotionDetector::new(MotionSettings::default());
        d.feed(&scene(0, 2, 0), W, H);
        let parked = |i| with_object(scene(i, 2, 0), 10, 10, 12);
        assert!(d.feed(&parked(1), W, H).moving);
        let settled = (2..200).find(|&i| !d.feed(&parked(i), W, H).moving);
        assert!(settled.is_some(), "the background never took the object in");
        // A size change restarts the background and counts as motion.
        assert!(d.feed(&[0; 16], 4, 4).moving);
    }

    // Would catch the gate skipping frames while a sighting is open (a
    // sighting's frames and end would be lost) or never looking at a static
    // scene again.
    #[test]
    fn gate_infers_motion_open_sightings_and_idle_checks() {
        const S: i64 = 1_000_000_000;
        let mut g = Gate::new(10);
        assert!(g.infer(0, false, false), "first frame");
        assert!(!g.infer(S, false, false));
        assert!(g.infer(2 * S, true, false), "motion");
        assert!(g.infer(3 * S, false, true), "open sighting");
        assert!(!g.infer(12 * S, false, false), "9 s idle");
        assert!(g.infer(13 * S, false, false), "10 s idle");
        assert!(!g.infer(14 * S, false, false));
    }
}
