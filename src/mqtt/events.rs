//! The publisher's event messages (`source_lost`, `source_recovered`,
//! `model_activated`, `outbox_overflow`; best effort, not persisted): what
//! the daemon's state changes become on the event topic, and the bounded
//! queue they wait in until the publisher can send them.
//!
//! Readiness and model changes are learned from the daemon's event bus
//! ([`AppState::events`]): on each state event the current state is read
//! again and compared with what was last seen, and when the subscription
//! fell behind the bus (`Lagged`) the current state is read once the same
//! way. Outbox overflow is read from the outbox's counter, which the store
//! raises before it wakes the publisher; drops are summed into at most one
//! `outbox_overflow` event per [`OVERFLOW_EVERY`].

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast::error::RecvError;

use crate::state::{AppState, Event};

/// Events kept while disconnected; older ones are dropped.
const MAX_PENDING_EVENTS: usize = 64;
/// `outbox_overflow` events go out at most this often; the drops in between
/// are summed into the next one (the rate the publisher had when it sampled
/// the outbox every 250 ms, so a full outbox does not add one event per
/// result).
pub(super) const OVERFLOW_EVERY: Duration = Duration::from_millis(250);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Event messages waiting to be sent, and the state they were derived from.
pub(super) struct Events {
    device_id: String,
    /// Encoded messages, oldest first.
    pending: VecDeque<Vec<u8>>,
    /// Whether the source was ready when last seen (`None` until it first
    /// was: only a source that worked once can be lost).
    source_ok: Option<bool>,
    /// Each named source's last check state (several sources, issue 19;
    /// bounded by the configured sources): one camera lost while another
    /// streams is an event of its own.
    sources_ok: std::collections::BTreeMap<String, bool>,
    /// The active model's SHA-256 when last seen.
    model_sha: Option<String>,
    /// The outbox's dropped counter when last reported.
    dropped_seen: u64,
    /// When the last `outbox_overflow` event was queued.
    overflow_reported: Option<Instant>,
}

impl Events {
    /// `dropped_seen`: the outbox's dropped counter now (earlier drops are
    /// not reported).
    pub(super) fn new(device_id: String, dropped_seen: u64) -> Events {
        Events {
            device_id,
            pending: VecDeque::new(),
            source_ok: None,
            sources_ok: std::collections::BTreeMap::new(),
            model_sha: None,
            dropped_seen,
            overflow_reported: None,
        }
    }

    /// The oldest message waiting, if any.
    pub(super) fn pop(&mut self) -> Option<Vec<u8>> {
        self.pending.pop_front()
    }

    /// Put back a message [`Events::pop`] gave that could not be sent.
    pub(super) fn unpop(&mut self, message: Vec<u8>) {
        self.pending.push_front(message);
    }

    /// Act on one receive from the daemon's event bus; false when the bus
    /// has closed (nothing more will come).
    pub(super) fn on_bus(&mut self, received: Result<Event, RecvError>, state: &AppState) -> bool {
        match received {
            // Results and sightings (issue 18) reach the publisher through
            // the outbox.
            Ok(ev) if matches!(ev.name, "result" | "sighting_started" | "sighting_ended") => {}
            Ok(_) => self.sample(state),
            Err(RecvError::Lagged(missed)) => {
                log::debug!("MQTT: {missed} state events missed; reading the current state");
                self.sample(state);
            }
            Err(RecvError::Closed) => return false,
        }
        true
    }

    /// Turn changes of the daemon's state since it was last seen into events.
    pub(super) fn sample(&mut self, state: &AppState) {
        let r = state.readiness();
        if r.sources.len() > 1 {
            self.sample_sources(state, &r);
        } else {
            self.sample_source(state, &r);
        }
        if let Some(m) = state.model() {
            if self.model_sha.as_deref() != Some(m.sha256.as_str()) {
                self.model_sha = Some(m.sha256.clone());
                self.push(
                    "model_activated",
                    serde_json::json!({ "model_sha256": m.sha256, "path": m.path, "runtime": m.runtime }),
                );
            }
        }
    }

    /// One source (or none registered): the daemon's source check.
    fn sample_source(&mut self, state: &AppState, r: &crate::state::Readiness) {
        match (self.source_ok, r.source.ok) {
            (Some(true), false) => self.push(
                "source_lost",
                serde_json::json!({ "detail": r.source.detail }),
            ),
            (Some(false), true) => self.push(
                "source_recovered",
                serde_json::json!({ "source": state.source() }),
            ),
            _ => {}
        }
        // Only a source that worked once can be lost.
        if r.source.ok || self.source_ok.is_some() {
            self.source_ok = Some(r.source.ok);
        }
    }

