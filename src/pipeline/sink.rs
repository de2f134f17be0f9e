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
//!
//! # The writer thread (issue 21)
//!
//! The daemon's sink ([`ResultSink::with_writer`]) does the delivery on its
//! own `result-writer` thread, so the store write (and a sled stall) is not
//! spent on the inference thread between two invokes. Camera results are
//! handed over ([`ResultSink::hand_off`]) through a bounded channel
//! ([`WRITER_QUEUE`] results; a full queue makes the inference thread wait,
//! so a stalled disk slows the pipeline instead of growing memory) under an
//! id reserved in the store beforehand, which the inference thread passes on
//! to the sightings stage at once. Uploads ([`ResultSink::deliver`]) go
//! through the same thread and wait for their write, since their reply
//! carries the stored record: one sink, one order, store → state → metrics
//! → GPIO for each result as above. Dropping the sink (the inference
//! thread's end, within its shutdown worker) drains the queue and joins the
//! thread; the store is flushed when it is closed. A handed-off result whose
//! write fails is counted and shown as above; the sighting that named its id
//! then names a result that is not in the store, as with a sighting whose
//! result retention has deleted. `spotter bench`'s stage timing uses the
//! inline sink ([`ResultSink::new`]).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::core::frame::Frame;
use crate::core::result::{InferenceOutput, ResultRecord};
use crate::gpio::runner::GpioHooks;
use crate::gpio::trigger::TriggerRef;
use crate::state::{AppState, Check, Counters};
use crate::store::{ReservedId, Snapshot, Store, StoreError};

/// Results handed to the writer thread and not yet written, at most.
pub(crate) const WRITER_QUEUE: usize = 8;

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
    state: Arc<AppState>,
    mode: Mode,
}

