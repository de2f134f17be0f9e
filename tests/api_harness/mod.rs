//! Shared by the API tests: a real `Server` on 127.0.0.1:0 with a temporary
//! state dir, store and keys, a `ureq` client trusting only the generated
//! certificate, and a raw TLS connection for byte-level requests.
#![allow(dead_code)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use spotter::api::{AccessOptions, ApiError, ApiOptions, Server};
use spotter::core::result::{ResultRecord, StageLatency};
use spotter::keys::{KeyInfo, KeyStore, Scope};
use spotter::state::AppState;
use spotter::store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Harness {
    pub base: String,
    pub addr: SocketAddr,
    pub agent: ureq::Agent,
    pub client_config: Arc<rustls::ClientConfig>,
    pub state: Arc<AppState>,
    pub store: Arc<Store>,
    pub state_dir: PathBuf,
    pub read_key: String,
    pub read_info: KeyInfo,
    pub admin_key: String,
    pub fingerprint: String,
    /// Swaps the running server's TLS configuration.
    pub tls: spotter::api::TlsReloader,
    pub shutdown: watch::Sender<bool>,
    pub server: JoinHandle<Result<(), ApiError>>,
    pub dir: tempfile::TempDir,
}

pub fn client_config(cert_pem: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let mut reader = std::io::BufReader::new(std::fs::File::open(cert_pem).unwrap());
    for cert in rustls_pemfile::certs(&mut reader) {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

/// Rate limits loose enough that ordinary tests never meet them.
pub fn relaxed_access() -> AccessOptions {
    AccessOptions {
        auth_fail_rate_per_s: 10_000.0,
        auth_fail_burst: 10_000,
        key_rate_per_s: 10_000.0,
        key_burst: 10_000,
        ..AccessOptions::default()
    }
}

pub fn testdata() -> PathBuf {
    std::env::var_os("SPOTTER_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
        })
}

pub async fn start_with(tune: impl FnOnce(&mut ApiOptions), access: AccessOptions) -> Harness {
    start_inner(tune, access, None).await
}

/// Like `start_with`, connected to a pipeline handle (uploads, models).
pub async fn start_piped(
    tune: impl FnOnce(&mut ApiOptions),
    access: AccessOptions,
    pipeline: spotter::api::PipelineHandle,
) -> Harness {
    start_inner(tune, access, Some(pipeline)).await
}

async fn start_inner(
    tune: impl FnOnce(&mut ApiOptions),
    access: AccessOptions,
    pipeline: Option<spotter::api::PipelineHandle>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let keys = KeyStore::new(&state_dir);
    let (read_info, read) = keys.create("reader", Scope::Read).unwrap();
    let (_, admin) = keys.create("admin", Scope::Admin).unwrap();
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    let state = Arc::new(AppState::new());
    let mut opts = ApiOptions::new("127.0.0.1:0".parse().unwrap(), state_dir.clone());
    tune(&mut opts);
    let mut server = Server::bind(opts, state.clone(), store.clone())
        .await
        .unwrap()
        .with_access(access)
        .unwrap();
    if let Some(p) = pipeline {
        server = server.with_pipeline(p);
    }
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let fingerprint = server.cert_fingerprint().to_string();
    let tls = server.tls_reloader();
    let (shutdown, rx) = watch::channel(false);
    let server = tokio::spawn(server.run(rx));
    let client_config = client_config(&state_dir.join("tls/cert.pem"));
    let agent = ureq::AgentBuilder::new()
        .tls_config(client_config.clone())
        .timeout(Duration::from_secs(30))
        .build();
    Harness {
        base: format!("https://{addr}"),
        addr,
        agent,
        client_config,
        state,
        store,
        state_dir,
        read_key: read.expose().to_string(),
        read_info,
        admin_key: admin.expose().to_string(),
        fingerprint,
        tls,
        shutdown,
        server,
        dir,
    }
}

pub async fn start() -> Harness {
    start_with(|_| {}, relaxed_access()).await
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How to authenticate a request.
#[derive(Clone, Copy, Debug)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// The whole `Authorization` header value.
    Raw(&'a str),
    /// A session cookie's value (issue 20), sent as `__Host-spotter_session`.
    Cookie(&'a str),
}

impl Harness {
    /// One request; any HTTP status is a `Reply`, transport failures are `Err`.
    pub async fn try_call(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
    ) -> Result<Reply, String> {
        self.try_call_with(method, path, auth, &[]).await
    }

    /// Like `try_call`, with extra request headers.
    pub async fn try_call_with(
        &self,
        method: &str,
        path: &str,
        auth: Auth<'_>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut req = self.agent.request(method, &format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        match auth {
            Auth::None => {}
            Auth::Bearer(k) => req = req.set("Authorization", &format!("Bearer {k}")),
            Auth::Raw(v) => req = req.set("Authorization", v),
            Auth::Cookie(v) => req = req.set("Cookie", &format!("__Host-spotter_session={v}")),
        }
        tokio::task::spawn_blocking(move || {
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(e) => return Err(e.to_string()),
            };
            reply_from(resp)
        })
        .await
        .unwrap()
    }

    pub async fn call_as(&self, method: &str, path: &str, auth: Auth<'_>) -> Reply {
        self.try_call(method, path, auth)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `method` with `body` and the read key.
    pub async fn call_with_body(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &format!("Bearer {}", self.read_key));
        let body = body.to_vec();
        tokio::task::spawn_blocking(move || {
            let resp = match req.send_bytes(&body) {
                Ok(r) => r,
                Err(ureq::Error::Status(_, r)) => r,
                Err(e) => panic!("transport error: {e}"),
            };
            reply_from(resp).unwrap()
        })
        .await
        .unwrap()
    }

    /// Sign in with `key` (`POST /api/v1/session`, JSON; issue 20) and
    /// return the session cookie's value.
    pub async fn session_cookie(&self, key: &str) -> String {
        let req = self
            .agent
            .post(&format!("{}/api/v1/session", self.base))
            .set("Content-Type", "application/json");
        let body = serde_json::json!({ "key": key }).to_string();
        let r = tokio::task::spawn_blocking(move || {
            reply_from(req.send_string(&body).expect("sign-in")).unwrap()
        })
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let c = r.header("set-cookie").expect("a session cookie");
        c.split(';')
            .next()
            .and_then(|v| v.strip_prefix("__Host-spotter_session="))
            .unwrap_or_else(|| panic!("{c}"))
            .to_string()
    }

    /// With the read key.
    pub async fn call(&self, method: &str, path: &str) -> Reply {
        let key = self.read_key.clone();
        self.call_as(method, path, Auth::Bearer(&key)).await
    }

    /// GET with the read key.
    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path).await
    }

    /// A TLS connection for hand-written requests.
    pub async fn raw_tls(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        self.tls_with(self.client_config.clone()).await.unwrap()
    }

    /// A TLS connection made with `config` (for other roots or a client
    /// certificate); `Err` when the handshake fails.
    pub async fn tls_with(
        &self,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await
    }

    pub async fn stop(self) {
        self.shutdown.send(true).unwrap();
        // Generous bound so a hang fails the test instead of blocking CI forever.
        let res = tokio::time::timeout(Duration::from_secs(60), self.server).await;
        res.expect("run did not return after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Send `head` (and `body`), read until the server closes or a full response
/// with `Content-Length` arrived; returns the status and the raw text.
pub async fn raw_exchange(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    head: &str,
) -> (u16, String) {
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    read_response(tls).await
}

pub async fn read_response(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bound so a server that never answers fails the test instead of hanging it.
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                if len.is_some_and(|n| buf.len() >= end + 4 + n) {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no complete response within 30 s: {}",
        String::from_utf8_lossy(&buf)
    );
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// An RFC 9457 problem with this status and code, and nothing leaking.
pub fn assert_problem(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.body
    );
    let v = r.json();
    assert_eq!(v["code"], code, "{}", r.body);
    assert_eq!(v["status"], status, "{}", r.body);
    assert_eq!(
        v["type"],
        format!("urn:spotter:problem:{code}"),
        "{}",
        r.body
    );
    assert!(
        v["title"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    assert!(
        v["detail"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    assert_eq!(
        v.as_object().unwrap().len(),
        5,
        "only the problem members: {}",
        r.body
    );
}

/// The headers every response must carry.
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("strict-transport-security", "max-age=31536000"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

pub fn assert_security_headers(r: &Reply, what: &str) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(r.header(name), Some(*value), "{what}: {name}");
    }
    let pp = r
        .header("permissions-policy")
        .unwrap_or_else(|| panic!("{what}: no permissions-policy"));
    assert!(
        pp.contains("camera=()") && pp.contains("microphone=()"),
        "{what}: {pp}"
    );
}

/// A plain stored result at `ts_ns`, for listing and lookup tests.
pub fn record(ts_ns: u64) -> ResultRecord {
    ResultRecord {
        id: String::new(),
        ts_ns,
        source: "files:/srv/demo".into(),
        origin: format!("/srv/demo/{ts_ns}.jpg"),
        frame_seq: ts_ns,
        model_sha256: "cd".repeat(32),
        runtime: "tflite".into(),
        classes: vec![],
        detections: vec![],
        image_width: 224,
        image_height: 224,
        latency: StageLatency::default(),
        clock_synchronized: true,
        boottime_ns: 0,
        source_name: String::new(),
    }
}

/// Status, every header and the body of a response, whatever its status.
pub fn reply_from(resp: ureq::Response) -> Result<Reply, String> {
    let headers = resp
        .headers_names()
        .into_iter()
        .flat_map(|n| {
            resp.all(&n)
                .into_iter()
                .map(|v| (n.clone(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let status = resp.status();
    // Binary bodies (JPEG frames, issue 20) are kept lossily: tests of
    // them read the bytes themselves.
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .map_err(|e| e.to_string())?;
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