    /// Several sources: each one's check, by name (`source_name` in the
    /// payload); only a source that worked once can be lost.
    fn sample_sources(&mut self, state: &AppState, r: &crate::state::Readiness) {
        for c in &r.sources {
            match (self.sources_ok.get(&c.name).copied(), c.ok) {
                (Some(true), false) => self.push(
                    "source_lost",
                    serde_json::json!({ "detail": c.detail, "source_name": c.name }),
                ),
                (Some(false), true) => self.push(
                    "source_recovered",
                    serde_json::json!({ "source": state.source(), "source_name": c.name }),
                ),
                _ => {}
            }
            if c.ok || self.sources_ok.contains_key(&c.name) {
                self.sources_ok.insert(c.name.clone(), c.ok);
            }
        }
    }

    /// An `outbox_overflow` event if the outbox's dropped counter, now
    /// `dropped`, rose since the last one, unless that was less than
    /// [`OVERFLOW_EVERY`] ago: then the time to look again.
    pub(super) fn note_overflow(&mut self, dropped: u64, now: Instant) -> Option<Instant> {
        if dropped <= self.dropped_seen {
            return None;
        }
        if let Some(due) = self.overflow_reported.map(|t| t + OVERFLOW_EVERY) {
            if now < due {
                return Some(due);
            }
        }
        self.push(
            "outbox_overflow",
            serde_json::json!({ "dropped": dropped - self.dropped_seen, "dropped_total": dropped }),
        );
        self.dropped_seen = dropped;
        self.overflow_reported = Some(now);
        None
    }

    fn push(&mut self, event: &str, fields: serde_json::Value) {
        let mut v =
            serde_json::json!({ "event": event, "ts_ns": now_ns(), "device_id": self.device_id });
        if let (Some(o), serde_json::Value::Object(extra)) = (v.as_object_mut(), fields) {
            o.extend(extra);
        }
        if self.pending.len() >= MAX_PENDING_EVENTS {
            self.pending.pop_front();
        }
        self.pending.push_back(v.to_string().into_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Check, ModelStatus, EVENT_BUS_CAPACITY};
    use tokio::sync::broadcast::Receiver;

    fn model(sha: &str) -> ModelStatus {
        ModelStatus {
            path: format!("/m/{sha}.tflite"),
            sha256: sha.into(),
            kind: "classifier".into(),
            runtime: "builtin".into(),
            runtime_reason: String::new(),
            input_shape: vec![1, 224, 224, 3],
            input_dtype: "uint8".into(),
            labels: 2,
        }
    }

    /// A state, a subscription to its bus and the [`Events`] of a publisher
    /// that has read the state once, as `run` does at start.
    fn started() -> (AppState, Receiver<Event>, Events) {
        let state = AppState::new();
        let bus = state.events.subscribe();
        let mut events = Events::new("dev".into(), 0);
        events.sample(&state);
        (state, bus, events)
    }

    /// Hand every event waiting on `bus` to `events`.
    fn deliver(events: &mut Events, bus: &mut Receiver<Event>, state: &AppState) {
        loop {
            match bus.try_recv() {
                Ok(ev) => assert!(events.on_bus(Ok(ev), state)),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    assert!(events.on_bus(Err(RecvError::Lagged(n)), state))
                }
                Err(_) => return,
            }
        }
    }

    /// The pending messages as JSON, without their time stamps.
    fn drain(events: &mut Events) -> Vec<serde_json::Value> {
        std::iter::from_fn(|| events.pop())
            .map(|m| {
                let mut v: serde_json::Value = serde_json::from_slice(&m).unwrap();
                assert!(v["ts_ns"].as_u64().is_some_and(|t| t > 0), "{v}");
                v.as_object_mut().unwrap().remove("ts_ns");
                v
            })
            .collect()
    }

    // Would catch the publisher missing a source loss, recovery or model
    // change that the state announces on its bus (nothing polls any more),
    // reporting a source lost that never worked, or changing the payloads.
    #[test]
    fn state_events_on_the_bus_become_event_messages() {
        let (state, mut bus, mut events) = started();
        state.update_readiness(|r| r.source = Check::failing("no camera"));
        state.set_source("files:/x".into());
        state.update_readiness(|r| r.source = Check::passing("frames"));
        deliver(&mut events, &mut bus, &state);
        assert_eq!(drain(&mut events), Vec::<serde_json::Value>::new());

        state.update_readiness(|r| r.source = Check::failing("stalled"));
        deliver(&mut events, &mut bus, &state);
        state.update_readiness(|r| r.source = Check::passing("again"));
        deliver(&mut events, &mut bus, &state);
        state.set_model(Some(model("abc")));
        state.publish("result", || 1);
        deliver(&mut events, &mut bus, &state);
        assert_eq!(
            drain(&mut events),
            [
                serde_json::json!({"event": "source_lost", "device_id": "dev", "detail": "stalled"}),
                serde_json::json!({"event": "source_recovered", "device_id": "dev", "source": "files:/x"}),
                serde_json::json!({"event": "model_activated", "device_id": "dev",
                    "model_sha256": "abc", "path": "/m/abc.tflite", "runtime": "builtin"}),
            ]
        );
    }

