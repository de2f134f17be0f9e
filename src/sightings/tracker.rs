//! The sighting state machine: per-frame label hits in, sightings opened and
//! closed out.
//!
//! A sighting is one continuous presence of a label on a source (and in a
//! zone, when the hit names one). It opens when the label passes in
//! `min_frames` of the last `window` inferred frames of its source, starting
//! at the first of those passing frames; passes more than `end_after_ms`
//! before the newest do not count (motion gating may leave long gaps between
//! inferred frames: a flicker a minute ago and a pass now are not one
//! presence, just as they would not keep one open); it stays open through gaps shorter
//! than `end_after_ms`; it closes once the label has not passed for
//! `end_after_ms`, ending at the last frame it passed in. Time is the
//! frames' capture time, so replayed or delayed frames give the same
//! sightings as live ones. The tracker holds no I/O: the caller stores and
//! publishes the [`Event`]s it returns.

use std::collections::{BTreeMap, VecDeque};

pub use crate::core::sighting::Sighting;

/// When a label's presence becomes a sighting and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Passing frames needed among the last `window` to open a sighting.
    pub min_frames: u32,
    pub window: u32,
    /// A sighting closes after this long without its label passing.
    pub end_after_ms: u64,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            min_frames: 2,
            window: 3,
            end_after_ms: 3000,
        }
    }
}

impl Rules {
    /// `end_after_ms` in nanoseconds (saturating).
    fn end_after_ns(&self) -> i64 {
        i64::try_from(self.end_after_ms)
            .unwrap_or(i64::MAX / 1_000_000)
            .saturating_mul(1_000_000)
    }

    /// Check the rules; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 || self.window > 1000 {
            return Err(format!(
                "window = {}: must be 1 to 1000 frames",
                self.window
            ));
        }
        if self.min_frames == 0 || self.min_frames > self.window {
            return Err(format!(
                "min_frames = {}: must be 1 to window ({})",
                self.min_frames, self.window
            ));
        }
        Ok(())
    }
}

/// One label that passed its rule in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub label: String,
    /// The zone the hit is in; `None` for the whole frame.
    pub zone: Option<String>,
    /// The best score of the label in the frame.
    pub score: f32,
    /// How many objects of the label (1 for a classification).
    pub objects: u32,
}

/// One inferred frame of a source, as the tracker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    pub source: &'a str,
    /// Capture time, ns since the Unix epoch.
    pub t_ns: i64,
    /// The stored result of the frame, if it was stored.
    pub result_id: Option<&'a str>,
    pub hits: &'a [Hit],
}

/// What the tracker decided for a frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Started(Sighting),
    /// The open sighting's best frame changed (a new peak score): the
    /// caller keeps this frame's snapshot.
    NewBest(Sighting),
    Ended(Sighting),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    source: String,
    zone: Option<String>,
    label: String,
}

/// Per key: the recent passing frames (while not open) or the open sighting.
#[derive(Debug)]
struct Track {
    /// Per inferred frame of the source, newest last: the hit, if the label
    /// passed in it, with the frame's time and result.
    recent: VecDeque<Option<(i64, Hit, Option<String>)>>,
    open: Option<Sighting>,
}

/// The state of every label on every source.
#[derive(Debug)]
pub struct Tracker {
    rules: Rules,
    /// Per-label rules (`[[sightings.rule]]`), overriding `rules`.
    by_label: BTreeMap<String, Rules>,
    tracks: BTreeMap<Key, Track>,
    next_id: u64,
}

impl Tracker {
    /// A tracker whose sighting ids start after `last_id` (the largest id
    /// the store holds, so ids stay unique across restarts).
    pub fn new(rules: Rules, last_id: u64) -> Tracker {
        Tracker {
            rules,
            by_label: BTreeMap::new(),
            tracks: BTreeMap::new(),
            next_id: last_id + 1,
        }
    }

    /// The same tracker with `by_label` rules for the labels it names.
    pub fn with_label_rules(mut self, by_label: BTreeMap<String, Rules>) -> Tracker {
        self.by_label = by_label;
        self
    }

    /// The sightings open now.
    pub fn open(&self) -> impl Iterator<Item = &Sighting> {
        self.tracks.values().filter_map(|t| t.open.as_ref())
    }

    /// Whether any sighting of `source` is open (motion gating infers every
    /// frame then).
    pub fn any_open(&self, source: &str) -> bool {
        self.tracks
            .iter()
            .any(|(k, t)| k.source == source && t.open.is_some())
    }

