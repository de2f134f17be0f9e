//! The trigger gate: decides, from the trigger input's edges, which captured
//! frames are inferred. It holds at most one pending burst, so triggers that
//! arrive while a burst is still running are counted and dropped, never
//! queued. All times are arguments (tests use their own clock).

use std::time::{Duration, Instant, SystemTime};

use super::{Edge, EdgeEvent};
pub use crate::core::gpio::TriggerMode;

/// The gate's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GateConfig {
    pub mode: TriggerMode,
    pub edge: Edge,
    /// Edges closer than this to the last accepted edge are contact bounce.
    pub debounce: Duration,
    pub frames: u32,
    /// A burst ends after this even if fewer frames came.
    pub window: Duration,
}

/// What became of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeOutcome {
    /// Started a burst (on_trigger) or changed the gate (gated).
    Accepted,
    /// Within the debounce period of the previous accepted edge.
    Bounce,
    /// A burst was still running: counted, not queued.
    Busy,
    /// Not an edge this mode listens to.
    Ignored,
}

/// The trigger a frame belongs to, for latency accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerRef {
    /// When the edge was read.
    pub at: Instant,
    /// The first frame admitted for this trigger.
    pub first: bool,
}

/// Whether a frame is inferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Infer it; `trigger` is set in the on_trigger and gated modes.
    Infer { trigger: Option<TriggerRef> },
    /// Drop it without inference.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    at: Instant,
    wall: SystemTime,
    left: u32,
    admitted: u32,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct TriggerGate {
    cfg: GateConfig,
    last_accepted: Option<Instant>,
    /// on_trigger: the running burst; gated: the activation in force.
    burst: Option<Burst>,
}

impl TriggerGate {
    pub(crate) fn new(cfg: GateConfig) -> Self {
        TriggerGate {
            cfg,
            last_accepted: None,
            burst: None,
        }
    }

    fn running(&self, now: Instant) -> bool {
        self.burst
            .is_some_and(|b| b.left > 0 && now.saturating_duration_since(b.at) < self.cfg.window)
    }

    /// Feed one edge, read at `ev.at` (monotonic) and `wall` (the same
    /// moment on the clock frames are stamped with).
    pub(crate) fn on_edge(&mut self, ev: EdgeEvent, wall: SystemTime) -> EdgeOutcome {
        let wanted = match self.cfg.mode {
            TriggerMode::Continuous => false,
            TriggerMode::Gated => true,
            TriggerMode::OnTrigger => match self.cfg.edge {
                Edge::Rising => ev.rising,
                Edge::Falling => !ev.rising,
                Edge::Both => true,
            },
        };
        if !wanted {
            return EdgeOutcome::Ignored;
        }
        if self
            .last_accepted
            .is_some_and(|t| ev.at.saturating_duration_since(t) < self.cfg.debounce)
        {
            return EdgeOutcome::Bounce;
        }
        match self.cfg.mode {
            TriggerMode::OnTrigger => {
                if self.running(ev.at) {
                    return EdgeOutcome::Busy;
                }
                self.burst = Some(Burst {
                    at: ev.at,
                    wall,
                    left: self.cfg.frames,
                    admitted: 0,
                });
            }
            _ => {
                if ev.rising == self.burst.is_some() {
                    // Already in that state (a missed edge): nothing changes.
                    self.last_accepted = Some(ev.at);
                    return EdgeOutcome::Ignored;
                }
                self.burst = ev.rising.then_some(Burst {
                    at: ev.at,
                    wall,
                    left: u32::MAX,
                    admitted: 0,
                });
            }
        }
        self.last_accepted = Some(ev.at);
        EdgeOutcome::Accepted
    }

    /// Gated mode: the level read without an edge (at start, and while idle,
    /// so a release lost to debouncing does not leave the gate open).
    pub(crate) fn set_level(&mut self, high: bool, now: Instant, wall: SystemTime) {
        if self.cfg.mode == TriggerMode::Gated && high != self.burst.is_some() {
            self.burst = high.then_some(Burst {
                at: now,
                wall,
                left: u32::MAX,
                admitted: 0,
            });
        }
    }

