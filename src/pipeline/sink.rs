//! The result sink: where every result goes once a model has run, whichever
//! path produced it — a camera frame, an image uploaded to the API, or
//! `spotter bench`. It owns making the record ([`ResultSink::record`], over
//! [`ResultRecord::build`]) and delivering it ([`ResultSink::deliver`]), in
//! this order:
//!
//! 1. **store**: the record (with the frame as a snapshot, when given) goes
//!    into sled. A write counts `results_stored` and passes the store
//!    readiness check; a failure counts `store_errors`, fails the check
//!    (logged once) and ends the delivery: nothing below sees a result that
//!    was meant to be stored and was not.
//! 2. **state**: the last result, which publishes the `result` event.
//! 3. **metrics**: the stage latencies and the inferences per model.
//! 4. **GPIO**: the trigger latency and the output rules.
//!
//! | result | store | state | metrics | GPIO |
//! |---|---|---|---|---|
//! | camera frame | record, snapshot if the rule admits it | yes | yes | rules, with its trigger |
//! | upload, `store=true` | record, never a snapshot | yes | yes | rules, no trigger |
//! | upload, `store=false` | no | no | yes, without the store stage | no |
//! | `spotter bench` | its throw-away store | its throw-away state | its throw-away metrics | none |
//!
//! Choices:
//! - A result that is not stored (an upload without `store=true`, or one
//!   whose requester gave up waiting) is an inference, so it is counted and
//!   timed, but it is not "the last result": that, the `result` event and
//!   the GPIO rules (documented as acting on *stored* results) stay for
//!   results that exist in the store, with an id.
//! - A stored upload is a stored result like any other: it becomes the last
//!   result and its labels drive the GPIO outputs, as the README's rules say.
//!   A failed upload write counts and shows in readiness like any failed
//!   write, since it is the same store failing.
//! - `latency.store_us` of a stored record is the duration of the previous
//!   write (its own is only known once it is written), as camera records
//!   always had; `deliver` returns the record's own write time (bench reports
//!   that one).
//! - The `inferences` counter is not the sink's: the inference thread counts
//!   every successful run, stored or not, before delivering.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::frame::Frame;
use crate::core::result::{InferenceOutput, ResultRecord};
use crate::gpio::runner::GpioHooks;
use crate::gpio::trigger::TriggerRef;
use crate::state::{AppState, Check, Counters};
use crate::store::{Snapshot, Store, StoreError};

/// What happens to a delivered result.
#[derive(Debug)]
pub enum Keep<'a> {
    /// Store it (with `snapshot`, the frame's image, when given); `trigger`
    /// is the GPIO trigger its frame was admitted for.
    Store {
        snapshot: Option<&'a Snapshot>,
        trigger: Option<TriggerRef>,
    },
    /// Do not store it: only the metrics see it.
    Discard,
}

/// The one sink of results. See the module documentation.
pub struct ResultSink {
    store: Arc<Store>,
    state: Arc<AppState>,
    gpio: Option<Arc<GpioHooks>>,
    /// How long the previous write took, in µs (0 before the first).
    last_store_us: u64,
}

impl ResultSink {
    pub(crate) fn new(
        store: Arc<Store>,
        state: Arc<AppState>,
        gpio: Option<Arc<GpioHooks>>,
    ) -> ResultSink {
        ResultSink {
            store,
            state,
            gpio,
            last_store_us: 0,
        }
    }

    /// The record of `output` for `frame`, by the model `model_sha256` on
    /// `runtime`, marked with the clock state the inference thread last saw.
    pub(crate) fn record(
        &self,
        output: InferenceOutput,
        frame: &Frame,
        model_sha256: &str,
        runtime: &str,
    ) -> ResultRecord {
        let clock_ok = self.state.clock_synchronized.load(Ordering::Relaxed);
        ResultRecord::build(output, frame, model_sha256, runtime, clock_ok)
    }

    /// Deliver `rec`: store → state → metrics → GPIO, as `keep` says. A
    /// stored record gets its id; `Ok(Some(d))`: it was written in `d`.
    /// `Err`: the write failed (already counted, logged and shown in readiness).
    pub(crate) fn deliver(
        &mut self,
        rec: &mut ResultRecord,
        keep: Keep<'_>,
    ) -> Result<Option<Duration>, StoreError> {
        let (snapshot, trigger) = match keep {
            Keep::Store { snapshot, trigger } => (snapshot, trigger),
            Keep::Discard => {
                self.state.metrics.observe_inference_latency(&rec.latency);
                self.state.metrics.count_inference(&rec.model_sha256);
                return Ok(None);
            }
        };
        let wrote = self.write(rec, snapshot)?;
        self.state.set_last_result(rec.clone());
        self.state.metrics.observe_latency(&rec.latency);
        self.state.metrics.count_inference(&rec.model_sha256);
        if let Some(g) = &self.gpio {
            g.stored(rec, trigger, Instant::now());
        }
        Ok(Some(wrote))
    }

    /// The store step: write `rec`, account for the outcome, and say how
    /// long the write took.
    fn write(
        &mut self,
        rec: &mut ResultRecord,
        snapshot: Option<&Snapshot>,
    ) -> Result<Duration, StoreError> {
        let state = &self.state;
        rec.latency.store_us = self.last_store_us;
        let t = Instant::now();
        match self.store.insert_with_snapshot(rec, snapshot) {
            Ok(_) => {
                let took = t.elapsed();
                self.last_store_us = took.as_micros() as u64;
                Counters::inc(&state.counters.results_stored);
                state.count_source_result(&rec.source_name);
                if !state.readiness().store.ok {
                    state.update_readiness(|r| r.store = Check::passing("last write succeeded"));
                }
                Ok(took)
            }
            Err(e) => {
                Counters::inc(&state.counters.store_errors);
                let msg = e.to_string();
                // A full disk (or a database poisoned by a write error) is
                // logged once by the store, with its MESSAGE_ID.
                if state.readiness().store.ok
                    && !matches!(e, StoreError::DiskFull { .. } | StoreError::Poisoned { .. })
                {
                    log::error!(spotter_error_kind = "store_write"; "store write failed: {msg}");
                }
                state.update_readiness(|r| r.store = Check::failing(msg));
                Err(e)
            }
        }
    }
}
