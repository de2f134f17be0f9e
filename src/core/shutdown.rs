//! The daemon's one shutdown token: a broadcast that every thread and task
//! obeys, and a completion count the supervisor waits on (the pattern of
//! mini-redis: `notify_shutdown` plus `shutdown_complete`).
//!
//! - [`Shutdown::trigger`] starts shutdown once; later calls do nothing.
//! - Blocking threads sleep with [`Shutdown::sleep`] (wakes at once on
//!   trigger) or test [`Shutdown::is_triggered`] between units of work.
//! - Async tasks hold a [`Shutdown::watch`] receiver.
//! - Code that must be woken from a wait of its own (a condition variable,
//!   a channel) registers [`Shutdown::on_trigger`]; it runs once, on the
//!   thread that triggers.
//! - Each worker holds a [`Worker`] guard from [`Shutdown::worker`]; the
//!   guard counts it live until dropped (also when the worker panics), and
//!   [`Shutdown::wait_workers`] waits, bounded, for the count to reach zero.
//!
//! The supervisor still decides the order of the protocol (stop, drain,
//! flush, exit) by which workers it joins first; the token only makes sure
//! that every one of them hears the same "stop" and can be waited for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Hook = Box<dyn FnOnce() + Send>;

struct Inner {
    triggered: AtomicBool,
    /// Guards the sleepers' wake-up and the live-worker names.
    lock: Mutex<State>,
    cv: Condvar,
    watch: tokio::sync::watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    hooks: Vec<Hook>,
    live: Vec<&'static str>,
}

/// A cloneable handle to the one shutdown token.
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("triggered", &self.is_triggered())
            .field("live", &self.live_workers())
            .finish()
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts a worker live until dropped; see [`Shutdown::worker`].
#[must_use = "the worker counts as finished as soon as the guard is dropped"]
pub(crate) struct Worker {
    inner: Arc<Inner>,
    name: &'static str,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let mut st = lock(&self.inner.lock);
        if let Some(i) = st.live.iter().position(|n| *n == self.name) {
            st.live.swap_remove(i);
        }
        drop(st);
        self.inner.cv.notify_all();
    }
}

/// A poisoned lock only means a hook or worker panicked while holding it;
/// the state (a flag, names, hooks) is still consistent.
fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shutdown {
    pub(crate) fn new() -> Shutdown {
        Shutdown {
            inner: Arc::new(Inner {
                triggered: AtomicBool::new(false),
                lock: Mutex::new(State::default()),
                cv: Condvar::new(),
                watch: tokio::sync::watch::Sender::new(false),
            }),
        }
    }

    /// Start shutdown: wake every sleeper and async waiter and run the
    /// registered hooks (once). Returns false if it had already started.
    pub(crate) fn trigger(&self) -> bool {
        let hooks = {
            let mut st = lock(&self.inner.lock);
            if self.inner.triggered.swap(true, Ordering::SeqCst) {
                return false;
            }
            std::mem::take(&mut st.hooks)
        };
        self.inner.cv.notify_all();
        self.inner.watch.send_replace(true);
        for hook in hooks {
            hook();
        }
        true
    }

    pub(crate) fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Wait on the condition variable until `done` holds or `deadline`
    /// passes; returns the state as last seen.
    fn wait_until(
        &self,
        deadline: Instant,
        done: impl Fn(&State) -> bool,
    ) -> MutexGuard<'_, State> {
        let mut st = lock(&self.inner.lock);
        loop {
            let now = Instant::now();
            if done(&st) || now >= deadline {
                return st;
            }
            st = self
                .inner
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Sleep for `d` unless shutdown starts first. Returns true when shutdown
    /// has started (the caller should stop), false after a full sleep.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        let _st = self.wait_until(Instant::now() + d, |_| self.is_triggered());
        self.is_triggered()
    }

    /// A receiver that turns true when shutdown starts, for code that takes a
    /// `watch` channel (the API server).
    pub(crate) fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.watch.subscribe()
    }

    /// Run `hook` when shutdown starts (at once if it already has), e.g. to
    /// close a channel a worker blocks on.
    pub(crate) fn on_trigger(&self, hook: impl FnOnce() + Send + 'static) {
        let mut st = lock(&self.inner.lock);
        if self.is_triggered() {
            drop(st);
            hook();
        } else {
            st.hooks.push(Box::new(hook));
        }
    }

    /// Register a live worker by name; it counts until the guard is dropped.
    pub(crate) fn worker(&self, name: &'static str) -> Worker {
        lock(&self.inner.lock).live.push(name);
        Worker {
            inner: self.inner.clone(),
            name,
        }
    }

    /// The names of the workers still live.
    pub(crate) fn live_workers(&self) -> Vec<&'static str> {
        lock(&self.inner.lock).live.clone()
    }

    /// Wait up to `timeout` for every worker to finish; returns the names of
    /// those still live (empty: all finished).
    pub(crate) fn wait_workers(&self, timeout: Duration) -> Vec<&'static str> {
        self.wait_until(Instant::now() + timeout, |st| st.live.is_empty())
            .live
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    // Would catch a sleeper that only notices shutdown when its sleep ends
    // (a paced capture thread holding up exit by its whole frame interval).
    #[test]
    fn trigger_wakes_a_sleeping_thread_at_once() {
        let s = Shutdown::new();
        let t = {
            let s = s.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                (s.sleep(Duration::from_secs(30)), start.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.trigger());
        let (stopped, slept) = t.join().unwrap();
        assert!(stopped);
        assert!(slept < Duration::from_secs(30), "slept {slept:?}");
        // Once triggered, a sleep returns at once.
        assert!(s.sleep(Duration::from_secs(30)));
    }

    // Would catch a second trigger running the hooks again (closing a slot
    // twice) or a hook registered late never running.
    #[test]
    fn hooks_run_once_including_late_ones() {
        let s = Shutdown::new();
        let n = Arc::new(AtomicUsize::new(0));
        let c = n.clone();
        s.on_trigger(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert!(s.trigger());
        assert!(!s.trigger());
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let c = n.clone();
        s.on_trigger(move || {
            c.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 11);
    }

    // Would catch the supervisor returning before its workers finished, or
    // a panicking worker never counting as finished (exit would hang).
    #[test]
    fn wait_workers_names_the_ones_still_running() {
        let s = Shutdown::new();
        let fast = s.worker("fast");
        let slow = s.worker("slow");
        let panicky = {
            let g = s.worker("panicky");
            std::thread::spawn(move || {
                let _g = g;
                panic!("worker failed");
            })
        };
        assert!(panicky.join().is_err());
        drop(fast);
        assert_eq!(s.wait_workers(Duration::from_millis(20)), vec!["slow"]);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(slow);
        });
        assert!(s.wait_workers(Duration::from_secs(10)).is_empty());
        t.join().unwrap();
    }

    // Would catch async tasks that miss a trigger sent before they started
    // waiting (the API task would never stop).
    #[test]
    fn async_waiters_see_earlier_and_later_triggers() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let s = Shutdown::new();
        rt.block_on(async {
            let mut rx = s.watch();
            let waiter = tokio::spawn(async move { rx.wait_for(|t| *t).await.is_ok() });
            tokio::task::yield_now().await;
            s.trigger();
            let woke = tokio::time::timeout(Duration::from_secs(10), waiter)
                .await
                .expect("woken")
                .unwrap();
            assert!(woke);
            // Subscribed after the trigger: sees it at once.
            assert!(*s.watch().borrow());
        });
    }
}
