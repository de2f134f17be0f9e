//! Detection rules: which decoded detections a detector reports.
//!
//! This module owns applying [`DetectionRules`] (the `[model]` keys) to the
//! detections of one frame, after decoding and non-maximum suppression: the
//! per-label minimum score (else `model.min_score`), the allow- and
//! deny-lists, the minimum box area as a fraction of the frame, and the cap
//! on detections per frame (highest scores kept). Every detector family goes
//! through [`apply`], so the camera, uploads, `spotter classify` and MQTT see
//! the same detections. Pure functions of their arguments.

use crate::config::DetectionRules;
use crate::core::result::Detection;

/// The lowest score any label may be reported at: decoders drop candidates
/// below it before NMS (a label with its own lower score must still get its
/// candidates through).
pub(crate) fn decode_floor(rules: &DetectionRules, min_score: f32) -> f32 {
    rules
        .min_score_by_label
        .values()
        .fold(min_score, |floor, s| floor.min(*s))
}

/// The minimum score for `label` (case-insensitive).
fn label_min_score(rules: &DetectionRules, min_score: f32, label: &str) -> f32 {
    if rules.min_score_by_label.is_empty() {
        return min_score;
    }
    let lower = label.to_lowercase();
    rules
        .min_score_by_label
        .get(&lower)
        .copied()
        .unwrap_or(min_score)
}

fn listed(list: &[String], label: &str) -> bool {
    list.iter().any(|l| l.eq_ignore_ascii_case(label))
}

/// Keep the detections `rules` allow on a `frame_width` × `frame_height`
/// frame, highest score first, at most `rules.max_detections`.
pub(crate) fn apply(
    rules: &DetectionRules,
    min_score: f32,
    frame_width: u32,
    frame_height: u32,
    mut detections: Vec<Detection>,
) -> Vec<Detection> {
    let frame_area = f64::from(frame_width) * f64::from(frame_height);
    let min_area = f64::from(rules.min_box_area) * frame_area;
    detections.retain(|d| {
        d.score >= label_min_score(rules, min_score, &d.label)
            && (rules.allow.is_empty() || listed(&rules.allow, &d.label))
            && !listed(&rules.deny, &d.label)
            && f64::from(d.width) * f64::from(d.height) >= min_area
    });
    // Stable: equal scores keep the decoder's order.
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    detections.truncate(rules.max_detections);
    detections
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, score: f32, w: f32, h: f32) -> Detection {
        Detection {
            class_index: 0,
            label: label.into(),
            score,
            x: 0.0,
            y: 0.0,
            width: w,
            height: h,
        }
    }

    fn labels(d: &[Detection]) -> Vec<&str> {
        d.iter().map(|d| d.label.as_str()).collect()
    }

    // Would catch a per-label score ignored (cat at 0.45 dropped by the
    // global 0.5, person at 0.55 kept), case-sensitive label matching, or a
    // decoder floor above a label's own lower score.
    #[test]
    fn per_label_scores_override_the_global_one() {
        let mut rules = DetectionRules::default();
        rules.min_score_by_label.insert("person".into(), 0.6);
        rules.min_score_by_label.insert("cat".into(), 0.4);
        let out = apply(
            &rules,
            0.5,
            100,
            100,
            vec![
                det("Person", 0.55, 1.0, 1.0),
                det("cat", 0.45, 1.0, 1.0),
                det("dog", 0.45, 1.0, 1.0),
                det("dog", 0.52, 1.0, 1.0),
                det("person", 0.7, 1.0, 1.0),
            ],
        );
        assert_eq!(labels(&out), ["person", "dog", "cat"]);
        assert_eq!(decode_floor(&rules, 0.5), 0.4);
        assert_eq!(decode_floor(&DetectionRules::default(), 0.3), 0.3);
    }

    // Would catch the allow-list or deny-list being ignored or matched
    // case-sensitively.
    #[test]
    fn allow_and_deny_lists() {
        let all = vec![
            det("person", 0.9, 1.0, 1.0),
            det("Cat", 0.8, 1.0, 1.0),
            det("car", 0.7, 1.0, 1.0),
        ];
        let allow = DetectionRules {
            allow: vec!["person".into(), "cat".into()],
            ..DetectionRules::default()
        };
        assert_eq!(
            labels(&apply(&allow, 0.0, 10, 10, all.clone())),
            ["person", "Cat"]
        );
        let deny = DetectionRules {
            deny: vec!["CAT".into()],
            ..DetectionRules::default()
        };
        assert_eq!(labels(&apply(&deny, 0.0, 10, 10, all)), ["person", "car"]);
    }

    // Would catch the area taken in pixels instead of a fraction of the
    // frame, or the cap keeping the first detections instead of the best.
    #[test]
    fn minimum_area_and_cap_keep_the_best() {
        let rules = DetectionRules {
            min_box_area: 0.01, // 1 % of 200×100 = 200 px²
            max_detections: 2,
            ..DetectionRules::default()
        };
        let out = apply(
            &rules,
            0.0,
            200,
            100,
            vec![
                det("a", 0.5, 20.0, 10.0),  // 200 px²: kept
                det("b", 0.99, 19.0, 10.0), // 190 px²: too small
                det("c", 0.6, 40.0, 40.0),
                det("d", 0.7, 40.0, 40.0),
            ],
        );
        assert_eq!(labels(&out), ["d", "c"]);
    }
}
