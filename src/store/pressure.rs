//! Disk-pressure guard: stop writing before the state filesystem is full.
//!
//! Two floors on the free space of the filesystem holding the store
//! (`statvfs`, space available to unprivileged users):
//! - below the snapshot floor (twice the record floor) new snapshots are
//!   dropped and results are still stored ([`PressureLevel::Low`]);
//! - below the record floor nothing is written ([`PressureLevel::Full`]):
//!   inserts fail with [`StoreError::DiskFull`](super::StoreError::DiskFull),
//!   which the pipeline counts and shows in readiness, the API answers 507,
//!   and reads keep being served. An ENOSPC from sled puts the guard in the
//!   same state until the next probe shows space above the floor. (sled 0.34
//!   keeps an I/O error from its log writer and fails every later write until
//!   the database is reopened, so the floor is what keeps the store usable.
//!   The store marks itself poisoned on such an error, refuses and counts
//!   writes without touching sled, and asks for a restart once
//!   [`DiskGuard::space_back`]; see `Store::restart_due`.)
//!
//! # Holding the floors at any write rate
//!
//! A probe once a second is too rare for a store written at 30 frames/s with
//! snapshots: sled writes several times the logical bytes (its log, node
//! rewrites, blob files), and a small filesystem went from above both floors
//! to ENOSPC between two probes. So every write is *admitted* by
//! [`DiskGuard::admit`] before it is made:
//! - the guard keeps the free space of its last probe and subtracts the
//!   estimated cost of every write admitted since (logical bytes × the
//!   measured amplification): the *projected* free space;
//! - it probes again when the interval has passed **or** when the writes
//!   admitted since the last probe reach an eighth of the headroom left above
//!   the floor (or, before the first measurement, [`AMP_SAMPLE_MIN`] bytes), so near the floor every write is checked against `statvfs`
//!   (a cheap system call) and far from it almost none is;
//! - a write whose estimated cost would take the projected free space below
//!   the record floor is refused (and the guard is full); a snapshot that
//!   would take it below the snapshot floor is dropped and counted;
//! - the amplification (filesystem bytes per logical byte) is measured from
//!   the probes themselves: the fall in free space over the logical bytes
//!   written in between, over windows of at least [`AMP_SAMPLE_MIN`] bytes;
//!   it rises at once and falls slowly, between [`AMP_MIN`] and [`AMP_MAX`],
//!   starting at [`AMP_START`]. It covers what sled writes besides the
//!   records (consolidations, the pruner's deletions) without modelling it;
//! - writes admitted but not yet finished stay counted after a probe (the
//!   probe cannot see them yet), so several writer threads cannot all pass
//!   on the same projection.
//!
//! Levels change with hysteresis ([`DiskGuard::full_exit`] and
//! [`DiskGuard::low_exit`] above the floors), so a disk hovering at a floor
//! is one episode, not a line per write. Every change of level is logged
//! once, with a stable `MESSAGE_ID` ([`crate::core::ids::DISK_LOW`],
//! [`crate::core::ids::DISK_FULL`], [`crate::core::ids::DISK_SPACE_RECOVERED`]),
//! never once per frame or request. The probe is injectable ([`FreeSpace`])
//! so tests can fake a filling disk.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::core::ids;

/// The amplification assumed before any has been measured: filesystem bytes
/// per logical byte written. sled 0.34 measured 8 to 23 on a tmpfs filled
/// with results and snapshots (`tests/store/store_disk_floor.rs`); the
/// first window is measured after [`AMP_SAMPLE_MIN`] bytes, and until then
/// [`HEADROOM_FRACTION`] covers up to 8 times this.
pub(crate) const AMP_START: f64 = 4.0;
/// The amplification never drops below this, however little a window
/// measured (a window whose writes still sit in sled's buffers measures too
/// little).
pub(crate) const AMP_MIN: f64 = 2.0;
/// ... nor rises above this (a window where something else filled the disk).
pub(crate) const AMP_MAX: f64 = 64.0;
/// Logical bytes a measuring window needs before its ratio counts: below
/// that, the filesystem's block granularity dominates the ratio.
pub(crate) const AMP_SAMPLE_MIN: u64 = 256 << 10;
/// Probe again once the writes admitted since the last probe are estimated to
/// take this fraction (1/N) of the headroom above the record floor: the
/// floor holds as long as the real amplification is at most N times the
/// estimate (the first window is probed after [`AMP_SAMPLE_MIN`] bytes, so
/// the estimate is a measured one from then on).
const HEADROOM_FRACTION: u64 = 8;

