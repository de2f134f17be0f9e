//! Who may hold a connection: owns the table of open connections by client
//! address (IPv4 address, IPv6 /64, as [`limit::client_key`]), the
//! per-address caps on open connections and on TLS handshakes in progress,
//! and the choice at the global cap: a newcomer takes the place of one
//! connection of the address holding the most (its handshaking or idle one
//! first, oldest first) when that address holds at least two more than the
//! newcomer's, and is refused otherwise. Deciding never waits, so the accept
//! loop never does.
//!
//! [`limit::client_key`]: super::limit::client_key

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::Notify;

use super::limit::client_key;

/// The caps (all ≥ 1, checked by `ApiOptions::validate`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnLimits {
    pub(crate) max_connections: usize,
    pub(crate) per_address: usize,
    pub(crate) handshakes_per_address: usize,
}

/// Why a connection was not admitted; also the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address already holds `max_connections_per_address`.
    PerAddress,
    /// Its address already has `max_handshakes_per_address` handshakes running.
    Handshakes,
    /// At `max_connections`, and no address holds enough more to give way.
    ServerFull,
}

impl Refusal {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::PerAddress => "per_address",
            Refusal::Handshakes => "handshakes_per_address",
            Refusal::ServerFull => "server_full",
        }
    }
}

/// What a connection is doing, for choosing whom to evict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Phase {
    Handshake = 0,
    /// Between requests (or waiting for the first).
    Idle = 1,
    /// A request in flight.
    Busy = 2,
}

/// Shared between the table and the connection's task.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// Notified when the table gave this connection's place to another.
    pub(crate) evicted: Notify,
    phase: AtomicU8,
}

impl ConnShared {
    pub(crate) fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Handshake,
            1 => Phase::Idle,
            _ => Phase::Busy,
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: u64,
    since: Instant,
    handshaking: bool,
    shared: Arc<ConnShared>,
}

#[derive(Debug, Default)]
struct Inner {
    total: usize,
    next_id: u64,
    evictions: u64,
    by_addr: HashMap<IpAddr, Vec<Entry>>,
}

/// The open connections by client address.
#[derive(Debug)]
pub(crate) struct ConnTable {
    limits: ConnLimits,
    inner: Mutex<Inner>,
}

/// One admitted connection's place in the table; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    table: Arc<ConnTable>,
    key: IpAddr,
    id: u64,
    pub(crate) shared: Arc<ConnShared>,
}

/// An admission: the new connection's place, and whether another
/// connection was evicted for it.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) guard: ConnGuard,
    pub(crate) evicted: Option<IpAddr>,
}

