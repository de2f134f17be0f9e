//! The health window after a rollout activates a model: what is sampled
//! and when it fails.
//!
//! Sampled every [`SAMPLE_EVERY`] from the daemon's state: the inference
//! error counter, the source readiness check, and each new result's top
//! score (the highest class score for a classifier, the highest detection
//! score for a detector, 0 for a frame with neither) together with the
//! model that produced it. Before activation the previous model's results
//! are sampled for a short baseline; the window fails when
//! - more than `max_inference_errors` inference errors occur in it,
//! - the source is not ready at a sample (the camera lost while the new
//!   model runs), or
//! - both the baseline and the window have results and their mean top
//!   scores differ by more than `max_score_drift`.
//!
//! The drift is a coarse "the new model sees this scene very differently"
//! test on the device's own frames (the shadow evaluation compares the two
//! models frame by frame before activation); it is skipped, and says so,
//! when either side has no result.

use std::time::Duration;

use crate::core::result::ResultRecord;

/// How often the window samples the state.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// The top score of one result (0 when it has no class and no detection).
pub(crate) fn top_score(r: &ResultRecord) -> f64 {
    let c = r.classes.iter().map(|c| f64::from(c.score));
    let d = r.detections.iter().map(|d| f64::from(d.score));
    c.chain(d).fold(0.0, f64::max)
}

/// Mean top score of a run of results.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Mean {
    pub sum: f64,
    pub n: u64,
}

impl Mean {
    pub(crate) fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }

    pub(crate) fn get(&self) -> Option<f64> {
        if self.n == 0 {
            None
        } else {
            Some(self.sum / self.n as f64)
        }
    }
}

/// The bounds a window is judged by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    pub max_inference_errors: u64,
    pub max_score_drift: f64,
}

/// Judge a finished (or failing) window: Err says why it failed.
pub(crate) fn judge(
    b: Bounds,
    errors: u64,
    source_lost: Option<&str>,
    before: Mean,
    after: Mean,
) -> Result<String, String> {
    if errors > b.max_inference_errors {
        return Err(format!(
            "{errors} inference errors in the health window (rollout.max_inference_errors = {})",
            b.max_inference_errors
        ));
    }
    if let Some(why) = source_lost {
        return Err(format!("the source went not-ready: {why}"));
    }
    match (before.get(), after.get()) {
        (Some(x), Some(y)) if (x - y).abs() > b.max_score_drift => Err(format!(
            "mean top score drifted from {x:.3} ({} frames, previous model) to {y:.3} ({} frames), more than rollout.max_score_drift = {}",
            before.n, after.n, b.max_score_drift
        )),
        (Some(x), Some(y)) => Ok(format!(
            "mean top score {x:.3} -> {y:.3} over {} frames, {errors} inference errors",
            after.n
        )),
        _ => Ok(format!(
            "{errors} inference errors; score drift not checked ({} frames before, {} after)",
            before.n, after.n
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(vals: &[f64]) -> Mean {
        let mut m = Mean::default();
        vals.iter().for_each(|v| m.add(*v));
        m
    }

    const B: Bounds = Bounds {
        max_inference_errors: 2,
        max_score_drift: 0.2,
    };

    // Would catch a window that passes a model erroring on frames, a lost
    // camera, or a collapsed score, or that fails a model whose scores only
    // moved within the bound.
    #[test]
    fn windows_are_judged() {
        let same = mean(&[0.8, 0.9]);
        assert!(judge(B, 2, None, same, same).is_ok());
        assert!(judge(B, 3, None, same, same)
            .unwrap_err()
            .contains("3 inference errors"));
        assert!(judge(B, 0, Some("no frame"), same, same)
            .unwrap_err()
            .contains("no frame"));
        let low = mean(&[0.3, 0.4]);
        assert!(judge(B, 0, None, same, low)
            .unwrap_err()
            .contains("drifted"));
        assert!(judge(B, 0, None, same, mean(&[0.75])).is_ok());
        // Nothing to compare: the drift is not judged, and the text says so.
        assert!(judge(B, 0, None, Mean::default(), low)
            .unwrap()
            .contains("not checked"));
    }
}
