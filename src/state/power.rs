//! Power and heat figures (issue 22): the last [`Reading`] the monitor took
//! of the SoC temperature and the firmware's throttling flags, for status
//! and `/metrics`. The monitor writes it (every `power.poll_s`); a board
//! without the sensors leaves it empty.

use std::sync::RwLock;

use super::AppState;
use crate::power::Reading;

/// The last reading, `None` before the first poll or with `[power]` off.
#[derive(Debug, Default)]
pub struct PowerStatus {
    last: RwLock<Option<Reading>>,
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

    /// The last reading (the status document's `power`).
    pub fn power(&self) -> Option<Reading> {
        self.power
            .last
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}
