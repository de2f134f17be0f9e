//! Fuzz target: requests from bytes to the router. A real in-process
//! HTTPS server (the daemon's `Server`, a temporary store and keys, no
//! pipeline) gets batches of raw HTTP/1.1 requests over TLS, each from its
//! own 127.0.0.x address: generated ones (methods, paths, queries,
//! `Authorization`, `Content-Length`, chunked bodies, CORS and odd headers,
//! small images) and byte-mutated copies of them.
//!
//! Every answer must be a well-formed HTTP response head and never 500,
//! 501, 502 or 504; a request generated well-formed must be answered; no
//! server thread may panic; and after each batch `/healthz` must still
//! answer 200 on a fresh connection; and every error answer is
//! problem+json, hyper's own 400/414/431 included (see
//! [`REQUIRE_PROBLEM_JSON`]).
//!
//! Why one file over 600 lines: the request generator and the checks on
//! its answers describe one contract and change together; the harness
//! (TLS client, per-source addresses, the server's setup) is a third of it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{mutate_bytes, mutate_text, Fuzz, Verdict};
use crate::api::{AccessOptions, ApiOptions, Server};
use crate::keys::{KeyStore, Scope};
use crate::state::AppState;
use crate::store::Store;

/// Fail on an error answer (4xx/5xx) without an `application/problem+json`
/// body (the errors produced below the router, 414, 431, bad
/// `Content-Length`, non-UTF-8 paths, are replaced by `api::wire`).
const REQUIRE_PROBLEM_JSON: bool = true;
/// Requests sent at once, each on its own connection.
const BATCH: usize = 8;
/// The server's header deadline here (short, so cut-off requests end soon).
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a request generated well-formed may take to be answered.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);
/// The body limit here (small, so 413 is reached often).
const MAX_BODY: u64 = 64 * 1024;

/// Panics on the server's threads (named `fuzz-http…`).
static SERVER_PANICS: AtomicU64 = AtomicU64::new(0);

fn count_server_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("fuzz-http"))
            {
                SERVER_PANICS.fetch_add(1, Ordering::Relaxed);
            }
            previous(info);
        }));
    });
}

/// The server under test and a client for it.
struct Target {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    connector: tokio_rustls::TlsConnector,
    read_key: String,
    admin_key: String,
    server: tokio::task::JoinHandle<Result<(), crate::api::ApiError>>,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    /// Error answers without problem+json, by status.
    plain_errors: Mutex<std::collections::BTreeMap<u16, u64>>,
    next_source: AtomicU64,
}

fn start() -> Target {
    count_server_panics();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("fuzz-http")
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().join("state");
    let keys = KeyStore::new(&state_dir);
    let (_, read) = keys.create("reader", Scope::Read).expect("read key");
    let (_, admin) = keys.create("admin", Scope::Admin).expect("admin key");
    let store = Arc::new(Store::open(&dir.path().join("store")).expect("store"));
    let state = Arc::new(AppState::new());
    let mut opts = ApiOptions::new("127.0.0.1:0".parse().expect("addr"), state_dir.clone());
    opts.header_read_timeout = HEADER_TIMEOUT;
    opts.max_upload_pixels = 1 << 20;
    // Fields added to AccessOptions later keep their defaults.
    #[allow(clippy::needless_update)]
    let access = AccessOptions {
        auth_fail_rate_per_s: 1e6,
        auth_fail_burst: 1_000_000,
        key_rate_per_s: 1e6,
        key_burst: 1_000_000,
        max_body_bytes: MAX_BODY,
        cors_allowed_origins: vec!["https://ok.example".into()],
        ..AccessOptions::default()
    };
    let server = rt.block_on(async {
        Server::bind(opts, state, store)
            .await
            .expect("bind")
            .with_access(access)
            .expect("access options")
    });
    let addr = server.local_addr();
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let server = rt.spawn(server.run(rx));
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(state_dir.join("tls/cert.pem")).expect("generated cert");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("a PEM cert")).expect("a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Target {
        rt,
        addr,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
        read_key: read.expose().to_string(),
        admin_key: admin.expose().to_string(),
        server,
        _shutdown: shutdown,
        _dir: dir,
        plain_errors: Mutex::new(Default::default()),
        next_source: AtomicU64::new(0),
    }
}