/// How much free space a filesystem has.
pub trait FreeSpace: Send + Sync + std::fmt::Debug {
    /// Bytes available to the daemon on the filesystem holding `path`.
    fn free_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// The real probe: `statvfs(2)`, blocks available to unprivileged users.
#[derive(Debug, Clone, Copy, Default)]
pub struct Statvfs;

impl FreeSpace for Statvfs {
    fn free_bytes(&self, path: &Path) -> io::Result<u64> {
        let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
        #[allow(clippy::useless_conversion)] // the field widths differ by target
        let (avail, frsize) = (
            u64::from(st.blocks_available()),
            u64::from(st.fragment_size()),
        );
        Ok(avail.saturating_mul(frsize))
    }
}

/// Where free space stands relative to the floors. `free` is the projected
/// free space (the last probe less the writes admitted since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressureLevel {
    /// Above both floors (or no floor configured).
    Ok,
    /// Below the snapshot floor: results only.
    Low { free: u64, floor: u64 },
    /// Below the record floor (or ENOSPC seen): nothing is written.
    Full { free: u64, floor: u64 },
}

/// What [`DiskGuard::admit`] allows one write to do.
#[derive(Debug)]
#[must_use = "the reservation counts the write until it is dropped"]
pub(crate) enum Admission<'a> {
    /// Write the result and, if one was offered, its snapshot.
    All(Reservation<'a>),
    /// Write the result; drop the snapshot (counted).
    ResultOnly(Reservation<'a>),
    /// Write nothing (counted): the disk is full.
    Refused { free: u64, floor: u64 },
}

/// An admitted write in progress: its estimated cost stays in the
/// projection until it is dropped (the write finished or failed), since a
/// probe cannot see it before then.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    guard: &'a DiskGuard,
    cost: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.cost > 0 {
            let mut st = self.guard.lock();
            st.inflight = st.inflight.saturating_sub(self.cost);
        }
    }
}

#[derive(Debug)]
struct GuardState {
    checked: Option<Instant>,
    level: PressureLevel,
    /// sled reported ENOSPC since the last probe.
    enospc: bool,
    /// The probe failed at the last check (logged once per streak).
    probe_failing: bool,
    /// Free bytes at the last successful probe.
    free: u64,
    /// Estimated cost of the writes admitted since the last probe...
    spent: u64,
    /// ... and of those admitted and not yet finished (in `spent` too, when
    /// admitted since the last probe).
    inflight: u64,
    /// The measuring window: free bytes at its start, and logical bytes
    /// admitted since.
    sample_free: Option<u64>,
    sample_logical: u64,
    /// Filesystem bytes per logical byte, as measured.
    amp: f64,
    /// Whether `amp` has been measured at least once.
    measured: bool,
}

/// Decides, from the free space, what the store may write. See the module doc.
#[derive(Debug)]
pub struct DiskGuard {
    probe: Option<Box<dyn FreeSpace>>,
    min_free: u64,
    snapshot_min_free: u64,
    check_every: Duration,
    state: Mutex<GuardState>,
    refused_results: AtomicU64,
    refused_snapshots: AtomicU64,
    enospc_errors: AtomicU64,
    probes: AtomicU64,
}

/// Free space below which a store poisoned by an I/O error is not yet
/// restarted (see [`DiskGuard::space_back`]), when no larger floor is set.
pub const RESTART_MIN_FREE: u64 = 1 << 20;

impl DiskGuard {
    /// No floor: everything is written until sled itself fails.
    pub(crate) fn disabled() -> DiskGuard {
        DiskGuard::with_probe(None, 0, Duration::ZERO)
    }