    /// Whether the line is active (gated) or a burst is running (on_trigger).
    pub(crate) fn is_open(&self, now: Instant) -> bool {
        match self.cfg.mode {
            TriggerMode::Continuous => true,
            TriggerMode::Gated => self.burst.is_some(),
            TriggerMode::OnTrigger => self.running(now),
        }
    }

    /// Decide about a frame captured at `captured` (wall clock), taken by
    /// the inference thread at `now`. Frames captured before the edge are
    /// dropped: they show the scene before the trigger.
    pub(crate) fn admit(&mut self, captured: SystemTime, now: Instant) -> Admission {
        if self.cfg.mode == TriggerMode::Continuous {
            return Admission::Infer { trigger: None };
        }
        if !self.is_open(now) {
            return Admission::Drop;
        }
        let Some(b) = self.burst.as_mut() else {
            return Admission::Drop;
        };
        if captured < b.wall {
            return Admission::Drop;
        }
        b.left = b.left.saturating_sub(1);
        b.admitted += 1;
        Admission::Infer {
            trigger: Some(TriggerRef {
                at: b.at,
                first: b.admitted == 1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch the status showing a mode name the configuration does not
    // accept (it said "ontrigger" for on_trigger, seen in the VM test).
    #[test]
    fn mode_names_are_the_configuration_names() {
        for m in [
            TriggerMode::Continuous,
            TriggerMode::OnTrigger,
            TriggerMode::Gated,
        ] {
            assert_eq!(
                serde_json::to_string(&m).unwrap(),
                format!("\"{}\"", m.as_str())
            );
        }
    }

    fn gate(mode: TriggerMode, edge: Edge) -> TriggerGate {
        TriggerGate::new(GateConfig {
            mode,
            edge,
            debounce: Duration::from_millis(20),
            frames: 2,
            window: Duration::from_secs(5),
        })
    }

    fn ev(t0: Instant, ms: u64, rising: bool) -> EdgeEvent {
        EdgeEvent {
            rising,
            at: t0 + Duration::from_millis(ms),
        }
    }

    fn wall(w0: SystemTime, ms: u64) -> SystemTime {
        w0 + Duration::from_millis(ms)
    }

    // Would catch the default mode dropping or tagging frames (existing
    // deployments without a trigger must behave exactly as before).
    #[test]
    fn continuous_admits_everything_and_ignores_edges() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut g = gate(TriggerMode::Continuous, Edge::Rising);
        assert_eq!(g.on_edge(ev(t0, 0, true), w0), EdgeOutcome::Ignored);
        for i in 0..5 {
            assert_eq!(g.admit(wall(w0, i), t0), Admission::Infer { trigger: None });
        }
    }

    // Would catch bounce starting extra bursts: a second edge within the
    // debounce period is refused, one after it is taken.
    #[test]
    fn debounce_refuses_edges_within_the_period() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut g = gate(TriggerMode::OnTrigger, Edge::Both);
        assert_eq!(g.on_edge(ev(t0, 0, true), w0), EdgeOutcome::Accepted);
        assert_eq!(
            g.on_edge(ev(t0, 5, false), wall(w0, 5)),
            EdgeOutcome::Bounce
        );
        assert_eq!(
            g.on_edge(ev(t0, 19, true), wall(w0, 19)),
            EdgeOutcome::Bounce
        );
        // Past the debounce period, the burst is still running: busy.
        assert_eq!(g.on_edge(ev(t0, 25, true), wall(w0, 25)), EdgeOutcome::Busy);
    }

    // Would catch on_trigger inferring frames from before the edge, more
    // than N frames, or forgetting to mark the first frame for latency.
    #[test]
    fn on_trigger_admits_n_frames_captured_after_the_edge() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut g = gate(TriggerMode::OnTrigger, Edge::Rising);
        assert_eq!(g.admit(wall(w0, 0), t0), Admission::Drop, "no trigger yet");
        assert_eq!(
            g.on_edge(ev(t0, 100, false), wall(w0, 100)),
            EdgeOutcome::Ignored,
            "falling edge with edge = rising"
        );
        assert_eq!(
            g.on_edge(ev(t0, 100, true), wall(w0, 100)),
            EdgeOutcome::Accepted
        );
        let now = t0 + Duration::from_millis(150);
        assert_eq!(
            g.admit(wall(w0, 90), now),
            Admission::Drop,
            "captured before the edge"
        );
        let at = t0 + Duration::from_millis(100);
        assert_eq!(
            g.admit(wall(w0, 120), now),
            Admission::Infer {
                trigger: Some(TriggerRef { at, first: true })
            }
        );
        assert_eq!(
            g.admit(wall(w0, 140), now),
            Admission::Infer {
                trigger: Some(TriggerRef { at, first: false })
            }
        );
        assert_eq!(
            g.admit(wall(w0, 160), now),
            Admission::Drop,
            "only 2 frames per trigger"
        );
        // The burst is over: the next edge starts a new one.
        assert_eq!(
            g.on_edge(ev(t0, 200, true), wall(w0, 200)),
            EdgeOutcome::Accepted
        );
    }

    // Would catch busy triggers being queued (a second burst after the
    // first) instead of counted and dropped, or a stuck burst never ending.
    #[test]
    fn trigger_while_busy_is_not_queued_and_window_ends_a_burst() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut g = gate(TriggerMode::OnTrigger, Edge::Rising);
        assert_eq!(g.on_edge(ev(t0, 0, true), w0), EdgeOutcome::Accepted);
        assert_eq!(
            g.on_edge(ev(t0, 1000, true), wall(w0, 1000)),
            EdgeOutcome::Busy
        );
        let now = t0 + Duration::from_millis(1100);
        assert!(matches!(
            g.admit(wall(w0, 1050), now),
            Admission::Infer { .. }
        ));
        assert!(matches!(
            g.admit(wall(w0, 1060), now),
            Admission::Infer { .. }
        ));
        assert_eq!(
            g.admit(wall(w0, 1070), now),
            Admission::Drop,
            "the busy edge left no second burst"
        );
        // A burst that gets no frames ends after the window.
        assert_eq!(
            g.on_edge(ev(t0, 2000, true), wall(w0, 2000)),
            EdgeOutcome::Accepted
        );
        assert!(g.is_open(t0 + Duration::from_millis(6999)));
        assert!(!g.is_open(t0 + Duration::from_millis(7000)));
        assert_eq!(
            g.on_edge(ev(t0, 7000, true), wall(w0, 7000)),
            EdgeOutcome::Accepted
        );
    }

