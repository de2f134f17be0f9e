//! Rate limiting for the API: owns the token buckets (per client address for
//! unauthenticated and failed requests, per key for authenticated ones), the
//! bounded maps that hold them, and the once-per-window detection of bursts
//! of failed authentication. Time is passed in (`now`) so tests drive a
//! synthetic clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One token bucket: holds up to `burst` tokens, refilled at `rate` per second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets by key, at most `max_entries` of them.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    rate_per_s: f64,
    burst: f64,
    max_entries: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate_per_s` > 0 and `burst` ≥ 1 (checked by the API options).
    pub(crate) fn new(rate_per_s: f64, burst: u32, max_entries: usize) -> Self {
        RateLimiter {
            rate_per_s,
            burst: f64::from(burst.max(1)),
            max_entries: max_entries.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, b: &mut Bucket, now: Instant) {
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * self.rate_per_s).min(self.burst);
        b.last = now.max(b.last);
    }

    /// Make room for one new entry: drop buckets that have refilled to full
    /// (they are equivalent to fresh ones), and if none has, the one touched
    /// longest ago.
    fn make_room(&mut self, now: Instant) {
        if self.buckets.len() < self.max_entries {
            return;
        }
        let (rate, burst) = (self.rate_per_s, self.burst);
        self.buckets.retain(|_, b| {
            let dt = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + dt * rate < burst
        });
        if self.buckets.len() >= self.max_entries {
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| k.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
    }

    /// Take one token for `key`, or say how long until one is available.
    pub(crate) fn try_take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(key) {
            self.make_room(now);
            self.buckets.insert(
                key.clone(),
                Bucket {
                    tokens: self.burst,
                    last: now,
                },
            );
        }
        let mut b = self.buckets[key];
        self.refill(&mut b, now);
        let res = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate_per_s))
        };
        self.buckets.insert(key.clone(), b);
        res
    }

    /// Give back a token taken by `try_take` (capped at the burst size).
    pub(crate) fn refund(&mut self, key: &K, now: Instant) {
        let burst = self.burst;
        if let Some(mut b) = self.buckets.get(key).copied() {
            self.refill(&mut b, now);
            b.tokens = (b.tokens + 1.0).min(burst);
            self.buckets.insert(key.clone(), b);
        }
    }

    #[cfg(test)]
    /// Buckets held (for tests of the bound).
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The address a client is limited by: IPv4 addresses (also IPv4-mapped
/// IPv6) as they are, IPv6 addresses by their /64 prefix, since one host
/// commonly owns a whole /64 and could otherwise rotate addresses.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Seconds for a `Retry-After` header: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let s = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    s.max(1)
}

/// Counts failed authentications per client in fixed windows and says when a
/// window's count reaches the threshold, once per window.
#[derive(Debug)]
pub(crate) struct FailureBursts {
    window: Duration,
    threshold: u64,
    max_entries: usize,
    clients: HashMap<IpAddr, (Instant, u64, bool)>,
}

impl FailureBursts {
    pub(crate) fn new(window: Duration, threshold: u64, max_entries: usize) -> Self {
        FailureBursts {
            window,
            threshold: threshold.max(1),
            max_entries: max_entries.max(1),
            clients: HashMap::new(),
        }
    }

    /// Record one failure; `Some(count)` when this failure makes the window
    /// a burst (logged by the caller), `None` otherwise.
    pub(crate) fn record(&mut self, client: IpAddr, now: Instant) -> Option<u64> {
        if !self.clients.contains_key(&client) && self.clients.len() >= self.max_entries {
            let window = self.window;
            self.clients
                .retain(|_, (start, _, _)| now.saturating_duration_since(*start) < window);
            if self.clients.len() >= self.max_entries {
                if let Some(oldest) = self
                    .clients
                    .iter()
                    .min_by_key(|(_, (s, _, _))| *s)
                    .map(|(k, _)| *k)
                {
                    self.clients.remove(&oldest);
                }
            }
        }
        let e = self.clients.entry(client).or_insert((now, 0, false));
        if now.saturating_duration_since(e.0) >= self.window {
            *e = (now, 0, false);
        }
        e.1 += 1;
        if e.1 >= self.threshold && !e.2 {
            e.2 = true;
            return Some(e.1);
        }
        None
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a bucket allowing more than its burst at once, not refilling at
    // the configured rate, refilling beyond the burst, or a wrong wait hint.
    #[test]
    fn bucket_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(2.0, 3, 16);
        for _ in 0..3 {
            assert!(rl.try_take(&"a", t0).is_ok());
        }
        let wait = rl.try_take(&"a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Another key has its own bucket.
        assert!(rl.try_take(&"b", t0).is_ok());
        // 0.5 s later exactly one token is back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(rl.try_take(&"a", t1).is_ok());
        assert!(rl.try_take(&"a", t1).is_err());
        // After a long pause, at most `burst` tokens.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(rl.try_take(&"a", t2).is_ok());
        }
        assert!(rl.try_take(&"a", t2).is_err());
        // A refund gives one token back, never beyond the burst.
        rl.refund(&"a", t2);
        assert!(rl.try_take(&"a", t2).is_ok());
        for _ in 0..10 {
            rl.refund(&"b", t2);
        }
        for _ in 0..3 {
            assert!(rl.try_take(&"b", t2).is_ok());
        }
        assert!(rl.try_take(&"b", t2).is_err());
    }

    // Catches: the map growing without bound under many client addresses, or
    // eviction resetting a drained bucket while idle full ones are kept.
    #[test]
    fn map_is_bounded_and_evicts_full_buckets_first() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(1.0, 2, 4);
        for k in 1..=3u32 {
            rl.try_take(&k, t0).unwrap();
        }
        // Ten seconds later 1..=3 have refilled to full; 0 is drained now.
        let t1 = t0 + Duration::from_secs(10);
        rl.try_take(&0u32, t1).unwrap();
        rl.try_take(&0u32, t1).unwrap();
        assert_eq!(rl.len(), 4);
        rl.try_take(&100u32, t1).unwrap();
        assert_eq!(rl.len(), 2, "full buckets evicted first");
        assert!(
            rl.try_take(&0u32, t1).is_err(),
            "the drained bucket was reset"
        );
        for k in 200..1200u32 {
            let _ = rl.try_take(&k, t1 + Duration::from_micros(u64::from(k)));
            assert!(rl.len() <= 4);
        }
    }

    // Catches: a burst logged on every failure (log flooding), never logged,
    // or not logged again in the next window.
    #[test]
    fn failure_bursts_log_once_per_window() {
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut fb = FailureBursts::new(Duration::from_secs(60), 10, 8);
        let logged: Vec<u64> = (0..100)
            .filter_map(|i| fb.record(ip, t0 + Duration::from_millis(i)))
            .collect();
        assert_eq!(logged, vec![10]);
        let t1 = t0 + Duration::from_secs(61);
        let logged: Vec<u64> = (0..20).filter_map(|_| fb.record(ip, t1)).collect();
        assert_eq!(logged, vec![10]);
        for i in 0..100u8 {
            fb.record(IpAddr::from([10, 0, 0, i]), t1);
            assert!(fb.len() <= 8);
        }
    }

    // Catches: IPv6 clients escaping the limit by rotating addresses in their /64,
    // or IPv4-mapped addresses getting a separate bucket from plain IPv4.
    #[test]
    fn client_keys() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
