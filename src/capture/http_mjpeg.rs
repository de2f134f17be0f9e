//! The `http_mjpeg` source: JPEG frames from a `multipart/x-mixed-replace`
//! HTTP(S) stream, as many IP cameras, ESP32-CAM boards and
//! mjpg-streamer/crowsnest serve them.
//!
//! This module owns the connection to the camera (one blocking HTTP/1.1 GET
//! through `ureq`, TLS through rustls with the configured CA or the system's
//! roots, Basic or Digest credentials from `source.credentials_file`, see
//! [`super::http_auth`]) and
//! [`PartReader`], which splits the response body into parts: the boundary
//! comes from the Content-Type (quoted or not, declared with or without its
//! leading `--`), lines may end in CRLF or LF, a part may or may not carry a
//! Content-Length, and bytes between parts are skipped. Every read is
//! bounded: part headers (16 KiB), a part's body (`source.max_frame_bytes`;
//! a larger part is skipped, never buffered whole), and the socket's connect
//! and read timeouts. Any error ends the stream: `next_frame` returns it and
//! the capture loop reconnects with its backoff. Credentials never appear in
//! a log line, an error or `describe` (the URL holds none: config refuses
//! `user:password@`, and ureq logs its Authorization header redacted).
//!
//! Some 650 lines because the part reader and the source are one protocol
//! read together (the source's errors are the reader's); the login lives in
//! [`super::http_auth`] and the tests in `http_mjpeg_tests.rs`.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http_auth::read_credentials;
use super::{CaptureError, Frame, FrameSource};
use crate::core::ids;

/// Longest block of part headers accepted.
pub(crate) const MAX_PART_HEADER_BYTES: usize = 16 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Dropped parts (oversized, not an image) are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Options for [`HttpMjpegSource::open`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpMjpegOptions {
    /// `http://…` or `https://…`, without credentials.
    pub url: String,
    /// File holding `user:password` on its first line; must not be readable
    /// or writable by group or others.
    pub credentials_file: Option<PathBuf>,
    /// PEM CA certificate(s) for a camera's self-signed certificate.
    pub ca_file: Option<PathBuf>,
    /// A part larger than this is skipped.
    pub max_frame_bytes: usize,
    /// Connect timeout, socket read timeout, and the longest `next_frame`
    /// waits while parts arrive but none is a usable image.
    pub timeout: Duration,
}

impl HttpMjpegOptions {
    /// The options of a `[source]` of kind `http_mjpeg`: the socket timeouts
    /// are the source's stall timeout.
    pub(crate) fn from_settings(s: &crate::config::SourceSettings) -> HttpMjpegOptions {
        HttpMjpegOptions {
            // `config` guarantees url is set for an http_mjpeg source.
            url: s.url.clone().unwrap_or_default(),
            credentials_file: s.credentials_file.clone(),
            ca_file: s.ca_file.clone(),
            max_frame_bytes: usize::try_from(s.max_frame_bytes).unwrap_or(usize::MAX),
            // Not below 2 s, as for the other sources: a slow camera or
            // network is not reconnected in a loop; readiness reports a
            // stall at `stall_timeout_ms` already.
            timeout: s.stall_timeout().max(super::MIN_REOPEN_AFTER),
        }
    }
}

/// One part of the stream.
#[derive(Debug, PartialEq)]
pub(crate) enum Part {
    /// A part's body, whole.
    Body(Vec<u8>),
    /// A part over the size bound: its bytes were read and dropped.
    Oversized(u64),
}

/// Why the multipart stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PartError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the camera closed the stream {0}")]
    Ended(&'static str),
    #[error("not a multipart stream: {0}")]
    Protocol(String),
}

/// Splits a `multipart/x-mixed-replace` body into parts. See the module
/// documentation.
pub(crate) struct PartReader<R> {
    inner: R,
    /// Unconsumed bytes are `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// Boundary lines accepted: `--<boundary>` and the bare `<boundary>`,
    /// longest first (some servers omit the `--`).
    delims: Vec<Vec<u8>>,
    max_part: usize,
}

/// The boundary parameter of a multipart Content-Type, unquoted.
pub(crate) fn boundary_of(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        (!v.is_empty()).then(|| v.to_string())
    })
}

