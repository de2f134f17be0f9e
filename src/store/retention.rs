//! Retention: age, count and size limits, enforced oldest-first.
//!
//! [`Store::prune_once`] deletes in batches of [`PRUNE_BATCH`] records; each
//! batch holds sled's writer lock only while it is applied, and the pruner
//! yields between batches, so capture and the API wait at most one small batch.
//! [`Pruner`] runs it on a background thread every [`DEFAULT_PRUNE_EVERY`],
//! and sooner when the record count runs past `max_records` by a margin
//! ([`EarlyPrune`]).
//!
//! Under disk pressure (the guard below its snapshot floor, or full) the
//! pruner also deletes the oldest results beyond the retention limits
//! ([`PressurePrune`]): [`PRESSURE_PRUNE_STEP_PERCENT`] of the records per
//! pass, every [`PRESSURE_PRUNE_EVERY`], at most
//! [`PRESSURE_PRUNE_MAX_PERCENT`] per episode, so a disk filled by something
//! else does not cost the whole history. An episode is logged once when it
//! starts deleting ([`crate::core::ids::DISK_PRESSURE_PRUNE`]) and once when it ends.
//!
//! Why one file of some 620 lines: the retention policy, the pruner thread and
//! the disk-pressure episodes share one batch-delete path and its locking.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sled::Transactional;

use super::index::{index_entries, IndexKind};
use super::{
    make_key, Store, StoreError, PRUNE_BATCH, T_BY_LABEL, T_BY_MODEL, T_RESULTS, T_SNAPSHOTS,
};
use crate::config::StoreSettings;

/// How often [`Pruner`] enforces the policy.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Under disk pressure: share of the records (at the episode's start)
/// deleted per pass.
pub(super) const PRESSURE_PRUNE_STEP_PERCENT: u64 = 5;
/// Under disk pressure: share of the records deleted at most per episode.
pub(super) const PRESSURE_PRUNE_MAX_PERCENT: u64 = 25;
/// Under disk pressure the pruner runs at least this often.
pub(super) const PRESSURE_PRUNE_EVERY: Duration = Duration::from_secs(2);

/// One disk-pressure episode of the pruner: from the guard leaving
/// [`PressureLevel::Ok`](super::PressureLevel::Ok) until it returns.
#[derive(Debug, Default)]
pub(super) struct PressurePrune {
    episode: Option<Episode>,
}

#[derive(Debug)]
struct Episode {
    step: u64,
    left: u64,
    deleted: u64,
}

/// A record's index entries: (index tree number, key) pairs.
type IndexKeys = Vec<(usize, Vec<u8>)>;

impl PressurePrune {
    /// One pass: if the guard (probed now) reports pressure, delete the next
    /// step of oldest results within the episode's budget. Returns how many
    /// were deleted. A poisoned store is left alone (it cannot delete).
    pub(super) fn pass(&mut self, store: &Store) -> Result<u64, StoreError> {
        let level = store.guard().level(store.dir());
        if level == super::PressureLevel::Ok || store.is_poisoned() {
            if let Some(e) = self.episode.take().filter(|e| e.deleted > 0) {
                log::info!(deleted = e.deleted; "disk pressure over: {} of the oldest results were deleted to make room", e.deleted);
            }
            return Ok(0);
        }
        let e = self.episode.get_or_insert_with(|| {
            let n = store.len() as u64;
            Episode {
                step: (n * PRESSURE_PRUNE_STEP_PERCENT / 100).max(1),
                left: n * PRESSURE_PRUNE_MAX_PERCENT / 100,
                deleted: 0,
            }
        });
        let want = e.step.min(e.left);
        if want == 0 {
            return Ok(0);
        }
        let n = store.delete_oldest_n(want)?;
        if e.deleted == 0 && n > 0 {
            let (free, floor) = match level {
                super::PressureLevel::Low { free, floor }
                | super::PressureLevel::Full { free, floor } => (free, floor),
                super::PressureLevel::Ok => (0, 0),
            };
            log::warn!(
                message_id = crate::core::ids::DISK_PRESSURE_PRUNE, free_bytes = free, floor_bytes = floor, budget = e.left;
                "disk pressure ({free} bytes free, floor {floor}): deleting the oldest results beyond the retention limits, at most {} this episode", e.left
            );
        }
        e.left -= n.min(e.left);
        e.deleted += n;
        Ok(n)
    }

