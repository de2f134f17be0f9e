//! Motion gating on the prepare thread (issue 18): it owns [`MotionGating`],
//! which decides for each camera frame, before any pre-processing, whether
//! it is inferred at all. Per source (lane) it keeps a
//! [`MotionDetector`] fed with the frame's small luma image
//! ([`crate::image::luma`]) and a [`Gate`]; a frame is skipped when its
//! scene is static, no sighting of its source is open
//! ([`AppState::sighting_open`]) and the source's last inferred frame is
//! less than `motion.max_idle_s` old. A skipped frame costs the luma image
//! (for a JPEG a 1/8-scale greyscale decode) and nothing else: no full
//! decode, no resize, no invoke. It is counted in `frames_static` (and the
//! source's own figure); every measured frame updates the source's motion
//! fraction and moving-frame ratio. While a sighting of the source is open
//! its frames are inferred without being measured (the measure would only
//! add to each invoke); when it closes, the source's background starts
//! again from the next frame (which is inferred).
//!
//! Gating is on when `MotionConfig::enabled_for(detector)` says so for the
//! active model, re-decided at every model the inference thread activates
//! (a swap from a classifier to a detector turns it on). Without a model,
//! or without `[motion]` settings (`spotter bench`, the pipeline's own
//! tests), every frame passes. Uploads never come here.
//!
//! The idle clock is monotonic (the frame's wall-clock time can jump).

use std::sync::Arc;
use std::time::Instant;

use super::SourceTag;
use crate::config::MotionConfig;
use crate::core::frame::Frame;
use crate::image::luma::LumaSampler;
use crate::sightings::motion::{Gate, MotionDetector, MotionSettings};
use crate::state::{AppState, Counters, SourceStats};

/// One source's detector, gate and figures.
struct Lane {
    detector: MotionDetector,
    gate: Gate,
    /// Its figures in the state (None until the source is registered; the
    /// pipeline's tests run unregistered sources).
    stats: Option<Arc<SourceStats>>,
    /// The previous frame had a sighting of this source open.
    was_open: bool,
}

/// The motion gate of the prepare thread; see the module documentation.
pub(crate) struct MotionGating {
    config: Option<MotionConfig>,
    /// Gating is on for the active model.
    active: bool,
    lanes: Vec<Option<Lane>>,
    sampler: LumaSampler,
    luma: Vec<u8>,
    /// Origin of the idle clock.
    epoch: Instant,
    /// The last luma error, logged once until it changes.
    last_error: Option<String>,
}

impl MotionGating {
    /// `config`: the `[motion]` settings, or None for no gating at all.
    pub(crate) fn new(config: Option<MotionConfig>) -> MotionGating {
        MotionGating {
            config,
            active: false,
            lanes: Vec::new(),
            sampler: LumaSampler::default(),
            luma: Vec::new(),
            epoch: Instant::now(),
            last_error: None,
        }
    }

    /// A model was activated: gating follows whether it is a detector.
    pub(crate) fn model_changed(&mut self, detector: bool, state: &AppState) {
        let on = self
            .config
            .as_ref()
            .is_some_and(|c| c.enabled_for(detector));
        if on != self.active {
            log::info!(
                motion_gating = on, detector = detector;
                "motion gating {} for the active model",
                if on { "on" } else { "off" }
            );
        }
        self.active = on;
        state.set_motion_active(on);
    }

    /// Whether `frame` of source `tag` is inferred, now; a skipped frame is
    /// counted. `max_pixels` bounds a decode of the frame.
    pub(crate) fn admit(
        &mut self,
        frame: &Frame,
        tag: &SourceTag,
        state: &AppState,
        max_pixels: u64,
    ) -> bool {
        let now_ns = i64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(i64::MAX);
        self.admit_at(frame, tag, state, max_pixels, now_ns)
    }

