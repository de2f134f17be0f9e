//! Prometheus metrics (OpenMetrics text, via `prometheus-client`).
//!
//! Two kinds live here: accumulating metrics that only exist as metrics
//! (per-stage latency histograms, inferences per model, HTTP requests by route
//! and status), kept in a long-lived registry; and figures the daemon already
//! keeps in `AppState` (frame counters, readiness, the runtime choice) or
//! reads from the system (RSS, open file descriptors), rendered fresh on each
//! scrape by `state::exposition` so there is one source of truth for each
//! number. This module is a sink: it imports nothing above the leaf types.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::core::result::StageLatency;

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
    // Static names and a number: counting a request allocates nothing.
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
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
    connections_refused: Family<ReasonLabels, Counter>,
    event_subscribers_dropped: Counter,
    trigger_latency: Family<TriggerLabels, Histogram, fn() -> Histogram>,
    frames_superseded_prepared: Counter,
    /// Distinct model labels seen, to bound the per-model family.
    models_seen: AtomicU64,
}

/// At most this many distinct models get their own inference counter series.
pub(crate) const MAX_MODEL_SERIES: u64 = 32;

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
    pub(crate) fn new() -> Metrics {
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
            "API requests refused with 429, by limit (client_ip, probe or key)",
            rate_limited.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "API connections closed by the connection limits, by reason (per_address, handshakes_per_address, server_full, evicted)",
            connections_refused.clone(),
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
        let frames_superseded_prepared = Counter::default();
        registry.register(
            "frames_superseded_prepared",
            "Frames pre-processed ahead of their invoke and replaced by a newer one before it (also in frames_dropped)",
            frames_superseded_prepared.clone(),
        );
        Metrics {
            event_subscribers_dropped,
            trigger_latency,
            frames_superseded_prepared,
            registry,
            stage_seconds,
            inferences,
            http_requests,
            tls_handshake_failures,
            auth_failures,
            rate_limited,
            connections_refused,
            models_seen: AtomicU64::new(0),
        }
    }

    /// Record the stage latencies of one stored result.
    pub(crate) fn observe_latency(&self, l: &StageLatency) {
        self.observe_inference_latency(l);
        self.observe_stage("store", l.store_us);
    }

    /// Record the stages before the store (decode … post) of a result that
    /// is not stored, so the store stage only counts real writes.
    pub(crate) fn observe_inference_latency(&self, l: &StageLatency) {
        for (stage, us) in [
            ("decode", l.decode_us),
            ("resize", l.resize_us),
            ("quantize", l.quantize_us),
            ("invoke", l.invoke_us),
            ("post", l.post_us),
        ] {
            self.observe_stage(stage, us);
        }
    }

    fn observe_stage(&self, stage: &str, us: u64) {
        self.stage_seconds
            .get_or_create(&StageLabels {
                stage: stage.into(),
            })
            .observe(us as f64 / 1e6);
    }

    /// Count one inference by the model that ran it.
    pub(crate) fn count_inference(&self, model_sha256: &str) {
        let key = ModelLabels {
            model_sha256: model_sha256.to_string(),
        };
        if self.inferences.get(&key).is_none()
            && self.models_seen.fetch_add(1, Ordering::Relaxed) >= MAX_MODEL_SERIES
        {
            // Beyond the bound, fold into one series rather than grow forever.
            self.inferences
                .get_or_create(&ModelLabels {
                    model_sha256: "other".into(),
                })
                .inc();
            return;
        }
        self.inferences.get_or_create(&key).inc();
    }

    /// Count one HTTP response. `route` must be a route name, never a raw
    /// path, so the label set stays bounded.
    pub(crate) fn count_http(&self, route: &'static str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels { route, status })
            .inc();
    }

    /// Count a pre-processed frame replaced by a newer one before its invoke.
    pub(crate) fn count_superseded_prepared(&self) {
        self.frames_superseded_prepared.inc();
    }

    /// Pre-processed frames replaced before their invoke so far.
    pub(crate) fn superseded_prepared(&self) -> u64 {
        self.frames_superseded_prepared.get()
    }

    pub(crate) fn count_tls_failure(&self) {
        self.tls_handshake_failures.inc();
    }

    pub(crate) fn count_event_subscriber_dropped(&self) {
        self.event_subscribers_dropped.inc();
    }

    pub(crate) fn count_auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// Count one 429; `limit` is a fixed name (`client_ip`, `probe`, `key`).
    pub(crate) fn count_rate_limited(&self, limit: &'static str) {
        self.rate_limited
            .get_or_create(&LimitLabels {
                limit: limit.into(),
            })
            .inc();
    }

    /// Count one API connection closed by the connection limits; `reason`
    /// is a fixed name.
    pub(crate) fn count_connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Record a trigger latency; `to` is `stored` or `output`.
    pub(crate) fn observe_trigger_latency(&self, to: &'static str, d: std::time::Duration) {
        self.trigger_latency
            .get_or_create(&TriggerLabels { to })
            .observe(d.as_secs_f64());
    }

    /// The OpenMetrics text of the accumulated metrics followed by `snapshot`
    /// (figures rendered fresh on each scrape), ending in `# EOF`.
    pub(crate) fn encode_with(&self, snapshot: &Registry) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_registry(&mut out, snapshot);
        let _ = encode_eof(&mut out);
        out
    }
}

/// Resident set size from /proc/self/statm (pages × page size).
pub(crate) fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    Some(pages * page as u64)
}

/// Bytes this process caused to be sent to the storage layer
/// (`write_bytes` of /proc/self/io; 0 on tmpfs, absent without task I/O
/// accounting).
pub(crate) fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Number of open file descriptors (entries of /proc/self/fd).
pub(crate) fn process_open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

/// Figures about the store for `/api/v1/status` and `/metrics`: size, flash
/// wear since the daemon opened it, and writes refused for lack of space.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Results in the store.
    pub records: usize,
    /// sled's files on disk, in bytes (`Store::size_on_disk`).
    pub size_bytes: u64,
    /// `size_bytes` minus the size when the store was opened (negative
    /// after pruning let sled reclaim segments).
    pub size_growth_bytes: i64,
    /// Record, index and snapshot bytes written since open (logical: keys
    /// plus values, before sled's log and page overhead).
    pub written_bytes: u64,
    /// Of `written_bytes`, the snapshots' share.
    pub snapshot_written_bytes: u64,
    /// Results not stored because the disk was full (floor, ENOSPC, or a
    /// database poisoned by a write error).
    pub refused_results: u64,
    /// Snapshots dropped because free space was below the snapshot floor.
    pub refused_snapshots: u64,
    /// Writes the database itself failed with ENOSPC.
    pub enospc_errors: u64,
    /// The database refuses writes after an I/O error until reopened.
    pub poisoned: bool,
    /// `Store::durable_through`: the recovery point as a result id.
    pub durable_through: Option<String>,
}