impl<R: Read> PartReader<R> {
    pub(crate) fn new(inner: R, boundary: &str, max_part: usize) -> Self {
        let mut delims = vec![format!("--{boundary}").into_bytes()];
        if !boundary.is_empty() {
            delims.push(boundary.as_bytes().to_vec());
        }
        PartReader {
            inner,
            buf: Vec::with_capacity(READ_CHUNK),
            pos: 0,
            delims,
            max_part,
        }
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Read more bytes; `false` at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let n = loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        };
        self.buf.truncate(old + n);
        Ok(n > 0)
    }

    /// The next line, without its CR/LF, if it fits in `limit` bytes;
    /// `Err(len)` when a longer run without LF was skipped.
    fn line(&mut self, limit: usize) -> Result<Result<Vec<u8>, usize>, PartError> {
        loop {
            if let Some(i) = self.avail().iter().position(|&b| b == b'\n') {
                let mut l = self.avail()[..i].to_vec();
                self.pos += i + 1;
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                return Ok(Ok(l));
            }
            if self.avail().len() > limit {
                // A run without LF longer than any line wanted: skip it.
                let n = self.avail().len();
                self.pos = self.buf.len();
                return Ok(Err(n));
            }
            if !self.fill()? {
                return Err(PartError::Ended("between parts"));
            }
        }
    }

    /// Whether `line` is a boundary line: `Some(true)` for the closing one.
    fn boundary_line(&self, line: &[u8]) -> Option<bool> {
        let line = line.trim_ascii_end();
        self.delims.iter().find_map(|d| {
            let rest = line.strip_prefix(d.as_slice())?;
            match rest {
                b"" => Some(false),
                b"--" => Some(true),
                _ => None,
            }
        })
    }

    /// Read the next part (skipping anything before its boundary line).
    pub(crate) fn next_part(&mut self) -> Result<Part, PartError> {
        // The boundary line; bytes before it (the CRLF ending the previous
        // part, a preamble, garbage) are skipped, up to one frame's worth.
        let mut skipped = 0usize;
        loop {
            let l = self.line(MAX_PART_HEADER_BYTES)?;
            match l {
                Ok(l) => match self.boundary_line(&l) {
                    Some(false) => break,
                    Some(true) => return Err(PartError::Ended("(closing boundary)")),
                    None => skipped += l.len() + 1,
                },
                Err(n) => skipped += n,
            }
            if skipped > self.max_part {
                return Err(PartError::Protocol(format!(
                    "no boundary line in {skipped} bytes"
                )));
            }
        }
        let content_length = self.headers()?;
        match content_length {
            Some(len) => self.body_of_length(len),
            None => self.body_to_boundary(),
        }
    }

    /// The part's headers up to the empty line; returns its Content-Length.
    /// A part that starts with a JPEG's SOI right after the boundary line
    /// has no headers.
    fn headers(&mut self) -> Result<Option<u64>, PartError> {
        while self.avail().len() < 2 {
            if !self.fill()? {
                return Err(PartError::Ended("inside a part's headers"));
            }
        }
        if self.avail().starts_with(&[0xFF, 0xD8]) {
            return Ok(None);
        }
        let mut total = 0usize;
        let mut length = None;
        loop {
            let l = match self.line(MAX_PART_HEADER_BYTES - total)? {
                Ok(l) => l,
                Err(_) => return Err(too_long_headers()),
            };
            total += l.len() + 1;
            if total > MAX_PART_HEADER_BYTES {
                return Err(too_long_headers());
            }
            if l.trim_ascii().is_empty() {
                return Ok(length);
            }
            let l = String::from_utf8_lossy(&l);
            if let Some((k, v)) = l.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    length = Some(v.trim().parse::<u64>().map_err(|_| {
                        PartError::Protocol(format!("bad part Content-Length {:?}", v.trim()))
                    })?);
                }
            }
        }
    }

    fn body_of_length(&mut self, len: u64) -> Result<Part, PartError> {
        if len > self.max_part as u64 {
            let mut left = len;
            loop {
                let n = (self.avail().len() as u64).min(left);
                self.pos += n as usize;
                left -= n;
                if left == 0 {
                    return Ok(Part::Oversized(len));
                }
                if !self.fill()? {
                    return Err(PartError::Ended("inside a part"));
                }
            }
        }
        let len = len as usize;
        while self.avail().len() < len {
            if !self.fill()? {
                return Err(PartError::Ended("inside a part"));
            }
        }
        let body = self.avail()[..len].to_vec();
        self.pos += len;
        Ok(Part::Body(body))
    }

    /// Where the body ends in `avail()[from..]`: `Ok(i)` when a boundary
    /// line starts after the LF at `i`; `Err(k)`: bytes before `k` cannot
    /// belong to a boundary line seen so far.
    fn find_delim(&self, from: usize) -> Result<usize, usize> {
        let a = self.avail();
        let mut i = from;
        while let Some(off) = a[i..].iter().position(|&b| b == b'\n') {
            let lf = i + off;
            let rest = &a[lf + 1..];
            for d in &self.delims {
                if rest.len() >= d.len() {
                    if rest.starts_with(d) {
                        return Ok(lf);
                    }
                } else if d.starts_with(rest) {
                    return Err(lf);
                }
            }
            i = lf + 1;
        }
        Err(a.len())
    }

    fn body_to_boundary(&mut self) -> Result<Part, PartError> {
        let mut body = Vec::new();
        let mut dropped = 0u64;
        loop {
            let (take, found) = match self.find_delim(0) {
                Ok(lf) => (lf, true),
                Err(k) => (k, false),
            };
            if dropped == 0 && body.len() + take <= self.max_part + 1 {
                body.extend_from_slice(&self.avail()[..take]);
            } else {
                dropped += (body.len() + take) as u64;
                body = Vec::new();
            }
            self.pos += take;
            if found {
                if dropped > 0 {
                    return Ok(Part::Oversized(dropped));
                }
                if body.last() == Some(&b'\r') {
                    body.pop();
                }
                if body.len() > self.max_part {
                    return Ok(Part::Oversized(body.len() as u64));
                }
                return Ok(Part::Body(body));
            }
            if dropped > 4 * self.max_part as u64 {
                return Err(PartError::Protocol(format!(
                    "a part without Content-Length ran past {dropped} bytes without a boundary"
                )));
            }
            if !self.fill()? {
                return Err(PartError::Ended("inside a part"));
            }
        }
    }
}