/// What came back for one request.
enum Answer {
    /// The first response head (up to the blank line).
    Head(Vec<u8>),
    /// The connection closed or stayed silent without a response.
    Nothing(&'static str),
}

async fn send(
    t: &Target,
    from: Ipv4Addr,
    request: &[u8],
    wait: Duration,
) -> Result<Answer, String> {
    let work = async {
        let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
        socket
            .bind(SocketAddr::new(IpAddr::V4(from), 0))
            .map_err(|e| format!("bind {from}: {e}"))?;
        let tcp = socket
            .connect(t.addr)
            .await
            .map_err(|e| format!("connect from {from}: {e}"))?;
        let name = rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let tls = match t.connector.connect(name, tcp).await {
            Ok(s) => s,
            Err(_) => return Ok(Answer::Nothing("TLS handshake failed")),
        };
        // Write and read at once: the server may answer (413, 431...) and
        // close before the whole request is written.
        let (mut rd, mut wr) = tokio::io::split(tls);
        let write = async {
            let _ = wr.write_all(request).await;
            let _ = wr.flush().await;
            // Keep the connection open (no close_notify) until the read ends.
            std::future::pending::<()>().await;
        };
        let read = async {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    buf.truncate(end + 4);
                    return Ok(Answer::Head(buf));
                }
                match rd.read(&mut chunk).await {
                    Ok(0) | Err(_) if buf.is_empty() => return Ok(Answer::Nothing("closed")),
                    Ok(0) | Err(_) => return Ok(Answer::Head(buf)),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                if buf.len() > 64 * 1024 {
                    return Err("response head over 64 KiB".to_string());
                }
            }
        };
        tokio::select! {
            r = read => r,
            () = write => Ok(Answer::Nothing("the writer ended")),
        }
    };
    match tokio::time::timeout(wait, work).await {
        Ok(r) => r,
        Err(_) => Ok(Answer::Nothing("no answer in time")),
    }
}

/// The status of a well-formed response head, or why it is not one.
fn parse_head(head: &[u8]) -> Result<(u16, bool), String> {
    let text = std::str::from_utf8(head).map_err(|_| "response head is not UTF-8".to_string())?;
    let body = text
        .strip_suffix("\r\n\r\n")
        .ok_or_else(|| format!("response head not terminated: {text:?}"))?;
    let mut lines = body.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let code = rest
        .get(..3)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..600).contains(c))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut problem = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(format!("bad header name {name:?}"));
        }
        if name.eq_ignore_ascii_case("content-type")
            && value.trim().starts_with("application/problem+json")
        {
            problem = true;
        }
    }
    Ok((code, problem))
}

const PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1/status",
    "/api/v1/results",
    "/api/v1/results/latest",
    "/api/v1/results/0000000000000000000000000000000a",
    "/api/v1/results/0000000000000000000000000000000a/image",
    "/api/v1/results/zz",
    "/api/v1/keys",
    "/api/v1/keys/reader",
    "/api/v1/backup",
    "/api/v1/classify",
    "/api/v1/events",
    "/api/v1/model",
    "/api/v1/model/rollback",
    "/api/v1/openapi.json",
    "/api/v1/reload",
    "/",
    "//api/v1/status",
    "/api/v1/status/",
    "/api/v1/../v1/status",
    "/api/v1/%73tatus",
    "/api%2fv1/status",
    "/%00",
    "/%ff%fe",
    "/\u{e9}",
    "*",
    "https://127.0.0.1/healthz",
];

const QUERY_KEYS: &[&str] = &[
    "limit",
    "since",
    "before",
    "after",
    "cursor",
    "store",
    "label",
    "min_score",
    "order",
    "since_ns",
    "format",
    "x",
    "",
    "limit[]",
];