    /// [`Self::admit`] at `now_ns` on the idle clock (the tests drive it).
    fn admit_at(
        &mut self,
        frame: &Frame,
        tag: &SourceTag,
        state: &AppState,
        max_pixels: u64,
        now_ns: i64,
    ) -> bool {
        let Some(config) = self.config.as_ref().filter(|_| self.active) else {
            return true;
        };
        if self.lanes.len() <= tag.lane {
            self.lanes.resize_with(tag.lane + 1, || None);
        }
        let settings = MotionSettings {
            pixel_threshold: config.pixel_threshold,
            min_area: config.min_area,
            adapt_frames: config.adapt_frames,
        };
        let lane = self.lanes[tag.lane].get_or_insert_with(|| Lane {
            detector: MotionDetector::new(settings),
            gate: Gate::new(config.max_idle_s),
            stats: None,
            was_open: false,
        });
        if lane.stats.is_none() {
            lane.stats = state
                .source_stats()
                .into_iter()
                .find(|s| *s.name == *tag.name);
        }
        // A sighting is open: the frame is inferred whatever it shows, so
        // it is not measured at all (its cost would add to every invoke).
        if state.sighting_open(&tag.name) {
            lane.gate.infer(now_ns, false, true);
            lane.was_open = true;
            return true;
        }
        if std::mem::take(&mut lane.was_open) {
            // The background is as old as the sighting: start a new one
            // (this frame counts as moving and is inferred).
            lane.detector = MotionDetector::new(settings);
        }
        let (w, h) = match self.sampler.sample(frame, max_pixels, &mut self.luma) {
            Ok(size) => size,
            Err(e) => {
                // Pre-processing reports the frame's error; gating steps aside.
                let e = e.to_string();
                if self.last_error.as_ref() != Some(&e) {
                    log::debug!(source = tag.name.as_ref(); "no motion measure for a frame: {e}");
                    self.last_error = Some(e);
                }
                lane.gate.infer(now_ns, true, false);
                return true;
            }
        };
        let motion = lane.detector.feed(&self.luma, w, h);
        let infer = lane.gate.infer(now_ns, motion.moving, false);
        if let Some(s) = &lane.stats {
            s.motion.measured(motion.fraction, motion.moving);
            if !infer {
                Counters::inc(&s.motion.frames_static);
            }
        }
        if !infer {
            Counters::inc(&state.counters.frames_static);
        }
        infer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::PixelFormat;
    use std::sync::atomic::Ordering;

    const S: i64 = 1_000_000_000;
    const W: u32 = 160;
    const H: u32 = 120;

    /// A YUYV frame of a textured scene with ±2 levels of noise (from
    /// `seed`) and, optionally, a bright square a quarter of the frame wide.
    fn yuyv(seed: u64, object: bool) -> Frame {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut data = vec![128u8; (W * H * 2) as usize];
        for y in 0..H {
            for x in 0..W {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let noise = (s % 5) as i32 - 2;
                let mut v = 40 + ((x * 3 + y * 2) % 120) as i32 + noise;
                if object && (40..80).contains(&x) && (30..70).contains(&y) {
                    v = 250;
                }
                data[((y * W + x) * 2) as usize] = v.clamp(0, 255) as u8;
            }
        }
        Frame {
            data,
            format: PixelFormat::Yuyv,
            width: W,
            height: H,
            stride: W * 2,
            ..Frame::encoded(Vec::new(), seed, "test".into())
        }
    }

    fn tag(lane: usize, name: &str) -> SourceTag {
        SourceTag {
            lane,
            name: name.into(),
        }
    }

    fn gating(enabled: Option<bool>) -> MotionGating {
        MotionGating::new(Some(MotionConfig {
            enabled,
            max_idle_s: 10,
            ..MotionConfig::default()
        }))
    }

    // Would catch gating that skips nothing on a static scene, delays the
    // frame an object appears in (a sighting's start would be late), skips
    // frames while a sighting of the source is open (its frames and end
    // would be lost), or never looks at a static scene again: at 10 fps,
    // a static scene is inferred once per max_idle_s, the first moving
    // frame at once, every frame while a sighting is open, and the skipped
    // frames are counted globally and for the source.
    #[test]
    fn static_frames_are_skipped_motion_and_open_sightings_are_not() {
        let state = AppState::new();
        let stats = state.register_source("door");
        let mut g = gating(None);
        g.model_changed(true, &state);
        assert!(state.motion.active.load(Ordering::Relaxed));
        let t = tag(0, "door");
        let mut seq = 0;
        let mut at = |g: &mut MotionGating, object: bool, ns: i64| {
            seq += 1;
            g.admit_at(&yuyv(seq, object), &t, &state, u64::MAX, ns)
        };
        // 30 s of a static scene at 10 fps: the first frame, then one per 10 s.
        let inferred: Vec<i64> = (0..300)
            .map(|i| i64::from(i) * S / 10)
            .filter(|&ns| at(&mut g, false, ns))
            .collect();
        assert_eq!(inferred, vec![0, 10 * S, 20 * S], "idle checks");
        // An object appears: that very frame is inferred.
        assert!(at(&mut g, true, 30 * S), "the moving frame was skipped");
        // A sighting opens; the object stays still and every frame is
        // inferred while the sighting is open.
        state.set_open_sightings("door", 1);
        assert!((1..=100).all(|i| at(&mut g, true, 30 * S + i * S / 10)));
        state.set_open_sightings("door", 0);
        // Closed: the next frame starts a new background (inferred), the
        // still object is then static.
        assert!(at(&mut g, true, 41 * S), "the first frame after a sighting");
        assert!(!at(&mut g, true, 42 * S));
        let skipped = state.counters.frames_static.load(Ordering::Relaxed);
        assert_eq!(skipped, 300 - 3 + 1);
        assert_eq!(stats.motion.frames_static.load(Ordering::Relaxed), skipped);
        // Frames of an open sighting are not measured.
        assert_eq!(
            stats.motion.frames_measured.load(Ordering::Relaxed),
            300 + 1 + 2
        );
        assert!(stats.motion.moving_ratio() < 0.5);
    }

    // Would catch one source's motion or open sighting leaking into
    // another's decision (a busy camera keeping a quiet one inferred), or
    // gating that is on for classifiers by default or stays on after a swap
    // to one.
    #[test]
    fn sources_are_gated_apart_and_the_model_decides() {
        let state = AppState::new();
        let mut g = gating(None);
        let (a, b) = (tag(0, "a"), tag(1, "b"));
        // A classifier: every frame passes, nothing is measured.
        g.model_changed(false, &state);
        assert!((0..20).all(|i| g.admit_at(&yuyv(i, false), &a, &state, u64::MAX, i as i64)));
        assert_eq!(state.counters.frames_static.load(Ordering::Relaxed), 0);
        // A detector: gated. Each source's first frame is inferred.
        g.model_changed(true, &state);
        assert!(g.admit_at(&yuyv(1, false), &a, &state, u64::MAX, 0));
        assert!(g.admit_at(&yuyv(51, false), &b, &state, u64::MAX, 0));
        // A sighting of a is open: a is inferred, static b is not.
        state.set_open_sightings("a", 1);
        assert!(g.admit_at(&yuyv(2, false), &a, &state, u64::MAX, S));
        assert!(!g.admit_at(&yuyv(52, false), &b, &state, u64::MAX, S));
        // a's sighting closes (its first frame after starts a new
        // background), then a is static and skipped while b moves.
        state.set_open_sightings("a", 0);
        assert!(g.admit_at(&yuyv(3, false), &a, &state, u64::MAX, 2 * S));
        assert!(!g.admit_at(&yuyv(4, false), &a, &state, u64::MAX, 2 * S + 1));
        assert!(g.admit_at(&yuyv(53, true), &b, &state, u64::MAX, 2 * S));
        // Forced off for detectors: every frame passes again.
        let mut off = gating(Some(false));
        off.model_changed(true, &state);
        assert!(!state.motion.active.load(Ordering::Relaxed));
        assert!((0..5).all(|i| off.admit_at(&yuyv(9, false), &a, &state, u64::MAX, i)));
        // No settings at all (bench): never gated, whatever the model.
        let mut none = MotionGating::new(None);
        none.model_changed(true, &state);
        assert!((0..5).all(|i| none.admit_at(&yuyv(9, false), &a, &state, u64::MAX, i)));
    }
}