    /// Whether an episode is under way (the pruner then runs more often).
    pub(super) fn active(&self) -> bool {
        self.episode.is_some()
    }
}

/// Retention limits; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Records whose `ts_ns` is older than `now - max_age` are deleted.
    pub max_age: Option<Duration>,
    /// At most this many records are kept.
    pub max_records: Option<usize>,
    /// The logical size of the records with their indexes and snapshots
    /// ([`Store::data_bytes`]) is kept at or below this.
    pub max_bytes: Option<u64>,
    /// At most this many snapshots are kept (the oldest snapshots are
    /// deleted, their results stay).
    pub snapshot_max_count: Option<usize>,
    /// The snapshots' logical size ([`Store::snapshot_bytes`]) is kept at or
    /// below this.
    pub snapshot_max_bytes: Option<u64>,
    /// Issue 18: closed sightings that ended before `now - sightings_max_age`
    /// are deleted (`sightings.max_age_s`).
    pub sightings_max_age: Option<Duration>,
    /// Issue 18: at most this many sightings are kept, the oldest closed
    /// ones deleted first (`sightings.max_records`).
    pub sightings_max_records: Option<usize>,
}

impl Retention {
    /// No limits at all.
    pub fn unlimited() -> Retention {
        Retention {
            max_age: None,
            max_records: None,
            max_bytes: None,
            snapshot_max_count: None,
            snapshot_max_bytes: None,
            sightings_max_age: None,
            sightings_max_records: None,
        }
    }

    /// The policy configured in `[store]`; a limit of 0 means "no limit".
    pub(crate) fn from_settings(s: &StoreSettings) -> Retention {
        Retention {
            max_age: (s.max_age_s > 0).then(|| Duration::from_secs(s.max_age_s)),
            max_records: (s.max_records > 0).then_some(s.max_records),
            max_bytes: (s.max_bytes > 0).then_some(s.max_bytes),
            snapshot_max_count: (s.snapshot_max_count > 0).then_some(s.snapshot_max_count),
            snapshot_max_bytes: (s.snapshot_max_bytes > 0).then_some(s.snapshot_max_bytes),
            sightings_max_age: None,
            sightings_max_records: None,
        }
    }

    /// With the sightings' limits configured in `[sightings]` (issue 18);
    /// a limit of 0 means "no limit".
    pub(crate) fn with_sightings(self, s: &crate::config::SightingsSettings) -> Retention {
        Retention {
            sightings_max_age: (s.max_age_s > 0).then(|| Duration::from_secs(s.max_age_s)),
            sightings_max_records: (s.max_records > 0).then_some(s.max_records),
            ..self
        }
    }
}

/// What one [`Store::prune_once`] pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Records deleted because they were older than `max_age`.
    pub by_age: u64,
    /// Records deleted to get down to `max_records`.
    pub by_records: u64,
    /// Records deleted to get down to `max_bytes`.
    pub by_bytes: u64,
    /// Snapshots deleted (records kept) to get down to the snapshot limits.
    pub snapshots: u64,
    /// Logical bytes freed (key plus value lengths).
    pub bytes_freed: u64,
    /// Batches applied.
    pub batches: u64,
    /// The longest time one batch took to apply, in microseconds (how long
    /// writers could have waited).
    pub max_batch_us: u64,
    /// Issue 18: sightings deleted (not counted in [`PruneReport::deleted`]).
    pub sightings: super::SightingPruneReport,
}

impl PruneReport {
    /// Records deleted for any reason.
    pub fn deleted(&self) -> u64 {
        self.by_age + self.by_records + self.by_bytes
    }
}

/// Which records one batch may take, oldest first.
struct BatchLimit {
    /// At most this many records.
    max_n: usize,
    /// Only keys strictly below this one.
    below: Option<[u8; 16]>,
    /// Stop once this many logical bytes are selected.
    bytes: Option<u64>,
}

