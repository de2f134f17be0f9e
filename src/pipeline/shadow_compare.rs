//! The comparison maths of shadow evaluation (issue 22), pure functions
//! over two models' outputs for the same frame: it owns IoU, the matching of
//! detections, and the running tally ([`Tally`]) that becomes a
//! [`Comparison`].
//!
//! What is measured, with the active model as the reference:
//! - classifiers: top-1 agreement (same top label; two empty outputs agree);
//!   per label (the active model's top-1 label for `active`, the
//!   candidate's for `candidate`), how many frames each said it and how many
//!   both did;
//! - detectors: detections matched one-to-one (same label, IoU ≥
//!   [`MIN_IOU`], greedy by IoU, highest first), active-only (missed by the
//!   candidate: recall) and candidate-only (extra: precision); the overall
//!   agreement is the F1 score `2·matched / (active + candidate)` (1 when
//!   neither detected anything);
//! - score drift: mean |Δscore| over matched items (the top-1 class when it
//!   agrees, matched detection pairs);
//! - invoke time: each model's mean `invoke_us` on the compared frames.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::core::result::{Detection, InferenceOutput};

/// Detections match at this intersection over union or more.
pub(crate) const MIN_IOU: f32 = 0.5;

/// Intersection over union of two boxes (0 when either has no area).
pub(crate) fn iou(a: &Detection, b: &Detection) -> f32 {
    let x0 = a.x.max(b.x);
    let y0 = a.y.max(b.y);
    let x1 = (a.x + a.width).min(b.x + b.width);
    let y1 = (a.y + a.height).min(b.y + b.height);
    let inter = (x1 - x0).max(0.0) * (y1 - y0).max(0.0);
    let union = a.width.max(0.0) * a.height.max(0.0) + b.width.max(0.0) * b.height.max(0.0) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Detections of the active model and of the candidate paired one-to-one.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Matching {
    /// (active index, candidate index).
    pub pairs: Vec<(usize, usize)>,
    pub active_only: Vec<usize>,
    pub candidate_only: Vec<usize>,
}

/// Pair detections with the same label and IoU ≥ `min_iou`, greedily by
/// IoU (highest first); each detection is in at most one pair.
pub(crate) fn match_detections(
    active: &[Detection],
    candidate: &[Detection],
    min_iou: f32,
) -> Matching {
    let mut scored: Vec<(f32, usize, usize)> = Vec::new();
    for (i, a) in active.iter().enumerate() {
        for (j, c) in candidate.iter().enumerate() {
            if a.label == c.label {
                let v = iou(a, c);
                if v >= min_iou {
                    scored.push((v, i, j));
                }
            }
        }
    }
    scored.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let mut used_a = vec![false; active.len()];
    let mut used_c = vec![false; candidate.len()];
    let mut pairs = Vec::new();
    for (_, i, j) in scored {
        if !used_a[i] && !used_c[j] {
            used_a[i] = true;
            used_c[j] = true;
            pairs.push((i, j));
        }
    }
    pairs.sort_unstable();
    Matching {
        pairs,
        active_only: (0..active.len()).filter(|&i| !used_a[i]).collect(),
        candidate_only: (0..candidate.len()).filter(|&j| !used_c[j]).collect(),
    }
}

#[derive(Debug, Default, Clone)]
struct LabelTally {
    active: u64,
    candidate: u64,
    matched: u64,
    drift_sum: f64,
}

/// The running sums of one shadow run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    frames: u64,
    top1_agree: u64,
    active_items: u64,
    candidate_items: u64,
    matched: u64,
    drift_sum: f64,
    active_invoke_us: u64,
    candidate_invoke_us: u64,
    labels: BTreeMap<String, LabelTally>,
}

/// One label's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelComparison {
    /// Frames (classifiers: top-1) or detections the active model gave this label.
    pub active: u64,
    /// The same for the candidate.
    pub candidate: u64,
    /// Of those, the ones both agreed on (same top-1; matched detections).
    pub matched: u64,
    /// matched / candidate (None when the candidate never said it).
    pub precision: Option<f64>,
    /// matched / active (None when the active model never said it).
    pub recall: Option<f64>,
    /// Mean |Δscore| over the matched items (None without any).
    pub mean_score_drift: Option<f64>,
}

