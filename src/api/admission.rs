//! Request bodies before and while they are read: the global in-flight
//! [`BodyBudget`] (bytes of request bodies held at once, reserved from
//! `Content-Length` before the first byte is read, or as a chunked body
//! grows) with its [`Reservation`]s, [`read_body`] (the size limit and the
//! body deadline with its minimum transfer rate), and [`drain`] (discarding
//! the unread body of a request answered without it, so the connection can
//! be reused).
//!
//! The deadline: a body may take [`BodyLimits::base`] plus one second per
//! [`BodyLimits::min_rate`] bytes received so far; a body that falls behind
//! that (a client trickling a byte a second) is cut off with 408. So a
//! complete body of `n` bytes has at most `base + n / min_rate`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::time::Instant;

use super::ApiError;

/// `Retry-After` for a request refused because the body budget is spent.
pub(crate) const BUDGET_RETRY_AFTER_S: u64 = 1;
/// The largest unread body [`drain`] discards to keep a connection usable;
/// a longer one closes the connection instead.
pub(crate) const DRAIN_CAP: u64 = 1024 * 1024;

/// How long a body may take: `base` plus one second per `min_rate` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimits {
    pub(crate) base: Duration,
    /// Bytes per second (≥ 1).
    pub(crate) min_rate: u64,
}

impl BodyLimits {
    /// How long after the first read a body that has delivered `received`
    /// bytes may wait for the next ones.
    fn allowed(&self, received: u64) -> Duration {
        self.base + Duration::from_secs_f64(received as f64 / self.min_rate.max(1) as f64)
    }
}

/// Bytes of request bodies the server holds at once, at most `limit`.
#[derive(Debug)]
pub(crate) struct BodyBudget {
    limit: u64,
    used: AtomicU64,
}

impl BodyBudget {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(BodyBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// Add `n` bytes if they fit.
    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.limit)
            })
            .is_ok()
    }

    /// Reserve `n` bytes (the declared length; 0 for a chunked body, which
    /// reserves as it grows), or `Err` with the 503 to answer.
    pub(crate) fn reserve(self: &Arc<Self>, n: u64) -> Result<Reservation, ApiError> {
        if !self.take(n) {
            return Err(ApiError::BodyBudget {
                retry_after_s: BUDGET_RETRY_AFTER_S,
            });
        }
        Ok(Reservation {
            budget: self.clone(),
            bytes: n,
        })
    }

    /// Bytes reserved now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// Bytes held against the [`BodyBudget`]; given back when dropped (the
/// request answered, failed, or its connection gone).
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl Reservation {
    /// Grow the reservation to `total` bytes; false when the budget has no room.
    fn grow_to(&mut self, total: u64) -> bool {
        if total <= self.bytes {
            return true;
        }
        if !self.budget.take(total - self.bytes) {
            return false;
        }
        self.bytes = total;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Read the whole body: at most `max` bytes (413 beyond), within the
/// deadline of `limits` (408), growing `reservation` (when given) to what
/// has arrived (503 when the budget has no room for it). `declared` (the
/// Content-Length, already checked against `max`) sizes the buffer.
pub(crate) async fn read_body<B>(
    mut body: B,
    declared: Option<u64>,
    max: u64,
    limits: BodyLimits,
    mut reservation: Option<&mut Reservation>,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let start = Instant::now();
    // Within `max` (checked by the caller), so the capacity is bounded.
    let cap = usize::try_from(declared.unwrap_or(0).min(max)).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(cap);
    let mut received: u64 = 0;
    loop {
        let deadline = start + limits.allowed(received);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::BodyTimeout {
                    received,
                    min_rate: limits.min_rate,
                })
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                log::debug!("request body read failed after {received} bytes: {e}");
                return Err(ApiError::BadBody);
            }
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing to keep
        };
        let total = received + data.len() as u64;
        if total > max {
            return Err(ApiError::PayloadTooLarge { limit: max });
        }
        if let Some(r) = reservation.as_deref_mut() {
            if !r.grow_to(total) {
                return Err(ApiError::BodyBudget {
                    retry_after_s: BUDGET_RETRY_AFTER_S,
                });
            }
        }
        buf.extend_from_slice(&data);
        received = total;
    }
    Ok(buf.freeze())
}