impl Store {
    /// Enforce `policy` once, with `now_ns` as the current wall-clock time in
    /// nanoseconds since the Unix epoch (a parameter so tests can use a fake
    /// clock). Deletes the oldest records first, age limit first, then count,
    /// then size, in batches of [`PRUNE_BATCH`].
    pub fn prune_once(&self, policy: &Retention, now_ns: u64) -> Result<PruneReport, StoreError> {
        let _retire = super::flush::Retire;
        // Poisoning only means another deleter panicked; the counters are
        // resynchronized below when they disagree with the tree.
        let _deleter = self
            .delete_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut report = PruneReport::default();
        // A database that refuses writes after an I/O error cannot delete
        // either; the daemon restarts to reopen it once space returns.
        if self.is_poisoned() {
            return Ok(report);
        }

        if let Some(age) = policy.max_age {
            let age_ns = u64::try_from(age.as_nanos()).unwrap_or(u64::MAX);
            let cutoff = now_ns.saturating_sub(age_ns);
            if cutoff > 0 {
                let below = make_key(cutoff, 0);
                loop {
                    let limit = BatchLimit {
                        max_n: PRUNE_BATCH,
                        below: Some(below),
                        bytes: None,
                    };
                    let n = self.delete_oldest(&limit, &mut report)?;
                    report.by_age += n;
                    if n < PRUNE_BATCH as u64 {
                        break;
                    }
                }
            }
        }

        if let Some(max) = policy.max_records {
            loop {
                let excess = self.len().saturating_sub(max);
                if excess == 0 {
                    break;
                }
                let limit = BatchLimit {
                    max_n: excess.min(PRUNE_BATCH),
                    below: None,
                    bytes: None,
                };
                let n = self.delete_oldest(&limit, &mut report)?;
                if n == 0 {
                    self.resync_counters()?;
                    break;
                }
                report.by_records += n;
            }
        }

        self.prune_sightings(policy, now_ns, &mut report.sightings)?;
        // Issue 23: the audit trail's own limits (`[audit]`).
        self.prune_audit(now_ns)?;
        self.prune_snapshots(policy, &mut report)?;

        if let Some(max) = policy.max_bytes {
            loop {
                let excess = self.data_bytes().saturating_sub(max);
                if excess == 0 {
                    break;
                }
                let limit = BatchLimit {
                    max_n: PRUNE_BATCH,
                    below: None,
                    bytes: Some(excess),
                };
                let n = self.delete_oldest(&limit, &mut report)?;
                if n == 0 {
                    self.resync_counters()?;
                    break;
                }
                report.by_bytes += n;
            }
        }
        Ok(report)
    }

    /// Delete the `n` oldest records (with their index entries and
    /// snapshots) whatever the retention policy, in batches; returns how many
    /// were deleted (fewer when the store holds fewer).
    pub(crate) fn delete_oldest_n(&self, n: u64) -> Result<u64, StoreError> {
        let _retire = super::flush::Retire;
        let _deleter = self
            .delete_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut report = PruneReport::default();
        if self.is_poisoned() {
            return Ok(0);
        }
        let mut done = 0u64;
        while done < n {
            let max_n = usize::try_from(n - done)
                .unwrap_or(usize::MAX)
                .min(PRUNE_BATCH);
            let k = self.delete_oldest(
                &BatchLimit {
                    max_n,
                    below: None,
                    bytes: None,
                },
                &mut report,
            )?;
            if k == 0 {
                break;
            }
            done += k;
        }
        Ok(done)
    }

