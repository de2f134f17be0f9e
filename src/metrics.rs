//! Prometheus metrics (OpenMetrics text, via `prometheus-client`).
//!
//! Two kinds live here: accumulating metrics that only exist as metrics
//! (per-stage latency histograms, inferences per model, HTTP requests by route
//! and status), kept in a long-lived registry; and figures the daemon already
//! keeps in [`AppState`] (frame counters, readiness, the runtime choice) or
//! reads from the system (RSS, open file descriptors), rendered fresh on each
//! scrape so there is one source of truth for each number.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::result::StageLatency;
use crate::state::AppState;
use crate::store::StoreStats;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TriggerLabels {
    to: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model_sha256: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    runtime: String,
    reason: String,
    model_sha256: String,
}

/// The daemon's accumulating metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    stage_seconds: Family<StageLabels, Histogram, fn() -> Histogram>,
    inferences: Family<ModelLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
    tls_handshake_failures: Counter,
    auth_failures: Counter,
    rate_limited: Family<LimitLabels, Counter>,
    event_subscribers_dropped: Counter,
    trigger_latency: Family<TriggerLabels, Histogram, fn() -> Histogram>,
    /// Distinct model labels seen, to bound the per-model family.
    models_seen: AtomicU64,
}

/// At most this many distinct models get their own inference counter series.
const MAX_MODEL_SERIES: u64 = 32;

