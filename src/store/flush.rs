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
                // sled retires the write buffer a flush seals through
                // crossbeam-epoch's deferred functions, which wait in this
                // thread's local bag until 64 pile up: 30 s of flushes every
                // 500 ms, holding up to 64 of sled's 512 KiB buffers. That
                // was the soak test's RSS sawtooth (+15 MiB every 30 s) and,
                // with glibc's arenas keeping the high-water mark, its slow
                // RSS climb. Moving them to the global queue now gets them
                // freed within a few epochs.
                crossbeam_epoch::pin().flush();
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
