//! Fetching a bundle over HTTPS (ureq with rustls): size-bounded (the
//! `Content-Length` is checked before reading and the bytes while reading),
//! resumable (the bytes so far stay in `<sha256>.part`; after a cut the
//! next attempt asks for the rest with `Range`, and starts over when the
//! server answers 200 instead of 206), and checked against the command's
//! sha256 before anything installs it.

use std::fs::OpenOptions;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Attempts per download (the first and the resumptions) while each makes
/// progress.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

/// How a download goes.
#[derive(Debug, Clone)]
pub(crate) struct Fetch {
    pub ca_file: Option<PathBuf>,
    pub max_bytes: u64,
    pub timeout: Duration,
}

/// The TLS client configuration: roots from `ca_file`, else the system's.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("rollout.ca_file {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut BufReader::new(&pem[..])) {
                let cert = cert.map_err(|e| format!("rollout.ca_file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("rollout.ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "rollout.ca_file {}: no certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            if roots.is_empty() {
                return Err(
                    "no trusted root certificates on this system; set rollout.ca_file".into(),
                );
            }
        }
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// What one attempt ended with.
enum Attempt {
    Complete,
    /// Cut short after this many bytes in the part file (retry with Range).
    Cut(String),
}

/// Download `url` into `dest` (through `dest` + ".part"), then check its
/// SHA-256 is `sha256`. Err: the reason, for the refusal. `stop` ends it
/// early (shutdown); the part file is kept for the next try.
pub(crate) fn fetch(
    f: &Fetch,
    url: &str,
    sha256: &str,
    dest: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<(), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(f.timeout.min(Duration::from_secs(30)))
        .timeout(f.timeout)
        .redirects(3)
        .user_agent(concat!("spotter/", env!("CARGO_PKG_VERSION")))
        .tls_config(Arc::new(tls_config(f.ca_file.as_deref())?))
        .build();
    let part = dest.with_extension("part");
    let mut last_len = None;
    let mut attempts = 0;
    loop {
        if stop() {
            return Err("shutting down".into());
        }
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        // An attempt that added nothing does not count as progress.
        if last_len != Some(have) {
            attempts = 0;
        }
        attempts += 1;
        last_len = Some(have);
        match attempt(&agent, f, url, &part, have) {
            Ok(Attempt::Complete) => break,
            Ok(Attempt::Cut(why)) if attempts < MAX_ATTEMPTS => {
                log::info!("rollout download of {url} cut ({why}); resuming");
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempts)));
            }
            Ok(Attempt::Cut(why)) => {
                // Refused: the rollout id is remembered, the part is of no use.
                let _ = std::fs::remove_file(&part);
                return Err(format!(
                    "download incomplete after {MAX_ATTEMPTS} attempts without progress: {why}"
                ));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        }
    }
    let got = file_sha256(&part).map_err(|e| format!("{}: {e}", part.display()))?;
    if got != sha256 {
        let _ = std::fs::remove_file(&part);
        return Err(format!(
            "sha256 mismatch: the command says {sha256}, the file downloaded is {got}"
        ));
    }
    std::fs::rename(&part, dest).map_err(|e| format!("{}: {e}", dest.display()))
}

/// One GET (with `Range` when `have` > 0). Err: give up (and drop the part).
fn attempt(
    agent: &ureq::Agent,
    f: &Fetch,
    url: &str,
    part: &Path,
    have: u64,
) -> Result<Attempt, String> {
    let mut req = agent.get(url);
    if have > 0 {
        req = req.set("Range", &format!("bytes={have}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, _)) => return Err(format!("{url}: HTTP status {code}")),
        Err(ureq::Error::Transport(t)) => {
            // A refused TLS certificate or a bad URL will not get better.
            return match t.kind() {
                ureq::ErrorKind::InvalidUrl
                | ureq::ErrorKind::UnknownScheme
                | ureq::ErrorKind::InsecureRequestHttpsOnly => Err(format!("{url}: {t}")),
                _ if t.to_string().contains("certificate") => Err(format!("{url}: {t}")),
                _ => Ok(Attempt::Cut(t.to_string())),
            };
        }
    };
    let (start, append) = match resp.status() {
        206 if have > 0 => (have, true),
        // The server ignored the range: start over.
        200 => (0, false),
        other => return Err(format!("{url}: unexpected HTTP status {other}")),
    };
    let length: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    if let Some(len) = length {
        if start + len > f.max_bytes {
            return Err(format!(
                "the bundle is {} bytes, over rollout.max_bundle_bytes ({})",
                start + len,
                f.max_bytes
            ));
        }
    }
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(part)
        .map_err(|e| format!("{}: {e}", part.display()))?;
    // One byte more than allowed tells "over the bound" from "exactly it".
    let mut body = resp.into_reader().take(f.max_bytes - start + 1);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = start;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                out.sync_all().ok();
                return Ok(Attempt::Cut(e.to_string()));
            }
        };
        total += n as u64;
        if total > f.max_bytes {
            return Err(format!(
                "the bundle is over rollout.max_bundle_bytes ({})",
                f.max_bytes
            ));
        }
        out.write_all(&buf[..n])
            .map_err(|e| format!("{}: {e}", part.display()))?;
    }
    out.sync_all()
        .map_err(|e| format!("{}: {e}", part.display()))?;
    match length {
        Some(len) if total < start + len => {
            Ok(Attempt::Cut(format!("{} of {} bytes", total, start + len)))
        }
        _ => Ok(Attempt::Complete),
    }
}

/// The SHA-256 of a file, in lower-case hex.
pub(crate) fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}
