//! Wiring GPIO into the daemon: the typed `[gpio]` settings, the status the
//! API and metrics read, the hooks the inference thread calls, and the two
//! threads (trigger input, outputs) with their shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use super::outputs::{LedState, Outputs};
use super::trigger::{Admission, EdgeOutcome, GateConfig, TriggerGate, TriggerMode, TriggerRef};
use super::{Edge, EdgeEvent, Gpio, GpioError, InputConfig, InputLine};
pub use crate::config::gpio::GpioSettings;
use crate::core::ids;
use crate::core::result::ResultRecord;
use crate::core::sighting::Sighting;
pub use crate::state::gpio::GpioStatus;
use crate::state::AppState;

/// The trigger gate's settings from `[gpio.trigger]`.
fn gate_config(settings: &GpioSettings) -> GateConfig {
    GateConfig {
        mode: settings.trigger.mode,
        edge: settings.trigger.edge,
        debounce: Duration::from_millis(settings.trigger.debounce_ms),
        frames: settings.trigger.frames,
        window: Duration::from_millis(settings.trigger.window_ms),
    }
}

/// Count a GPIO error and log it when it differs from the last one.
fn record_error(status: &GpioStatus, e: &GpioError) {
    status.errors.fetch_add(1, Ordering::Relaxed);
    let msg = e.to_string();
    let mut last = status.last_error.write().unwrap_or_else(|e| e.into_inner());
    if last.as_deref() != Some(msg.as_str()) {
        log::error!(message_id = ids::GPIO_FAILED, spotter_error_kind = "gpio"; "{msg}");
        *last = Some(msg);
    }
}

/// What the inference thread calls: [`GpioHooks::admit`] before inferring a
/// frame, [`GpioHooks::stored`] after storing its result, and (issue 18)
/// [`GpioHooks::sighting_started`] when a sighting starts.
pub struct GpioHooks {
    gate: Mutex<TriggerGate>,
    outputs: Mutex<Option<Outputs>>,
    state: Arc<AppState>,
}

impl std::fmt::Debug for GpioHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpioHooks")
            .field("gate", &*self.gate())
            .finish_non_exhaustive()
    }
}

