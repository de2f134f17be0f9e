//! The sightings stage of the inference thread (issue 18): it turns each
//! camera frame's result into tracker hits (labels that pass their rule, in
//! the zones their anchor points fall in), feeds the tracker, decides
//! whether the frame's result is stored (`store.keep_frames`), and carries
//! out what the tracker returns:
//!
//! | event | store | state (SSE) | GPIO | memory |
//! |---|---|---|---|---|
//! | started | the sighting, the frame as its snapshot, a `started` outbox entry | `sighting_started` | rules with `on = "sighting_started"` | the snapshot, as the best so far |
//! | new best | — (the record is rewritten at most every [`PERSIST_EVERY`]) | — | — | the frame as the best snapshot |
//! | ended | the closed sighting, its best snapshot, an `ended` outbox entry | `sighting_ended` | — | dropped |
//!
//! An open sighting's record is rewritten at most every [`PERSIST_EVERY`] so
//! that a crash loses little of its `last_seen_ns`, `frames` and peak: the
//! next start closes it at the last time it was seen
//! ([`Store::close_open_sightings`](crate::store::Store::close_open_sightings)).
//! A clean shutdown closes every open sighting ([`SightingStage::close_all`]).
//!
//! Hits: a classifier's top-1 class above its rule's `min_score` (default
//! 0.5); a detector's labels, one hit per label with its best score and its
//! number of boxes. On a source with zones, a detection counts only in the
//! zones its anchor point is in (one hit per zone and label), and a
//! detection outside every zone makes no sighting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::privacy::PrivateFrame;
use crate::config::{KeepFrames, SightingsSettings, ZoneSettings};
use crate::core::result::ResultRecord;
use crate::core::sighting::{Sighting, SightingChange, SightingEvent};
use crate::sightings::tracker::{self, Event, Hit, Rules, Tracker};
use crate::state::AppState;
use crate::store::{Snapshot, Store};

/// An open sighting's record is rewritten at most this often.
pub(crate) const PERSIST_EVERY: Duration = Duration::from_secs(5);

/// What the inference thread does about sightings and storage; set by the
/// daemon before the thread starts. The default (no sightings, every frame
/// stored) is what `spotter bench` and the pipeline's own tests run with.
#[derive(Debug, Clone)]
pub struct SightingPolicy {
    /// `None`: no sightings are tracked.
    pub settings: Option<SightingsSettings>,
    pub zones: Vec<ZoneSettings>,
    pub keep: KeepFrames,
    /// One frame per source stored every this many seconds (keep =
    /// sightings or sampled).
    pub sample_s: u64,
}

impl Default for SightingPolicy {
    fn default() -> SightingPolicy {
        SightingPolicy {
            settings: None,
            zones: Vec::new(),
            keep: KeepFrames::All,
            sample_s: crate::config::sightings::DEFAULT_FRAME_SAMPLE_S,
        }
    }
}

/// Per open sighting: its best frame's image and when its record was last
/// written.
struct OpenState {
    best: Option<Snapshot>,
    persisted: Instant,
}

/// The stage; see the module documentation.
pub(crate) struct SightingStage {
    policy: SightingPolicy,
    tracker: Option<Tracker>,
    store: Arc<Store>,
    state: Arc<AppState>,
    open: BTreeMap<u64, OpenState>,
    /// Per source: capture time of the last stored sample.
    sampled: BTreeMap<String, i64>,
    /// Open sightings per source, as last told to the state.
    published: BTreeMap<String, usize>,
    gpio: Option<Arc<crate::gpio::runner::GpioHooks>>,
}

impl SightingStage {
    /// The stage for `policy`. With sightings on, first closes what the
    /// store still holds open (a crash or a kill left it) and continues the
    /// ids after the largest stored one.
    pub(crate) fn new(
        policy: SightingPolicy,
        store: Arc<Store>,
        state: Arc<AppState>,
        gpio: Option<Arc<crate::gpio::runner::GpioHooks>>,
    ) -> SightingStage {
        let tracker = policy.settings.as_ref().map(|s| {
            match store.close_open_sightings() {
                Ok(closed) if !closed.is_empty() => log::info!(
                    spotter_sightings_closed = closed.len();
                    "closed {} sighting(s) left open by the previous run, at the last time each was seen",
                    closed.len()
                ),
                Ok(_) => {}
                Err(e) => log::error!(spotter_error_kind = "store_sightings"; "cannot close the sightings left open: {e}"),
            }
            let last_id = store.last_sighting_id().unwrap_or_else(|e| {
                log::error!(spotter_error_kind = "store_sightings"; "cannot read the last sighting id: {e}");
                0
            });
            let rule = |r: &crate::config::SightingRule| Rules {
                min_frames: r.min_frames,
                window: r.window,
                end_after_ms: r.end_after_ms,
            };
            let by_label = s.rules.iter().map(|(l, r)| (l.clone(), rule(r))).collect();
            Tracker::new(rule(&s.default_rule), last_id).with_label_rules(by_label)
        });
        SightingStage {
            policy,
            tracker,
            store,
            state,
            open: BTreeMap::new(),
            sampled: BTreeMap::new(),
            published: Default::default(),
            gpio,
        }
    }

