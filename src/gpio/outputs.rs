//! Outputs driven by rules on stored results, and the status LED.
//!
//! A rule switches its line on when a result has its label at or above its
//! score, and keeps it on for its hold time; a new match extends the hold.
//! Several rules may drive one line (it is on while any holds it). Lines are
//! requested at their safe (off) level, so a restart after a crash first
//! returns every output to safe; [`Outputs::safe`] (and dropping) does the
//! same on shutdown. Times are arguments, so tests use their own clock.
//!
//! A rule with `on = "sighting_started"` (issue 18) fires when a sighting
//! of its label starts ([`Outputs::on_sighting_started`]) and ignores
//! per-frame results; a rule with `on = "frame"` (the default) the reverse.

use std::time::{Duration, Instant};

use super::{Gpio, GpioError, Level, LineId, OutputLine};
pub use crate::config::gpio::{LedSpec, RuleOn, RuleSpec};
use crate::core::result::ResultRecord;
use crate::core::sighting::Sighting;
use crate::state::Readiness;

/// What the status LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LedState {
    /// Steady on.
    Ready,
    /// Slow blink (1 s period): waiting for the camera (source check failing).
    NotReady,
    /// Fast blink (200 ms period): model or store failing, or a GPIO error.
    Error,
}

impl LedState {
    pub(crate) fn from_readiness(r: &Readiness, gpio_error: bool) -> LedState {
        if gpio_error || !r.model.ok || !r.store.ok {
            LedState::Error
        } else if r.ready() {
            LedState::Ready
        } else {
            LedState::NotReady
        }
    }

    /// Whether the LED is lit `since_start` into the pattern.
    pub(crate) fn lit(self, since_start: Duration) -> bool {
        let ms = since_start.as_millis();
        match self {
            LedState::Ready => true,
            LedState::NotReady => ms % 1000 < 500,
            LedState::Error => ms % 200 < 100,
        }
    }
}

struct Out {
    id: LineId,
    line: Box<dyn OutputLine>,
    active: Level,
    on: bool,
    until: Option<Instant>,
}

impl Out {
    fn drive(&mut self, on: bool) -> Result<(), GpioError> {
        self.line.set_high(self.active.physical(on))?;
        self.on = on;
        Ok(())
    }
}

/// A line a result switched on (for latency accounting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SwitchedOn {
    pub line: LineId,
    pub at: Instant,
}

/// The rule outputs and the status LED, requested at their safe state.
pub(crate) struct Outputs {
    lines: Vec<Out>,
    /// (rule, index into `lines`)
    rules: Vec<(RuleSpec, usize)>,
    led: Option<Out>,
}

impl Outputs {
    /// Request every rule line and the LED, each at its safe (off) level.
    pub(crate) fn open(
        gpio: &mut dyn Gpio,
        rules: &[RuleSpec],
        led: Option<&LedSpec>,
    ) -> Result<Outputs, GpioError> {
        let mut lines: Vec<Out> = Vec::new();
        let mut indexed = Vec::with_capacity(rules.len());
        for r in rules {
            let i = match lines.iter().position(|o| o.id == r.line) {
                Some(i) => i,
                None => {
                    let line = gpio.output(&r.line, r.active.physical(false))?;
                    lines.push(Out {
                        id: r.line.clone(),
                        line,
                        active: r.active,
                        on: false,
                        until: None,
                    });
                    lines.len() - 1
                }
            };
            indexed.push((r.clone(), i));
        }
        let led = match led {
            Some(l) => Some(Out {
                line: gpio.output(&l.line, l.active.physical(false))?,
                id: l.line.clone(),
                active: l.active,
                on: false,
                until: None,
            }),
            None => None,
        };
        Ok(Outputs {
            lines,
            rules: indexed,
            led,
        })
    }