impl GpioHooks {
    pub(crate) fn new(gate: GateConfig, outputs: Option<Outputs>, state: Arc<AppState>) -> Self {
        GpioHooks {
            gate: Mutex::new(TriggerGate::new(gate)),
            outputs: Mutex::new(outputs),
            state,
        }
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, TriggerGate> {
        // The gate is plain data, valid even if a holder panicked.
        self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn outputs(&self) -> std::sync::MutexGuard<'_, Option<Outputs>> {
        self.outputs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Feed an edge read at `ev.at`; counts it.
    pub(crate) fn on_edge(&self, ev: EdgeEvent) -> EdgeOutcome {
        let wall = SystemTime::now() - ev.at.elapsed();
        let outcome = self.gate().on_edge(ev, wall);
        let s = &self.state.gpio;
        match outcome {
            EdgeOutcome::Accepted => &s.triggers,
            EdgeOutcome::Busy => &s.triggers_busy,
            EdgeOutcome::Bounce => &s.triggers_bounce,
            EdgeOutcome::Ignored => return outcome,
        }
        .fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// The level of a gated trigger line, read without an edge.
    pub(crate) fn set_level(&self, high: bool) {
        self.gate()
            .set_level(high, Instant::now(), SystemTime::now());
    }

    /// Whether a frame captured at `captured` is inferred (dropped frames are counted).
    pub(crate) fn admit(&self, captured: SystemTime, now: Instant) -> Admission {
        let a = self.gate().admit(captured, now);
        if a == Admission::Drop {
            self.state.gpio.frames_gated.fetch_add(1, Ordering::Relaxed);
        }
        a
    }

    /// A result was stored at `now`: record the trigger latency and apply the rules.
    pub(crate) fn stored(&self, rec: &ResultRecord, trigger: Option<TriggerRef>, now: Instant) {
        let status = &self.state.gpio;
        if let Some(t) = trigger.filter(|t| t.first) {
            let d = now.saturating_duration_since(t.at);
            status
                .to_stored
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(d.as_micros() as u64);
            self.state.metrics.observe_trigger_latency("stored", d);
        }
        let switched = match self.outputs().as_mut().map(|o| o.on_result(rec, now)) {
            Some(Ok(s)) => s,
            Some(Err(e)) => return record_error(status, &e),
            None => return,
        };
        for s in switched {
            status.outputs_switched.fetch_add(1, Ordering::Relaxed);
            log::info!(spotter_gpio_line = s.line.to_string().as_str(); "output {} on for a rule match", s.line);
            if let Some(t) = trigger {
                let d = s.at.saturating_duration_since(t.at);
                status
                    .to_output
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(d.as_micros() as u64);
                self.state.metrics.observe_trigger_latency("output", d);
            }
        }
    }

    /// A sighting started (issue 18): fire the `on = "sighting_started"`
    /// rules of its label whose `min_score` its peak score reaches.
    pub(crate) fn sighting_started(&self, s: &Sighting) {
        let status = &self.state.gpio;
        let switched = match self
            .outputs()
            .as_mut()
            .map(|o| o.on_sighting_started(s, Instant::now()))
        {
            Some(Ok(s)) => s,
            Some(Err(e)) => return record_error(status, &e),
            None => return,
        };
        for sw in switched {
            status.outputs_switched.fetch_add(1, Ordering::Relaxed);
            log::info!(
                spotter_gpio_line = sw.line.to_string().as_str(), spotter_sighting_id = s.id;
                "output {} on for a sighting of {} starting", sw.line, s.label
            );
        }
    }

    /// End holds that ran out and drive the status LED.
    pub(crate) fn tick(&self, now: Instant) {
        let led = LedState::from_readiness(
            &self.state.readiness(),
            self.state.gpio.last_error.read().is_ok_and(|e| e.is_some()),
        );
        let since = now.saturating_duration_since(self.state.started);
        if let Some(Err(e)) = self
            .outputs()
            .as_mut()
            .map(|o| o.tick(now, Some((led, since))))
        {
            record_error(&self.state.gpio, &e);
        }
    }

    /// Drive every output to its safe state and release the lines.
    pub(crate) fn release_outputs(&self) {
        if let Some(mut o) = self.outputs().take() {
            match o.safe() {
                Ok(()) => log::info!("GPIO outputs returned to their safe state"),
                Err(e) => record_error(&self.state.gpio, &e),
            }
        }
    }
}

/// How often the outputs thread ends holds and steps the LED pattern.
const OUTPUT_TICK: Duration = Duration::from_millis(10);
/// How long one blocking wait for a trigger edge lasts (the stop flag is
/// checked between waits, and a gated line's level re-read).
const EDGE_WAIT: Duration = Duration::from_millis(200);

/// The running GPIO threads.
pub(crate) struct GpioRuntime {
    pub hooks: Arc<GpioHooks>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl GpioRuntime {
    /// Request the lines (outputs at their safe state first) and start the
    /// trigger and output threads.
    pub(crate) fn start(
        settings: &GpioSettings,
        mut gpio: Box<dyn Gpio>,
        state: Arc<AppState>,
    ) -> Result<GpioRuntime, GpioError> {
        let outputs = Outputs::open(gpio.as_mut(), &settings.rules, settings.status_led.as_ref())?;
        let t = &settings.trigger;
        let input = match (&t.line, t.mode) {
            (Some(line), TriggerMode::OnTrigger | TriggerMode::Gated) => {
                Some(gpio.input(&InputConfig {
                    line: line.clone(),
                    edge: if t.mode == TriggerMode::Gated {
                        Edge::Both
                    } else {
                        t.edge
                    },
                    bias: t.bias,
                    debounce: Duration::from_millis(t.debounce_ms),
                })?)
            }
            _ => None,
        };
        state.gpio.enabled.store(true, Ordering::Relaxed);
        *state
            .gpio
            .backend
            .write()
            .unwrap_or_else(|e| e.into_inner()) = gpio.name().to_string();
        *state.gpio.mode.write().unwrap_or_else(|e| e.into_inner()) = t.mode.as_str().to_string();
        let hooks = Arc::new(GpioHooks::new(
            gate_config(settings),
            Some(outputs),
            state.clone(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let spawn_err = |e: std::io::Error| GpioError::Io {
            line: "(threads)".into(),
            message: format!("spawning a GPIO thread: {e}"),
        };
        if let Some(input) = input {
            let (h, s, gated) = (hooks.clone(), stop.clone(), t.mode == TriggerMode::Gated);
            threads.push(
                std::thread::Builder::new()
                    .name("gpio-trigger".into())
                    .spawn(move || trigger_loop(input, h, s, gated))
                    .map_err(spawn_err)?,
            );
        }
        let (h, s) = (hooks.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name("gpio-out".into())
                .spawn(move || {
                    while !s.load(Ordering::Relaxed) {
                        h.tick(Instant::now());
                        std::thread::sleep(OUTPUT_TICK);
                    }
                })
                .map_err(spawn_err)?,
        );
        log::info!(
            "GPIO active ({}): trigger {:?}, {} rule(s), status LED {}",
            gpio.name(),
            t.mode,
            settings.rules.len(),
            settings
                .status_led
                .as_ref()
                .map_or("off".to_string(), |l| l.line.to_string())
        );
        Ok(GpioRuntime {
            hooks,
            stop,
            threads,
        })
    }

    /// Stop the threads, then drive every output to its safe state. Call
    /// after the inference thread finished, so no result switches one back on.
    pub(crate) fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            // A panicked GPIO thread must not stop the outputs going safe.
            let _ = t.join();
        }
        self.hooks.release_outputs();
    }
}

/// The trigger thread: blocking waits for edges, fed to the gate.
fn trigger_loop(
    mut input: Box<dyn InputLine>,
    hooks: Arc<GpioHooks>,
    stop: Arc<AtomicBool>,
    gated: bool,
) {
    let mut refresh_level = gated;
    while !stop.load(Ordering::Relaxed) {
        if refresh_level {
            match input.is_high() {
                Ok(high) => hooks.set_level(high),
                Err(e) => record_error(&hooks.state.gpio, &e),
            }
        }
        match input.wait_edge(EDGE_WAIT) {
            Ok(Some(ev)) => {
                hooks.on_edge(ev);
                refresh_level = false;
            }
            Ok(None) => refresh_level = gated,
            Err(e) => {
                record_error(&hooks.state.gpio, &e);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::gpio::TriggerSettings;
    use crate::gpio::fake::{FakeBoard, FakeGpio};
    use crate::gpio::outputs::RuleSpec;
    use crate::gpio::{BackendKind, Bias, Level, LineId};
    fn line(n: u32) -> LineId {
        LineId::Offset {
            chip: "gpiochip0".into(),
            offset: n,
        }
    }

    fn settings(mode: TriggerMode) -> GpioSettings {
        GpioSettings {
            backend: BackendKind::Gpiocdev,
            chip: "gpiochip0".into(),
            trigger: TriggerSettings {
                mode,
                line: Some(line(17)),
                edge: Edge::Rising,
                bias: Bias::PullDown,
                debounce_ms: 10,
                frames: 1,
                window_ms: 60_000,
            },
            rules: vec![RuleSpec {
                label: "person".into(),
                min_score: 0.6,
                hold_ms: 2000,
                line: line(27),
                active: Level::High,
                on: crate::config::gpio::RuleOn::Frame,
            }],
            status_led: None,
        }
    }

    fn wait_for(what: &str, f: impl Fn() -> bool) {
        // A bound on waiting for another thread, not a timing assertion.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // Would catch the pipeline hooks not seeing edges from the trigger
    // thread, a busy trigger not being counted, results not driving the
    // rule output, the trigger latency not being recorded, or shutdown
    // leaving the output on.
    #[test]
    fn edge_to_inference_to_output_through_the_runtime() {
        let board = FakeBoard::new();
        let state = Arc::new(AppState::new());
        let rt = GpioRuntime::start(
            &settings(TriggerMode::OnTrigger),
            Box::new(FakeGpio::new(board.clone())),
            state.clone(),
        )
        .unwrap();
        assert_eq!(
            board.level(&line(27)),
            Some(false),
            "output requested at its safe state"
        );
        let before = SystemTime::now() - Duration::from_secs(1);
        assert_eq!(
            rt.hooks.admit(before, Instant::now()),
            Admission::Drop,
            "no trigger yet"
        );
        board.edge(&line(17), true, Instant::now());
        wait_for("the trigger", || {
            state.gpio.triggers.load(Ordering::Relaxed) == 1
        });
        board.edge(&line(17), true, Instant::now() + Duration::from_millis(50));
        wait_for("the busy trigger", || {
            state.gpio.triggers_busy.load(Ordering::Relaxed) == 1
        });
        let Admission::Infer { trigger } = rt.hooks.admit(SystemTime::now(), Instant::now()) else {
            panic!("frame after the edge dropped")
        };
        assert!(trigger.is_some_and(|t| t.first));
        let rec = crate::gpio::outputs::test_record("person", 0.8);
        rt.hooks.stored(&rec, trigger, Instant::now());
        assert_eq!(board.level(&line(27)), Some(true));
        assert_eq!(
            rt.hooks.admit(SystemTime::now(), Instant::now()),
            Admission::Drop,
            "frames = 1"
        );
        let s = state.gpio.snapshot();
        assert_eq!(
            (
                s.trigger_to_stored.samples,
                s.trigger_to_output.samples,
                s.frames_gated
            ),
            (1, 1, 2),
            "{s:?}"
        );
        assert!(crate::state::render_metrics(&state, &Default::default())
            .contains("spotter_gpio_trigger_latency_seconds_count{to=\"output\"} 1"));
        rt.shutdown();
        assert_eq!(
            board.level(&line(27)),
            Some(false),
            "safe state after shutdown"
        );
    }

    // Would catch (issue 18) the hook the result sink calls when a sighting
    // starts not reaching the outputs (or not being counted), and a
    // `sighting_started` rule firing on the stored frames that follow.
    #[test]
    fn sighting_started_hook_drives_its_rules_only() {
        let board = FakeBoard::new();
        let state = Arc::new(AppState::new());
        let mut s = settings(TriggerMode::Continuous);
        s.trigger.line = None;
        s.rules[0].on = crate::config::gpio::RuleOn::SightingStarted;
        let rt =
            GpioRuntime::start(&s, Box::new(FakeGpio::new(board.clone())), state.clone()).unwrap();
        let rec = crate::gpio::outputs::test_record("person", 0.9);
        rt.hooks.stored(&rec, None, Instant::now());
        assert_eq!(board.level(&line(27)), Some(false), "frames ignored");
        rt.hooks
            .sighting_started(&crate::core::sighting::Sighting::test_open(
                1, "person", 0.9,
            ));
        assert_eq!(board.level(&line(27)), Some(true));
        assert_eq!(state.gpio.snapshot().outputs_switched, 1);
        rt.shutdown();
        assert_eq!(board.level(&line(27)), Some(false));
    }

    // Would catch gated mode ignoring the line's level at start (a line
    // already active when the daemon starts would never open the gate).
    #[test]
    fn gated_reads_the_level_at_start() {
        let board = FakeBoard::new();
        board.set_level(&line(17), true);
        let state = Arc::new(AppState::new());
        let rt = GpioRuntime::start(
            &settings(TriggerMode::Gated),
            Box::new(FakeGpio::new(board.clone())),
            state.clone(),
        )
        .unwrap();
        wait_for("the gate to open", || {
            matches!(
                rt.hooks.admit(SystemTime::now(), Instant::now()),
                Admission::Infer { .. }
            )
        });
        board.edge(&line(17), false, Instant::now());
        wait_for("the gate to close", || {
            rt.hooks.admit(SystemTime::now(), Instant::now()) == Admission::Drop
        });
        rt.shutdown();
    }

    // Would catch a chip that cannot be opened being reported without the
    // line, or outputs left half-requested.
    #[test]
    fn request_failure_names_the_line() {
        let board = FakeBoard::new();
        board.fail_requests(&line(17), nix::libc::EACCES);
        let state = Arc::new(AppState::new());
        let err = GpioRuntime::start(
            &settings(TriggerMode::OnTrigger),
            Box::new(FakeGpio::new(board.clone())),
            state,
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("gpiochip0:17") && err.contains("DeviceAllow"),
            "{err}"
        );
        assert_eq!(
            board.level(&line(27)),
            Some(false),
            "the output opened before the failure was returned to safe"
        );
    }
}