enum Mode {
    /// Delivered on the calling thread.
    Inline(Delivery),
    /// Delivered on the writer thread.
    Writer {
        store: Arc<Store>,
        /// `None` once dropped (the thread then drains and returns).
        tx: Option<SyncSender<Job>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// A result for the writer thread.
enum Job {
    /// A camera result, under the id reserved for it (None: reserving
    /// failed; it gets one when written).
    Store {
        rec: ResultRecord,
        id: Option<ReservedId>,
        snapshot: Option<Snapshot>,
        trigger: Option<TriggerRef>,
    },
    /// A delivery whose caller waits for the outcome ([`ResultSink::deliver`]).
    Wait {
        rec: ResultRecord,
        reply: SyncSender<(ResultRecord, Delivered)>,
    },
}

type Delivered = Result<Option<Duration>, StoreError>;

impl ResultSink {
    /// A sink that delivers on the calling thread (`spotter bench`, tests).
    pub(crate) fn new(
        store: Arc<Store>,
        state: Arc<AppState>,
        gpio: Option<Arc<GpioHooks>>,
    ) -> ResultSink {
        ResultSink {
            state: state.clone(),
            mode: Mode::Inline(Delivery::new(store, state, gpio)),
        }
    }

    /// A sink that delivers on its own `result-writer` thread (the
    /// daemon's; module documentation). If the thread cannot be started,
    /// it delivers inline, as [`ResultSink::new`] (said once).
    pub(crate) fn with_writer(
        store: Arc<Store>,
        state: Arc<AppState>,
        gpio: Option<Arc<GpioHooks>>,
    ) -> ResultSink {
        let (tx, rx) = sync_channel(WRITER_QUEUE);
        let mut delivery = Delivery::new(store.clone(), state.clone(), gpio.clone());
        let spawned = std::thread::Builder::new()
            .name("result-writer".into())
            .spawn(move || write_loop(&mut delivery, &rx));
        match spawned {
            Ok(handle) => ResultSink {
                state,
                mode: Mode::Writer {
                    store,
                    tx: Some(tx),
                    handle: Some(handle),
                },
            },
            Err(e) => {
                log::warn!(spotter_error_kind = "thread"; "cannot start the result writer thread ({e}); results are stored on the inference thread");
                ResultSink::new(store, state, gpio)
            }
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

    /// Deliver `rec` as `keep` says without waiting for its write, where
    /// the sink has a writer thread; returns the id it is stored under
    /// (None: not stored, or, inline, its write failed).
    pub(crate) fn hand_off(&mut self, mut rec: ResultRecord, keep: Keep<'_>) -> Option<String> {
        let Keep::Store { snapshot, trigger } = keep else {
            discard(&self.state, &rec);
            return None;
        };
        let Mode::Writer {
            store,
            tx: Some(tx),
            ..
        } = &mut self.mode
        else {
            let keep = Keep::Store { snapshot, trigger };
            return match self.deliver(&mut rec, keep) {
                Ok(Some(_)) => Some(rec.id),
                _ => None,
            };
        };
        // A failed reservation (sled's id generator) fails the write too;
        // the writer then reports it as for any write.
        let id = store.reserve_id(rec.ts_ns).ok();
        let job = Job::Store {
            rec,
            id,
            snapshot: snapshot.cloned(),
            trigger,
        };
        // The writer only stops when this sender is dropped (or panics: then
        // the result is lost, and the panic is reported when it is joined).
        match tx.send(job) {
            Ok(()) => id.map(ReservedId::to_hex),
            Err(_) => None,
        }
    }

    /// Deliver `rec`: store → state → metrics → GPIO, as `keep` says. A
    /// stored record gets its id; `Ok(Some(d))`: it was written in `d`.
    /// `Err`: the write failed (already counted, logged and shown in readiness).
    /// With a writer thread, it is delivered there, in turn, and waited for.
    pub(crate) fn deliver(
        &mut self,
        rec: &mut ResultRecord,
        keep: Keep<'_>,
    ) -> Result<Option<Duration>, StoreError> {
        let tx = match &mut self.mode {
            Mode::Inline(d) => return d.deliver(rec, keep),
            Mode::Writer { tx, .. } => tx,
        };
        if matches!(keep, Keep::Discard) {
            discard(&self.state, rec);
            return Ok(None);
        }
        // Uploads keep no snapshot and have no trigger (see the table above).
        let (reply, answer) = sync_channel(1);
        let job = Job::Wait {
            rec: rec.clone(),
            reply,
        };
        let sent = match tx {
            Some(tx) => tx.send(job).map_err(|e| e.0),
            None => Err(job),
        };
        match sent.ok().and_then(|()| answer.recv().ok()) {
            Some((r, delivered)) => {
                *rec = r;
                delivered
            }
            // Only a panicked writer gets here.
            None => Err(StoreError::Poisoned {
                path: PathBuf::new(),
                cause: "the result writer thread stopped".into(),
            }),
        }
    }
}

impl Drop for ResultSink {
    fn drop(&mut self) {
        if let Mode::Writer { tx, handle, .. } = &mut self.mode {
            // Closing the channel lets the writer drain what is queued and return.
            drop(tx.take());
            if let Some(h) = handle.take() {
                if h.join().is_err() {
                    log::error!("the result writer thread panicked");
                }
            }
        }
    }
}

/// The writer thread: deliver each job in turn until the sink is dropped
/// and the queue is drained.
fn write_loop(d: &mut Delivery, rx: &Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Store {
                mut rec,
                id,
                snapshot,
                trigger,
            } => {
                let _ = d.store(&mut rec, id, snapshot.as_ref(), trigger);
            }
            Job::Wait { mut rec, reply } => {
                let delivered = d.store(&mut rec, None, None, None);
                // The waiting caller is on the inference thread; it cannot leave.
                let _ = reply.send((rec, delivered));
            }
        }
    }
}

/// A result not stored: only the metrics see it (on the calling thread:
/// they need no order).
fn discard(state: &AppState, rec: &ResultRecord) {
    state.metrics.observe_inference_latency(&rec.latency);
    state.metrics.count_inference(&rec.model_sha256);
}

/// The delivery itself, on whichever thread the sink delivers.
struct Delivery {
    store: Arc<Store>,
    state: Arc<AppState>,
    gpio: Option<Arc<GpioHooks>>,
    /// How long the previous write took, in µs (0 before the first).
    last_store_us: u64,
}

impl Delivery {
    fn new(store: Arc<Store>, state: Arc<AppState>, gpio: Option<Arc<GpioHooks>>) -> Delivery {
        Delivery {
            store,
            state,
            gpio,
            last_store_us: 0,
        }
    }

    fn deliver(&mut self, rec: &mut ResultRecord, keep: Keep<'_>) -> Delivered {
        match keep {
            Keep::Store { snapshot, trigger } => self.store(rec, None, snapshot, trigger),
            Keep::Discard => {
                discard(&self.state, rec);
                Ok(None)
            }
        }
    }

    /// Store → state → metrics → GPIO, under `id` if one was reserved.
    fn store(
        &mut self,
        rec: &mut ResultRecord,
        id: Option<ReservedId>,
        snapshot: Option<&Snapshot>,
        trigger: Option<TriggerRef>,
    ) -> Delivered {
        let wrote = self.write(rec, id, snapshot)?;
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
        id: Option<ReservedId>,
        snapshot: Option<&Snapshot>,
    ) -> Result<Duration, StoreError> {
        let state = &self.state;
        rec.latency.store_us = self.last_store_us;
        let t = Instant::now();
        let wrote = match id {
            Some(id) => self.store.insert_reserved(rec, id, snapshot),
            None => self.store.insert_with_snapshot(rec, snapshot),
        };
        match wrote {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpio::outputs::test_record;

    // A JPEG's first bytes: enough for the snapshot's content type.
    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00rest of a frame";

    // Would catch results handed to the writer thread being lost when the
    // sink is dropped at shutdown (a queue not drained), stored under an id
    // other than the one the inference thread passed on (sightings naming a
    // result that does not exist), a snapshot not travelling with its
    // result, or results written out of order: every handed-off result is
    // in the store under its returned id, in order, with its snapshot, and
    // counted once.
    #[test]
    fn handed_off_results_are_stored_under_their_ids_before_the_sink_drops() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_with(tmp.path(), 0).unwrap());
        let state = Arc::new(AppState::new());
        let mut sink = ResultSink::with_writer(store.clone(), state.clone(), None);
        let snapshot = Snapshot {
            bytes: JPEG.to_vec(),
        };
        let n = 3 * WRITER_QUEUE as u64;
        let mut ids = Vec::new();
        for i in 0..n {
            let mut rec = test_record("tabby", 0.9);
            rec.ts_ns = 1_700_000_000_000_000_000 + i;
            rec.frame_seq = i;
            let keep = Keep::Store {
                snapshot: (i % 4 == 0).then_some(&snapshot),
                trigger: None,
            };
            ids.push(sink.hand_off(rec, keep).expect("an id for a stored result"));
        }
        // Not stored: no id, nothing written.
        assert_eq!(sink.hand_off(test_record("x", 0.1), Keep::Discard), None);
        drop(sink);
        assert_eq!(store.len(), n as usize);
        assert_eq!(state.counters.snapshot().results_stored, n);
        for (i, id) in ids.iter().enumerate() {
            let rec = store
                .get(id)
                .unwrap()
                .expect("stored under the returned id");
            assert_eq!(rec.frame_seq, i as u64);
            assert_eq!(store.snapshot(id).unwrap().is_some(), i % 4 == 0, "{i}");
        }
        let last = state.last_result().unwrap();
        assert_eq!(
            (last.id.as_str(), last.frame_seq),
            (ids[ids.len() - 1].as_str(), n - 1)
        );
    }

    // Would catch an upload's delivery through the writer thread returning
    // before its write (a reply without an id, or a stale record), or being
    // stored twice: the record comes back with the id it is stored under,
    // after the camera results handed over before it.
    #[test]
    fn a_waited_delivery_comes_back_stored_after_earlier_hand_offs() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open_with(tmp.path(), 0).unwrap());
        let state = Arc::new(AppState::new());
        let mut sink = ResultSink::with_writer(store.clone(), state.clone(), None);
        for i in 0..WRITER_QUEUE as u64 {
            let mut rec = test_record("tabby", 0.9);
            rec.frame_seq = i;
            let keep = Keep::Store {
                snapshot: None,
                trigger: None,
            };
            assert!(sink.hand_off(rec, keep).is_some());
        }
        let mut upload = test_record("upload", 0.5);
        let keep = Keep::Store {
            snapshot: None,
            trigger: None,
        };
        assert!(matches!(sink.deliver(&mut upload, keep), Ok(Some(_))));
        assert!(!upload.id.is_empty());
        // In turn: everything handed over before it is written already.
        assert_eq!(store.len(), WRITER_QUEUE + 1);
        assert_eq!(store.get(&upload.id).unwrap(), Some(upload.clone()));
        assert_eq!(state.last_result(), Some(upload));
        drop(sink);
        assert_eq!(store.len(), WRITER_QUEUE + 1);
    }
}