impl ConnTable {
    pub(crate) fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(ConnTable {
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The table's invariants hold between statements that a panic could
        // interrupt only in debug assertions; keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admit a connection from `ip` now (it starts its handshake), or say why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Admitted, Refusal> {
        let key = client_key(ip);
        let mut inner = self.lock();
        let (open, handshaking) = inner
            .by_addr
            .get(&key)
            .map(|v| (v.len(), v.iter().filter(|e| e.handshaking).count()))
            .unwrap_or((0, 0));
        if open >= self.limits.per_address {
            return Err(Refusal::PerAddress);
        }
        if handshaking >= self.limits.handshakes_per_address {
            return Err(Refusal::Handshakes);
        }
        let mut evicted = None;
        if inner.total >= self.limits.max_connections {
            let hog = inner
                .by_addr
                .iter()
                .max_by_key(|(_, v)| v.len())
                .map(|(k, v)| (*k, v.len()));
            match hog {
                Some((hog, n)) if n > open + 1 => {
                    evict_one(&mut inner, hog);
                    evicted = Some(hog);
                }
                _ => return Err(Refusal::ServerFull),
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.total += 1;
        let shared = Arc::new(ConnShared {
            evicted: Notify::new(),
            phase: AtomicU8::new(Phase::Handshake as u8),
        });
        inner.by_addr.entry(key).or_default().push(Entry {
            id,
            since: now,
            handshaking: true,
            shared: shared.clone(),
        });
        Ok(Admitted {
            guard: ConnGuard {
                table: self.clone(),
                key,
                id,
                shared,
            },
            evicted,
        })
    }

    /// Connections open now (for logs).
    pub(crate) fn open(&self) -> usize {
        self.lock().total
    }

    /// Connections evicted so far.
    #[cfg(test)]
    pub(crate) fn evictions(&self) -> u64 {
        self.lock().evictions
    }
}

/// Remove one of `key`'s connections from the table and tell its task to
/// close: a handshaking one first, then an idle one, then any; oldest first.
fn evict_one(inner: &mut Inner, key: IpAddr) {
    let Some(v) = inner.by_addr.get_mut(&key) else {
        return;
    };
    let Some(i) = (0..v.len()).min_by_key(|&i| (v[i].shared.phase() as u8, v[i].since)) else {
        return;
    };
    let e = v.swap_remove(i);
    if v.is_empty() {
        inner.by_addr.remove(&key);
    }
    inner.total -= 1;
    inner.evictions += 1;
    e.shared.evicted.notify_one();
}

impl ConnGuard {
    /// The handshake finished: it no longer counts against the handshake cap.
    pub(crate) fn handshake_done(&self) {
        self.shared.set_phase(Phase::Idle);
        let mut inner = self.table.lock();
        if let Some(e) = inner
            .by_addr
            .get_mut(&self.key)
            .and_then(|v| v.iter_mut().find(|e| e.id == self.id))
        {
            e.handshaking = false;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        let Some(v) = inner.by_addr.get_mut(&self.key) else {
            return; // evicted, already removed
        };
        let Some(i) = v.iter().position(|e| e.id == self.id) else {
            return;
        };
        v.swap_remove(i);
        if v.is_empty() {
            inner.by_addr.remove(&self.key);
        }
        inner.total -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize, per: usize, hs: usize) -> Arc<ConnTable> {
        ConnTable::new(ConnLimits {
            max_connections: max,
            per_address: per,
            handshakes_per_address: hs,
        })
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // Catches: one address holding more than its share of connections or of
    // handshakes, an IPv6 client escaping the cap by rotating within its /64,
    // or places never given back.
    #[test]
    fn per_address_caps() {
        let t = table(100, 3, 2);
        let now = Instant::now();
        let a = ip("192.0.2.1");
        let g1 = t.admit(a, now).unwrap().guard;
        let _g2 = t.admit(a, now).unwrap().guard;
        assert_eq!(t.admit(a, now).unwrap_err(), Refusal::Handshakes);
        g1.handshake_done();
        let g3 = t.admit(a, now).unwrap().guard;
        assert_eq!(t.admit(a, now).unwrap_err(), Refusal::PerAddress);
        // Another address is unaffected.
        assert!(t.admit(ip("192.0.2.2"), now).is_ok());
        drop(g3);
        assert!(
            t.admit(a, now).is_ok(),
            "a closed connection frees its place"
        );
        let v6 = table(100, 2, 2);
        let _x = v6.admit(ip("2001:db8::1"), now).unwrap();
        let _y = v6.admit(ip("2001:db8::2"), now).unwrap();
        assert_eq!(
            v6.admit(ip("2001:db8::ffff:3"), now).unwrap_err(),
            Refusal::PerAddress
        );
        assert!(v6.admit(ip("2001:db8:0:1::1"), now).is_ok());
    }

    // Catches: at the global cap, newcomers from other addresses refused
    // while one address holds most places (or a busy connection evicted
    // while that address has an idle one), and eviction ping-pong between
    // two addresses holding about the same.
    #[test]
    fn at_the_cap_the_biggest_address_gives_way() {
        let t = table(4, 4, 4);
        let t0 = Instant::now();
        let hog = ip("192.0.2.9");
        let mut hogs: Vec<ConnGuard> = (0..4u64)
            .map(|i| {
                t.admit(hog, t0 + std::time::Duration::from_millis(i))
                    .unwrap()
                    .guard
            })
            .collect();
        for g in &hogs {
            g.handshake_done();
            g.shared.set_phase(Phase::Busy);
        }
        hogs[2].shared.set_phase(Phase::Idle);
        let a = t.admit(ip("192.0.2.1"), t0).unwrap();
        assert_eq!(a.evicted, Some(hog));
        assert_eq!(t.open(), 4);
        // The idle one was chosen and told.
        let notified = hogs.remove(2);
        assert!(
            futures_lite_ready(&notified.shared.evicted),
            "the evicted connection is told to close"
        );
        // Its guard dropping later does not free a second place.
        drop(notified);
        assert_eq!(t.open(), 4);
        // Hog 3, a 1: the hog still gives way (3 > 1 + 1) ...
        let b = t.admit(ip("192.0.2.2"), t0).unwrap();
        assert_eq!(b.evicted, Some(hog));
        // ... and again for c (hog 2 > 0 + 1) ...
        let c = t.admit(ip("192.0.2.3"), t0).unwrap();
        assert_eq!(c.evicted, Some(hog));
        // ... hog 1, a 1, b 1, c 1: nobody holds two more than a newcomer.
        assert_eq!(
            t.admit(ip("192.0.2.4"), t0).unwrap_err(),
            Refusal::ServerFull
        );
        assert_eq!(
            t.admit(ip("192.0.2.1"), t0).unwrap_err(),
            Refusal::ServerFull
        );
        assert_eq!(t.evictions(), 3);
    }

    /// Whether a `notify_one` permit is stored (without an async runtime).
    fn futures_lite_ready(n: &Notify) -> bool {
        let f = n.notified();
        let mut f = std::pin::pin!(f);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        f.as_mut().poll(&mut cx).is_ready()
    }

    use std::future::Future;
}
