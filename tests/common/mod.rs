//! Helpers shared by the integration tests: test data lookup, a daemon
//! process under test, and a real TLS client that trusts the daemon's
//! generated certificate.
#![allow(dead_code)]

use std::io::BufReader;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Copy the test photos (not MNIST) into `dir/photos`: the folder and the
/// sorted file names.
pub fn photo_dir(dir: &Path) -> (PathBuf, Vec<String>) {
    let out = dir.join("photos");
    std::fs::create_dir_all(&out).unwrap();
    let mut names = Vec::new();
    for e in std::fs::read_dir(testdata().join("images")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let ext = p
            .extension()
            .map(|x| x.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if ["jpg", "png", "bmp"].contains(&ext.as_str()) && !name.starts_with("mnist") {
            std::fs::copy(&p, out.join(&name)).unwrap();
            names.push(name);
        }
    }
    names.sort();
    (out, names)
}

pub fn testdata() -> PathBuf {
    std::env::var_os("SPOTTER_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
        })
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_spotter")
}

/// A free loopback port (bound then released; fine for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The reference top-1 label of `image` for `model`, if it is a clear case:
/// score >= 0.5 and at least 0.2 above the second.
pub fn reference_clear_top1(model: &str, image: &str) -> Option<String> {
    let text = std::fs::read_to_string(testdata().join("golden/reference_outputs.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    let top5 = v["classification"][model]["results"][image]["pil_bilinear"]["top5"].as_array()?;
    let s0 = top5.first()?["score"].as_f64()?;
    let s1 = top5.get(1).and_then(|t| t["score"].as_f64()).unwrap_or(0.0);
    (s0 >= 0.5 && s0 - s1 >= 0.2).then(|| top5[0]["label"].as_str().unwrap_or_default().to_string())
}

/// The tests written before sightings (issue 18) count on every frame being
/// inferred and stored. Unless `config` says otherwise, keep it so: add
/// `store.keep_frames = "all"` and `[motion] enabled = false`. The
/// sightings tests set both themselves.
pub fn pre_sightings_defaults(config: &str) -> String {
    let mut text = config.to_string();
    if !text.contains("keep_frames") {
        text = match text.find("\n[store]\n") {
            Some(i) => {
                let at = i + "\n[store]\n".len();
                format!("{}keep_frames = \"all\"\n{}", &text[..at], &text[at..])
            }
            None if text.starts_with("[store]\n") => {
                text.replacen("[store]\n", "[store]\nkeep_frames = \"all\"\n", 1)
            }
            None => format!("{text}\n[store]\nkeep_frames = \"all\"\n"),
        };
    }
    if !text.contains("[motion]") {
        text.push_str("\n[motion]\nenabled = false\n");
    }
    text
}

/// A daemon process with its own state directory; killed on drop.
pub struct Daemon {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Extra environment for the daemon process.
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Write `config` (TOML, with `@STATE@` and `@PORT@` substituted) and start.
    pub fn start(dir: &Path, config: &str) -> Daemon {
        Self::start_with_env(dir, config, vec![])
    }

    pub fn start_with_env(dir: &Path, config: &str, env: Vec<(String, String)>) -> Daemon {
        let port = free_port();
        let state = dir.join("state");
        let text = pre_sightings_defaults(
            &config
                .replace("@STATE@", &state.display().to_string())
                .replace("@PORT@", &port.to_string()),
        );
        let path = dir.join("spotter.toml");
        std::fs::write(&path, text).unwrap();
        let mut d = Daemon {
            child: None,
            port,
            dir: dir.to_path_buf(),
            config: path,
            env,
        };
        d.spawn();
        d
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("state/tls/cert.pem")
    }

    /// A TLS client trusting the daemon's certificate, once it exists.
    pub fn client(&self) -> Client {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.cert().exists() {
            assert!(
                Instant::now() < deadline,
                "no certificate generated; log:\n{}",
                self.log()
            );
            self.assert_running();
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(50));
        let key = std::fs::read_to_string(self.dir.join("state/initial-admin-key"))
            .ok()
            .map(|k| k.trim().to_string());
        Client::new(&self.cert(), self.port).with_key(key)
    }

    /// A client that sends no API key.
    pub fn anonymous_client(&self) -> Client {
        self.client().with_key(None)
    }

    pub fn assert_running(&self) {
        if let Some(c) = &self.child {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            if let Ok(nix::sys::wait::WaitStatus::Exited(..)) =
                nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
            {
                panic!("daemon exited early; log:\n{}", self.log());
            }
        }
    }

    /// SIGTERM and wait; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (ExitStatus, Duration) {
        let mut child = self.child.take().expect("daemon running");
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!(
                    "daemon did not stop within 20 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTPS client (ureq over rustls) that trusts one certificate.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// Sent as `Authorization: Bearer` when set.
    key: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Client {
    pub fn new(cert: &Path, port: u16) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(cert).unwrap();
        for c in rustls_pemfile::certs(&mut BufReader::new(&pem[..])) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(cfg))
            .timeout(Duration::from_secs(10))
            .build();
        Client {
            agent,
            base: format!("https://127.0.0.1:{port}"),
            key: None,
        }
    }

    pub fn with_key(mut self, key: Option<String>) -> Client {
        self.key = key;
        self
    }

    /// GET a path; `Err` only for transport errors (refused, TLS failure).
    /// GET `path` with the key, whatever its status; `Err` only for
    /// transport errors.
    fn call_get(&self, path: &str) -> Result<ureq::Response, String> {
        let mut req = self.agent.get(&format!("{}{}", self.base, path));
        if let Some(k) = &self.key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        match req.call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => Ok(r),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn get(&self, path: &str) -> Result<Reply, String> {
        let r = self.call_get(path)?;
        let status = r.status();
        let headers = r
            .headers_names()
            .into_iter()
            .filter_map(|n| r.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let body = r.into_string().map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// GET `path`: status, content type and the body's bytes (images).
    pub fn get_bytes(&self, path: &str) -> Result<(u16, String, Vec<u8>), String> {
        let r = self.call_get(path)?;
        let (status, ctype) = (r.status(), r.content_type().to_string());
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut body).map_err(|e| e.to_string())?;
        Ok((status, ctype, body))
    }

    /// Send `body` with `method`; `Err` only for transport errors.
    pub fn send(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, String> {
        let mut req = self
            .agent
            .request(method, &format!("{}{}", self.base, path))
            .timeout(Duration::from_secs(180));
        if let Some(k) = &self.key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let r = match req.send_bytes(body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let status = r.status();
        let headers = r
            .headers_names()
            .into_iter()
            .filter_map(|n| r.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let body = r.into_string().map_err(|e| e.to_string())?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Poll until `pred` accepts a reply, or panic after `secs` with the last one.
    pub fn wait_for(&self, path: &str, secs: u64, pred: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last;
        loop {
            match self.get(path) {
                Ok(r) if pred(&r) => return r,
                Ok(r) => last = format!("{} {}", r.status, r.body),
                Err(e) => last = e,
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}; last: {last}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether this is a CI run (`CI` set, as .ci/run does): tests that cannot
/// run here must then fail, not skip.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The name libtest lists for test `name` in the module at `module_path`
/// (pass `module_path!()`): that path less the crate, i.e. the test target,
/// name. A test that re-executes its own binary with `--exact` selects
/// itself with it, whichever target holds its module.
pub fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_target, module)) => format!("{module}::{name}"),
        None => name.to_string(),
    }
}

/// A support bundle (issue 22): the uncompressed tar stream and its
/// entries (name after the top `spotter-support-*` directory, bytes).
pub fn unpack_support_bundle(gz: &[u8]) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut raw)
        .expect("gzip");
    let mut entries = Vec::new();
    let mut ar = tar::Archive::new(&raw[..]);
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("entry");
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let (root, name) = path.split_once('/').expect("under one directory");
        assert!(root.starts_with("spotter-support-"), "{path}");
        let mut v = Vec::new();
        e.read_to_end(&mut v).unwrap();
        entries.push((name.to_string(), v));
    }
    (raw, entries)
}