/// Read and discard an unread body, up to `cap` bytes, within the deadline
/// of `limits`; true when it ended (the connection can serve the next
/// request), false when it was cut off (dropping it closes the connection).
pub(crate) async fn drain<B>(mut body: B, cap: u64, limits: BodyLimits) -> bool
where
    B: Body<Data = Bytes> + Unpin,
{
    let start = Instant::now();
    let mut received: u64 = 0;
    loop {
        let deadline = start + limits.allowed(received);
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    received += d.len() as u64;
                    if received > cap {
                        return false;
                    }
                }
            }
            Ok(Some(Err(_))) | Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::body::Frame;

    const LIMITS: BodyLimits = BodyLimits {
        base: Duration::from_millis(200),
        min_rate: 1000,
    };

    type Chunk = Result<Frame<Bytes>, std::io::Error>;

    /// A body fed through a channel: what the sender sends, then the end
    /// when it is dropped.
    struct ChanBody(tokio::sync::mpsc::UnboundedReceiver<Chunk>);

    impl Body for ChanBody {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Chunk>> {
            self.0.poll_recv(cx)
        }
    }

    /// A body that yields `chunks`, then (if `fail`) an error like a closed
    /// connection, else the end.
    fn body(chunks: &[&'static [u8]], fail: bool) -> ChanBody {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for c in chunks {
            tx.send(Ok(Frame::data(Bytes::from_static(c)))).unwrap();
        }
        if fail {
            let gone = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "peer gone");
            tx.send(Err(gone)).unwrap();
        }
        ChanBody(rx)
    }

    // Catches: the budget admitting more than its limit, a reservation not
    // given back when its request ends, or a refused reservation counted.
    #[test]
    fn reservations_are_bounded_and_released_on_drop() {
        let b = BodyBudget::new(100);
        let r1 = b.reserve(60).unwrap();
        assert!(matches!(b.reserve(41), Err(ApiError::BodyBudget { .. })));
        assert_eq!(b.used(), 60, "a refused reservation was counted");
        let r2 = b.reserve(40).unwrap();
        assert_eq!(b.used(), 100);
        drop(r1);
        assert_eq!(b.used(), 40);
        drop(r2);
        assert_eq!(b.used(), 0);
    }

    // Catches: a chunked body growing past the budget, or a failed read
    // (413, budget, client disconnect) keeping its bytes reserved.
    #[tokio::test]
    async fn reservations_grow_with_chunked_bodies_and_are_released_on_error() {
        let b = BodyBudget::new(10);
        // Chunked: grows to what arrived.
        let mut r = b.reserve(0).unwrap();
        let got = read_body(
            body(&[b"abc", b"def"], false),
            None,
            100,
            LIMITS,
            Some(&mut r),
        )
        .await
        .unwrap();
        assert_eq!(&got[..], b"abcdef");
        assert_eq!(b.used(), 6);
        drop(r);
        assert_eq!(b.used(), 0);
        // Beyond the budget while growing: 503, and nothing left reserved.
        let other = b.reserve(5).unwrap();
        let mut r = b.reserve(0).unwrap();
        let e = read_body(
            body(&[b"abc", b"def"], false),
            None,
            100,
            LIMITS,
            Some(&mut r),
        )
        .await;
        assert!(matches!(e, Err(ApiError::BodyBudget { .. })), "{e:?}");
        drop(r);
        assert_eq!(b.used(), 5);
        drop(other);
        // The client disconnects mid-body: 400, released with the request.
        let mut r = b.reserve(8).unwrap();
        let e = read_body(body(&[b"abc"], true), Some(8), 100, LIMITS, Some(&mut r)).await;
        assert!(matches!(e, Err(ApiError::BadBody)), "{e:?}");
        drop(r);
        assert_eq!(b.used(), 0);
        // Over the size limit while streaming: 413.
        let mut r = b.reserve(0).unwrap();
        let e = read_body(body(&[b"abcdef"], false), None, 4, LIMITS, Some(&mut r)).await;
        assert!(
            matches!(e, Err(ApiError::PayloadTooLarge { limit: 4 })),
            "{e:?}"
        );
        drop(r);
        assert_eq!(b.used(), 0);
    }

    // Catches: a body read with no deadline (a trickling client held forever),
    // or the reservation of a timed-out body kept.
    #[tokio::test]
    async fn a_trickled_body_is_cut_off_at_the_minimum_rate() {
        let b = BodyBudget::new(1 << 20);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Chunk>();
        let feeder = tokio::spawn(async move {
            // One byte a second, with 1000 bytes/s required.
            while tx.send(Ok(Frame::data(Bytes::from_static(b"x")))).is_ok() {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let stream = ChanBody(rx);
        let mut r = b.reserve(1000).unwrap();
        let started = Instant::now();
        let e = read_body(stream, Some(1000), 1000, LIMITS, Some(&mut r)).await;
        assert!(matches!(e, Err(ApiError::BodyTimeout { .. })), "{e:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        drop(r);
        assert_eq!(b.used(), 0);
        feeder.abort();
        // A whole body in time is read.
        let got = read_body(
            Full::new(Bytes::from_static(b"ok")),
            Some(2),
            10,
            LIMITS,
            None,
        )
        .await
        .unwrap();
        assert_eq!(&got[..], b"ok");
    }

    // Catches: draining a body beyond the cap (an endless upload to a route
    // that takes none), or reporting a cut-off body as drained.
    #[tokio::test]
    async fn drain_stops_at_the_cap() {
        assert!(drain(body(&[b"abc", b"def"], false), 10, LIMITS).await);
        assert!(!drain(body(&[b"abc", b"def"], false), 4, LIMITS).await);
        assert!(!drain(body(&[b"abc"], true), 10, LIMITS).await);
    }
}
