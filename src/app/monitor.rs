//! Watching the running daemon until it must stop: SIGTERM and SIGINT end
//! the watch, SIGHUP and API reload requests reload the configuration, and
//! every 250 ms the monitor checks whether the store needs reopening,
//! detects a stalled source, feeds the systemd watchdog while both pipeline
//! threads make progress, and reports readiness changes and a one-line
//! status (`READY=1`/`STATUS=`, the READY log event).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use super::memory;
use super::reload::{self, reload_config};
use super::start::Daemon;
use crate::api::ApiError;
use crate::config::Settings;
use crate::core::ids;
use crate::state::AppState;
use crate::store::{AuditAction, AuditLimits, AuditRecord};
use crate::systemd::Notifier;

/// Why the daemon stops.
pub(super) enum Exit {
    /// SIGTERM or SIGINT.
    Signal,
    /// The store refuses writes since an I/O error and must be reopened.
    RestartStore,
    /// The API task ended on its own (or panicked).
    Api(Result<Result<(), ApiError>, tokio::task::JoinError>),
}

/// Watch the daemon until it must stop, and say why. `settings` are the ones
/// it started with; reloads change a copy.
pub(super) async fn supervise(
    settings: &Settings,
    config_path: Option<&Path>,
    state: &Arc<AppState>,
    d: &mut Daemon,
    notifier: &Notifier,
) -> anyhow::Result<Exit> {
    let mut running = settings.clone();
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sighup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut monitor = Monitor::new(state, notifier, &settings.power);
    loop {
        tokio::select! {
            _ = sigterm.recv() => return Ok(Exit::Signal),
            _ = sigint.recv() => return Ok(Exit::Signal),
            _ = sighup.recv() => {
                let handles = reload::Handles { tls: &d.tls, pruner: &d.pruner, control: &d.control };
                let r = reload_config(config_path, &mut running, &handles, "SIGHUP").await;
                // Issue 23: a SIGHUP reload is audited (the API's is, by the API).
                let rec = AuditRecord::new(AuditAction::ConfigReloaded, "signal").outcome_of(&r);
                audit_after_reload(d, &running, Some(rec));
            }
            Some(req) = d.reloads.recv() => {
                let handles = reload::Handles { tls: &d.tls, pruner: &d.pruner, control: &d.control };
                let outcome = reload_config(config_path, &mut running, &handles, "API").await;
                // The API records the reload itself (with its key and client).
                audit_after_reload(d, &running, None);
                // The requester may have gone (closed connection): nothing to tell.
                let _ = req.reply.send(outcome);
            }
            res = &mut d.api_task => return Ok(Exit::Api(res)),
            _ = tick.tick() => {
                if !monitor.tick(d) {
                    return Ok(Exit::RestartStore);
                }
            }
        }
    }
}

/// Apply `[audit]` as reloaded, record `rec` and take the command line's
/// pending records (off the async workers).
fn audit_after_reload(d: &Daemon, running: &Settings, rec: Option<AuditRecord>) {
    d.store
        .set_audit_limits(AuditLimits::from_settings(&running.audit));
    let store = d.store.clone();
    let state_dir = running.daemon.state_dir.clone();
    drop(tokio::task::spawn_blocking(move || {
        if let Some(rec) = rec {
            // Logged by the store when not stored; nothing else to do here.
            let _ = store.audit(rec);
        }
        // `spotter model activate` asks for a reload: take its records.
        if let Err(e) = store.audit_take_pending(&state_dir) {
            log::warn!("audit records of the command line not stored: {e}");
        }
    }));
}

/// What the periodic checks remember between ticks.
struct Monitor<'a> {
    state: &'a AppState,
    notifier: &'a Notifier,
    /// systemd's watchdog interval, if it watches.
    watchdog: Option<Duration>,
    /// The pipeline thread the watchdog pings are withheld for.
    stalled: Option<&'static str>,
    was_ready: bool,
    last_status: Instant,
    /// Start of the frame-rate window and the frames captured by then.
    fps_window: (Instant, u64),
    fps: f64,
    /// When the allocator's free pages were last returned (`trim_malloc`).
    last_trim: Instant,
    /// SoC temperature and throttling flags (issue 22), `None` with
    /// `[power] enabled = false`.
    power: Option<crate::power::Watch>,
    /// The heat slowdown (`power.hot_above_c`), if configured.
    heat: Option<crate::power::Governor>,
}

