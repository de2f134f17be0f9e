//! Power and heat figures (issue 22): the last [`Reading`] the monitor took
//! of the SoC temperature and the firmware's throttling flags, for status
//! and `/metrics`. The monitor writes it (every `power.poll_s`); a board
//! without the sensors leaves it empty.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use super::AppState;
use crate::power::Reading;

/// The last reading, `None` before the first poll or with `[power]` off.
#[derive(Debug, Default)]
pub struct PowerStatus {
    last: RwLock<Option<Reading>>,
    /// While slowed down for heat: the least time between two inferred
    /// frames, in microseconds (0: no slowdown). The prepare thread reads it
    /// per frame, so it is an atomic.
    heat_interval_us: AtomicU64,
    /// The `power.hot_max_fps` in force while slowed down, for status.
    heat_max_fps: RwLock<Option<f64>>,
}

impl AppState {
    /// Keep `r` as the current reading; status shows it from the next
    /// request on.
    pub(crate) fn set_power(&self, r: Reading) {
        let mut last = self.power.last.write().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() != Some(&r) {
            *last = Some(r);
            drop(last);
            self.changed();
        }
    }

    /// Slow inference down to `max_fps` (`None`: back to full rate); status
    /// shows it from the next request on.
    pub(crate) fn set_heat_limit(&self, max_fps: Option<f64>) {
        let us = max_fps
            .filter(|f| *f > 0.0)
            .map_or(0, |f| (1e6 / f).round() as u64);
        self.power.heat_interval_us.store(us, Ordering::Relaxed);
        *self
            .power
            .heat_max_fps
            .write()
            .unwrap_or_else(|e| e.into_inner()) = max_fps;
        self.changed();
    }

    /// The least time between two inferred frames while slowed down for
    /// heat; `None` at full rate.
    pub(crate) fn heat_interval(&self) -> Option<Duration> {
        match self.power.heat_interval_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// The inference rate cap in force for heat (status
    /// `power.inference_max_fps`).
    pub(crate) fn heat_max_fps(&self) -> Option<f64> {
        *self
            .power
            .heat_max_fps
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The last reading (the status document's `power`).
    pub fn power(&self) -> Option<Reading> {
        self.power
            .last
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
