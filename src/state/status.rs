//! The `GET /api/v1/status` document, serialised once per change rather than
//! once per request. [`AppState::status_json`] compares a small key of
//! everything the document shows (uptime in whole seconds, the state's change
//! generation, counters, the store's figures, MQTT and GPIO counters) with
//! the key of the cached bytes and rebuilds only when it differs; a hit is a
//! read lock and a reference-count increment. The uptime in the key also
//! bounds how stale the few fields written without a setter (the MQTT broker,
//! GPIO backend, mode and last error, latency samples) can be: one second.

use std::sync::atomic::Ordering;
use std::sync::{PoisonError, RwLock};

use bytes::Bytes;
use serde::Serialize;

use super::gpio::GpioSnapshot;
use super::{AppState, CounterSnapshot, MqttSnapshot, Readiness};
use crate::core::result::ResultRecord;
use crate::metrics::StoreStats;

/// What the status document depends on, cheap to read and compare.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StatusKey {
    uptime_s: u64,
    generation: u64,
    clock_synchronized: bool,
    counters: CounterSnapshot,
    store: StoreStats,
    mqtt: [u64; 9],
    gpio: [u64; 7],
}

/// The cached body and the key it was built for.
#[derive(Debug, Default)]
pub(super) struct StatusCache {
    slot: RwLock<Option<(StatusKey, Bytes)>>,
}

/// The document (field names and shapes are `Status` in docs/openapi.json).
#[derive(Serialize)]
struct StatusDoc<'a> {
    uptime_s: u64,
    clock_synchronized: bool,
    version: &'static str,
    source: String,
    readiness: ReadinessDoc,
    model: Option<super::ModelStatus>,
    counters: CounterSnapshot,
    last_result: Option<ResultRecord>,
    store: &'a StoreStats,
    mqtt: MqttSnapshot,
    gpio: GpioSnapshot,
    /// Motion gating (issue 18): written per frame without a setter, so as
    /// stale as the uptime in the key allows (one second).
    motion: super::motion::MotionSnapshot,
    /// The focus figure per source (issue 20): measured when a viewer
    /// fetches a frame, without a setter, so as stale as the uptime in the
    /// key allows (one second).
    focus: super::frames::FocusSnapshot,
    /// SoC temperature and throttling flags (issue 22); null before the
    /// first reading or with `[power]` off.
    power: Option<PowerDoc>,
}

/// Status `power`: the last reading and the heat slowdown in force.
#[derive(Serialize)]
struct PowerDoc {
    #[serde(flatten)]
    reading: crate::power::Reading,
    /// `power.hot_max_fps` while the SoC is over `power.hot_above_c`;
    /// null at full rate.
    inference_max_fps: Option<f64>,
}

#[derive(Serialize)]
struct ReadinessDoc {
    ready: bool,
    checks: Readiness,
}

impl AppState {
    fn status_key(&self, store: StoreStats) -> StatusKey {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let b = |a: &std::sync::atomic::AtomicBool| u64::from(a.load(Ordering::Relaxed));
        let m = &self.mqtt;
        let outbox = m.outbox.get();
        let gp = &self.gpio;
        StatusKey {
            uptime_s: self.started.elapsed().as_secs(),
            generation: g(&self.generation),
            clock_synchronized: self.clock_synchronized.load(Ordering::Relaxed),
            counters: self.counters.snapshot(),
            store,
            mqtt: [
                b(&m.enabled) | b(&m.connected) << 1,
                g(&m.published),
                g(&m.acked),
                g(&m.rejected),
                g(&m.reconnects),
                outbox.map_or(0, |o| o.len() as u64),
                outbox.map_or(0, |o| o.bytes()),
                outbox.map_or(0, |o| o.dropped()),
                g(&m.error_changes),
            ],
            gpio: [
                b(&gp.enabled),
                g(&gp.triggers),
                g(&gp.triggers_busy),
                g(&gp.triggers_bounce),
                g(&gp.frames_gated),
                g(&gp.outputs_switched),
                g(&gp.errors),
            ],
        }
    }

    fn build_status(&self, key: &StatusKey) -> Bytes {
        let readiness = self.readiness();
        let doc = StatusDoc {
            uptime_s: key.uptime_s,
            clock_synchronized: key.clock_synchronized,
            version: self.version,
            source: self.source(),
            readiness: ReadinessDoc {
                ready: readiness.ready(),
                checks: readiness,
            },
            model: self.model(),
            counters: key.counters,
            last_result: self.last_result(),
            store: &key.store,
            mqtt: self.mqtt.snapshot(),
            gpio: self.gpio.snapshot(),
            motion: self.motion_snapshot(),
            focus: self.focus_snapshot(),
            power: self.power().map(|reading| PowerDoc {
                reading,
                inference_max_fps: self.heat_max_fps(),
            }),
        };
        match serde_json::to_vec(&doc) {
            Ok(v) => Bytes::from(v),
            // Every field is a plain struct, string or number: encoding them
            // cannot fail, but an empty object beats a panic if it ever does.
            Err(e) => {
                log::error!("cannot encode the status document: {e}");
                Bytes::from_static(b"{}")
            }
        }
    }