/// What a [`Tally`] amounts to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub frames_compared: u64,
    /// 0–1: top-1 agreement (classifiers) or the F1 of matched detections
    /// (detectors); 0 before any frame was compared.
    pub agreement: f64,
    /// Items matched: frames with the same top-1 (classifiers), matched
    /// detection pairs (detectors).
    pub matched: u64,
    /// Items the active model gave (frames with a top-1; detections).
    pub active_items: u64,
    /// Items the candidate gave.
    pub candidate_items: u64,
    /// matched / candidate_items.
    pub precision: Option<f64>,
    /// matched / active_items.
    pub recall: Option<f64>,
    /// Mean |Δscore| over matched items.
    pub mean_score_drift: Option<f64>,
    /// Mean invoke time of the active model on the compared frames, ms.
    pub active_invoke_ms: Option<f64>,
    /// Mean invoke time of the candidate on the same frames, ms.
    pub candidate_invoke_ms: Option<f64>,
    pub per_label: BTreeMap<String, LabelComparison>,
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn mean(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

impl Tally {
    /// Add one frame's outputs: `detector` says which comparison applies.
    pub(crate) fn add(
        &mut self,
        active: &InferenceOutput,
        candidate: &InferenceOutput,
        detector: bool,
    ) {
        self.frames += 1;
        self.active_invoke_us += active.latency.invoke_us;
        self.candidate_invoke_us += candidate.latency.invoke_us;
        if detector {
            self.add_detections(&active.detections, &candidate.detections);
        } else {
            self.add_top1(active, candidate);
        }
    }

    fn add_top1(&mut self, active: &InferenceOutput, candidate: &InferenceOutput) {
        let a = active.classes.first();
        let c = candidate.classes.first();
        if let Some(a) = a {
            self.active_items += 1;
            self.labels.entry(a.label.clone()).or_default().active += 1;
        }
        if let Some(c) = c {
            self.candidate_items += 1;
            self.labels.entry(c.label.clone()).or_default().candidate += 1;
        }
        match (a, c) {
            (None, None) => self.top1_agree += 1,
            (Some(a), Some(c)) if a.label == c.label => {
                self.top1_agree += 1;
                self.matched += 1;
                let d = f64::from((a.score - c.score).abs());
                self.drift_sum += d;
                let l = self.labels.entry(a.label.clone()).or_default();
                l.matched += 1;
                l.drift_sum += d;
            }
            _ => {}
        }
    }

    fn add_detections(&mut self, active: &[Detection], candidate: &[Detection]) {
        for a in active {
            self.labels.entry(a.label.clone()).or_default().active += 1;
        }
        for c in candidate {
            self.labels.entry(c.label.clone()).or_default().candidate += 1;
        }
        self.active_items += active.len() as u64;
        self.candidate_items += candidate.len() as u64;
        let m = match_detections(active, candidate, MIN_IOU);
        for (i, j) in m.pairs {
            let d = f64::from((active[i].score - candidate[j].score).abs());
            self.matched += 1;
            self.drift_sum += d;
            let l = self.labels.entry(active[i].label.clone()).or_default();
            l.matched += 1;
            l.drift_sum += d;
        }
        if active.is_empty() && candidate.is_empty() {
            self.top1_agree += 1;
        }
    }

    /// The figures so far; `detector` as given to [`Tally::add`].
    pub(crate) fn summary(&self, detector: bool) -> Comparison {
        let agreement = if self.frames == 0 {
            0.0
        } else if detector {
            let total = self.active_items + self.candidate_items;
            if total == 0 {
                1.0
            } else {
                2.0 * self.matched as f64 / total as f64
            }
        } else {
            self.top1_agree as f64 / self.frames as f64
        };
        Comparison {
            frames_compared: self.frames,
            agreement,
            matched: self.matched,
            active_items: self.active_items,
            candidate_items: self.candidate_items,
            precision: ratio(self.matched, self.candidate_items),
            recall: ratio(self.matched, self.active_items),
            mean_score_drift: mean(self.drift_sum, self.matched),
            active_invoke_ms: mean(self.active_invoke_us as f64 / 1000.0, self.frames),
            candidate_invoke_ms: mean(self.candidate_invoke_us as f64 / 1000.0, self.frames),
            per_label: self
                .labels
                .iter()
                .map(|(k, l)| {
                    (
                        k.clone(),
                        LabelComparison {
                            active: l.active,
                            candidate: l.candidate,
                            matched: l.matched,
                            precision: ratio(l.matched, l.candidate),
                            recall: ratio(l.matched, l.active),
                            mean_score_drift: mean(l.drift_sum, l.matched),
                        },
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::result::{ClassScore, StageLatency};

    fn det(label: &str, score: f32, x: f32, y: f32, w: f32, h: f32) -> Detection {
        Detection {
            class_index: 0,
            label: label.into(),
            score,
            x,
            y,
            width: w,
            height: h,
        }
    }

    fn out(classes: &[(&str, f32)], detections: Vec<Detection>, invoke_us: u64) -> InferenceOutput {
        InferenceOutput {
            classes: classes
                .iter()
                .enumerate()
                .map(|(i, (l, s))| ClassScore {
                    index: i,
                    label: (*l).into(),
                    raw: *s,
                    score: *s,
                })
                .collect(),
            detections,
            image_width: 100,
            image_height: 100,
            latency: StageLatency {
                invoke_us,
                ..Default::default()
            },
        }
    }

    /// Would catch IoU computed as intersection over one box's area, or a
    /// negative overlap of disjoint boxes counted as area.
    #[test]
    fn iou_of_known_boxes() {
        let a = det("x", 1.0, 0.0, 0.0, 10.0, 10.0);
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        // Half overlapping: 50 / 150.
        let b = det("x", 1.0, 5.0, 0.0, 10.0, 10.0);
        assert!((iou(&a, &b) - 1.0 / 3.0).abs() < 1e-6);
        let far = det("x", 1.0, 20.0, 20.0, 5.0, 5.0);
        assert_eq!(iou(&a, &far), 0.0);
        let empty = det("x", 1.0, 0.0, 0.0, 0.0, 0.0);
        assert_eq!(iou(&empty, &empty), 0.0);
    }

    /// Would catch matching across labels, below the IoU bound, or one
    /// detection matched twice (two candidates on one person counted as two
    /// matches instead of one match and one extra).
    #[test]
    fn matching_is_one_to_one_per_label_above_the_bound() {
        let active = vec![
            det("person", 0.9, 0.0, 0.0, 10.0, 10.0),
            det("dog", 0.8, 50.0, 50.0, 10.0, 10.0),
        ];
        let candidate = vec![
            det("person", 0.7, 1.0, 0.0, 10.0, 10.0), // IoU 0.82
            det("person", 0.6, 0.0, 1.0, 10.0, 10.0), // IoU 0.82 too: a duplicate
            det("cat", 0.8, 50.0, 50.0, 10.0, 10.0),  // right box, wrong label
            det("dog", 0.8, 56.0, 50.0, 10.0, 10.0),  // IoU 0.25: too far
        ];
        let m = match_detections(&active, &candidate, MIN_IOU);
        assert_eq!(m.pairs.len(), 1);
        assert_eq!(m.pairs[0].0, 0);
        assert_eq!(m.active_only, vec![1]);
        assert_eq!(m.candidate_only.len(), 3);
    }

    /// Would catch the greedy matching taking pairs in input order instead
    /// of best IoU first, which steals the better partner.
    #[test]
    fn matching_prefers_the_higher_iou() {
        let active = vec![
            det("a", 0.9, 0.0, 0.0, 10.0, 10.0),
            det("a", 0.9, 3.0, 0.0, 10.0, 10.0),
        ];
        // Overlaps the second active box exactly and the first at 7/13.
        let candidate = vec![det("a", 0.9, 3.0, 0.0, 10.0, 10.0)];
        let m = match_detections(&active, &candidate, MIN_IOU);
        assert_eq!(m.pairs, vec![(1, 0)]);
    }

    /// Would catch top-1 agreement counted over all classes or per label
    /// figures attributed to the wrong model, and a drift over disagreeing
    /// frames.
    #[test]
    fn classifier_tally_counts_top1_per_label() {
        let mut t = Tally::default();
        t.add(
            &out(&[("cat", 0.8), ("dog", 0.1)], vec![], 1000),
            &out(&[("cat", 0.6)], vec![], 3000),
            false,
        );
        t.add(
            &out(&[("cat", 0.9)], vec![], 1000),
            &out(&[("dog", 0.7)], vec![], 3000),
            false,
        );
        t.add(
            &out(&[("dog", 0.5)], vec![], 1000),
            &out(&[("dog", 0.5)], vec![], 3000),
            false,
        );
        t.add(&out(&[], vec![], 1000), &out(&[], vec![], 3000), false);
        let c = t.summary(false);
        assert_eq!(c.frames_compared, 4);
        assert!((c.agreement - 0.75).abs() < 1e-9);
        assert_eq!(c.matched, 2);
        assert!((c.mean_score_drift.unwrap() - 0.1).abs() < 1e-6);
        assert_eq!(c.active_invoke_ms, Some(1.0));
        assert_eq!(c.candidate_invoke_ms, Some(3.0));
        let cat = &c.per_label["cat"];
        assert_eq!((cat.active, cat.candidate, cat.matched), (2, 1, 1));
        assert_eq!(cat.recall, Some(0.5));
        assert_eq!(cat.precision, Some(1.0));
        let dog = &c.per_label["dog"];
        assert_eq!((dog.active, dog.candidate, dog.matched), (1, 2, 1));
        assert_eq!(dog.mean_score_drift, Some(0.0));
    }

    /// Would catch the detector agreement being a per-frame figure (one
    /// miss among many detections weighing as a whole frame), or a frame
    /// where neither detected anything lowering it.
    #[test]
    fn detector_tally_is_f1_of_matched_detections() {
        let mut t = Tally::default();
        let a = vec![
            det("person", 0.9, 0.0, 0.0, 10.0, 10.0),
            det("person", 0.8, 50.0, 50.0, 10.0, 10.0),
            det("car", 0.7, 20.0, 20.0, 10.0, 10.0),
        ];
        let c = vec![
            det("person", 0.7, 0.0, 0.0, 10.0, 10.0),
            det("car", 0.6, 20.0, 20.0, 10.0, 10.0),
            det("bike", 0.5, 80.0, 80.0, 10.0, 10.0),
        ];
        t.add(&out(&[], a, 10), &out(&[], c, 20), true);
        t.add(&out(&[], vec![], 10), &out(&[], vec![], 20), true);
        let s = t.summary(true);
        assert_eq!(s.frames_compared, 2);
        assert_eq!((s.matched, s.active_items, s.candidate_items), (2, 3, 3));
        assert!((s.agreement - 4.0 / 6.0).abs() < 1e-9);
        assert!((s.recall.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert!((s.mean_score_drift.unwrap() - 0.15).abs() < 1e-6);
        assert_eq!(s.per_label["person"].recall, Some(0.5));
        assert_eq!(s.per_label["bike"].precision, Some(0.0));
        assert_eq!(s.per_label["bike"].recall, None);
        // The same model twice agrees fully; nothing compared agrees not at all.
        let mut same = Tally::default();
        let d = vec![det("x", 0.5, 1.0, 1.0, 5.0, 5.0)];
        same.add(&out(&[], d.clone(), 1), &out(&[], d, 1), true);
        assert_eq!(same.summary(true).agreement, 1.0);
        assert_eq!(Tally::default().summary(true).agreement, 0.0);
    }
}