impl<'a> Monitor<'a> {
    fn new(
        state: &'a AppState,
        notifier: &'a Notifier,
        power: &crate::config::power::PowerSettings,
    ) -> Self {
        let watchdog = Notifier::watchdog_interval();
        if let Some(wd) = watchdog {
            log::info!("systemd watchdog active: pings while capture and inference make progress (interval {} ms)", wd.as_millis());
        }
        Monitor {
            state,
            notifier,
            watchdog,
            stalled: None,
            was_ready: false,
            last_status: Instant::now() - Duration::from_secs(60),
            fps_window: (Instant::now(), 0u64),
            fps: 0.0,
            last_trim: Instant::now(),
            power: power.enabled.then(|| {
                crate::power::Watch::new(
                    Box::new(crate::power::Sysfs::new(&power.sysfs_root)),
                    Duration::from_secs(power.poll_s),
                )
            }),
            heat: power
                .heat
                .filter(|_| power.enabled)
                .map(crate::power::Governor::new),
        }
    }

    /// One round of checks; false: the store must be reopened (see
    /// `Store::restart_due`), so the daemon exits for systemd to restart it.
    fn tick(&mut self, d: &Daemon) -> bool {
        if d.store.restart_due() {
            log::warn!(
                message_id = ids::DISK_SPACE_RECOVERED;
                "disk space is back but the result store refuses writes since an I/O error; exiting so systemd restarts Spotter with the store reopened"
            );
            return false;
        }
        // Stall detection: frames stopped without the source reporting an
        // error; each source with its own stall timeout.
        for source in &d.source_readiness {
            source.check(self.state);
        }
        self.feed_watchdog();
        self.report_status();
        self.watch_power();
        if self.last_trim.elapsed() >= memory::TRIM_EVERY {
            memory::trim_malloc();
            self.last_trim = Instant::now();
        }
        true
    }

    /// Ping only while both pipeline threads make progress; a missing camera
    /// keeps the capture thread retrying, which counts as progress, so only a
    /// real hang stops the pings.
    fn feed_watchdog(&mut self) {
        let Some(wd) = self.watchdog else {
            return;
        };
        let state = self.state;
        // The capture thread that made no progress longest (one per source).
        let capture_age = state.capture_age();
        let infer_age = state.since_beat(&state.inference_beat_ms);
        match (stuck_thread(capture_age, infer_age, wd), self.stalled) {
            (None, _) => {
                self.notifier.watchdog();
                self.stalled = None;
            }
            (Some(which), None) => {
                log::error!(
                    message_id = ids::WATCHDOG_STALL, spotter_error_kind = "watchdog_stall", spotter_thread = which;
                    "watchdog stall: the {which} thread made no progress for {} ms; withholding WATCHDOG=1 so systemd restarts the service",
                    capture_age.max(infer_age).as_millis()
                );
                self.stalled = Some(which);
            }
            (Some(_), Some(_)) => {}
        }
    }

    /// Tell systemd (and the log) when readiness changes, and the status
    /// line every 5 s.
    fn report_status(&mut self) {
        let now_ready = self.state.readiness().ready();
        let elapsed = self.fps_window.0.elapsed();
        if elapsed >= Duration::from_secs(2) {
            let n = self.state.counters.snapshot().frames_captured;
            self.fps = (n - self.fps_window.1) as f64 / elapsed.as_secs_f64();
            self.fps_window = (Instant::now(), n);
        }
        if now_ready != self.was_ready || self.last_status.elapsed() >= Duration::from_secs(5) {
            let line = one_line_status(self.state, self.fps);
            if now_ready && !self.was_ready {
                log_ready(self.state, &line);
                self.notifier.ready(&line);
                // The code that got here need not stay resident.
                memory::release_code_pages_logged("ready");
            } else {
                if !now_ready && self.was_ready {
                    log::warn!("not ready: {line}");
                }
                self.notifier.status(&line);
            }
            self.was_ready = now_ready;
            self.last_status = Instant::now();
        }
    }
}

