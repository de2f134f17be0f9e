//! The Home Assistant binary sensors' state (issue 18): one retained `ON` /
//! `OFF` per label of `mqtt.homeassistant_labels`, on
//! `<sighting_topic>/<label>/state`, derived from the sighting entries the
//! publisher sends. A label is `ON` while any of its sightings (any source or
//! zone) has started and not ended, so the sensors follow sightings instead
//! of flipping on every frame.
//!
//! Entries are sent at least once and replayed from the outbox after a
//! reconnect, so the state is kept as sets of ids (a repeated `started` or
//! `ended` changes nothing) and a `started` that arrives again after its
//! `ended` (a replay of an entry whose acknowledgement was lost) is ignored.
//! Both sets are bounded. Only changes are published, plus every label's
//! state after each (re)connect.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::core::sighting::{SightingChange, SightingEvent};

/// Open sighting ids kept per label; beyond it the oldest is forgotten
/// (only ended entries lost to an outbox overflow leave ids behind).
const MAX_OPEN_PER_LABEL: usize = 256;
/// Ended sighting ids remembered, to ignore a replayed `started`.
const MAX_ENDED: usize = 1024;

/// The retained state topic of `label`'s binary sensor.
pub(super) fn state_topic(sighting_topic: &str, label: &str) -> String {
    format!("{sighting_topic}/{}/state", super::discovery::slug(label))
}

/// Per-label open sightings and the states waiting to be published.
#[derive(Debug)]
pub(super) struct LabelStates {
    sighting_topic: String,
    /// Label → ids of its open sightings (only the configured labels).
    open: BTreeMap<String, BTreeSet<u64>>,
    ended: VecDeque<u64>,
    /// Labels whose state is to be published.
    dirty: BTreeSet<String>,
}

impl LabelStates {
    /// `labels`: the labels that have a binary sensor (none when Home
    /// Assistant discovery is off).
    pub(super) fn new(sighting_topic: String, labels: &[String]) -> LabelStates {
        LabelStates {
            sighting_topic,
            open: labels
                .iter()
                .map(|l| (l.clone(), BTreeSet::new()))
                .collect(),
            ended: VecDeque::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// A sighting entry's payload (a [`SightingEvent`]'s JSON) was sent.
    pub(super) fn on_sent(&mut self, payload: &[u8]) {
        let Ok(ev) = serde_json::from_slice::<SightingEvent>(payload) else {
            log::debug!("MQTT: a sighting entry that is not a sighting event; no sensor state");
            return;
        };
        let id = ev.sighting.id;
        let Some(ids) = self.open.get_mut(&ev.sighting.label) else {
            return;
        };
        let was_on = !ids.is_empty();
        match ev.event {
            SightingChange::Started if self.ended.contains(&id) => {}
            SightingChange::Started => {
                ids.insert(id);
                if ids.len() > MAX_OPEN_PER_LABEL {
                    ids.pop_first();
                }
            }
            SightingChange::Ended => {
                ids.remove(&id);
                if !self.ended.contains(&id) {
                    if self.ended.len() >= MAX_ENDED {
                        self.ended.pop_front();
                    }
                    self.ended.push_back(id);
                }
            }
        }
        if was_on == ids.is_empty() {
            self.dirty.insert(ev.sighting.label);
        }
    }

    /// After a (re)connect: publish every label's state again.
    pub(super) fn mark_all(&mut self) {
        self.dirty = self.open.keys().cloned().collect();
    }

    /// The next (topic, payload) to publish retained, if any; call
    /// [`LabelStates::unpop`] with the label if it could not be sent.
    pub(super) fn pop(&mut self) -> Option<(String, String, Vec<u8>)> {
        let label = self.dirty.pop_first()?;
        let on = self.open.get(&label).is_some_and(|ids| !ids.is_empty());
        let payload = if on { b"ON".to_vec() } else { b"OFF".to_vec() };
        Some((state_topic(&self.sighting_topic, &label), label, payload))
    }

    /// Put back a label [`LabelStates::pop`] gave that could not be sent.
    pub(super) fn unpop(&mut self, label: String) {
        self.dirty.insert(label);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::sighting::Sighting;

    fn ev(event: SightingChange, id: u64, label: &str) -> Vec<u8> {
        serde_json::to_vec(&SightingEvent {
            event,
            sighting: Sighting::test_open(id, label, 0.9),
        })
        .unwrap()
    }

    fn drain(s: &mut LabelStates) -> Vec<(String, String)> {
        std::iter::from_fn(|| s.pop())
            .map(|(t, _, p)| (t, String::from_utf8(p).unwrap()))
            .collect()
    }

    // Would catch the sensor following frames or single sightings instead of
    // the label's presence: two overlapping sightings (two zones) must keep
    // it ON until both ended; other labels must not touch it; a replayed
    // `started` after its `ended` (lost acknowledgement) must not leave it
    // ON for ever; a repeated entry must not publish again.
    #[test]
    fn a_label_is_on_while_any_of_its_sightings_is_open() {
        use SightingChange::{Ended, Started};
        let mut s = LabelStates::new("spotter/d/sighting".into(), &["person".into()]);
        let on = |v: &str| vec![("spotter/d/sighting/person/state".to_string(), v.to_string())];
        s.on_sent(&ev(Started, 1, "person"));
        assert_eq!(drain(&mut s), on("ON"));
        s.on_sent(&ev(Started, 1, "person"));
        s.on_sent(&ev(Started, 2, "person"));
        s.on_sent(&ev(Started, 3, "cat"));
        assert_eq!(drain(&mut s), vec![], "no change, nothing published");
        s.on_sent(&ev(Ended, 1, "person"));
        assert_eq!(drain(&mut s), vec![], "sighting 2 still open");
        s.on_sent(&ev(Ended, 2, "person"));
        assert_eq!(drain(&mut s), on("OFF"));
        s.on_sent(&ev(Started, 2, "person"));
        assert_eq!(
            drain(&mut s),
            vec![],
            "a replayed start of an ended sighting"
        );
        s.on_sent(b"not json");
        s.mark_all();
        assert_eq!(drain(&mut s), on("OFF"), "every label after a connect");
        s.on_sent(&ev(Started, 9, "person"));
        let (_, label, _) = s.pop().unwrap();
        s.unpop(label);
        assert_eq!(drain(&mut s), on("ON"), "kept when it could not be sent");
    }

    // Would catch the sets growing without bound when ended entries were
    // lost (outbox overflow).
    #[test]
    fn open_ids_are_bounded() {
        let mut s = LabelStates::new("t".into(), &["a".into()]);
        for id in 0..(MAX_OPEN_PER_LABEL as u64 + 50) {
            s.on_sent(&ev(SightingChange::Started, id, "a"));
        }
        assert_eq!(s.open["a"].len(), MAX_OPEN_PER_LABEL);
        for id in 0..(MAX_ENDED as u64 + 50) {
            s.on_sent(&ev(SightingChange::Ended, 100_000 + id, "a"));
        }
        assert_eq!(s.ended.len(), MAX_ENDED);
    }
}