    /// Delete one batch of the oldest records within `limit`, each with its
    /// index entries and snapshot, in one transaction; returns how many
    /// records were deleted. The caller holds `delete_lock`.
    fn delete_oldest(
        &self,
        limit: &BatchLimit,
        report: &mut PruneReport,
    ) -> Result<u64, StoreError> {
        // (record key, index keys) of the batch, and its record bytes.
        let mut doomed: Vec<([u8; 16], IndexKeys)> =
            Vec::with_capacity(limit.max_n.min(PRUNE_BATCH));
        let mut bytes = 0u64;
        let iter = match limit.below {
            Some(below) => self.results.range(..below),
            None => self.results.iter(),
        };
        for item in iter {
            if doomed.len() >= limit.max_n || limit.bytes.is_some_and(|b| bytes >= b) {
                break;
            }
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let Ok(key) = <[u8; 16]>::try_from(&k[..]) else {
                continue;
            };
            // Count what deleting the record frees, as data_bytes counts it:
            // the record, its index entries and its snapshot.
            bytes += (k.len() + v.len()) as u64;
            if let Some(snap) = self.snapshots.get(key).map_err(|e| self.db_err(e))? {
                bytes += (key.len() + snap.len()) as u64;
            }
            // An unreadable record cannot name its index entries; they are
            // left behind and skipped by queries (their record is gone).
            let idx = match self.decode(&key, &v) {
                Ok(rec) => index_entries(&key, &rec)
                    .into_iter()
                    .map(|(kind, ik, iv)| {
                        bytes += (ik.len() + iv.len()) as u64;
                        (
                            if kind == IndexKind::Label {
                                T_BY_LABEL
                            } else {
                                T_BY_MODEL
                            },
                            ik,
                        )
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            doomed.push((key, idx));
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let trees = self.tx_trees();
        let removed = trees[..]
            .transaction(|tx| {
                // (records, bytes freed, snapshots, snapshot bytes)
                let mut freed = (0u64, 0u64, 0u64, 0u64);
                for (key, idx) in &doomed {
                    if let Some(v) = tx[T_RESULTS].remove(&key[..])? {
                        freed.0 += 1;
                        freed.1 += (key.len() + v.len()) as u64;
                    }
                    for (t, ik) in idx {
                        if let Some(v) = tx[*t].remove(ik.as_slice())? {
                            freed.1 += (ik.len() + v.len()) as u64;
                        }
                    }
                    if let Some(v) = tx[T_SNAPSHOTS].remove(&key[..])? {
                        let n = (key.len() + v.len()) as u64;
                        freed.1 += n;
                        freed.2 += 1;
                        freed.3 += n;
                    }
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(freed)
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => self.write_err(e),
                sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
                    path: self.dir.clone(),
                    key: String::new(),
                    reason: "prune transaction aborted".into(),
                },
            })?;
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (n, freed, snaps, snap_bytes) = removed;
        // Only deleters remove entries and they are serialized, and the
        // transaction reports what it really removed: the counters stay exact.
        self.count.fetch_sub(n as usize, Ordering::Relaxed);
        self.bytes.fetch_sub(freed, Ordering::Relaxed);
        self.snap_count.fetch_sub(snaps as usize, Ordering::Relaxed);
        self.snap_bytes.fetch_sub(snap_bytes, Ordering::Relaxed);
        report.batches += 1;
        report.bytes_freed += freed;
        report.max_batch_us = report.max_batch_us.max(took);
        // Let writers waiting on sled's lock in before the next batch.
        std::thread::yield_now();
        Ok(n)
    }

    /// Delete the oldest snapshots (not their records or sightings) beyond
    /// the snapshot limits, in batches. Results' and sightings' snapshots
    /// share the limits: the older of the two goes first (a result's by its
    /// time, a sighting's by its best frame's). The caller holds
    /// `delete_lock`.
    fn prune_snapshots(
        &self,
        policy: &Retention,
        report: &mut PruneReport,
    ) -> Result<(), StoreError> {
        loop {
            let count = self.snapshot_count() + self.sighting_snapshot_count();
            let total = self.snapshot_bytes() + self.sighting_snapshot_bytes();
            let excess_n = policy
                .snapshot_max_count
                .map_or(0, |m| count.saturating_sub(m));
            let excess_b = policy
                .snapshot_max_bytes
                .map_or(0, |m| total.saturating_sub(m));
            if excess_n == 0 && excess_b == 0 {
                return Ok(());
            }
            // Walk both trees oldest first, taking the older head each time.
            let mut results = self.snapshots.iter();
            let mut sightings = self.sighting_snapshots_oldest_first();
            let (mut r_head, mut s_head) = (None, None);
            let mut batch = sled::Batch::default();
            let mut s_keys = Vec::new();
            // (result snapshots, their bytes, sighting snapshots, their bytes)
            let (mut rn, mut rb, mut sn, mut sb) = (0usize, 0u64, 0usize, 0u64);
            while rn + sn < PRUNE_BATCH && (rn + sn < excess_n || rb + sb < excess_b) {
                if r_head.is_none() {
                    r_head = results.next().transpose().map_err(|e| self.db_err(e))?;
                }
                if s_head.is_none() {
                    s_head = sightings.next().transpose()?;
                }
                let r_ts = r_head.as_ref().map(|(k, _): &(sled::IVec, sled::IVec)| {
                    let ts = k
                        .get(..8)
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map_or(0, u64::from_be_bytes);
                    i64::try_from(ts).unwrap_or(i64::MAX)
                });
                let s_ts = s_head.as_ref().map(|(_, _, ts)| *ts);
                let take_result = match (r_ts, s_ts) {
                    (None, None) => break,
                    (Some(_), None) => true,
                    (None, Some(_)) => false,
                    (Some(r), Some(s)) => r <= s,
                };
                if take_result {
                    if let Some((k, v)) = r_head.take() {
                        rb += (k.len() + v.len()) as u64;
                        batch.remove(k);
                        rn += 1;
                    }
                } else if let Some((k, n, _)) = s_head.take() {
                    sb += n;
                    s_keys.push(k);
                    sn += 1;
                }
            }
            if rn + sn == 0 {
                return self.resync_counters();
            }
            let started = Instant::now();
            self.snapshots
                .apply_batch(batch)
                .map_err(|e| self.write_err(e))?;
            // One by one, subtracting what was really removed: a sighting's
            // snapshot may be replaced meanwhile (results' never are).
            let (sn, sb) = self.remove_sighting_snapshots(&s_keys)?;
            let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.snap_count.fetch_sub(rn, Ordering::Relaxed);
            self.snap_bytes.fetch_sub(rb, Ordering::Relaxed);
            self.bytes.fetch_sub(rb, Ordering::Relaxed);
            report.snapshots += (rn + sn) as u64;
            report.batches += 1;
            report.bytes_freed += rb + sb;
            report.max_batch_us = report.max_batch_us.max(took);
            std::thread::yield_now();
        }
    }

    /// Recount records and bytes from the trees (the counters claimed more
    /// than the trees hold). The caller holds `delete_lock`.
    fn resync_counters(&self) -> Result<(), StoreError> {
        self.recount().map_err(|e| self.db_err(e))?;
        log::warn!(records = self.len(), bytes = self.data_bytes(); "result store counters drifted; recounted");
        Ok(())
    }
}

/// What the pruner thread is told: stop, or a new policy.
struct PrunerCtl {
    stop: bool,
    policy: Retention,
    /// A new policy arrived since the thread last looked.
    changed: bool,
    /// The record count ran past the limit by the margin ([`EarlyPrune`]).
    due: bool,
}

/// How far past `max_records` the count may run before the pruner is woken
/// ahead of its interval: a tenth of the limit, at least one batch.
fn early_margin(max_records: usize) -> usize {
    (max_records / 10).max(PRUNE_BATCH)
}

/// Wakes the pruner before its interval when the record count passes
/// `max_records` by [`early_margin`]. Without it, everything written in one
/// interval piled up beyond the limit before the next pass: in the soak
/// test (130 results/s, `max_records = 300`, a pass every 10 s) some 1,300
/// records, deleted at once by the pass, which moved the process's
/// anonymous memory by 2-5 MiB.
#[derive(Debug, Default)]
pub(super) struct EarlyPrune {
    /// The count above which the pruner is woken; 0: never (no count
    /// limit, or no pass yet). Set by the pruner after each pass.
    above: AtomicUsize,
    /// A wake was sent and the pass it asked for has not ended yet, so
    /// writers do not wake the pruner once per record.
    woken: AtomicBool,
    /// The running pruner's control block (dangling when none runs).
    pruner: Mutex<Weak<(Mutex<PrunerCtl>, Condvar)>>,
}

impl EarlyPrune {
    /// A record was written and the store now holds `count`.
    pub(super) fn inserted(&self, count: usize) {
        if !self.past_margin(count) || self.woken.swap(true, Ordering::AcqRel) {
            return;
        }
        let pruner = self
            .pruner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade();
        if let Some(shared) = pruner {
            let (ctl, cv) = &*shared;
            ctl.lock().unwrap_or_else(PoisonError::into_inner).due = true;
            cv.notify_all();
        }
    }

    /// Whether a store of `count` records is past the margin.
    fn past_margin(&self, count: usize) -> bool {
        let above = self.above.load(Ordering::Relaxed);
        above != 0 && count > above
    }

    /// A pass under `policy` ended: later writes may wake the next one.
    fn pass_done(&self, policy: &Retention) {
        let above = policy
            .max_records
            .map_or(0, |m| m.saturating_add(early_margin(m)));
        self.above.store(above, Ordering::Relaxed);
        self.woken.store(false, Ordering::Release);
    }
}

/// Handle of the background pruner thread. Stop it with [`Pruner::stop`]
/// (or by dropping it) before the final flush on shutdown.
pub struct Pruner {
    shared: Arc<(Mutex<PrunerCtl>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Pruner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pruner")
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Pruner {
    /// Start a thread that enforces `policy` on `store` now and then every
    /// `every`, using the system clock. While the clock is not synchronized
    /// ([`crate::core::clock::clock_synchronized`]), the age limit is skipped: a board that
    /// booted with a wrong clock must not judge its records' age by it.
    /// After each pass it refreshes [`Store::size_on_disk_cached`].
    pub fn spawn(
        store: Arc<Store>,
        policy: Retention,
        every: Duration,
    ) -> Result<Pruner, StoreError> {
        let shared = Arc::new((
            Mutex::new(PrunerCtl {
                stop: false,
                policy,
                changed: false,
                due: false,
            }),
            Condvar::new(),
        ));
        *store
            .early_prune
            .pruner
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&shared);
        let theirs = shared.clone();
        let dir = store.dir().to_path_buf();
        let thread = std::thread::Builder::new()
            .name("spotter-pruner".into())
            .spawn(move || run(&store, every, &theirs))
            .map_err(|source| StoreError::Io {
                path: dir,
                action: "start the pruner thread",
                source,
            })?;
        Ok(Pruner {
            shared,
            thread: Some(thread),
        })
    }

    /// Ask the thread to stop and wait for it (it finishes the batch it is
    /// applying, then exits).
    pub fn stop(mut self) {
        self.stop_and_join();
    }

    /// Enforce `policy` from now on; a pass with it starts right away.
    pub(crate) fn set_policy(&self, policy: Retention) {
        let (ctl, cv) = &*self.shared;
        let mut ctl = ctl.lock().unwrap_or_else(PoisonError::into_inner);
        ctl.policy = policy;
        ctl.changed = true;
        cv.notify_all();
    }

    /// The policy being enforced.
    pub fn policy(&self) -> Retention {
        self.shared
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .policy
    }

    fn stop_and_join(&mut self) {
        let (ctl, cv) = &*self.shared;
        ctl.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the result store pruner thread panicked");
            }
        }
    }
}

impl Drop for Pruner {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(store: &Store, every: Duration, shared: &(Mutex<PrunerCtl>, Condvar)) {
    let (ctl, cv) = shared;
    let mut warned_clock = false;
    let mut failing = false;
    let mut pressure = PressurePrune::default();
    loop {
        let policy = ctl.lock().unwrap_or_else(PoisonError::into_inner).policy;
        let synced = crate::core::clock::clock_synchronized();
        let effective = if synced {
            policy
        } else {
            Retention {
                max_age: None,
                sightings_max_age: None,
                ..policy
            }
        };
        if !synced
            && (policy.max_age.is_some() || policy.sightings_max_age.is_some())
            && !warned_clock
        {
            log::warn!("system clock not synchronized: age-based retention suspended until it is");
        }
        warned_clock = !synced;
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let mut by_records = 0;
        match store.prune_once(&effective, now_ns) {
            Ok(r) => {
                failing = false;
                by_records = r.by_records;
                if r.sightings.by_age + r.sightings.by_records > 0 {
                    log::debug!(
                        by_age = r.sightings.by_age, by_records = r.sightings.by_records;
                        "pruned {} sightings", r.sightings.by_age + r.sightings.by_records
                    );
                }
                if r.deleted() > 0 {
                    log::debug!(
                        by_age = r.by_age, by_records = r.by_records, by_bytes = r.by_bytes,
                        batches = r.batches, max_batch_us = r.max_batch_us;
                        "pruned {} results", r.deleted()
                    );
                }
            }
            Err(e) => {
                // Logged once per failure streak, not every interval.
                if !failing {
                    log::warn!("result store pruning failed (will retry): {e}");
                }
                failing = true;
            }
        }
        if let Err(e) = pressure.pass(store) {
            log::warn!("deleting old results under disk pressure failed (will retry): {e}");
        }
        store.size_on_disk();
        // Issue 23: what is kept and for how long, for the status.
        store.refresh_statement(&policy);
        store.early_prune.pass_done(&policy);
        // Records written while this pass ended could not wake it: if they
        // already took the count past the margin, go again now, as long as
        // this pass deleted by count (a store that cannot delete must not
        // spin) and no stop was asked for (writers that outpace the pruner
        // must not keep it from stopping).
        if by_records > 0
            && store.early_prune.past_margin(store.len())
            && !ctl.lock().unwrap_or_else(PoisonError::into_inner).stop
        {
            continue;
        }
        let wait = if pressure.active() {
            every.min(PRESSURE_PRUNE_EVERY)
        } else {
            every
        };
        let guard = ctl.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut guard, _) = cv
            .wait_timeout_while(guard, wait, |c| !c.stop && !c.changed && !c.due)
            .unwrap_or_else(PoisonError::into_inner);
        if guard.stop {
            return;
        }
        guard.changed = false;
        guard.due = false;
    }
}
