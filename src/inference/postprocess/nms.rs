//! Class-aware non-maximum suppression.
//!
//! This module owns the ordering of detection candidates (score descending,
//! ties by the lower anchor index, so the result never depends on sort
//! stability or thread timing) and the greedy suppression: a candidate is
//! dropped when it overlaps an already kept candidate **of the same class**
//! with an intersection over union above the threshold (as torchvision's and
//! Ultralytics' NMS do). Pure functions.

/// One decoded box before suppression, in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Candidate {
    pub class: usize,
    pub score: f32,
    /// Anchor index: the tie-breaker between equal scores.
    pub index: usize,
    /// `[x0, y0, x1, y1]` with `x0 <= x1`, `y0 <= y1`.
    pub rect: [f32; 4],
}

/// Intersection over union of two `[x0, y0, x1, y1]` boxes (0 when either is empty).
pub(crate) fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Sort candidates by score (descending), ties by lower index first.
pub(crate) fn sort(candidates: &mut [Candidate]) {
    candidates.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
}

/// Greedy class-aware NMS over candidates already in [`sort`] order: the
/// kept ones, in that order. A candidate is suppressed by a kept one of the
/// same class whose IoU with it is above `iou_threshold`.
pub(crate) fn suppress(sorted: &[Candidate], iou_threshold: f32) -> Vec<Candidate> {
    let mut kept: Vec<Candidate> = Vec::new();
    for c in sorted {
        let overlapped = kept
            .iter()
            .any(|k| k.class == c.class && iou(&k.rect, &c.rect) > iou_threshold);
        if !overlapped {
            kept.push(*c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(class: usize, score: f32, index: usize, rect: [f32; 4]) -> Candidate {
        Candidate {
            class,
            score,
            index,
            rect,
        }
    }

    // Would catch a broken IoU (intersection of disjoint boxes counted,
    // union wrong) that keeps duplicates or drops neighbours.
    #[test]
    fn iou_values() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[5.0, 0.0, 15.0, 10.0]), 50.0 / 150.0);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        assert_eq!(iou(&[1.0, 1.0, 1.0, 1.0], &[1.0, 1.0, 1.0, 1.0]), 0.0);
    }

    // Would catch NMS that ignores classes (a dog under a person dropped),
    // keeps same-class duplicates, or keeps the weaker of two.
    #[test]
    fn same_class_overlap_suppressed_other_class_kept() {
        let mut c = vec![
            cand(0, 0.6, 1, [1.0, 1.0, 11.0, 11.0]), // person, overlaps the 0.9 one
            cand(0, 0.9, 0, [0.0, 0.0, 10.0, 10.0]), // person
            cand(1, 0.8, 2, [0.0, 0.0, 10.0, 10.0]), // dog, same box
            cand(0, 0.5, 3, [50.0, 50.0, 60.0, 60.0]), // person elsewhere
        ];
        sort(&mut c);
        let kept = suppress(&c, 0.45);
        let got: Vec<(usize, usize)> = kept.iter().map(|k| (k.class, k.index)).collect();
        assert_eq!(got, [(0, 0), (1, 2), (0, 3)]);
        // A threshold above their IoU (81/119 ≈ 0.68) keeps both persons.
        assert_eq!(suppress(&c, 0.7).len(), 4);
    }

    // Would catch tie order depending on input order or sort stability:
    // equal scores keep the lower anchor index, whatever order they came in.
    #[test]
    fn ties_keep_the_lower_index() {
        let r = [0.0, 0.0, 10.0, 10.0];
        for order in [[0usize, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let all = [cand(0, 0.7, 8, r), cand(0, 0.7, 3, r), cand(0, 0.7, 5, r)];
            let mut c: Vec<Candidate> = order.iter().map(|&i| all[i]).collect();
            sort(&mut c);
            let kept = suppress(&c, 0.45);
            assert_eq!(kept.len(), 1);
            assert_eq!(kept[0].index, 3);
        }
    }
}
