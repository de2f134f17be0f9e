//! Disk-pressure guard: stop writing before the state filesystem is full.
//!
//! Two floors on the free space of the filesystem holding the store
//! (`statvfs`, space available to unprivileged users):
//! - below the snapshot floor (twice the record floor) new snapshots are
//!   dropped and results are still stored ([`PressureLevel::Low`]);
//! - below the record floor nothing is written ([`PressureLevel::Full`]):
//!   inserts fail with [`StoreError::DiskFull`](super::StoreError::DiskFull),
//!   which the pipeline counts and shows in readiness, and the API keeps
//!   serving reads. An ENOSPC from sled puts the guard in the same state
//!   until the next probe shows space above the floor. (sled 0.34 keeps an
//!   I/O error from its log writer and fails every later write until the
//!   database is reopened, so the floor is what keeps the store usable. The
//!   store marks itself poisoned on such an error, refuses and counts writes
//!   without touching sled, and asks for a restart once
//!   [`DiskGuard::space_back`]; see `Store::restart_due`.)
//!
//! Every change of level is logged once, with a stable `MESSAGE_ID`
//! ([`crate::core::ids::DISK_LOW`], [`crate::core::ids::DISK_FULL`],
//! [`crate::core::ids::DISK_SPACE_RECOVERED`]), never once per frame. The probe is
//! injectable ([`FreeSpace`]) so tests can fake a filling disk.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::core::ids;

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

/// Where free space stands relative to the floors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PressureLevel {
    /// Above both floors (or no floor configured).
    Ok,
    /// Below the snapshot floor: results only.
    Low { free: u64, floor: u64 },
    /// Below the record floor (or ENOSPC seen): nothing is written.
    Full { free: u64, floor: u64 },
}

#[derive(Debug)]
struct GuardState {
    checked: Option<Instant>,
    level: PressureLevel,
    /// sled reported ENOSPC since the last probe.
    enospc: bool,
    /// The probe failed at the last check (logged once per streak).
    probe_failing: bool,
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
    /// floor `2 * min_free`, probing `probe` at most every `check_every`.
    pub(crate) fn new(
        probe: Box<dyn FreeSpace>,
        min_free: u64,
        check_every: Duration,
    ) -> DiskGuard {
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
            }),
            refused_results: AtomicU64::new(0),
            refused_snapshots: AtomicU64::new(0),
            enospc_errors: AtomicU64::new(0),
        }
    }

    /// The level now, probing the filesystem of `dir` if the last probe is
    /// older than the check interval. Logs level changes.
    pub(crate) fn level(&self, dir: &Path) -> PressureLevel {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(probe) = &self.probe else {
            // No floor, but an ENOSPC still stops writes until the next
            // interval, so a full disk is not hammered every frame.
            if st.enospc
                && st
                    .checked
                    .is_some_and(|t| t.elapsed() < self.check_every.max(Duration::from_secs(1)))
            {
                return st.level;
            }
            if st.enospc {
                st.enospc = false;
                self.transition(&mut st, PressureLevel::Ok);
            }
            return st.level;
        };
        if st.checked.is_some_and(|t| t.elapsed() < self.check_every) {
            return st.level;
        }
        st.checked = Some(Instant::now());
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
                return st.level;
            }
        };
        st.enospc = false;
        let new = if free < self.min_free {
            PressureLevel::Full {
                free,
                floor: self.min_free,
            }
        } else if free < self.snapshot_min_free {
            PressureLevel::Low {
                free,
                floor: self.snapshot_min_free,
            }
        } else {
            PressureLevel::Ok
        };
        self.transition(&mut st, new);
        st.level
    }

    #[cfg(test)]
    /// The level as last determined, without probing.
    pub(crate) fn current(&self) -> PressureLevel {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .level
    }

    /// sled failed with ENOSPC: stop writing until a probe shows space.
    /// Returns `(free, floor)` for the error.
    pub(super) fn note_enospc(&self, dir: &Path) -> (u64, u64) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
    pub(crate) fn refused_results(&self) -> u64 {
        self.refused_results.load(Ordering::Relaxed)
    }

    /// Snapshots dropped because free space was low (since start).
    pub(crate) fn refused_snapshots(&self) -> u64 {
        self.refused_snapshots.load(Ordering::Relaxed)
    }

    /// Writes that failed with ENOSPC from the database itself (since start).
    pub(crate) fn enospc_errors(&self) -> u64 {
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