    /// Feed one inferred frame; returns what started, improved and ended.
    /// Sightings of the frame's source whose label has not passed for
    /// `end_after_ms` by this frame's time end here, before its hits count.
    pub fn observe(&mut self, frame: &Frame<'_>) -> Vec<Event> {
        let mut events = self.expire(Some(frame.source), frame.t_ns);
        for hit in frame.hits {
            let key = Key {
                source: frame.source.to_owned(),
                zone: hit.zone.clone(),
                label: hit.label.clone(),
            };
            self.tracks.entry(key).or_insert_with(|| Track {
                recent: VecDeque::new(),
                open: None,
            });
        }
        let mut emptied = Vec::new();
        let (default_rules, by_label) = (self.rules, &self.by_label);
        for (key, track) in self
            .tracks
            .iter_mut()
            .filter(|(k, _)| k.source == frame.source)
        {
            let rules = by_label.get(&key.label).copied().unwrap_or(default_rules);
            let window = rules.window as usize;
            let hit = frame
                .hits
                .iter()
                .find(|h| h.label == key.label && h.zone == key.zone);
            if let Some(s) = &mut track.open {
                if let Some(h) = hit {
                    s.frames += 1;
                    s.last_seen_ns = frame.t_ns;
                    s.max_objects = s.max_objects.max(h.objects);
                    if h.score > s.peak_score {
                        s.peak_score = h.score;
                        s.best_result_id = frame.result_id.map(str::to_owned);
                        s.best_ns = frame.t_ns;
                        events.push(Event::NewBest(s.clone()));
                    }
                }
                continue;
            }
            track.recent.push_back(
                hit.map(|h| (frame.t_ns, h.clone(), frame.result_id.map(str::to_owned))),
            );
            while track.recent.len() > window {
                track.recent.pop_front();
            }
            let horizon = frame.t_ns.saturating_sub(rules.end_after_ns());
            let passing: Vec<_> = track
                .recent
                .iter()
                .flatten()
                .filter(|p| p.0 >= horizon)
                .collect();
            if passing.len() >= rules.min_frames as usize {
                let (start_ns, _, _) = passing[0];
                let (best_ns, best, best_id) =
                    passing
                        .iter()
                        .fold(passing[0], |b, p| if p.1.score > b.1.score { p } else { b });
                let s = Sighting {
                    id: self.next_id,
                    label: key.label.clone(),
                    source: key.source.clone(),
                    zone: key.zone.clone(),
                    start_ns: *start_ns,
                    end_ns: None,
                    last_seen_ns: frame.t_ns,
                    peak_score: best.score,
                    frames: passing.len() as u64,
                    max_objects: passing.iter().map(|p| p.1.objects).max().unwrap_or(1),
                    best_result_id: best_id.clone(),
                    best_ns: *best_ns,
                };
                self.next_id += 1;
                track.recent.clear();
                events.push(Event::Started(s.clone()));
                track.open = Some(s);
            } else if passing.is_empty() {
                emptied.push(key.clone());
            }
        }
        // Labels that have not passed in a whole window and have nothing open
        // are forgotten, so the map holds only what is present.
        for key in emptied {
            self.tracks.remove(&key);
        }
        events
    }

    /// The frame captured at `t_ns` was stored as `result_id`: open
    /// sightings whose best frame it is (and that have no result yet) point
    /// at it. The tracker sees a frame before it is stored (whether it is
    /// stored depends on what the tracker says).
    pub fn attach_result(&mut self, t_ns: i64, result_id: &str) {
        for s in self.tracks.values_mut().filter_map(|t| t.open.as_mut()) {
            if s.best_ns == t_ns && s.best_result_id.is_none() {
                s.best_result_id = Some(result_id.to_owned());
            }
        }
    }

    /// End the sightings (of `source`, or of every source) whose label has not
    /// passed for `end_after_ms` at `now_ns`. The daemon calls it on every
    /// frame and on a timer, so a source that stops delivering frames still
    /// ends its sightings.
    pub fn expire(&mut self, source: Option<&str>, now_ns: i64) -> Vec<Event> {
        let mut events = Vec::new();
        let (default_rules, by_label) = (self.rules, &self.by_label);
        self.tracks.retain(|key, track| {
            if source.is_some_and(|s| s != key.source) {
                return true;
            }
            let limit = by_label
                .get(&key.label)
                .unwrap_or(&default_rules)
                .end_after_ns();
            match &track.open {
                Some(s) if now_ns.saturating_sub(s.last_seen_ns) >= limit => {
                    let mut s = s.clone();
                    s.end_ns = Some(s.last_seen_ns);
                    events.push(Event::Ended(s));
                    false
                }
                _ => true,
            }
        });
        events
    }

