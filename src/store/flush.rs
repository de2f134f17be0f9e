//! The store's flusher: makes buffered writes durable (sled's `flush`, an
//! fsync) every `flush_every_ms`, and records how far each flush got, so
//! the recovery point is observed rather than assumed. It replaces sled's
//! own flusher thread, which does the same work but reports nothing.
//!
//! [`Durability`] keeps the newest record key inserted so far and, after
//! each completed flush, the newest key that had been inserted when that
//! flush began: that record and everything inserted before it survive a
//! crash ([`super::Store::durable_through`]). On a loaded machine a flush
//! may start late; the mark shows it instead of a test guessing a slack.
//!
//! [`Retire`] moves what a write made sled retire out of the writing
//! thread, so memory sled no longer needs is freed within milliseconds
//! whichever thread wrote and however rarely.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How far the store's writes are known to be on disk.
#[derive(Debug, Default)]
pub(super) struct Durability {
    /// The largest record key inserted so far.
    newest: Mutex<Option<[u8; 16]>>,
    /// The largest key inserted before the last completed flush began.
    durable: Mutex<Option<[u8; 16]>>,
    /// Completed flushes.
    flushes: AtomicU64,
}

impl Durability {
    /// A record with `key` was written (not yet durable).
    pub(super) fn inserted(&self, key: [u8; 16]) {
        let mut n = self.newest.lock().unwrap_or_else(PoisonError::into_inner);
        if n.is_none_or(|k| key > k) {
            *n = Some(key);
        }
    }