    /// Feed a camera frame's result `rec` (not yet stored); returns the
    /// tracker's events and whether `keep_frames` stores the result.
    pub(crate) fn observe(&mut self, rec: &ResultRecord) -> (Vec<Event>, bool) {
        let t_ns = i64::try_from(rec.ts_ns).unwrap_or(i64::MAX);
        let hits = hits(&self.policy, rec);
        let events = match &mut self.tracker {
            Some(t) => t.observe(&tracker::Frame {
                source: &rec.source_name,
                t_ns,
                result_id: None,
                hits: &hits,
            }),
            None => Vec::new(),
        };
        let open = self
            .tracker
            .as_ref()
            .is_some_and(|t| t.any_open(&rec.source_name));
        let sample_due = |sampled: &mut BTreeMap<String, i64>, sample_s: u64| {
            let every = i64::try_from(sample_s)
                .unwrap_or(i64::MAX / 1_000_000_000)
                .saturating_mul(1_000_000_000);
            let due = sampled
                .get(&rec.source_name)
                .is_none_or(|last| t_ns.saturating_sub(*last) >= every || t_ns < *last);
            if due {
                sampled.insert(rec.source_name.clone(), t_ns);
            }
            due
        };
        let store = match self.policy.keep {
            KeepFrames::All => true,
            // An open sighting's frames are stored without counting as the
            // sample: the sample is what shows the quiet hours.
            KeepFrames::Sightings => open || sample_due(&mut self.sampled, self.policy.sample_s),
            KeepFrames::Sampled => sample_due(&mut self.sampled, self.policy.sample_s),
        };
        (events, store)
    }

    /// Carry out `events` for the frame `frame` whose result was stored as
    /// `result_id` (if it was).
    pub(crate) fn apply(
        &mut self,
        mut events: Vec<Event>,
        frame: Option<&PrivateFrame<'_>>,
        t_ns: i64,
        result_id: Option<&str>,
    ) {
        if let (Some(id), Some(t)) = (result_id, &mut self.tracker) {
            t.attach_result(t_ns, id);
            for e in &mut events {
                let (Event::Started(s) | Event::NewBest(s) | Event::Ended(s)) = e;
                if s.best_ns == t_ns && s.best_result_id.is_none() {
                    s.best_result_id = Some(id.to_owned());
                }
            }
        }
        let mut image: Option<Option<Snapshot>> = None;
        let mut frame_image = || -> Option<Snapshot> {
            image
                .get_or_insert_with(|| frame?.sighting_snapshot())
                .clone()
        };
        for e in events {
            match e {
                Event::Started(s) => {
                    let best = frame_image();
                    self.persist(&s, best.as_ref(), Some(SightingChange::Started));
                    if let Some(g) = &self.gpio {
                        g.sighting_started(&s);
                    }
                    self.open.insert(
                        s.id,
                        OpenState {
                            best,
                            persisted: Instant::now(),
                        },
                    );
                }
                Event::NewBest(s) => {
                    let best = frame_image();
                    let due = self.open.get_mut(&s.id).map(|o| {
                        if best.is_some() {
                            o.best = best;
                        }
                        o.persisted.elapsed() >= PERSIST_EVERY
                    });
                    if due == Some(true) {
                        self.persist_open(&s);
                    }
                }
                Event::Ended(s) => {
                    let best = self.open.remove(&s.id).and_then(|o| o.best);
                    self.persist(&s, best.as_ref(), Some(SightingChange::Ended));
                }
            }
        }
        // Open records whose progress has not been written for a while.
        if let Some(t) = &self.tracker {
            let stale: Vec<Sighting> = t
                .open()
                .filter(|s| {
                    self.open
                        .get(&s.id)
                        .is_some_and(|o| o.persisted.elapsed() >= PERSIST_EVERY)
                })
                .cloned()
                .collect();
            for s in stale {
                self.persist_open(&s);
            }
        }
        self.publish_open();
    }