fn stage_histogram() -> Histogram {
    // 50 µs … ~3.3 s in ×2 steps: covers a 20 µs post-process and a 1 s
    // invoke of TF Lite 1.15 on a slow board.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spotter");
        let stage_seconds =
            Family::<StageLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                stage_histogram,
            );
        let inferences = Family::<ModelLabels, Counter>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let tls_handshake_failures = Counter::default();
        registry.register(
            "stage_latency_seconds",
            "Per-stage latency of each processed frame",
            stage_seconds.clone(),
        );
        registry.register("inferences", "Inferences run, by model", inferences.clone());
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            http_requests.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        let auth_failures = Counter::default();
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "API requests with a missing-when-required, malformed, unknown or revoked key",
            auth_failures.clone(),
        );
        registry.register(
            "rate_limited",
            "API requests refused with 429, by limit (client_ip or key)",
            rate_limited.clone(),
        );
        let event_subscribers_dropped = Counter::default();
        registry.register(
            "event_subscribers_dropped",
            "Event stream subscribers closed because they fell too far behind",
            event_subscribers_dropped.clone(),
        );
        let trigger_latency =
            Family::<TriggerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                stage_histogram,
            );
        registry.register(
            "gpio_trigger_latency_seconds",
            "Time from a GPIO trigger edge to its first result stored (to=stored) or to a rule output set (to=output)",
            trigger_latency.clone(),
        );
        Metrics {
            event_subscribers_dropped,
            trigger_latency,
            registry,
            stage_seconds,
            inferences,
            http_requests,
            tls_handshake_failures,
            auth_failures,
            rate_limited,
            models_seen: AtomicU64::new(0),
        }
    }

    /// Record the stage latencies of one processed frame.
    pub fn observe_latency(&self, l: &StageLatency) {
        for (stage, us) in [
            ("decode", l.decode_us),
            ("resize", l.resize_us),
            ("quantize", l.quantize_us),
            ("invoke", l.invoke_us),
            ("post", l.post_us),
            ("store", l.store_us),
        ] {
            self.stage_seconds
                .get_or_create(&StageLabels {
                    stage: stage.into(),
                })
                .observe(us as f64 / 1e6);
        }
    }

    /// Count one inference by the model that ran it.
    pub fn count_inference(&self, model_sha256: &str) {
        let key = ModelLabels {
            model_sha256: model_sha256.to_string(),
        };
        if self.inferences.get(&key).is_none() {
            if self.models_seen.fetch_add(1, Ordering::Relaxed) >= MAX_MODEL_SERIES {
                // Beyond the bound, fold into one series rather than grow forever.
                self.inferences
                    .get_or_create(&ModelLabels {
                        model_sha256: "other".into(),
                    })
                    .inc();
                return;
            }
        }
        self.inferences.get_or_create(&key).inc();
    }

    /// Count one HTTP response. `route` must be a route name, never a raw
    /// path, so the label set stays bounded.
    pub fn count_http(&self, route: &'static str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.into(),
                status: status.to_string(),
            })
            .inc();
    }

    pub fn count_tls_failure(&self) {
        self.tls_handshake_failures.inc();
    }

    pub fn count_event_subscriber_dropped(&self) {
        self.event_subscribers_dropped.inc();
    }

    pub fn count_auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Count one 429; `limit` is a fixed name (`client_ip`, `key`).
    pub fn count_rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: limit.into(),
            })
            .inc();
    }

    /// Record a trigger latency; `to` is `stored` or `output`.
    pub fn observe_trigger_latency(&self, to: &'static str, d: std::time::Duration) {
        self.trigger_latency
            .get_or_create(&TriggerLabels { to })
            .observe(d.as_secs_f64());
    }

    /// The full exposition: accumulated metrics plus current state.
    pub fn render(&self, state: &AppState, store: &StoreStats) -> String {
        let mut snap = Registry::with_prefix("spotter");
        let c = state.counters.snapshot();
        let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
            r.register(name, help, ConstCounter::new(v))
        };
        counter(
            &mut snap,
            "frames_captured",
            "Frames delivered by the source",
            c.frames_captured,
        );
        counter(
            &mut snap,
            "frames_dropped",
            "Frames replaced before inference took them (latest frame wins)",
            c.frames_dropped,
        );
        counter(
            &mut snap,
            "results_stored",
            "Results written to the store",
            c.results_stored,
        );
        counter(
            &mut snap,
            "inference_errors",
            "Frames whose inference failed",
            c.inference_errors,
        );
        counter(
            &mut snap,
            "capture_errors",
            "Source open or read failures",
            c.capture_errors,
        );
        counter(
            &mut snap,
            "store_errors",
            "Failed store writes",
            c.store_errors,
        );
        let m = state.mqtt.snapshot();
        counter(
            &mut snap,
            "mqtt_published",
            "Results published to the MQTT broker (resends included)",
            m.published,
        );
        counter(
            &mut snap,
            "mqtt_acked",
            "Results the MQTT broker acknowledged (PUBACK) and that left the outbox",
            m.acked,
        );
        counter(
            &mut snap,
            "mqtt_rejected",
            "Results the MQTT broker refused (MQTT 5 error reason); removed from the outbox",
            m.rejected,
        );
        counter(
            &mut snap,
            "mqtt_outbox_dropped",
            "Unpublished results dropped, oldest first, because the outbox was full",
            m.dropped,
        );
        counter(
            &mut snap,
            "mqtt_reconnects",
            "Connections to the MQTT broker after the first",
            m.reconnects,
        );
        let g = state.gpio.snapshot();
        if g.enabled {
            counter(
                &mut snap,
                "gpio_triggers",
                "GPIO trigger edges that started inference",
                g.triggers,
            );
            counter(
                &mut snap,
                "gpio_triggers_busy",
                "GPIO triggers that arrived while a burst ran (counted, not queued)",
                g.triggers_busy,
            );
            counter(
                &mut snap,
                "gpio_frames_gated",
                "Frames the GPIO trigger gate dropped without inference",
                g.frames_gated,
            );
            counter(
                &mut snap,
                "gpio_outputs_switched",
                "Times a rule switched a GPIO output on",
                g.outputs_switched,
            );
            counter(
                &mut snap,
                "gpio_errors",
                "GPIO request or drive failures",
                g.errors,
            );
        }
        let r = state.readiness();
        let gauge = |r: &mut Registry, name: &str, help: &str, v: i64| {
            r.register(name, help, ConstGauge::new(v))
        };
        gauge(
            &mut snap,
            "ready",
            "1 when /readyz answers 200",
            r.ready() as i64,
        );
        gauge(
            &mut snap,
            "camera_up",
            "1 while the source delivers frames",
            r.source.ok as i64,
        );
        gauge(
            &mut snap,
            "model_ready",
            "1 while a model that passed its canary is active",
            r.model.ok as i64,
        );
        gauge(
            &mut snap,
            "clock_synchronized",
            "1 while the system clock is synchronized",
            state.clock_synchronized.load(Ordering::Relaxed) as i64,
        );
        gauge(
            &mut snap,
            "uptime_seconds",
            "Seconds since the daemon started",
            state.started.elapsed().as_secs() as i64,
        );
        gauge(
            &mut snap,
            "store_records",
            "Results in the store",
            store.records as i64,
        );
        gauge(
            &mut snap,
            "store_bytes",
            "Size of the store on disk",
            store.size_bytes as i64,
        );
        // Flash wear and disk pressure (README, "Data and backups").
        gauge(
            &mut snap,
            "store_growth_bytes",
            "Growth of the store's files since the daemon opened it (sled size on disk)",
            store.size_growth_bytes,
        );
        counter(
            &mut snap,
            "store_written_bytes",
            "Record, index and snapshot bytes written to the store since start (keys plus values)",
            store.written_bytes,
        );
        counter(
            &mut snap,
            "snapshot_written_bytes",
            "Snapshot bytes written to the store since start",
            store.snapshot_written_bytes,
        );
        counter(&mut snap, "store_refused_results", "Results not stored because the disk was full (floor, ENOSPC, or database needing a restart)", store.refused_results);
        counter(
            &mut snap,
            "store_refused_snapshots",
            "Snapshots not kept because free space was below the snapshot floor",
            store.refused_snapshots,
        );
        counter(
            &mut snap,
            "store_enospc_errors",
            "Store writes that failed with ENOSPC",
            store.enospc_errors,
        );
        gauge(&mut snap, "store_poisoned", "1 when the database refuses writes after an I/O error; Spotter restarts once space returns", store.poisoned as i64);
        if let Some(w) = process_write_bytes() {
            counter(&mut snap, "process_write_bytes", "Bytes this process caused to be written to storage (/proc/self/io write_bytes): flash wear", w);
        }
        if m.enabled {
            gauge(
                &mut snap,
                "mqtt_connected",
                "1 while connected to the MQTT broker",
                m.connected as i64,
            );
            gauge(
                &mut snap,
                "mqtt_outbox_records",
                "Results waiting in the MQTT outbox",
                m.outbox_records as i64,
            );
            gauge(
                &mut snap,
                "mqtt_outbox_bytes",
                "Bytes waiting in the MQTT outbox",
                m.outbox_bytes as i64,
            );
        }
        if let Some(rss) = process_rss_bytes() {
            gauge(
                &mut snap,
                "process_resident_memory_bytes",
                "Resident set size",
                rss as i64,
            );
        }
        if let Some(fds) = process_open_fds() {
            gauge(
                &mut snap,
                "process_open_fds",
                "Open file descriptors",
                fds as i64,
            );
        }
        if let Some(m) = state.model() {
            let fam = Family::<RuntimeLabels, Gauge>::default();
            fam.get_or_create(&RuntimeLabels {
                runtime: m.runtime.clone(),
                reason: m.runtime_reason.clone(),
                model_sha256: m.sha256.clone(),
            })
            .set(1);
            snap.register(
                "runtime_info",
                "The active runtime and why it was chosen",
                fam,
            );
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, &snap);
        let _ = encode_eof(&mut out);
        out
    }
}