    /// End every open sighting at the last time it was seen (shutdown; on
    /// start-up the store does the same for sightings a crash left open).
    pub fn close_all(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.tracks)
            .into_values()
            .filter_map(|t| t.open)
            .map(|mut s| {
                s.end_ns = Some(s.last_seen_ns);
                Event::Ended(s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;
    /// 15 fps.
    const DT: i64 = 66 * MS;

    fn hit(label: &str, score: f32) -> Hit {
        Hit {
            label: label.into(),
            zone: None,
            score,
            objects: 1,
        }
    }

    /// `n` frames in which `label` passes (score `score`) where `present`.
    fn passing(
        n: usize,
        label: &str,
        score: f32,
        present: impl Fn(usize) -> bool,
    ) -> Vec<Vec<Hit>> {
        (0..n)
            .map(|i| {
                if present(i) {
                    vec![hit(label, score)]
                } else {
                    vec![]
                }
            })
            .collect()
    }

    /// Feed `frames` (per frame: its hits) at 15 fps from t = 0; returns the
    /// events with the index of the frame that produced them.
    fn run(t: &mut Tracker, frames: &[Vec<Hit>]) -> Vec<(usize, Event)> {
        let mut out = Vec::new();
        for (i, hits) in frames.iter().enumerate() {
            let id = format!("r{i}");
            let f = Frame {
                source: "cam",
                t_ns: i as i64 * DT,
                result_id: Some(&id),
                hits,
            };
            out.extend(t.observe(&f).into_iter().map(|e| (i, e)));
        }
        out
    }

    fn starts_and_ends(events: &[(usize, Event)]) -> Vec<(&'static str, usize, i64, Option<i64>)> {
        events
            .iter()
            .filter_map(|(i, e)| match e {
                Event::Started(s) => Some(("start", *i, s.start_ns, s.end_ns)),
                Event::Ended(s) => Some(("end", *i, s.start_ns, s.end_ns)),
                Event::NewBest(_) => None,
            })
            .collect()
    }

    // Would catch a sighting per frame, a start at the opening frame instead
    // of the first passing one, or an end at the expiry time instead of the
    // last frame seen: one appearance of frames 5..=20 gives one sighting
    // from frame 5 to frame 20, reported when it ends 3 s later.
    #[test]
    fn one_appearance_is_one_sighting_with_true_start_and_end() {
        let mut t = Tracker::new(Rules::default(), 0);
        let frames: Vec<Vec<Hit>> = (0..80)
            .map(|i| {
                if (5..=20).contains(&i) {
                    vec![hit("person", 0.5 + i as f32 / 100.0)]
                } else {
                    vec![]
                }
            })
            .collect();
        let ev = run(&mut t, &frames);
        let se = starts_and_ends(&ev);
        assert_eq!(se.len(), 2, "{se:?}");
        assert_eq!(se[0], ("start", 6, 5 * DT, None));
        let end_frame = se[1].1;
        assert_eq!(se[1].3, Some(20 * DT));
        // Ended by the first frame at least 3 s after frame 20.
        assert!((end_frame as i64 - 20) * DT >= 3000 * MS);
        assert!((end_frame as i64 - 21) * DT < 3000 * MS);
        let Event::Ended(s) = &ev.last().unwrap().1 else {
            panic!("last event is not an end")
        };
        assert_eq!((s.frames, s.id, s.label.as_str()), (16, 1, "person"));
        assert_eq!(s.best_result_id.as_deref(), Some("r20"));
        assert!((s.peak_score - 0.7).abs() < 1e-6);
        assert_eq!(t.open().count(), 0);
    }

    // Would catch a one-frame flicker opening a sighting, or windows that
    // never forget (two flickers far apart opening one).
    #[test]
    fn flickers_open_nothing() {
        let mut t = Tracker::new(Rules::default(), 0);
        let frames = passing(30, "cat", 0.9, |i| i % 10 == 0);
        assert!(run(&mut t, &frames).is_empty());
    }

    // Would catch a flicker long ago opening a sighting with the next pass
    // when the frames in between were never inferred (motion gating skips a
    // static scene): the sighting must start at the new pass, not at the
    // flicker a second earlier (found by the daemon replay test).
    #[test]
    fn passes_further_apart_than_end_after_ms_are_not_one_presence() {
        let mut t = Tracker::new(
            Rules {
                end_after_ms: 600,
                ..Rules::default()
            },
            0,
        );
        let mut ev = Vec::new();
        // A flicker at frame 0, an empty frame 1, then (frames skipped as
        // static) passes at frames 20 and 21.
        for (i, hits) in [
            (0, vec![hit("cat", 0.9)]),
            (1, vec![]),
            (20, vec![hit("cat", 0.9)]),
            (21, vec![hit("cat", 0.9)]),
        ] {
            let id = format!("r{i}");
            ev.extend(t.observe(&Frame {
                source: "cam",
                t_ns: i * DT,
                result_id: Some(&id),
                hits: &hits,
            }));
        }
        let starts: Vec<i64> = ev
            .iter()
            .filter_map(|e| match e {
                Event::Started(s) => Some(s.start_ns),
                _ => None,
            })
            .collect();
        assert_eq!(starts, vec![20 * DT], "{ev:?}");
    }

    // Would catch a short gap splitting one sighting into two, and a long
    // one not splitting.
    #[test]
    fn gaps_shorter_than_end_after_do_not_split() {
        let mut t = Tracker::new(Rules::default(), 0);
        // Present 0..10, absent 11..40 (2 s), present 41..50, absent 51..200.
        let present = |i: usize| (0..=10).contains(&i) || (41..=50).contains(&i);
        let frames = passing(200, "dog", 0.8, present);
        let se = starts_and_ends(&run(&mut t, &frames));
        assert_eq!(se.len(), 2, "{se:?}");
        assert_eq!(se[1].3, Some(50 * DT));
        // Absent 51..120 (4.6 s) then present again: two sightings.
        let mut t = Tracker::new(Rules::default(), 7);
        let present = |i: usize| (0..=10).contains(&i) || (80..=90).contains(&i);
        let frames = passing(200, "dog", 0.8, present);
        let ev = run(&mut t, &frames);
        let ids: Vec<u64> = ev
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Started(s) => Some(s.id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, [8, 9], "ids continue after the store's last");
    }

    // Would catch labels, zones or sources sharing one sighting, or the
    // largest simultaneous count not recorded.
    #[test]
    fn labels_zones_and_sources_are_separate() {
        let mut t = Tracker::new(Rules::default(), 0);
        let door = |label: &str, n| Hit {
            label: label.into(),
            zone: Some("door".into()),
            score: 0.6,
            objects: n,
        };
        let frames: Vec<Vec<Hit>> = (0..4)
            .map(|i| vec![hit("person", 0.7), door("person", 1 + i), hit("car", 0.9)])
            .collect();
        let ev = run(&mut t, &frames);
        let started: Vec<(String, Option<String>)> = ev
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Started(s) => Some((s.label.clone(), s.zone.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(started.len(), 3, "{started:?}");
        // Another source's frames do not touch this one's sightings.
        let other = Frame {
            source: "yard",
            t_ns: 100_000 * MS,
            result_id: None,
            hits: &[],
        };
        assert!(t.observe(&other).is_empty());
        assert!(t.any_open("cam") && !t.any_open("yard"));
        let ended = t.close_all();
        assert_eq!(ended.len(), 3);
        let door_end = ended
            .iter()
            .find_map(|e| match e {
                Event::Ended(s) if s.zone.is_some() => Some(s),
                _ => None,
            })
            .unwrap();
        assert_eq!(door_end.max_objects, 4);
        assert_eq!(
            door_end.end_ns,
            Some(3 * DT),
            "closed at the last time seen"
        );
    }

    // Would catch a source that stops sending frames keeping its sightings
    // open forever: the timer's expiry ends them.
    #[test]
    fn expiry_without_frames_ends_sightings() {
        let mut t = Tracker::new(Rules::default(), 0);
        run(&mut t, &vec![vec![hit("person", 0.7)]; 3]);
        assert!(t.expire(None, 2 * DT + 2999 * MS).is_empty());
        let ev = t.expire(None, 2 * DT + 3000 * MS);
        assert!(matches!(&ev[..], [Event::Ended(s)] if s.end_ns == Some(2 * DT)));
    }

    // Would catch rules that can never open a sighting being accepted.
    #[test]
    fn rules_are_validated() {
        assert!(Rules::default().validate().is_ok());
        let bad = Rules {
            min_frames: 4,
            window: 3,
            end_after_ms: 1,
        };
        assert!(bad.validate().unwrap_err().contains("min_frames = 4"));
        let zero = Rules {
            window: 0,
            ..Rules::default()
        };
        assert!(zero.validate().unwrap_err().contains("window = 0"));
    }
}