    /// A guard with record floor `min_free` bytes (0: disabled) and snapshot
    /// floor `2 * min_free`, probing `probe` at least every `check_every`
    /// (and more often as writes approach the floor; see the module doc).
    pub fn new(probe: Box<dyn FreeSpace>, min_free: u64, check_every: Duration) -> DiskGuard {
        DiskGuard::with_probe((min_free > 0).then_some(probe), min_free, check_every)
    }

    fn with_probe(
        probe: Option<Box<dyn FreeSpace>>,
        min_free: u64,
        check_every: Duration,
    ) -> DiskGuard {
        DiskGuard {
            probe,
            min_free,
            snapshot_min_free: min_free.saturating_mul(2),
            check_every,
            state: Mutex::new(GuardState {
                checked: None,
                level: PressureLevel::Ok,
                enospc: false,
                probe_failing: false,
                free: u64::MAX,
                spent: 0,
                inflight: 0,
                sample_free: None,
                sample_logical: 0,
                amp: AMP_START,
                measured: false,
            }),
            refused_results: AtomicU64::new(0),
            refused_snapshots: AtomicU64::new(0),
            enospc_errors: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, GuardState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Projected free space above which a full guard stores results again.
    fn full_exit(&self) -> u64 {
        self.min_free.saturating_add(self.min_free / 8)
    }

    /// Projected free space above which a low guard keeps snapshots again.
    fn low_exit(&self) -> u64 {
        self.snapshot_min_free.saturating_add(self.min_free / 4)
    }

    /// The level now, probing the filesystem of `dir` if the last probe is
    /// older than the check interval. Logs level changes.
    pub(crate) fn level(&self, dir: &Path) -> PressureLevel {
        let mut st = self.lock();
        if self.probe.is_none() {
            self.unguarded_level(&mut st);
            return st.level;
        }
        if self.interval_over(&st) {
            self.probe_now(&mut st, dir);
        }
        let new = self.level_at(&st, projected(&st));
        self.transition(&mut st, new);
        st.level
    }

    /// Without a floor, an ENOSPC still stops writes until the next
    /// interval, so a full disk is not hammered every frame.
    fn unguarded_level(&self, st: &mut GuardState) {
        if st.enospc
            && st
                .checked
                .is_some_and(|t| t.elapsed() < self.check_every.max(Duration::from_secs(1)))
        {
            return;
        }
        if st.enospc {
            st.enospc = false;
            self.transition(st, PressureLevel::Ok);
        }
    }

    fn interval_over(&self, st: &GuardState) -> bool {
        st.checked.is_none_or(|t| t.elapsed() >= self.check_every)
    }

    /// Admit one write of `result_bytes` logical bytes (the record with its
    /// index and outbox entries) and, if `snapshot_bytes` is given, a snapshot
    /// of that many: probe if due (see the module doc), then decide. The
    /// returned reservation keeps the write's estimated cost in the
    /// projection until it is dropped; refusals are counted here.
    pub(crate) fn admit(
        &self,
        dir: &Path,
        result_bytes: u64,
        snapshot_bytes: Option<u64>,
    ) -> Admission<'_> {
        let mut st = self.lock();
        if self.probe.is_none() {
            self.unguarded_level(&mut st);
            return match st.level {
                PressureLevel::Full { free, floor } => {
                    self.count_refused_result();
                    Admission::Refused { free, floor }
                }
                _ => Admission::All(Reservation {
                    guard: self,
                    cost: 0,
                }),
            };
        }
        let cost = |bytes: u64| (bytes as f64 * st.amp).ceil() as u64;
        let (result_cost, snapshot_cost) = (cost(result_bytes), snapshot_bytes.map(cost));
        let headroom = st.free.saturating_sub(self.min_free) / HEADROOM_FRACTION;
        let due = if matches!(st.level, PressureLevel::Full { .. }) {
            // Nothing new is written while full: the interval decides, unless
            // the projection still holds estimated writes (then the guard may
            // be full only on paper, e.g. several large snapshots in flight),
            // which the next probe replaces by what the disk says.
            self.interval_over(&st) || st.spent > 0
        } else {
            self.interval_over(&st)
                || st.spent + result_cost + snapshot_cost.unwrap_or(0) >= headroom
                || (!st.measured && st.sample_logical >= AMP_SAMPLE_MIN)
        };
        if due {
            self.probe_now(&mut st, dir);
        }
        let free = projected(&st);
        let level = self.level_at(&st, free);
        let after_result = free.saturating_sub(result_cost);
        if matches!(level, PressureLevel::Full { .. }) || after_result < self.min_free {
            self.transition(
                &mut st,
                PressureLevel::Full {
                    free,
                    floor: self.min_free,
                },
            );
            self.count_refused_result();
            return Admission::Refused {
                free,
                floor: self.min_free,
            };
        }
        self.transition(&mut st, level);
        // A snapshot goes only while the level is Ok and it would leave the
        // projection above the snapshot floor; one that would not is
        // dropped without changing the level (it is counted).
        let keep_snapshot = snapshot_cost.filter(|c| {
            level == PressureLevel::Ok && after_result.saturating_sub(*c) >= self.snapshot_min_free
        });
        if snapshot_cost.is_some() && keep_snapshot.is_none() {
            self.count_refused_snapshot();
        }
        let total = result_cost + keep_snapshot.unwrap_or(0);
        st.spent += total;
        st.inflight += total;
        st.sample_logical += result_bytes + keep_snapshot.and(snapshot_bytes).unwrap_or(0);
        let reservation = Reservation {
            guard: self,
            cost: total,
        };
        if keep_snapshot.is_some() || snapshot_cost.is_none() {
            Admission::All(reservation)
        } else {
            Admission::ResultOnly(reservation)
        }
    }

    /// Read the free space now; on success, restart the projection from it
    /// (writes still in flight stay counted) and update the amplification.
    fn probe_now(&self, st: &mut GuardState, dir: &Path) {
        let Some(probe) = &self.probe else { return };
        st.checked = Some(Instant::now());
        self.probes.fetch_add(1, Ordering::Relaxed);
        let free = match probe.free_bytes(dir) {
            Ok(f) => {
                st.probe_failing = false;
                f
            }
            Err(e) => {
                if !st.probe_failing {
                    log::warn!(path:display = dir.display(); "cannot read free space (statvfs): {e}; the disk-pressure guard keeps its last state");
                }
                st.probe_failing = true;
                return;
            }
        };
        st.enospc = false;
        match st.sample_free {
            Some(start) if st.sample_logical >= AMP_SAMPLE_MIN => {
                let measured = start.saturating_sub(free) as f64 / st.sample_logical as f64;
                st.amp = if measured > st.amp {
                    measured
                } else {
                    0.75 * st.amp + 0.25 * measured
                }
                .clamp(AMP_MIN, AMP_MAX);
                st.measured = true;
                st.sample_free = Some(free);
                st.sample_logical = 0;
            }
            Some(start) if free > start => {
                // Space was freed (deletions, another program): restart
                // the window so the gain does not hide the writes.
                st.sample_free = Some(free);
                st.sample_logical = 0;
            }
            Some(_) => {}
            None => st.sample_free = Some(free),
        }
        st.free = free;
        st.spent = st.inflight;
    }

    /// The level for projected free space `free`, from the current level
    /// (hysteresis: leaving a level needs a margin above its floor).
    fn level_at(&self, st: &GuardState, free: u64) -> PressureLevel {
        let full = PressureLevel::Full {
            free,
            floor: self.min_free,
        };
        let low = PressureLevel::Low {
            free,
            floor: self.snapshot_min_free,
        };
        if st.enospc {
            return st.level;
        }
        match st.level {
            PressureLevel::Full { .. } if free < self.full_exit() => full,
            PressureLevel::Full { .. } | PressureLevel::Low { .. } if free < self.low_exit() => {
                if free < self.min_free {
                    full
                } else {
                    low
                }
            }
            _ if free < self.min_free => full,
            _ if free < self.snapshot_min_free => low,
            _ => PressureLevel::Ok,
        }
    }

    #[cfg(test)]
    /// The level as last determined, without probing.
    pub(crate) fn current(&self) -> PressureLevel {
        self.lock().level
    }

    /// The amplification the guard currently assumes.
    pub fn amplification(&self) -> f64 {
        self.lock().amp
    }

    /// Free-space probes made since start.
    pub fn probes(&self) -> u64 {
        self.probes.load(Ordering::Relaxed)
    }

    /// sled failed with ENOSPC: stop writing until a probe shows space.
    /// Returns `(free, floor)` for the error.
    pub(super) fn note_enospc(&self, dir: &Path) -> (u64, u64) {
        let mut st = self.lock();
        let free = self
            .probe
            .as_ref()
            .and_then(|p| p.free_bytes(dir).ok())
            .unwrap_or(0);
        self.enospc_errors.fetch_add(1, Ordering::Relaxed);
        st.enospc = true;
        st.checked = Some(Instant::now());
        self.transition(
            &mut st,
            PressureLevel::Full {
                free,
                floor: self.min_free,
            },
        );
        (free, self.min_free)
    }

    fn transition(&self, st: &mut GuardState, new: PressureLevel) {
        let same_kind = std::mem::discriminant(&st.level) == std::mem::discriminant(&new);
        let old = st.level;
        st.level = new;
        if same_kind {
            return;
        }
        let (results, snaps) = (self.refused_results(), self.refused_snapshots());
        match new {
            PressureLevel::Full { free, floor } => log::error!(
                message_id = ids::DISK_FULL, free_bytes = free, floor_bytes = floor;
                "disk full: {free} bytes free (floor {floor}); results are not stored until space returns"
            ),
            PressureLevel::Low { free, floor } if matches!(old, PressureLevel::Full { .. }) => {
                log::warn!(
                    message_id = ids::DISK_LOW, free_bytes = free, floor_bytes = floor, refused_results = results;
                    "disk space partly recovered: {free} bytes free (snapshot floor {floor}); results stored again ({results} refused so far), snapshots still paused"
                )
            }
            PressureLevel::Low { free, floor } => log::warn!(
                message_id = ids::DISK_LOW, free_bytes = free, floor_bytes = floor;
                "disk nearly full: {free} bytes free (snapshot floor {floor}); snapshots paused, results still stored"
            ),
            PressureLevel::Ok => log::info!(
                message_id = ids::DISK_SPACE_RECOVERED, refused_results = results, refused_snapshots = snaps;
                "disk space recovered after {old:?}; storing again ({results} results and {snaps} snapshots refused so far)"
            ),
        }
    }

    pub(super) fn count_refused_result(&self) {
        self.refused_results.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_refused_snapshot(&self) {
        self.refused_snapshots.fetch_add(1, Ordering::Relaxed);
    }

    /// Results not stored because the disk was full (since start).
    pub fn refused_results(&self) -> u64 {
        self.refused_results.load(Ordering::Relaxed)
    }

    /// Snapshots dropped because free space was low (since start).
    pub fn refused_snapshots(&self) -> u64 {
        self.refused_snapshots.load(Ordering::Relaxed)
    }

    /// Writes that failed with ENOSPC from the database itself (since start).
    pub fn enospc_errors(&self) -> u64 {
        self.enospc_errors.load(Ordering::Relaxed)
    }

    /// Whether the filesystem of `dir` has room again: at least the record
    /// floor and at least [`RESTART_MIN_FREE`], by the configured probe (or
    /// `statvfs` when the floor is disabled). Probes on every call; for the
    /// rare case of a store that must be reopened (see `Store::restart_due`).
    pub(crate) fn space_back(&self, dir: &Path) -> bool {
        let probe: &dyn FreeSpace = self.probe.as_deref().unwrap_or(&Statvfs);
        probe
            .free_bytes(dir)
            .is_ok_and(|free| free >= self.min_free.max(RESTART_MIN_FREE))
    }
}

/// The free space of the last probe less the writes admitted since.
fn projected(st: &GuardState) -> u64 {
    st.free.saturating_sub(st.spent)
}