    /// Apply the rules to a stored result at `now`. Returns the lines it
    /// switched on (lines already on only get their hold extended).
    pub(crate) fn on_result(
        &mut self,
        rec: &ResultRecord,
        now: Instant,
    ) -> Result<Vec<SwitchedOn>, GpioError> {
        self.fire(RuleOn::Frame, now, |rule| {
            rec.classes
                .iter()
                .map(|c| (&c.label, c.score))
                .chain(rec.detections.iter().map(|d| (&d.label, d.score)))
                .any(|(label, score)| *label == rule.label && score >= rule.min_score)
        })
    }

    /// Apply the `on = "sighting_started"` rules to a sighting that just
    /// started, at `now` (its label, and its peak score so far against the
    /// rule's `min_score`). Returns the lines it switched on.
    pub(crate) fn on_sighting_started(
        &mut self,
        s: &Sighting,
        now: Instant,
    ) -> Result<Vec<SwitchedOn>, GpioError> {
        self.fire(RuleOn::SightingStarted, now, |rule| {
            s.label == rule.label && s.peak_score >= rule.min_score
        })
    }

    /// Switch on (or extend the hold of) the lines of the rules fired by
    /// `on` for which `matched` holds.
    fn fire(
        &mut self,
        on: RuleOn,
        now: Instant,
        matched: impl Fn(&RuleSpec) -> bool,
    ) -> Result<Vec<SwitchedOn>, GpioError> {
        let mut switched = Vec::new();
        for (rule, i) in &self.rules {
            if rule.on != on || !matched(rule) {
                continue;
            }
            let out = &mut self.lines[*i];
            let until = now + Duration::from_millis(rule.hold_ms);
            out.until = Some(out.until.map_or(until, |u| u.max(until)));
            if !out.on {
                out.drive(true)?;
                switched.push(SwitchedOn {
                    line: out.id.clone(),
                    at: Instant::now(),
                });
            }
        }
        Ok(switched)
    }