    /// Write an open sighting's progress (with its best snapshot so far).
    fn persist_open(&mut self, s: &Sighting) {
        let best = self.open.get(&s.id).and_then(|o| o.best.clone());
        self.persist(s, best.as_ref(), None);
        if let Some(o) = self.open.get_mut(&s.id) {
            o.persisted = Instant::now();
        }
    }

    fn persist(&self, s: &Sighting, best: Option<&Snapshot>, change: Option<SightingChange>) {
        if let Err(e) = self.store.put_sighting(s, best, change) {
            log::error!(spotter_error_kind = "store_sightings", spotter_sighting = s.id; "cannot store sighting {}: {e}", s.id);
        }
        if let Some(event) = change {
            self.state.sighting_changed(&SightingEvent {
                event,
                sighting: s.clone(),
            });
        }
    }

    /// Tell the state which sources have an open sighting (motion gating
    /// infers every frame of those).
    fn publish_open(&mut self) {
        let Some(t) = &self.tracker else { return };
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for s in t.open() {
            *counts.entry(s.source.clone()).or_default() += 1;
        }
        // Called per frame: the state's lock is only taken when a count changed.
        if counts == self.published {
            return;
        }
        for gone in self.published.keys().filter(|s| !counts.contains_key(*s)) {
            self.state.set_open_sightings(gone, 0);
        }
        for (src, n) in &counts {
            if self.published.get(src) != Some(n) {
                self.state.set_open_sightings(src, *n);
            }
        }
        self.published = counts;
    }

    /// End the sightings whose label has not passed for their
    /// `end_after_ms` by `now_ns` (a source that stopped delivering frames,
    /// or whose frames motion gating skips, still ends them).
    pub(crate) fn expire(&mut self, now_ns: i64) {
        let events = match &mut self.tracker {
            Some(t) => t.expire(None, now_ns),
            None => return,
        };
        if !events.is_empty() {
            self.apply(events, None, now_ns, None);
        }
    }

    /// Close every open sighting at the last time it was seen (shutdown).
    pub(crate) fn close_all(&mut self) {
        let events = match &mut self.tracker {
            Some(t) => t.close_all(),
            None => return,
        };
        self.apply(events, None, 0, None);
    }
}

