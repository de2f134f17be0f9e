//! One connection's bytes between TLS and hyper: owns [`Activity`] (requests
//! in flight, the last request start or end for the keep-alive deadline, and
//! when the request head now being received began, for the header deadline)
//! and [`ConnIo`], the stream hyper reads and writes, which records when a
//! head begins and replaces hyper's own answers to requests it cannot parse
//! (400 for a bad request line, URI, header or `Content-Length`, 414, 431:
//! a status line and no body, written below our service) with problem+json
//! bodies carrying the security headers every response has.
//!
//! hyper writes such an answer only while it reads a request head, before
//! our service has been called for it, and then closes the connection. Our
//! own responses always carry `x-content-type-options` (see
//! `headers::security_headers`), hyper's never do: a write that starts a
//! response head without it, while a head is being received, is hyper's.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conns::{ConnShared, Phase};
use super::errors::problem_body;
use super::headers::security_headers;

/// Per-connection activity: what the deadlines in `server` read.
pub(crate) struct Activity {
    /// A handler asks for the connection to be dropped.
    pub(crate) kill: Arc<tokio::sync::Notify>,
    base: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds since `base` of the last request start or end.
    last: AtomicU64,
    /// Nanoseconds since `base`, plus one, of when the head now being
    /// received began; 0: none is.
    head_since: AtomicU64,
    conn: Arc<ConnShared>,
}

impl Activity {
    /// A connection whose handshake just ended: its first head is awaited from now.
    pub(crate) fn new(conn: Arc<ConnShared>) -> Self {
        Activity {
            kill: Arc::new(tokio::sync::Notify::new()),
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            conn,
        }
    }
    fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }
    fn touch(&self) {
        self.last.store(self.now_ns(), Ordering::Relaxed);
    }
    /// The last request start or end (the connection's start before any).
    pub(crate) fn last(&self) -> Instant {
        self.base + Duration::from_nanos(self.last.load(Ordering::Relaxed))
    }
    /// When the head now being received began, if one is.
    pub(crate) fn head_since(&self) -> Option<Instant> {
        match self.head_since.load(Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
    /// Bytes arrived: with no request in flight they begin the next head.
    fn bytes_read(&self) {
        if self.in_flight() == 0 && self.head_since.load(Ordering::Relaxed) == 0 {
            self.head_since.store(self.now_ns() + 1, Ordering::Relaxed);
        }
    }
    /// hyper parsed a head and called the service: the request is in flight
    /// until the returned guard drops (also when the handler is cancelled).
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        self.conn.set_phase(Phase::Busy);
        self.touch();
        InFlight(self.clone())
    }
}

/// Marks a request in flight until dropped.
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        if self.0.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.conn.set_phase(Phase::Idle);
        }
    }
}

/// The stream hyper serves: `T` (the TLS stream) with the head bookkeeping
/// and the replacement of hyper's bodiless error answers.
pub(crate) struct ConnIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Our replacement answer, and how much of it is written.
    pending: Vec<u8>,
    written: usize,
    /// An answer was replaced: anything hyper writes after it is dropped.
    replaced: bool,
}

impl<T> ConnIo<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        ConnIo {
            inner,
            activity,
            pending: Vec::new(),
            written: 0,
            replaced: false,
        }
    }
}

impl<T: AsyncWrite + Unpin> ConnIo<T> {
    /// Write what is left of the replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// If `first` is hyper's own error answer, take our replacement instead.
    fn intercept(&mut self, first: &[u8]) -> bool {
        if self.replaced {
            return true;
        }
        if self.activity.head_since().is_none() {
            return false;
        }
        match replacement(first) {
            Some(bytes) => {
                self.pending = bytes;
                self.written = 0;
                self.replaced = true;
                true
            }
            None => false,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.intercept(buf) {
            // Taken whole; written by poll_pending. Best effort now.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        if this.intercept(first) {
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The problem for a status hyper answers unparsable requests with.
fn problem_for(status: u16) -> (&'static str, &'static str, &'static str) {
    match status {
        414 => (
            "uri_too_long",
            "URI too long",
            "the request target is longer than the server accepts",
        ),
        431 => (
            "headers_too_large",
            "Request headers too large",
            "the request has more header fields, or a larger head, than the server accepts",
        ),
        _ => (
            "malformed_request",
            "Malformed request",
            "the request line or a header could not be parsed (for example a path that is not \
             ASCII, or an invalid Content-Length)",
        ),
    }
}

/// Our answer in place of `head` if it is a response head hyper wrote itself
/// (a 4xx without the header every response of ours carries).
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line.strip_prefix("HTTP/1.")?;
    let code: u16 = rest.get(2..5)?.parse().ok()?;
    if !(400..500).contains(&code) {
        return None;
    }
    let mut date = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = name.trim();
        if name.eq_ignore_ascii_case("x-content-type-options") {
            return None; // ours
        }
        if name.eq_ignore_ascii_case("date") {
            date = Some(value.trim());
        }
    }
    let (pcode, title, detail) = problem_for(code);
    let body = problem_body(code, pcode, title, detail);
    let mut h = HeaderMap::new();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    h.insert(CONNECTION, HeaderValue::from_static("close"));
    security_headers(&mut h);
    let mut out = Vec::with_capacity(512 + body.len());
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &h {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(d) = date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(d.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: hyper's bodiless answers passed through, or our own responses
    // (which carry x-content-type-options) rewritten.
    #[test]
    fn only_hypers_own_answers_are_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sat, 05 Dec 2026 09:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(hyper).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
        assert!(out.contains("content-type: application/problem+json\r\n"));
        assert!(out.contains("x-content-type-options: nosniff\r\n"));
        assert!(out.contains("connection: close\r\n"));
        assert!(out.contains("date: Sat, 05 Dec 2026 09:00:00 GMT\r\n"));
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], 431);
        assert_eq!(v["code"], "headers_too_large");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let ours = b"HTTP/1.1 404 Not Found\r\nx-content-type-options: nosniff\r\ncontent-length: 2\r\n\r\n{}";
        assert!(replacement(ours).is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"{\"HTTP/1.1 400\"}").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-len").is_none());
    }
}