const QUERY_VALUES: &[&str] = &[
    "1",
    "0",
    "-1",
    "10",
    "1000",
    "1001",
    "true",
    "false",
    "abc",
    "",
    "%",
    "%00",
    "%zz",
    "+",
    "1.5",
    "1e3",
    "99999999999999999999",
    "18446744073709551615",
    "0000000000000000000000000000000a",
    "\u{e9}",
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];

/// Keywords for text mutations of requests.
const DICT: &[&str] = &[
    "\r\n",
    "\n",
    "\r",
    ":",
    " ",
    "\t",
    "\0",
    "HTTP/1.1",
    "HTTP/1.0",
    "HTTP/2.0",
    "Content-Length: ",
    "Transfer-Encoding: chunked\r\n",
    "0\r\n\r\n",
    "Host: a\r\n",
    "Authorization: Bearer ",
    "Connection: close\r\n",
    "Expect: 100-continue\r\n",
    "?",
    "&",
    "=",
    "%",
    "/",
    "..",
    "4294967296",
    "-1",
    "ffffffffffffffff",
];

/// One generated request and whether it is well-formed (must be answered).
fn request(rng: &mut StdRng, t: &Target, png: &[u8]) -> (Vec<u8>, bool) {
    let mut clean = true;
    let method = if rng.gen_range(0..12) == 0 {
        clean = false;
        ["get", "TRACE", "CONNECT", "G T", "", "FOOBARBAZ"][rng.gen_range(0..6)].to_string()
    } else {
        METHODS[rng.gen_range(0..METHODS.len())].to_string()
    };
    let mut target = PATHS[rng.gen_range(0..PATHS.len())].to_string();
    if rng.gen_range(0..40) == 0 {
        target.push_str(&"/a".repeat(rng.gen_range(1000..20000)));
    }
    if rng.gen_bool(0.5) {
        let pairs: Vec<String> = (0..rng.gen_range(1..4))
            .map(|_| {
                let k = QUERY_KEYS[rng.gen_range(0..QUERY_KEYS.len())];
                let v = QUERY_VALUES[rng.gen_range(0..QUERY_VALUES.len())];
                if rng.gen_range(0..8) == 0 {
                    k.to_string()
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        target = format!("{target}?{}", pairs.join("&"));
    }
    if target.contains('\u{e9}') || target.starts_with("/%00") {
        clean = clean && rng.gen(); // raw non-ASCII: hyper may refuse it, or not
    }
    let version = match rng.gen_range(0..20) {
        0 => {
            clean = false;
            ["HTTP/2.0", "HTTP/0.9", "HTTX/1.1", "HTTP/1.1 x"][rng.gen_range(0..4)]
        }
        1 => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let mut head = format!("{method} {target} {version}\r\n");
    if rng.gen_range(0..10) != 0 {
        head.push_str("Host: 127.0.0.1\r\n");
    }
    match rng.gen_range(0..10) {
        0..=3 => head.push_str(&format!("Authorization: Bearer {}\r\n", t.read_key)),
        4 => head.push_str(&format!("Authorization: Bearer {}\r\n", t.admin_key)),
        5 => head.push_str("Authorization: Bearer spk_not_a_real_key\r\n"),
        6 => {
            let v = [
                "Basic dXNlcjpwYXNz",
                "Bearer",
                "Bearer ",
                "bearer x",
                "Bearer a b",
                "Bearer \u{e9}",
            ][rng.gen_range(0..6)];
            head.push_str(&format!("Authorization: {v}\r\n"));
        }
        7 => head.push_str(&format!(
            "Authorization: Bearer {}\r\n",
            "k".repeat(rng.gen_range(100..9000))
        )),
        _ => {}
    }
    if rng.gen_range(0..6) == 0 {
        let origin =
            ["https://ok.example", "https://evil.example", "null", ""][rng.gen_range(0..4)];
        head.push_str(&format!("Origin: {origin}\r\n"));
        if method == "OPTIONS" {
            head.push_str("Access-Control-Request-Method: POST\r\n");
        }
    }
    for _ in 0..rng.gen_range(0..3) {
        let h = [
            "Accept: */*",
            "Accept-Encoding: gzip, br",
            "Connection: keep-alive",
            "Connection: close",
            "X-Forwarded-For: 10.0.0.1",
            "Content-Type: image/png",
            "Content-Type: application/json",
            "Range: bytes=0-1",
            "If-None-Match: *",
        ][rng.gen_range(0..9)];
        head.push_str(h);
        head.push_str("\r\n");
    }
    match rng.gen_range(0..30) {
        0 => {
            // Too many headers, or one too large.
            for i in 0..rng.gen_range(50..200) {
                head.push_str(&format!("X-H{i}: v\r\n"));
            }
        }
        1 => head.push_str(&format!(
            "X-Big: {}\r\n",
            "v".repeat(rng.gen_range(8000..80000))
        )),
        2 => {
            clean = false;
            head.push_str("X-Fold: a\r\n  folded\r\n");
        }
        3 => {
            clean = false;
            head.push_str("Bad Header: x\r\n");
        }
        4 => head.push_str("Expect: 100-continue\r\n"),
        _ => {}
    }
    let body: Vec<u8> = match rng.gen_range(0..8) {
        0 | 1 => png.to_vec(),
        2 => br#"{"name":"fuzz","scope":"read"}"#.to_vec(),
        3 => (0..rng.gen_range(0..4096)).map(|_| rng.gen()).collect(),
        4 if rng.gen_range(0..4) == 0 => vec![b'x'; MAX_BODY as usize + rng.gen_range(0..2)],
        _ => Vec::new(),
    };
    let mut bytes = head.into_bytes();
    match rng.gen_range(0..12) {
        // A chunked body.
        0 if !body.is_empty() => {
            bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for part in body.chunks(rng.gen_range(1..2048)) {
                bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                bytes.extend_from_slice(part);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
            return (bytes, clean && version == "HTTP/1.1");
        }
        // A Content-Length that is not a plain number, or two of them.
        1 => {
            clean = false;
            let v =
                ["-1", "abc", "99999999999999999999", "+5", "1,2", "0x10", ""][rng.gen_range(0..7)];
            bytes.extend_from_slice(format!("Content-Length: {v}\r\n").as_bytes());
        }
        2 => {
            clean = false;
            bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len() + 1).as_bytes());
        }
        // A declared length larger than the body (a slow or cut-off upload).
        3 => {
            clean = false;
            let extra = [1u64, 1000, MAX_BODY, 1 << 40][rng.gen_range(0..4)];
            bytes.extend_from_slice(
                format!("Content-Length: {}\r\n", body.len() as u64 + extra).as_bytes(),
            );
        }
        _ if body.is_empty() && rng.gen() => {}
        _ => bytes.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes()),
    }
    bytes.extend_from_slice(b"\r\n");
    bytes.extend_from_slice(&body);
    (bytes, clean)
}

/// A batch: for each request, a flag byte (1: must be answered), its
/// length (u32 LE) and its bytes.
fn generate(rng: &mut StdRng, t: &Target, png: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..BATCH {
        let (mut req, mut clean) = request(rng, t, png);
        if rng.gen_range(0..3) == 0 {
            clean = false;
            for _ in 0..rng.gen_range(1..4) {
                if rng.gen() {
                    mutate_bytes(rng, &mut req, &[]);
                } else {
                    mutate_text(rng, &mut req, DICT);
                }
            }
        }
        out.push(u8::from(clean));
        out.extend_from_slice(&(req.len() as u32).to_le_bytes());
        out.extend_from_slice(&req);
    }
    out
}

/// The requests of a batch (tolerant: a replayed or minimised file may be cut).
fn split(mut bytes: &[u8]) -> Vec<(bool, &[u8])> {
    let mut out = Vec::new();
    while bytes.len() >= 5 {
        let clean = bytes[0] == 1;
        let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let rest = &bytes[5..];
        let len = len.min(rest.len());
        out.push((clean, &rest[..len]));
        bytes = &rest[len..];
    }
    out
}

fn check(t: &Target, bytes: &[u8]) -> Verdict {
    let requests = split(bytes);
    let panics_before = SERVER_PANICS.load(Ordering::Relaxed);
    let answers = t.rt.block_on(async {
        let sends = requests.iter().map(|(clean, req)| {
            let n = t.next_source.fetch_add(1, Ordering::Relaxed);
            let from = Ipv4Addr::new(127, 0, 1 + (n / 250 % 200) as u8, 2 + (n % 250) as u8);
            let wait = if *clean {
                ANSWER_WITHIN
            } else {
                HEADER_TIMEOUT + Duration::from_millis(1500)
            };
            send(t, from, req, wait)
        });
        join_all(sends.collect()).await
    });
    let mut answered = 0;
    for ((clean, req), answer) in requests.iter().zip(answers) {
        let shown = || String::from_utf8_lossy(&req[..req.len().min(300)]).into_owned();
        match answer? {
            Answer::Head(head) => {
                let (code, problem) =
                    parse_head(&head).map_err(|e| format!("{e}\n  request: {:?}", shown()))?;
                if matches!(code, 500 | 501 | 502 | 504) {
                    return Err(format!(
                        "answered {code}: {:?}\n  request: {:?}",
                        String::from_utf8_lossy(&head),
                        shown()
                    ));
                }
                // `/readyz` answers not-ready with its own readiness document
                // (503, application/json): that is its contract, not an error.
                let path = req.split(|&b| b == b' ').nth(1).unwrap_or_default();
                let readiness = code == 503 && path.starts_with(b"/readyz");
                if code >= 400 && !problem && !readiness {
                    if REQUIRE_PROBLEM_JSON {
                        return Err(format!(
                            "{code} without problem+json\n  request: {:?}",
                            shown()
                        ));
                    }
                    if let Ok(mut m) = t.plain_errors.lock() {
                        *m.entry(code).or_default() += 1;
                    }
                }
                answered += 1;
            }
            Answer::Nothing(why) if *clean => {
                return Err(format!(
                    "a well-formed request got no answer ({why})\n  request: {:?}",
                    shown()
                ))
            }
            Answer::Nothing(_) => {}
        }
    }
    let panics = SERVER_PANICS.load(Ordering::Relaxed) - panics_before;
    if panics > 0 {
        return Err(format!("{panics} panic(s) on the server's threads"));
    }
    if t.server.is_finished() {
        return Err("the server stopped".into());
    }
    let probe = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    match t
        .rt
        .block_on(send(t, Ipv4Addr::LOCALHOST, probe, ANSWER_WITHIN))?
    {
        Answer::Head(h) if h.starts_with(b"HTTP/1.1 200") => {}
        Answer::Head(h) => {
            return Err(format!(
                "/healthz answered {:?} after the batch",
                String::from_utf8_lossy(&h)
            ))
        }
        Answer::Nothing(why) => {
            return Err(format!("/healthz got no answer ({why}) after the batch"))
        }
    }
    Ok(answered > 0)
}

/// Await all futures concurrently on this task; their outputs in order.
async fn join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (f, slot) in pending.iter_mut().zip(done.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => all = false,
                }
            }
        }
        if all {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

/// Catches a request that makes the server panic, answer 500/501/502/504,
/// send a malformed response, leave a well-formed request unanswered or
/// stop answering `/healthz`: raw request bytes of every shape (bad
/// methods, paths, queries, auth headers, lengths and chunked bodies,
/// oversized heads and bodies) sent to a real in-process server.
#[test]
fn http() {
    let t = start();
    let png = {
        let mut out = Vec::new();
        ::image::RgbImage::new(8, 8)
            .write_to(
                &mut std::io::Cursor::new(&mut out),
                ::image::ImageFormat::Png,
            )
            .expect("a PNG");
        out
    };
    let f = Fuzz::new("http", 64 << 20);
    let stats = f.run(|rng| generate(rng, &t, &png), |bytes| check(&t, bytes));
    let plain = t.plain_errors.lock().map(|m| m.clone()).unwrap_or_default();
    if !plain.is_empty() {
        eprintln!(
            "fuzz http: {} batches; error answers without problem+json, by status: {plain:?}",
            stats.iterations
        );
    }
}
