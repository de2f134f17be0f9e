//! The `/metrics` exposition: the figures kept in [`AppState`] and the
//! store's [`StoreStats`], rendered fresh on each scrape after the
//! accumulating metrics of [`crate::metrics::Metrics`].

use std::sync::atomic::Ordering;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::AppState;
use crate::metrics::{process_open_fds, process_rss_bytes, process_write_bytes, StoreStats};

/// The `source` label: a configured source's name (several sources, issue 19).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    runtime: String,
    reason: String,
    model_sha256: String,
}

/// The full `/metrics` exposition: the accumulated metrics plus the state's
/// and the store's current figures.
pub fn render_metrics(state: &AppState, store: &StoreStats) -> String {
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
    per_source(state, &r, &mut snap);
    motion(state, &c, &mut snap);
    power(state, &mut snap);
    state.metrics.encode_with(&snap)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PowerFlagLabels {
    flag: &'static str,
    /// `now`, or `since_boot` (the firmware's sticky bits).
    when: &'static str,
}

/// Power and heat (issue 22): the SoC temperature and each throttling flag,
/// now and since boot, from the monitor's last reading (absent on a board
/// without the sensors).
fn power(state: &AppState, snap: &mut Registry) {
    if let Some(fps) = state.heat_max_fps() {
        snap.register(
            "inference_max_fps",
            "The inference rate cap in force while the SoC is over power.hot_above_c (absent at full rate)",
            ConstGauge::new(fps),
        );
    }
    let Some(r) = state.power() else {
        return;
    };
    if let Some(t) = r.temp_c {
        snap.register(
            "soc_temperature_celsius",
            "SoC temperature at the last reading",
            ConstGauge::new(t),
        );
    }
    let flags = Family::<PowerFlagLabels, Gauge>::default();
    for (when, t) in [("now", r.now), ("since_boot", r.since_boot)] {
        let Some(t) = t else { continue };
        for (flag, on) in [
            ("under_voltage", t.under_voltage),
            ("freq_capped", t.freq_capped),
            ("throttled", t.throttled),
            ("soft_temp_limit", t.soft_temp_limit),
        ] {
            flags
                .get_or_create(&PowerFlagLabels { flag, when })
                .set(i64::from(on));
        }
    }
    if r.now.is_some() {
        snap.register(
            "power_flag",
            "1 while the firmware reports the flag (when=now) or reported it since boot (when=since_boot)",
            flags,
        );
    }
}

/// Each registered source's figures, labelled `source="<name>"` (bounded:
/// the configured sources only).
fn per_source(state: &AppState, r: &super::Readiness, snap: &mut Registry) {
    use prometheus_client::metrics::counter::Counter;
    let sources = state.source_stats();
    if sources.is_empty() {
        return;
    }
    let up = Family::<SourceLabels, Gauge>::default();
    let captured = Family::<SourceLabels, Counter>::default();
    let dropped = Family::<SourceLabels, Counter>::default();
    let errors = Family::<SourceLabels, Counter>::default();
    let stored = Family::<SourceLabels, Counter>::default();
    for s in &sources {
        let l = SourceLabels {
            source: s.name.clone(),
        };
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let ok = r.source_check(&s.name).is_some_and(|c| c.ok);
        up.get_or_create(&l).set(i64::from(ok));
        captured.get_or_create(&l).inc_by(g(&s.frames_captured));
        dropped.get_or_create(&l).inc_by(g(&s.frames_dropped));
        errors.get_or_create(&l).inc_by(g(&s.capture_errors));
        stored.get_or_create(&l).inc_by(g(&s.results_stored));
    }
    snap.register("source_up", "1 while this source delivers frames", up);
    snap.register(
        "source_frames_captured",
        "Frames delivered by this source",
        captured,
    );
    snap.register(
        "source_frames_dropped",
        "Frames of this source replaced before inference took them (latest frame wins)",
        dropped,
    );
    snap.register(
        "source_capture_errors",
        "Open or read failures of this source",
        errors,
    );
    snap.register(
        "source_results_stored",
        "Results of this source's frames written to the store",
        stored,
    );
}

/// Motion gating (issue 18): frames skipped as static, whether gating is
/// on, and per source the last motion fraction and the moving-frame ratio.
fn motion(state: &AppState, c: &super::CounterSnapshot, snap: &mut Registry) {
    use prometheus_client::metrics::counter::Counter;
    snap.register(
        "frames_static",
        "Frames not inferred because the scene was static (motion gating)",
        ConstCounter::new(c.frames_static),
    );
    snap.register(
        "frames_skipped_hot",
        "Frames not inferred because the SoC was over power.hot_above_c",
        ConstCounter::new(c.frames_skipped_hot),
    );
    snap.register(
        "motion_gating_active",
        "1 while motion gating is on for the active model",
        ConstGauge::new(i64::from(state.motion.active.load(Ordering::Relaxed))),
    );
    let sources = state.source_stats();
    if sources.is_empty() {
        return;
    }
    let skipped = Family::<SourceLabels, Counter>::default();
    let fraction = Family::<SourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let ratio = Family::<SourceLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for s in &sources {
        let l = SourceLabels {
            source: s.name.clone(),
        };
        skipped
            .get_or_create(&l)
            .inc_by(s.motion.frames_static.load(Ordering::Relaxed));
        fraction.get_or_create(&l).set(s.motion.fraction());
        ratio.get_or_create(&l).set(s.motion.moving_ratio());
    }
    snap.register(
        "source_frames_static",
        "Frames of this source not inferred because the scene was static",
        skipped,
    );
    snap.register(
        "source_motion_fraction",
        "Fraction of the last measured frame's small luma image that changed",
        fraction,
    );
    snap.register(
        "source_moving_ratio",
        "Share of this source's recent frames (about the last 50) that were moving",
        ratio,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::result::StageLatency;
    use crate::metrics::MAX_MODEL_SERIES;
    use crate::state::{Check, ModelStatus};

    // Would catch a metric the field guide and dashboards rely on going
    // missing, or state not reaching the exposition.
    #[test]
    fn renders_state_histograms_and_runtime_choice() {
        let state = AppState::new();
        let m = &state.metrics;
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
        let text = render_metrics(&state, &store);
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
        let state = AppState::new();
        for i in 0..100 {
            state.metrics.count_inference(&format!("model{i}"));
        }
        let text = render_metrics(&state, &StoreStats::default());
        let series = text
            .lines()
            .filter(|l| l.starts_with("spotter_inferences_total{"))
            .count();
        assert!(series as u64 <= MAX_MODEL_SERIES + 1, "{series} series");
        assert!(text.contains("model_sha256=\"other\""));
    }

    // Would catch per-source figures missing their `source` label, one
    // source's frames counted under another, or a lost source shown up.
    #[test]
    fn sources_are_exposed_with_their_name() {
        let state = AppState::new();
        let yard = state.register_source("yard");
        let gate = state.register_source("gate");
        yard.frames_captured.fetch_add(5, Ordering::Relaxed);
        gate.frames_captured.fetch_add(2, Ordering::Relaxed);
        state.update_readiness(|r| r.set_source_check("yard", Check::passing("ok")));
        let text = render_metrics(&state, &StoreStats::default());
        for line in [
            "spotter_source_frames_captured_total{source=\"yard\"} 5",
            "spotter_source_frames_captured_total{source=\"gate\"} 2",
            "spotter_source_up{source=\"yard\"} 1",
            "spotter_source_up{source=\"gate\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