fn too_long_headers() -> PartError {
    PartError::Protocol(format!(
        "part headers longer than {MAX_PART_HEADER_BYTES} bytes"
    ))
}

/// The rustls client configuration: roots from `ca_file`, or the system's.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, CaptureError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let err = |reason: String| CaptureError::HttpSetup {
                key: "source.ca_file",
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            for cert in rustls_pemfile::certs(&mut io::BufReader::new(&pem[..])) {
                let cert = cert.map_err(|e| err(e.to_string()))?;
                roots.add(cert).map_err(|e| err(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(err("no PEM certificate in it".into()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(CaptureError::HttpSetup {
                    key: "source.ca_file",
                    path: String::new(),
                    reason: "no trusted root certificates on this system; set source.ca_file"
                        .into(),
                });
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CaptureError::HttpSetup {
            key: "source.url",
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Streams JPEG frames from an HTTP(S) MJPEG URL. See the module documentation.
pub struct HttpMjpegSource {
    opts: HttpMjpegOptions,
    /// The URL for logs, errors, status and results: [`shown_url`].
    shown_url: String,
    parts: PartReader<Box<dyn Read + Send + Sync>>,
    seq: u64,
    /// Parts dropped since the source opened: over the size bound, not an image.
    oversized: u64,
    not_image: u64,
    last_warn: Option<Instant>,
}

impl HttpMjpegSource {
    /// Connect, send the GET and check the response is a multipart stream.
    pub(crate) fn open(opts: HttpMjpegOptions) -> Result<HttpMjpegSource, CaptureError> {
        let url = shown_url(&opts.url);
        let http_err = |reason: String| CaptureError::Http {
            url: url.clone(),
            reason,
        };
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(opts.timeout)
            .timeout_read(opts.timeout)
            .timeout_write(opts.timeout)
            .redirects(3)
            .user_agent(concat!("spotter/", env!("CARGO_PKG_VERSION")));
        if opts.url.to_ascii_lowercase().starts_with("https://") {
            agent = agent.tls_config(Arc::new(tls_config(opts.ca_file.as_deref())?));
        }
        let agent = agent.build();
        let creds = match &opts.credentials_file {
            Some(path) => Some(read_credentials(path)?),
            None => None,
        };
        // The first request goes without credentials: the camera's 401 says
        // which scheme it wants, so a password is never sent in clear
        // (Basic) to a camera that asks for Digest.
        let mut authorization: Option<String> = None;
        let resp = loop {
            let mut req = agent.get(&opts.url);
            if let Some(h) = &authorization {
                req = req.set("Authorization", h);
            }
            match req.call() {
                Ok(r) => break r,
                Err(ureq::Error::Status(401, r)) if authorization.is_none() => {
                    let Some(c) = &creds else {
                        return Err(CaptureError::HttpAuth {
                            url: url.clone(),
                            status: 401,
                            hint: auth_hint(401, "", false),
                        });
                    };
                    let challenges: Vec<&str> = r.all("www-authenticate");
                    let cnonce = hex::encode(rand::random::<[u8; 16]>());
                    let uri = super::http_auth::request_target(&opts.url);
                    match super::http_auth::answer(&challenges, c, &uri, &cnonce) {
                        Ok(h) => authorization = Some(h),
                        Err(hint) => {
                            return Err(CaptureError::HttpAuth {
                                url: url.clone(),
                                status: 401,
                                hint,
                            })
                        }
                    }
                }
                Err(ureq::Error::Status(status @ (401 | 403), _)) => {
                    let scheme = authorization
                        .as_deref()
                        .and_then(|h| h.split(' ').next())
                        .unwrap_or("");
                    return Err(CaptureError::HttpAuth {
                        url: url.clone(),
                        status,
                        hint: auth_hint(status, scheme, creds.is_some()),
                    });
                }
                Err(ureq::Error::Status(status, r)) => {
                    return Err(http_err(format!("HTTP {status} {}", r.status_text())))
                }
                Err(ureq::Error::Transport(t)) => return Err(http_err(transport_text(&t))),
            }
        };
        let ctype = resp.header("content-type").unwrap_or("").to_string();
        let Some(boundary) = boundary_of(&ctype) else {
            return Err(http_err(format!(
                "serves {:?}, not a multipart/x-mixed-replace stream with a boundary; \
                 use the camera's MJPEG stream URL (not a snapshot or HTML page)",
                ctype
            )));
        };
        log::debug!(url = url.as_str(), boundary = boundary.as_str(); "MJPEG stream opened");
        let parts = PartReader::new(resp.into_reader(), &boundary, opts.max_frame_bytes);
        Ok(HttpMjpegSource {
            opts,
            shown_url: url,
            parts,
            seq: 0,
            oversized: 0,
            not_image: 0,
            last_warn: None,
        })
    }

    /// Log dropped parts: the first at once, then at most every `WARN_EVERY`.
    fn warn_dropped(&mut self, what: String) {
        let now = Instant::now();
        if self
            .last_warn
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return;
        }
        self.last_warn = Some(now);
        log::warn!(
            message_id = ids::SOURCE_PARTS_DROPPED,
            spotter_source = self.describe().as_str(),
            oversized = self.oversized,
            not_image = self.not_image;
            "{what} (dropped so far: {} over source.max_frame_bytes = {}, {} not an image)",
            self.oversized, self.opts.max_frame_bytes, self.not_image
        );
    }
}

/// `url` with the values of query parameters that look like secrets
/// (`pwd`, `password`, `token`, `key`, …: some cameras take their login
/// there) replaced by `***`, for everything a person or a log may see.
pub(crate) fn shown_url(url: &str) -> String {
    let (head, fragment) = url
        .split_once('#')
        .map_or((url, None), |(h, f)| (h, Some(f)));
    let Some((base, query)) = head.split_once('?') else {
        return url.to_string();
    };
    let secret = |name: &str| {
        let n = name.to_ascii_lowercase();
        ["pass", "pwd", "token", "key", "secret", "auth", "sig"]
            .iter()
            .any(|w| n.contains(w))
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if secret(k) => format!("{k}=***"),
            _ => kv.to_string(),
        })
        .collect();
    let mut out = format!("{base}?{}", query.join("&"));
    if let Some(f) = fragment {
        out = format!("{out}#{f}");
    }
    out
}

/// What to do about a 401/403 after answering with `scheme` (empty: no
/// credentials were sent).
fn auth_hint(status: u16, scheme: &str, have_credentials: bool) -> String {
    if !have_credentials && status == 401 {
        "the camera wants a login; set source.credentials_file to a file holding user:password"
            .into()
    } else if scheme.is_empty() {
        "the camera refuses this URL to anyone; check the camera's user settings".into()
    } else {
        format!("check the user and password in source.credentials_file (sent with {scheme})")
    }
}

/// A transport error as one line, with the TLS cause where there is one.
/// Not ureq's Display: that starts with the URL (the error names ours
/// already), which after a redirect could be one the camera chose.
fn transport_text(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s = format!("{s}: {m}");
    }
    if let Some(e) = std::error::Error::source(t) {
        s = format!("{s}: {e}");
    }
    let mut src = std::error::Error::source(t);
    while let Some(e) = src {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if tls.is_some() {
            break;
        }
        src = e.source();
    }
    if src.is_some() || s.contains("certificate") || s.to_ascii_lowercase().contains("tls") {
        format!("{s} (the camera's certificate must chain to source.ca_file, or to the system's roots when unset, and name the URL's host)")
    } else {
        s
    }
}

impl FrameSource for HttpMjpegSource {
    fn describe(&self) -> String {
        format!("http_mjpeg:{}", self.shown_url)
    }

    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        let started = Instant::now();
        loop {
            let part = self.parts.next_part().map_err(|e| CaptureError::Http {
                url: self.shown_url.clone(),
                reason: e.to_string(),
            })?;
            match part {
                Part::Body(data) if crate::image::decode::sniff(&data).is_some() => {
                    let frame = Frame::encoded(data, self.seq, self.shown_url.clone())
                        .with_source(self.describe());
                    self.seq += 1;
                    return Ok(frame);
                }
                Part::Body(data) => {
                    self.not_image += 1;
                    self.warn_dropped(format!(
                        "dropped a stream part of {} bytes that is not a JPEG, PNG or BMP image",
                        data.len()
                    ));
                }
                Part::Oversized(n) => {
                    self.oversized += 1;
                    self.warn_dropped(format!(
                        "dropped a {n}-byte frame over source.max_frame_bytes = {}; \
                         lower the camera's resolution or quality, or raise source.max_frame_bytes",
                        self.opts.max_frame_bytes
                    ));
                }
            }
            // Parts keep coming but none is usable: give the capture loop a
            // turn (it checks for shutdown) by ending the stream.
            if started.elapsed() > self.opts.timeout {
                return Err(CaptureError::Http {
                    url: self.shown_url.clone(),
                    reason: format!(
                        "no usable frame for {:.1} s ({} parts over source.max_frame_bytes, {} not an image)",
                        started.elapsed().as_secs_f64(),
                        self.oversized,
                        self.not_image
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "http_mjpeg_tests.rs"]
mod tests;
