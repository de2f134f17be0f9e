//! The sighting record: one continuous presence of a label on a source (and
//! in a zone, when zones are configured), open or closed. A leaf type so the
//! tracker that makes sightings, the store that keeps them and the API and
//! MQTT that serve them share one definition and one JSON form.

use serde::{Deserialize, Serialize};

/// A sighting, open (`end_ns` is `None`) or closed. Its JSON (serde) form is
/// the one the API, the SSE events, MQTT and backups carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    /// Unique across restarts (the store keeps the largest id given).
    pub id: u64,
    pub label: String,
    /// The source's name (`default` with a single `[source]`).
    pub source: String,
    /// The zone the sighting is in; `None` for the whole frame.
    pub zone: Option<String>,
    /// Capture time of the first passing frame, ns since the Unix epoch.
    pub start_ns: i64,
    /// Capture time of the last passing frame, once closed.
    pub end_ns: Option<i64>,
    /// The last time the label passed (the end, once closed).
    pub last_seen_ns: i64,
    pub peak_score: f32,
    /// Frames in which the label passed, opening ones included.
    pub frames: u64,
    /// The most objects of the label seen in one frame.
    pub max_objects: u32,
    /// The result of the best-scoring frame, when it was stored.
    pub best_result_id: Option<String>,
    /// Capture time of the best-scoring frame.
    pub best_ns: i64,
}

impl Sighting {
    /// Whether it is still open.
    pub fn is_open(&self) -> bool {
        self.end_ns.is_none()
    }

    /// An open sighting of `label` seen once at t = 1 ns, for tests.
    #[cfg(test)]
    pub(crate) fn test_open(id: u64, label: &str, peak_score: f32) -> Sighting {
        Sighting {
            id,
            label: label.into(),
            source: "default".into(),
            zone: None,
            start_ns: 1,
            end_ns: None,
            last_seen_ns: 1,
            peak_score,
            frames: 2,
            max_objects: 1,
            best_result_id: None,
            best_ns: 1,
        }
    }

    /// Seconds from start to end (to `last_seen_ns` while open).
    pub fn duration_s(&self) -> f64 {
        let end = self.end_ns.unwrap_or(self.last_seen_ns);
        end.saturating_sub(self.start_ns).max(0) as f64 / 1e9
    }
}

/// What happened to a sighting: the SSE event names are
/// `sighting_started` / `sighting_ended`, the MQTT payload's `event` field
/// `started` / `ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SightingChange {
    Started,
    Ended,
}

impl SightingChange {
    /// The SSE event name.
    pub fn event_name(self) -> &'static str {
        match self {
            SightingChange::Started => "sighting_started",
            SightingChange::Ended => "sighting_ended",
        }
    }
}

/// A sighting's change as published (SSE data, MQTT
/// `spotter/<device_id>/sighting` payload):
/// `{"event": "started", "sighting": {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SightingEvent {
    pub event: SightingChange,
    pub sighting: Sighting,
}