    /// Taken just before a flush starts.
    pub(super) fn mark(&self) -> Option<[u8; 16]> {
        *self.newest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A flush that began at `mark` completed.
    pub(super) fn flushed(&self, mark: Option<[u8; 16]>) {
        let mut d = self.durable.lock().unwrap_or_else(PoisonError::into_inner);
        if mark > *d {
            *d = mark;
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn durable(&self) -> Option<[u8; 16]> {
        *self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(super) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

/// The background flusher thread; stopped and joined on drop (before the
/// database it holds is dropped, see the field order of `Store`).
#[derive(Debug, Default)]
pub(super) struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Flush `db` every `every` until dropped. Nothing is flushed while
    /// `poisoned` is set: sled fails or blocks on a database whose log write
    /// failed (see `Store::close`).
    pub(super) fn spawn(
        db: sled::Db,
        every: Duration,
        durability: Arc<Durability>,
        poisoned: Arc<OnceLock<String>>,
    ) -> std::io::Result<Flusher> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || run(&db, every, &durability, &poisoned, &s))?;
        Ok(Flusher {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(PoisonError::into_inner) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            // A panicked flusher has nothing left to clean up.
            let _ = h.join();
        }
    }
}

fn run(
    db: &sled::Db,
    every: Duration,
    durability: &Durability,
    poisoned: &OnceLock<String>,
    stop: &(Mutex<bool>, Condvar),
) {
    let (lock, cv) = stop;
    let mut failing = false;
    loop {
        let guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = cv
            .wait_timeout_while(guard, every, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        if *guard {
            return;
        }
        drop(guard);
        if poisoned.get().is_some() {
            continue;
        }
        let mark = durability.mark();
        match db.flush() {
            Ok(_) => {
                // A flush seals sled's write buffer; this thread writes
                // nothing else, so without this its bag would fill once per
                // 64 flushes (once a minute at the default interval).
                retire_now();
                durability.flushed(mark);
                failing = false;
            }
            Err(e) => {
                // Logged once per failure streak; a write error also poisons
                // the store through its next insert.
                if !failing {
                    log::warn!("result store flush failed (will retry): {e}");
                }
                failing = true;
            }
        }
    }
}

/// Hands what the calling thread's sled writes retired to crossbeam-epoch's
/// global queue.
///
/// sled frees what a write replaces (tree nodes and, when the write seals
/// it, a 512 KiB log buffer) through crossbeam-epoch's deferred functions.
/// They wait in the writing thread's own bag until 64 pile up, and only
/// then reach the global queue, where sled's I/O threads free them within
/// milliseconds. A thread that writes rarely fills its bag slowly, holding
/// every buffer it sealed meanwhile: the flusher once held 30 s of them,
/// and the inference thread (sightings, whose snapshots fill buffers fast)
/// 45-50 s, which was most of the soak test's RSS sawtooth (5-9 MiB every
/// 30-50 s, `benches/soak.sh`).
pub(super) fn retire_now() {
    crossbeam_epoch::pin().flush();
}

/// [`retire_now`] when dropped: every store method other modules call that
/// writes to sled holds one for its whole body, so it runs on every way out,
/// `?` included. The private helpers they call do not need their own.
pub(super) struct Retire;

impl Drop for Retire {
    fn drop(&mut self) {
        retire_now();
    }
}

#[cfg(test)]
mod tests {
    use super::super::sightings::tests::{jpeg, open_with_outbox, sighting};
    use super::super::tests::rec;
    use super::super::{AuditAction, AuditRecord, OutboxKind, Store};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};
    use std::time::{Duration, Instant};

    /// Runs `write` on a thread of its own, a marker deferred just before
    /// it, then keeps that thread alive and idle (exiting would hand its bag
    /// over) while this one collects for up to `wait`. Whether the marker
    /// ran says whether the write moved the thread's bag to the global queue.
    fn retired_while_the_writer_idles(
        store: &Store,
        wait: Duration,
        write: impl FnOnce(&Store) + Send,
    ) -> bool {
        let ran = Arc::new(AtomicBool::new(false));
        let (wrote_tx, wrote_rx) = mpsc::channel();
        let (exit_tx, exit_rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            let marker = Arc::clone(&ran);
            s.spawn(move || {
                crossbeam_epoch::pin().defer(move || marker.store(true, Ordering::SeqCst));
                write(store);
                wrote_tx.send(()).expect("the test waits for this");
                let _ = exit_rx.recv();
            });
            wrote_rx.recv().expect("the writer panicked");
            let deadline = Instant::now() + wait;
            // Each flush here advances the epoch when it can and runs what
            // the global queue holds that is old enough.
            while !ran.load(Ordering::SeqCst) && Instant::now() < deadline {
                crossbeam_epoch::pin().flush();
                std::thread::sleep(Duration::from_millis(5));
            }
            let seen = ran.load(Ordering::SeqCst);
            let _ = exit_tx.send(());
            seen
        })
    }

    // Catches a store write path that leaves what sled retired (a sealed
    // 512 KiB log buffer among it) in the bag of a thread that writes
    // rarely: the soak's 5-9 MiB sawtooth, held 45-50 s by the inference
    // thread's sighting writes.
    #[test]
    fn every_write_path_hands_over_what_sled_retired() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_with_outbox(dir.path());
        for ts in 1..=20 {
            store.insert(&mut rec(ts, ts)).unwrap();
        }
        // The harness can tell: a raw sled write keeps the marker back.
        let raw = retired_while_the_writer_idles(&store, Duration::from_secs(1), |s| {
            s.meta.insert("retire-probe", &b"x"[..]).unwrap();
        });
        assert!(
            !raw,
            "a raw sled insert handed its bag over: the probe proves nothing"
        );

        let wait = Duration::from_secs(10);
        type Write = Box<dyn FnOnce(&Store) + Send>;
        let paths: [(&str, Write); 8] = [
            (
                "insert",
                Box::new(|s| s.insert(&mut rec(100, 100)).unwrap()),
            ),
            (
                "put_sighting",
                Box::new(|s| {
                    let v = sighting(7, "cat", "cam", 0, None);
                    s.put_sighting(&v, Some(&jpeg(1, 4000)), None).unwrap();
                }),
            ),
            (
                "close_open_sightings",
                Box::new(|s| assert_eq!(s.close_open_sightings().unwrap().len(), 1)),
            ),
            (
                "prune",
                Box::new(|s| assert!(s.retain_newest(5).unwrap() > 0)),
            ),
            (
                "audit",
                Box::new(|s| {
                    let id = s.audit(AuditRecord::new(AuditAction::SignOut, "test"));
                    assert!(id.is_ok(), "{id:?}");
                }),
            ),
            (
                "outbox remove",
                Box::new(|s| {
                    let ob = s.outbox().unwrap();
                    let first = ob.read(None, None, 1).unwrap();
                    assert!(ob.remove(first[0].seq).unwrap());
                }),
            ),
            (
                "outbox push",
                Box::new(|s| {
                    let ob = s.outbox().unwrap();
                    ob.push(OutboxKind::ModelStatus, br#"{"step":"probe"}"#)
                        .unwrap();
                }),
            ),
            ("check_writable", Box::new(|s| s.check_writable().unwrap())),
        ];
        for (name, write) in paths {
            assert!(
                retired_while_the_writer_idles(&store, wait, write),
                "{name}: what it retired stayed in the writing thread's bag"
            );
        }
    }
}