/// Resident set size from /proc/self/statm (pages × page size).
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * page as u64)
}

/// Bytes this process caused to be sent to the storage layer
/// (`write_bytes` of /proc/self/io; 0 on tmpfs, absent without task I/O
/// accounting).
pub fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Number of open file descriptors (entries of /proc/self/fd).
pub fn process_open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Check, ModelStatus};

    // Would catch a metric the field guide and dashboards rely on going
    // missing, or state not reaching the exposition.
    #[test]
    fn renders_state_histograms_and_runtime_choice() {
        let m = Metrics::new();
        let state = AppState::new();
        state
            .counters
            .frames_captured
            .fetch_add(7, Ordering::Relaxed);
        state.update_readiness(|r| r.source = Check::passing("ok"));
        state.set_model(Some(ModelStatus {
            path: "/m.tflite".into(),
            sha256: "abc".into(),
            kind: "classification".into(),
            runtime: "builtin".into(),
            runtime_reason: "auto: fell back to builtin: LiteRT library /x: not found".into(),
            input_shape: vec![1, 224, 224, 3],
            input_dtype: "u8".into(),
            labels: 1000,
        }));
        m.observe_latency(&StageLatency {
            invoke_us: 4000,
            ..Default::default()
        });
        m.count_inference("abc");
        m.count_http("status", 200);
        state.mqtt.acked.fetch_add(2, Ordering::Relaxed);
        let store = StoreStats {
            records: 3,
            size_bytes: 4096,
            refused_results: 5,
            enospc_errors: 1,
            ..Default::default()
        };
        let text = m.render(&state, &store);
        for needle in [
            "spotter_frames_captured_total 7",
            "spotter_camera_up 1",
            "spotter_ready 0",
            "spotter_store_records 3",
            "spotter_store_refused_results_total 5",
            "spotter_store_enospc_errors_total 1",
            "spotter_store_poisoned 0",
            "spotter_mqtt_acked_total 2",
            "spotter_inferences_total{model_sha256=\"abc\"} 1",
            "spotter_http_requests_total{route=\"status\",status=\"200\"} 1",
            "spotter_stage_latency_seconds_count{stage=\"invoke\"} 1",
            "spotter_runtime_info{runtime=\"builtin\",reason=\"auto: fell back to builtin: LiteRT library /x: not found\",model_sha256=\"abc\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(needle), "missing {needle} in:\n{text}");
        }
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    // Would catch an unbounded label set when models are swapped endlessly.
    #[test]
    fn per_model_series_are_bounded() {
        let m = Metrics::new();
        for i in 0..100 {
            m.count_inference(&format!("model{i}"));
        }
        let text = m.render(&AppState::new(), &StoreStats::default());
        let series = text
            .lines()
            .filter(|l| l.starts_with("spotter_inferences_total{"))
            .count();
        assert!(series as u64 <= MAX_MODEL_SERIES + 1, "{series} series");
        assert!(text.contains("model_sha256=\"other\""));
    }
}