    // Would catch (several sources, issue 19) one camera's loss going
    // unpublished while another keeps the daemon's source check passing, or
    // the events not saying which camera.
    #[test]
    fn each_of_several_sources_has_its_own_loss_events() {
        let (state, mut bus, mut events) = started();
        state.register_source("yard");
        state.register_source("gate");
        state.update_readiness(|r| {
            r.set_source_check("yard", Check::passing("frames"));
            r.set_source_check("gate", Check::passing("frames"));
        });
        deliver(&mut events, &mut bus, &state);
        state.update_readiness(|r| r.set_source_check("gate", Check::failing("stalled")));
        deliver(&mut events, &mut bus, &state);
        assert!(state.readiness().source.ok, "yard still streams");
        state.update_readiness(|r| r.set_source_check("gate", Check::passing("again")));
        deliver(&mut events, &mut bus, &state);
        assert_eq!(
            drain(&mut events),
            [
                serde_json::json!({"event": "source_lost", "device_id": "dev",
                    "detail": "stalled", "source_name": "gate"}),
                serde_json::json!({"event": "source_recovered", "device_id": "dev",
                    "source": "", "source_name": "gate"}),
            ]
        );
    }

    // Would catch a subscriber that fell behind the bus losing the change it
    // missed instead of reading the current state once.
    #[test]
    fn a_lagged_subscription_reads_the_current_state_once() {
        let (state, mut bus, mut events) = started();
        state.set_model(Some(model("new")));
        for i in 0..EVENT_BUS_CAPACITY + 10 {
            state.publish("result", || i);
        }
        deliver(&mut events, &mut bus, &state);
        let got = drain(&mut events);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["event"], "model_activated");
        assert_eq!(got[0]["model_sha256"], "new");
    }

    // Would catch a closed bus taken for one more event: the publisher would
    // keep polling a receiver that returns at once, spinning its thread.
    #[test]
    fn a_closed_bus_is_reported() {
        let state = AppState::new();
        let mut events = Events::new("dev".into(), 0);
        assert!(!events.on_bus(Err(RecvError::Closed), &state));
    }

    // Would catch one overflow event per dropped result (a full outbox would
    // double the messages) or drops held back and never reported.
    #[test]
    fn overflow_events_sum_the_drops_at_most_every_250_ms() {
        let mut events = Events::new("dev".into(), 2);
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(events.note_overflow(2, t0), None, "drops before the start");
        assert_eq!(events.note_overflow(3, t0), None);
        assert_eq!(
            events.note_overflow(4, t0 + ms(10)),
            Some(t0 + OVERFLOW_EVERY)
        );
        assert_eq!(
            events.note_overflow(6, t0 + ms(200)),
            Some(t0 + OVERFLOW_EVERY)
        );
        assert_eq!(events.note_overflow(6, t0 + OVERFLOW_EVERY), None);
        assert_eq!(events.note_overflow(6, t0 + ms(900)), None, "nothing new");
        assert_eq!(events.note_overflow(7, t0 + ms(901)), None);
        let got: Vec<_> = drain(&mut events)
            .iter()
            .map(|v| {
                (
                    v["event"].clone(),
                    v["dropped"].clone(),
                    v["dropped_total"].clone(),
                )
            })
            .collect();
        let overflow = |d: u64, t: u64| ("outbox_overflow".into(), d.into(), t.into());
        assert_eq!(got, [overflow(1, 3), overflow(3, 6), overflow(1, 7)]);
    }

    // Would catch the queue growing without bound while disconnected.
    #[test]
    fn pending_messages_are_bounded_oldest_dropped() {
        let state = AppState::new();
        let mut events = Events::new("dev".into(), 0);
        for i in 0..MAX_PENDING_EVENTS + 5 {
            state.set_model(Some(model(&format!("m{i}"))));
            events.sample(&state);
        }
        let got = drain(&mut events);
        assert_eq!(got.len(), MAX_PENDING_EVENTS);
        assert_eq!(got[0]["model_sha256"], "m5");
    }
}