    // Would catch gated mode inferring while the line is inactive or
    // stopping while it is active, and a lost release keeping it open.
    #[test]
    fn gated_infers_only_while_active() {
        let (t0, w0) = (Instant::now(), SystemTime::now());
        let mut g = gate(TriggerMode::Gated, Edge::Both);
        assert_eq!(g.admit(w0, t0), Admission::Drop);
        assert_eq!(
            g.on_edge(ev(t0, 100, true), wall(w0, 100)),
            EdgeOutcome::Accepted
        );
        let at = t0 + Duration::from_millis(100);
        for (i, ms) in [110u64, 120, 130].into_iter().enumerate() {
            assert_eq!(
                g.admit(wall(w0, ms), at),
                Admission::Infer {
                    trigger: Some(TriggerRef { at, first: i == 0 })
                }
            );
        }
        assert_eq!(
            g.on_edge(ev(t0, 500, false), wall(w0, 500)),
            EdgeOutcome::Accepted
        );
        assert_eq!(
            g.admit(wall(w0, 510), t0 + Duration::from_millis(510)),
            Admission::Drop
        );
        g.set_level(true, t0 + Duration::from_millis(600), wall(w0, 600));
        assert!(g.is_open(t0));
        g.set_level(false, t0 + Duration::from_millis(700), wall(w0, 700));
        assert_eq!(
            g.admit(wall(w0, 710), t0 + Duration::from_millis(710)),
            Admission::Drop
        );
    }
}