    /// Switch off the lines whose hold ended by `now`; drive the LED.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        led: Option<(LedState, Duration)>,
    ) -> Result<(), GpioError> {
        for out in &mut self.lines {
            if out.on && out.until.is_some_and(|u| now >= u) {
                out.until = None;
                out.drive(false)?;
            }
        }
        if let (Some(out), Some((state, since))) = (self.led.as_mut(), led) {
            let lit = state.lit(since);
            if lit != out.on {
                out.drive(lit)?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    /// Whether a rule line is on now.
    pub(crate) fn is_on(&self, line: &LineId) -> bool {
        self.lines.iter().any(|o| o.id == *line && o.on)
    }

    /// Drive every output to its safe level (shutdown). Tries every line and
    /// returns the first error.
    pub(crate) fn safe(&mut self) -> Result<(), GpioError> {
        let mut first = None;
        for out in self.lines.iter_mut().chain(self.led.as_mut()) {
            out.until = None;
            if let Err(e) = out.drive(false) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        // Also on a panic unwinding through the owner: outputs must not stay on.
        if let Err(e) = self.safe() {
            log::error!(message_id = crate::core::ids::GPIO_FAILED, spotter_error_kind = "gpio"; "could not return outputs to their safe state: {e}");
        }
    }
}

/// A stored result with one class, for tests.
#[cfg(test)]
pub(crate) fn test_record(label: &str, score: f32) -> ResultRecord {
    let mut r = ResultRecord {
        id: String::new(),
        ts_ns: 0,
        source: String::new(),
        origin: String::new(),
        frame_seq: 0,
        model_sha256: String::new(),
        runtime: String::new(),
        classes: vec![],
        detections: vec![],
        image_width: 1,
        image_height: 1,
        latency: Default::default(),
        clock_synchronized: true,
        boottime_ns: 0,
        source_name: String::new(),
    };
    r.classes.push(crate::core::result::ClassScore {
        index: 0,
        label: label.into(),
        raw: score,
        score,
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpio::fake::{FakeBoard, FakeGpio};
    use crate::state::Check;

    fn line(n: u32) -> LineId {
        LineId::Offset {
            chip: "gpiochip0".into(),
            offset: n,
        }
    }

    fn result(label: &str, score: f32) -> ResultRecord {
        test_record(label, score)
    }

    fn rule(label: &str, min: f32, hold_ms: u64, l: u32, active: Level) -> RuleSpec {
        RuleSpec {
            label: label.into(),
            min_score: min,
            hold_ms,
            line: line(l),
            active,
            on: RuleOn::Frame,
        }
    }

    fn levels(board: &FakeBoard, l: u32) -> Vec<bool> {
        board
            .history(&line(l))
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    // Would catch a rule firing below its score or for another label, a
    // hold not being extended by a re-trigger, or a line not going off.
    #[test]
    fn rule_holds_and_re_trigger_extends() {
        let board = FakeBoard::new();
        let mut gpio = FakeGpio::new(board.clone());
        let mut o = Outputs::open(
            &mut gpio,
            &[rule("person", 0.6, 2000, 27, Level::High)],
            None,
        )
        .unwrap();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(o
            .on_result(&result("person", 0.59), ms(0))
            .unwrap()
            .is_empty());
        assert!(o.on_result(&result("cat", 0.99), ms(0)).unwrap().is_empty());
        assert_eq!(o.on_result(&result("person", 0.6), ms(0)).unwrap().len(), 1);
        o.tick(ms(1500), None).unwrap();
        assert!(o.is_on(&line(27)));
        assert!(
            o.on_result(&result("person", 0.9), ms(1500))
                .unwrap()
                .is_empty(),
            "already on: only extended"
        );
        o.tick(ms(3000), None).unwrap();
        assert!(
            o.is_on(&line(27)),
            "the re-trigger extended the hold to 3.5 s"
        );
        o.tick(ms(3500), None).unwrap();
        assert!(!o.is_on(&line(27)));
        assert_eq!(
            levels(&board, 27),
            vec![false, true, false],
            "requested safe, on once, off once"
        );
    }

    // Would catch (issue 18) a `sighting_started` rule firing per frame (a
    // relay clicking for every stored result), not firing when a sighting
    // of its label starts with a high enough score, firing for another label
    // or a low score, or a per-frame rule firing on a sighting's start.
    #[test]
    fn sighting_started_rules_fire_on_starts_only() {
        let board = FakeBoard::new();
        let mut gpio = FakeGpio::new(board.clone());
        let mut on_start = rule("person", 0.6, 1000, 27, Level::High);
        on_start.on = RuleOn::SightingStarted;
        let per_frame = rule("person", 0.6, 1000, 5, Level::High);
        let mut o = Outputs::open(&mut gpio, &[on_start, per_frame], None).unwrap();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let switched = o.on_result(&result("person", 0.9), ms(0)).unwrap();
        assert_eq!(
            switched.iter().map(|s| s.line.clone()).collect::<Vec<_>>(),
            [line(5)]
        );
        assert!(!o.is_on(&line(27)), "a stored frame does not fire it");
        let mut s = crate::core::sighting::Sighting::test_open(1, "person", 0.59);
        assert!(
            o.on_sighting_started(&s, ms(10)).unwrap().is_empty(),
            "score below"
        );
        s.label = "cat".into();
        s.peak_score = 0.99;
        assert!(
            o.on_sighting_started(&s, ms(10)).unwrap().is_empty(),
            "other label"
        );
        o.tick(ms(1000), None).unwrap();
        assert!(!o.is_on(&line(5)), "per-frame hold ended");
        s.label = "person".into();
        let switched = o.on_sighting_started(&s, ms(1000)).unwrap();
        assert_eq!(
            switched.iter().map(|s| s.line.clone()).collect::<Vec<_>>(),
            [line(27)]
        );
        assert!(!o.is_on(&line(5)), "the per-frame rule ignores sightings");
        o.tick(ms(1999), None).unwrap();
        assert!(o.is_on(&line(27)), "held for hold_ms");
        o.tick(ms(2000), None).unwrap();
        assert!(!o.is_on(&line(27)));
        assert_eq!(levels(&board, 27), vec![false, true, false]);
    }

    // Would catch active-low lines being driven the wrong way, or two rules
    // on one line switching it off while the other still holds it.
    #[test]
    fn several_rules_and_active_low_lines() {
        let board = FakeBoard::new();
        let mut gpio = FakeGpio::new(board.clone());
        let rules = [
            rule("person", 0.5, 1000, 5, Level::Low),
            rule("car", 0.5, 3000, 5, Level::Low),
            rule("dog", 0.5, 100, 6, Level::High),
        ];
        let mut o = Outputs::open(&mut gpio, &rules, None).unwrap();
        assert_eq!(
            board.level(&line(5)),
            Some(true),
            "active-low safe state is high"
        );
        let t0 = Instant::now();
        o.on_result(&result("person", 0.9), t0).unwrap();
        o.on_result(&result("car", 0.9), t0).unwrap();
        assert_eq!(board.level(&line(5)), Some(false));
        assert_eq!(board.level(&line(6)), Some(false), "dog rule untouched");
        o.tick(t0 + Duration::from_millis(1000), None).unwrap();
        assert_eq!(
            board.level(&line(5)),
            Some(false),
            "car still holds the line"
        );
        o.tick(t0 + Duration::from_millis(3000), None).unwrap();
        assert_eq!(board.level(&line(5)), Some(true));
    }

    // Would catch shutdown (or a panic) leaving a relay energised.
    #[test]
    fn safe_state_on_shutdown_and_drop() {
        let board = FakeBoard::new();
        let mut gpio = FakeGpio::new(board.clone());
        let led = LedSpec {
            line: line(22),
            active: Level::High,
        };
        let mut o = Outputs::open(
            &mut gpio,
            &[rule("person", 0.5, 60_000, 27, Level::High)],
            Some(&led),
        )
        .unwrap();
        o.on_result(&result("person", 0.9), Instant::now()).unwrap();
        o.tick(Instant::now(), Some((LedState::Ready, Duration::ZERO)))
            .unwrap();
        assert_eq!(
            (board.level(&line(27)), board.level(&line(22))),
            (Some(true), Some(true))
        );
        o.safe().unwrap();
        assert_eq!(
            (board.level(&line(27)), board.level(&line(22))),
            (Some(false), Some(false))
        );
        o.on_result(&result("person", 0.9), Instant::now()).unwrap();
        drop(o);
        assert_eq!(
            board.level(&line(27)),
            Some(false),
            "dropping returns to safe too"
        );
    }

    // Would catch the LED showing "ready" while a check fails, or the
    // patterns being indistinguishable.
    #[test]
    fn led_state_and_patterns() {
        let ok = Check::passing("");
        let bad = Check::failing("");
        let r = |s: &Check, m: &Check| Readiness {
            source: s.clone(),
            model: m.clone(),
            store: ok.clone(),
            sources: Vec::new(),
        };
        assert_eq!(
            LedState::from_readiness(&r(&ok, &ok), false),
            LedState::Ready
        );
        assert_eq!(
            LedState::from_readiness(&r(&bad, &ok), false),
            LedState::NotReady
        );
        assert_eq!(
            LedState::from_readiness(&r(&ok, &bad), false),
            LedState::Error
        );
        assert_eq!(
            LedState::from_readiness(&r(&ok, &ok), true),
            LedState::Error
        );
        let ms = Duration::from_millis;
        assert!(LedState::Ready.lit(ms(0)) && LedState::Ready.lit(ms(750)));
        assert!(LedState::NotReady.lit(ms(100)) && !LedState::NotReady.lit(ms(600)));
        assert!(
            LedState::Error.lit(ms(50))
                && !LedState::Error.lit(ms(150))
                && LedState::Error.lit(ms(250))
        );
    }
}