/// The hits of one result; see the module documentation.
fn hits(policy: &SightingPolicy, rec: &ResultRecord) -> Vec<Hit> {
    let Some(s) = &policy.settings else {
        return Vec::new();
    };
    let mut hits: Vec<Hit> = Vec::new();
    let mut add = |label: &str, zone: Option<&str>, score: f32| match hits
        .iter_mut()
        .find(|h| h.label == label && h.zone.as_deref() == zone)
    {
        Some(h) => {
            h.objects += 1;
            h.score = h.score.max(score);
        }
        None => hits.push(Hit {
            label: label.to_owned(),
            zone: zone.map(str::to_owned),
            score,
            objects: 1,
        }),
    };
    if rec.detections.is_empty() {
        // A classifier: its top-1 class (classes are sorted best first).
        if let Some(top) = rec.classes.first() {
            let min = s
                .rule(&top.label)
                .min_score
                .unwrap_or(crate::config::sightings::DEFAULT_CLASSIFIER_MIN_SCORE);
            if s.tracks(&top.label) && top.score >= min {
                add(&top.label, None, top.score);
            }
        }
        return hits;
    }
    let zones: Vec<&ZoneSettings> = policy
        .zones
        .iter()
        .filter(|z| z.source == rec.source_name)
        .collect();
    for d in &rec.detections {
        if !s.tracks(&d.label) || d.score < s.rule(&d.label).min_score.unwrap_or(0.0) {
            continue;
        }
        if zones.is_empty() {
            add(&d.label, None, d.score);
            continue;
        }
        for z in &zones {
            if !z.labels.is_empty() && !z.labels.iter().any(|l| l == &d.label) {
                continue;
            }
            let bbox = [d.x, d.y, d.width, d.height].map(f64::from);
            let inside = z
                .anchor
                .point(bbox, rec.image_width, rec.image_height)
                .is_some_and(|(x, y)| z.polygon.contains(x, y));
            if inside {
                add(&d.label, Some(&z.name), d.score);
            }
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::result::{ClassScore, Detection, InferenceOutput};

    /// The policy of a config file's text (sightings on).
    fn policy(toml: &str) -> SightingPolicy {
        let s = crate::config::from_sources(vec![("t.toml".into(), toml.to_string())]).unwrap();
        SightingPolicy {
            settings: Some(s.sightings),
            zones: s.zones,
            keep: s.store.keep_frames,
            sample_s: s.store.frame_sample_s,
        }
    }

    fn record(classes: Vec<ClassScore>, detections: Vec<Detection>) -> ResultRecord {
        let out = InferenceOutput {
            classes,
            detections,
            image_width: 200,
            image_height: 100,
            latency: Default::default(),
        };
        let mut r = ResultRecord::build(out, &super::super::test_frame(1), "sha", "test", true);
        r.source_name = "default".into();
        r
    }

    fn det(label: &str, score: f32, [x, y, w, h]: [f32; 4]) -> Detection {
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

    fn class(label: &str, score: f32) -> ClassScore {
        ClassScore {
            index: 0,
            label: label.into(),
            raw: score,
            score,
        }
    }

    const SOURCE: &str = "[source]\nkind = \"files\"\ndir = \"/tmp\"\n";

    // Would catch a zone deciding by the box's centre or its top instead of
    // the configured anchor, a detection outside every zone still making a
    // sighting, or a zone's label list being ignored.
    #[test]
    fn zones_take_detections_by_their_anchor_point() {
        let p = policy(&format!(
            "{SOURCE}[[zone]]\nname = \"porch\"\npolygon = [[0.0, 0.5], [0.5, 0.5], [0.5, 1.0], [0.0, 1.0]]\n\
             [[zone]]\nname = \"road\"\npolygon = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]\nlabels = [\"car\"]\n\
             [[zone]]\nname = \"middle\"\nanchor = \"center\"\npolygon = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]\n"
        ));
        // A person standing in the porch (feet at y = 0.95; centre at 0.675,
        // outside `middle`).
        let person = det("person", 0.8, [20.0, 40.0, 40.0, 55.0]);
        // A person in the right half: the road zone takes only cars.
        let walker = det("person", 0.7, [150.0, 10.0, 20.0, 80.0]);
        let car = det("car", 0.6, [120.0, 40.0, 60.0, 50.0]);
        // Its centre (x 0.25, y 0.35) is in `middle` (which anchors at the
        // centre), its bottom (y 0.55) in the porch.
        let cat = det("cat", 0.9, [40.0, 15.0, 20.0, 40.0]);
        let h = hits(&p, &record(vec![], vec![person, walker, car, cat]));
        let mut got: Vec<(String, String, u32)> = h
            .iter()
            .map(|h| {
                (
                    h.label.clone(),
                    h.zone.clone().unwrap_or_default(),
                    h.objects,
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("car".into(), "road".into(), 1),
                ("cat".into(), "middle".into(), 1),
                ("cat".into(), "porch".into(), 1),
                ("person".into(), "porch".into(), 1),
            ],
            "{h:?}"
        );
    }

    // Would catch objects of one label being counted as separate sightings,
    // max_objects never seeing more than one box, or `[sightings] labels`
    // and a label's min_score being ignored.
    #[test]
    fn detector_hits_are_one_per_label_with_the_box_count_and_best_score() {
        let p = policy(&format!(
            "{SOURCE}[sightings]\nlabels = [\"person\", \"dog\"]\n\
             [[sightings.rule]]\nlabel = \"dog\"\nmin_score = 0.7\n"
        ));
        let boxes = vec![
            det("person", 0.5, [0.0, 0.0, 10.0, 10.0]),
            det("person", 0.9, [50.0, 0.0, 10.0, 10.0]),
            det("person", 0.6, [90.0, 0.0, 10.0, 10.0]),
            det("dog", 0.6, [0.0, 50.0, 10.0, 10.0]),
            det("car", 0.99, [0.0, 50.0, 10.0, 10.0]),
        ];
        let h = hits(&p, &record(vec![], boxes));
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(
            (h[0].label.as_str(), h[0].objects, h[0].score),
            ("person", 3, 0.9)
        );
    }

    // Would catch a classifier's runner-up classes making sightings, or its
    // top-1 passing under the default threshold.
    #[test]
    fn a_classifier_hit_is_its_top1_above_the_threshold() {
        let p = policy(SOURCE);
        let h = hits(
            &p,
            &record(vec![class("cat", 0.8), class("dog", 0.15)], vec![]),
        );
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].label.as_str(), h[0].zone.as_deref()), ("cat", None));
        assert!(hits(&p, &record(vec![class("cat", 0.45)], vec![])).is_empty());
        let low = policy(&format!("{SOURCE}[sightings]\nmin_score = 0.4\n"));
        assert_eq!(
            hits(&low, &record(vec![class("cat", 0.45)], vec![])).len(),
            1
        );
    }
}