impl Monitor<'_> {
    /// Read the power and heat sensors when due; log when throttling starts
    /// and ends (once per episode).
    fn watch_power(&mut self) {
        let Some(watch) = self.power.as_mut() else {
            return;
        };
        let Some((reading, change)) = watch.poll(Instant::now()) else {
            return;
        };
        let temp = reading
            .temp_c
            .map_or_else(|| "unknown".to_string(), |t| format!("{t:.1}"));
        match change {
            Some(crate::power::Change::Started(flags)) => {
                let names = flags.names().join(", ");
                log::warn!(
                    message_id = ids::THROTTLING_STARTED, spotter_throttle_flags = names.as_str(), spotter_temp_c = temp.as_str();
                    "the board reports {names} (SoC at {temp} °C): inference slows down; check the power supply and cooling"
                );
            }
            Some(crate::power::Change::Ended) => log::info!(
                message_id = ids::THROTTLING_ENDED, spotter_temp_c = temp.as_str();
                "throttling ended (SoC at {temp} °C)"
            ),
            None => {}
        }
        if let Some(heat) = self.heat.as_mut() {
            let limit = heat.limit();
            match heat.update(reading.temp_c) {
                Some(true) => {
                    log::warn!(
                        message_id = ids::HEAT_SLOWDOWN_STARTED, spotter_temp_c = temp.as_str(), spotter_max_fps = limit.max_fps;
                        "SoC at {temp} °C, over power.hot_above_c = {}: inference slowed to {} frames/s until it is below {} °C", limit.above_c, limit.max_fps, limit.resume_below_c
                    );
                    self.state.set_heat_limit(Some(limit.max_fps));
                }
                Some(false) => {
                    log::info!(
                        message_id = ids::HEAT_SLOWDOWN_ENDED, spotter_temp_c = temp.as_str();
                        "SoC at {temp} °C, below power.hot_resume_below_c = {}: inference back to full rate", limit.resume_below_c
                    );
                    self.state.set_heat_limit(None);
                }
                None => {}
            }
        }
        self.state.set_power(reading);
    }
}

/// Which pipeline thread, if any, has made no progress for more than half the
/// watchdog interval (so a ping is still due before systemd's deadline).
pub fn stuck_thread(
    capture_age: Duration,
    infer_age: Duration,
    interval: Duration,
) -> Option<&'static str> {
    let limit = interval / 2;
    if capture_age > limit {
        Some("capture")
    } else if infer_age > limit {
        Some("inference")
    } else {
        None
    }
}

fn one_line_status(state: &AppState, fps: f64) -> String {
    let r = state.readiness();
    let c = state.counters.snapshot();
    let model = state
        .model()
        .map(|m| format!("{} on {}", short_name(&m.path), m.runtime))
        .unwrap_or_else(|| "no model".into());
    let last = state
        .last_result()
        .map(|l| match (l.classes.first(), l.detections.first()) {
            (Some(c), _) => format!("{} {:.2}", c.label, c.score),
            (None, Some(d)) => format!("{} {:.2} ({} boxes)", d.label, d.score, l.detections.len()),
            _ => "nothing above threshold".into(),
        })
        .unwrap_or_else(|| "none yet".into());
    let head = if r.ready() {
        "ready".to_string()
    } else {
        let mut failing = Vec::new();
        for (name, check) in [
            ("source", &r.source),
            ("model", &r.model),
            ("store", &r.store),
        ] {
            if !check.ok {
                failing.push(format!("{name}: {}", check.detail));
            }
        }
        format!("NOT READY ({})", failing.join("; "))
    };
    format!(
        "{head}; {fps:.1} fps; {model}; last: {last}; dropped {}; errors {}",
        c.frames_dropped,
        c.inference_errors + c.store_errors + c.capture_errors
    )
}

/// The READY event, with what a technician checks first as fields: the
/// source, the model and runtime, and the latest label and score (when a
/// result exists yet: readiness does not wait for one).
fn log_ready(state: &AppState, line: &str) {
    let ms = state.started.elapsed().as_millis();
    let source = state.source();
    let (sha, runtime) = state
        .model()
        .map(|m| (m.sha256, m.runtime))
        .unwrap_or_default();
    let top = state
        .last_result()
        .and_then(|l| match (l.classes.first(), l.detections.first()) {
            (Some(c), _) => Some((c.label.clone(), c.score)),
            (None, Some(d)) => Some((d.label.clone(), d.score)),
            _ => None,
        });
    match top {
        Some((label, score)) => log::info!(
            message_id = ids::READY, spotter_source = source.as_str(), spotter_model_sha256 = sha.as_str(),
            spotter_runtime = runtime.as_str(), spotter_label = label.as_str(), spotter_score = format!("{score:.3}").as_str();
            "ready after {ms} ms: {line}"
        ),
        None => log::info!(
            message_id = ids::READY, spotter_source = source.as_str(), spotter_model_sha256 = sha.as_str(),
            spotter_runtime = runtime.as_str();
            "ready after {ms} ms: {line}"
        ),
    }
}

fn short_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch pings continuing while a pipeline thread hangs (systemd
    // would never restart a wedged daemon), or pings stopping while both work.
    #[test]
    fn watchdog_withholds_pings_only_for_a_stuck_thread() {
        let ms = Duration::from_millis;
        let wd = Duration::from_secs(10);
        assert_eq!(stuck_thread(ms(100), ms(100), wd), None);
        assert_eq!(stuck_thread(ms(4_999), ms(4_999), wd), None);
        assert_eq!(stuck_thread(ms(5_001), ms(100), wd), Some("capture"));
        assert_eq!(stuck_thread(ms(100), ms(5_001), wd), Some("inference"));
    }
}