    /// The `GET /api/v1/status` body for the store figures `store`: the
    /// cached bytes when nothing it shows has changed since they were built,
    /// else a fresh serialisation (kept for the next caller).
    pub fn status_json(&self, store: StoreStats) -> Bytes {
        let key = self.status_key(store);
        let cache = &self.status_cache.slot;
        if let Some((k, body)) = &*cache.read().unwrap_or_else(PoisonError::into_inner) {
            if *k == key {
                return body.clone();
            }
        }
        let mut slot = cache.write().unwrap_or_else(PoisonError::into_inner);
        // Another request may have rebuilt it while this one waited.
        if let Some((k, body)) = &*slot {
            if *k == key {
                return body.clone();
            }
        }
        let body = self.build_status(&key);
        *slot = Some((key, body.clone()));
        body
    }

    /// Mark a change the status key cannot see by itself (readiness, model,
    /// source, last result, MQTT error): the next status request rebuilds.
    pub(crate) fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Check, Counters};

    fn doc(s: &AppState, store: &StoreStats) -> serde_json::Value {
        serde_json::from_slice(&s.status_json(store.clone())).unwrap()
    }

    // Catches: a cached status body served after a change it shows (readiness,
    // source, model, counters, store figures, MQTT error), i.e. a change path
    // that does not invalidate the cache.
    #[test]
    fn every_change_shows_in_the_next_status() {
        let s = AppState::new();
        let mut store = StoreStats::default();
        let v = doc(&s, &store);
        assert_eq!(v["readiness"]["ready"], false);
        assert_eq!(v["source"], "");

        s.set_source("files:/x".into());
        assert_eq!(doc(&s, &store)["source"], "files:/x");

        s.update_readiness(|r| r.source = Check::passing("frames"));
        assert_eq!(doc(&s, &store)["readiness"]["checks"]["source"]["ok"], true);

        Counters::inc(&s.counters.inferences);
        assert_eq!(doc(&s, &store)["counters"]["inferences"], 1);

        store.records = 7;
        assert_eq!(doc(&s, &store)["store"]["records"], 7);

        s.mqtt.set_error(Some("refused".into()));
        assert_eq!(doc(&s, &store)["mqtt"]["last_error"], "refused");

        s.gpio.triggers.fetch_add(1, Ordering::Relaxed);
        assert_eq!(doc(&s, &store)["gpio"]["triggers"], 1);
    }

    // Catches: the cache being rebuilt on every request (the point of it),
    // seen as a new allocation for an unchanged state.
    #[test]
    fn an_unchanged_state_reuses_the_bytes() {
        let s = AppState::new();
        let store = StoreStats::default();
        let a = s.status_json(store.clone());
        let b = s.status_json(store.clone());
        // The same second and the same figures: the same buffer (unless the
        // uptime just ticked over, then the next pair must match).
        if a.as_ptr() != b.as_ptr() {
            let c = s.status_json(store);
            assert_eq!(b.as_ptr(), c.as_ptr());
        }
    }

    // Catches: the document drifting from the per-request `json!` it
    // replaced (a field renamed, dropped or reshaped), which clients and
    // docs/openapi.json's status schema rely on.
    #[test]
    fn the_document_is_the_one_built_per_request_before() {
        let s = AppState::new();
        s.set_source("files:/srv (2 fps)".into());
        Counters::inc(&s.counters.frames_captured);
        let store = StoreStats {
            records: 3,
            durable_through: Some("00ff".into()),
            ..Default::default()
        };
        let readiness = s.readiness();
        let before = serde_json::json!({
            "uptime_s": s.started.elapsed().as_secs(),
            "clock_synchronized": s.clock_synchronized.load(Ordering::Relaxed),
            "version": s.version,
            "source": s.source(),
            "readiness": { "ready": readiness.ready(), "checks": readiness },
            "model": s.model(),
            "counters": s.counters.snapshot(),
            "last_result": s.last_result(),
            "store": store,
            "mqtt": s.mqtt.snapshot(),
            "gpio": s.gpio.snapshot(),
            "motion": {"active": false, "sources": []},
            "focus": {"sources": []},
            "power": null,
        });
        let mut now = doc(&s, &store);
        // The uptime may have ticked between the two.
        now["uptime_s"] = before["uptime_s"].clone();
        assert_eq!(now, before);
    }

    // Catches: a new power reading not reaching a cached status document
    // (set_power not marking the state changed), so status would show the
    // temperature of the first reading for ever.
    #[test]
    fn a_new_power_reading_shows_in_the_next_status() {
        let s = AppState::new();
        let store = StoreStats::default();
        let first: serde_json::Value =
            serde_json::from_slice(&s.status_json(store.clone())).unwrap();
        assert!(first["power"].is_null());
        let reading = |t: f64| crate::power::Reading {
            temp_c: Some(t),
            ..Default::default()
        };
        s.set_power(reading(71.5));
        let v: serde_json::Value = serde_json::from_slice(&s.status_json(store.clone())).unwrap();
        assert_eq!(v["power"]["temp_c"], 71.5);
        s.set_power(reading(64.0));
        let v: serde_json::Value = serde_json::from_slice(&s.status_json(store.clone())).unwrap();
        assert_eq!(v["power"]["temp_c"], 64.0);
        assert!(v["power"]["inference_max_fps"].is_null());
        // A heat slowdown reaches the cached document too.
        s.set_heat_limit(Some(0.5));
        let v: serde_json::Value = serde_json::from_slice(&s.status_json(store.clone())).unwrap();
        assert_eq!(v["power"]["inference_max_fps"], 0.5);
        assert_eq!(s.heat_interval(), Some(std::time::Duration::from_secs(2)));
        s.set_heat_limit(None);
        let v: serde_json::Value = serde_json::from_slice(&s.status_json(store)).unwrap();
        assert!(v["power"]["inference_max_fps"].is_null());
        assert_eq!(s.heat_interval(), None);
    }
}
