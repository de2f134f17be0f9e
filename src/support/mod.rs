//! The support bundle (issue 22): one `tar.gz` a technician hands to
//! support, built in memory by [`Bundle`] and written by `spotter
//! support-bundle` or served by `GET /api/v1/support-bundle` (admin).
//!
//! Entries, under one directory `spotter-support-<unix time>/`:
//!
//! | entry | what |
//! |---|---|
//! | `README.txt` | what the bundle holds and what it never holds |
//! | `version.json` | Spotter's version, target, profile, when and where it was built |
//! | `config.json` | the effective configuration, secrets redacted ([`redact`]) |
//! | `checks.json` / `doctor.txt` | readiness checks from the daemon's state, or doctor's checks (the CLI without a daemon) |
//! | `status.json`, `metrics.txt` | the status document and the OpenMetrics text, as the API serves them |
//! | `store.json` | store figures (records, size, wear, refusals, audit trail size) |
//! | `model.json` | the running model and every installed version (with its manifest when it has one) |
//! | `disk.json` | total and free space of the state and store filesystems |
//! | `power.json` | SoC temperature and the throttling / under-voltage flags |
//! | `journal.txt` | the unit's last N journal lines (`journalctl`, bounded in time and size) |
//!
//! Nothing secret goes in: no API keys nor their hashes (the key file is
//! never read), no session cookies, no key or password files' contents
//! (files the configuration names are never opened; their paths stay),
//! and any configuration value named like a secret, holding PEM text or
//! a URL's `user:password@` is replaced by `"<redacted>"`.
//!
//! Doctor lives in `tools` (layer 7), above the API: the API's bundle
//! carries the readiness checks its state holds; the CLI adds doctor's
//! report when it builds a bundle without the daemon.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::config::Settings;
use crate::modelstore::ModelStore;

/// The systemd unit whose journal is included.
pub const UNIT: &str = "spotter";
/// Journal lines when none are asked for.
pub const DEFAULT_JOURNAL_LINES: usize = 500;
/// At most this many journal lines.
pub const MAX_JOURNAL_LINES: usize = 20_000;
/// At most this many bytes of journal text are kept.
pub const MAX_JOURNAL_BYTES: usize = 4 << 20;
/// `journalctl` is killed after this long.
pub const JOURNAL_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole (uncompressed) bundle is refused beyond this.
pub const MAX_BUNDLE_BYTES: usize = 16 << 20;
/// What replaces a secret value.
pub const REDACTED: &str = "<redacted>";

/// Building a bundle.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    #[error("support bundle entry {entry}: {source}")]
    Write {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the support bundle would exceed {max} bytes (entry {entry})")]
    TooLarge { entry: String, max: usize },
    #[error("support bundle entry {entry}: {source}")]
    Json {
        entry: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The unit's recent journal lines (the real one runs `journalctl`; tests
/// use a fake).
pub trait Journal: Send + Sync {
    /// The last `lines` lines as text; when they cannot be read, a line
    /// saying why (never an error: the bundle is still useful).
    fn tail(&self, lines: usize) -> String;
}

/// `journalctl -u <unit> -n N -o short-iso --no-pager`, as a child process
/// killed after [`JOURNAL_TIMEOUT`], its output cut at [`MAX_JOURNAL_BYTES`].
#[derive(Debug, Clone)]
pub struct Journalctl {
    pub program: PathBuf,
    pub unit: String,
    pub timeout: Duration,
}

impl Default for Journalctl {
    fn default() -> Journalctl {
        Journalctl {
            program: PathBuf::from("journalctl"),
            unit: UNIT.to_string(),
            timeout: JOURNAL_TIMEOUT,
        }
    }
}

impl Journal for Journalctl {
    fn tail(&self, lines: usize) -> String {
        let lines = lines.clamp(1, MAX_JOURNAL_LINES).to_string();
        let args = [
            "-u",
            self.unit.as_str(),
            "-n",
            lines.as_str(),
            "-o",
            "short-iso",
            "--no-pager",
        ];
        let shown = format!("{} {}", self.program.display(), args.join(" "));
        // Looked up first: where the exec failure of a missing program does
        // not come back as NotFound (under qemu-user the child just exits
        // non-zero), the bundle still says plainly that there is none.
        if crate::capture::command::find_program(&self.program).is_none() {
            return format!("journalctl is not available on this system (`{shown}`: not found)\n");
        }
        match run_bounded(&self.program, &args, self.timeout, MAX_JOURNAL_BYTES) {
            Ok(Ran::Done { out, ok: true, cut }) => {
                let mut s = String::from_utf8_lossy(&out).into_owned();
                if cut {
                    s.push_str(&format!("\n[cut at {MAX_JOURNAL_BYTES} bytes]\n"));
                }
                s
            }
            Ok(Ran::Done { out, ok: false, .. }) => format!(
                "`{shown}` failed; its output:\n{}\n",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ran::TimedOut { out }) => format!(
                "`{shown}` did not finish within {} s and was killed; what it wrote:\n{}\n",
                self.timeout.as_secs(),
                String::from_utf8_lossy(&out)
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("journalctl is not available on this system (`{shown}`: {e})\n")
            }
            Err(e) => format!("`{shown}` could not be run: {e}\n"),
        }
    }
}

enum Ran {
    Done { out: Vec<u8>, ok: bool, cut: bool },
    TimedOut { out: Vec<u8> },
}

/// Run `program args` with stdin and stderr closed, keeping at most `max`
/// bytes of its standard output, killing it after `timeout`.
fn run_bounded(
    program: &Path,
    args: &[&str],
    timeout: Duration,
    max: usize,
) -> std::io::Result<Ran> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let Some(mut stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(std::io::Error::other("no stdout pipe"));
    };
    // The reader keeps draining past `max` (so the child never blocks on a
    // full pipe) but keeps only the first `max` bytes.
    let reader = std::thread::spawn(move || {
        let (mut out, mut buf, mut cut) = (Vec::new(), [0u8; 8192], false);
        loop {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = max.saturating_sub(out.len());
                    cut |= n > room;
                    out.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        (out, cut)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipe closes when the child is gone, so the reader ends.
    let (out, cut) = reader.join().unwrap_or_default();
    Ok(match status {
        Some(s) => Ran::Done {
            out,
            ok: s.success(),
            cut,
        },
        None => Ran::TimedOut { out },
    })
}

/// Whether a configuration key names a secret value (rather than the path
/// of a file holding one, which may stay).
fn secret_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let path_like = ["_file", "_dir", "_path", "_files"]
        .iter()
        .any(|s| k.ends_with(s));
    let secretish = [
        "secret",
        "password",
        "passwd",
        "token",
        "passphrase",
        "private",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k == "api_key"
        || k == "key_material";
    secretish && !path_like
}

/// Whether a string value carries secret material whatever its key:
/// PEM text, or a URL with `user:password@`.
fn secret_value(v: &str) -> bool {
    if v.contains("-----BEGIN") {
        return true;
    }
    if let Some((_, rest)) = v.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        return authority.contains('@');
    }
    false
}

/// `v` with every secret replaced by [`REDACTED`]: values under a
/// secret-named key ([`secret_name`]) and secret-looking strings anywhere.
pub fn redact(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = if secret_name(&k) && !v.is_null() {
                        Value::String(REDACTED.into())
                    } else {
                        redact(v)
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::String(s) if secret_value(&s) => Value::String(REDACTED.into()),
        other => other,
    }
}

/// The effective configuration with secrets redacted, plus the files it
/// was read from.
pub fn effective_config(settings: &Settings) -> Value {
    let config = serde_json::to_value(settings)
        .unwrap_or_else(|e| serde_json::json!({"error": format!("serialising: {e}")}));
    serde_json::json!({
        "files": settings.files,
        "settings": redact(config),
    })
}

/// Total and free bytes of the filesystem holding `path`.
// The statvfs fields are u32 on some 32-bit targets, u64 here.
#[allow(clippy::useless_conversion)]
fn disk_of(path: &Path) -> Value {
    match nix::sys::statvfs::statvfs(path) {
        Ok(st) => {
            // `u64::from`: these are u32 or u64 depending on the target.
            let frag = u64::from(st.fragment_size());
            serde_json::json!({
                "path": path,
                "total_bytes": u64::from(st.blocks()).saturating_mul(frag),
                "free_bytes": u64::from(st.blocks_free()).saturating_mul(frag),
                "available_bytes": u64::from(st.blocks_available()).saturating_mul(frag),
            })
        }
        Err(e) => serde_json::json!({"path": path, "error": e.to_string()}),
    }
}

/// The running model (from the daemon's state, when there is one) and the
/// installed versions of the model store.
pub fn model_info(state_dir: &Path, running: Option<Value>) -> Value {
    let versions = match ModelStore::new(state_dir).list() {
        Ok(list) => serde_json::json!(list
            .into_iter()
            .map(|(meta, active)| serde_json::json!({"active": active, "version": meta}))
            .collect::<Vec<_>>()),
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    serde_json::json!({"running": running, "versions": versions})
}

/// A store's figures: [`crate::store::Store::stats`] and the audit trail's size.
pub fn store_figures(store: &crate::store::Store) -> Value {
    let (audit_records, audit_bytes) = store.audit_figures();
    serde_json::json!({
        "stats": store.stats(),
        "audit_records": audit_records,
        "audit_bytes": audit_bytes,
    })
}

/// One bundle being put together: named entries, then [`Bundle::finish`].
pub struct Bundle {
    root: String,
    mtime: u64,
    entries: Vec<(String, Vec<u8>)>,
    size: usize,
}

impl Bundle {
    /// An empty bundle stamped `now`, with `README.txt` and `version.json`.
    pub fn new(now: SystemTime) -> Bundle {
        let mtime = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut b = Bundle {
            root: format!("spotter-support-{mtime}"),
            mtime,
            entries: Vec::new(),
            size: 0,
        };
        // Both are small and fixed: they cannot exceed the bound.
        let _ = b.text("README.txt", README);
        let _ = b.json(
            "version.json",
            &serde_json::json!({
                "name": env!("CARGO_PKG_NAME"),
                "version": env!("CARGO_PKG_VERSION"),
                "target_os": std::env::consts::OS,
                "target_arch": std::env::consts::ARCH,
                "debug_build": cfg!(debug_assertions),
                "bundle_unix_s": mtime,
                "host": std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string()),
            }),
        );
        b
    }

    /// A bundle read back from its tar.gz (the daemon's, to add what only
    /// the command line has), bounded like one being built. Entries outside
    /// one top directory, or not regular files, are refused.
    pub fn read(gz: &[u8]) -> Result<Bundle, SupportError> {
        let bad = |reason: &str| SupportError::Write {
            entry: "(daemon's bundle)".into(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string()),
        };
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(gz));
        let mut b: Option<Bundle> = None;
        for e in ar.entries().map_err(|_| bad("not a tar.gz"))? {
            let e = e.map_err(|_| bad("a damaged tar entry"))?;
            if e.header().entry_type() != tar::EntryType::Regular {
                return Err(bad("an entry that is not a regular file"));
            }
            let path = e.path().map_err(|_| bad("an entry without a path"))?;
            let path = path.to_string_lossy().into_owned();
            let Some((root, name)) = path.split_once('/') else {
                return Err(bad("an entry outside the bundle's directory"));
            };
            let (root, name) = (root.to_string(), name.to_string());
            let mtime = e.header().mtime().unwrap_or(0);
            let this = b.get_or_insert_with(|| Bundle {
                root: root.clone(),
                mtime,
                entries: Vec::new(),
                size: 0,
            });
            if this.root != root || name.is_empty() || name.contains("..") {
                return Err(bad("an entry outside the bundle's directory"));
            }
            let mut bytes = Vec::new();
            // One byte past the bound tells "too large" from "exactly full".
            e.take(MAX_BUNDLE_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
                .map_err(|_| bad("a damaged tar entry"))?;
            this.bytes(&name, bytes)?;
        }
        b.ok_or_else(|| bad("an empty archive"))
    }

    /// The archive's top directory.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Add `name` with `bytes` (refused beyond [`MAX_BUNDLE_BYTES`] in all).
    pub fn bytes(&mut self, name: &str, bytes: Vec<u8>) -> Result<(), SupportError> {
        if self.size + bytes.len() > MAX_BUNDLE_BYTES {
            return Err(SupportError::TooLarge {
                entry: name.into(),
                max: MAX_BUNDLE_BYTES,
            });
        }
        self.size += bytes.len();
        self.entries.push((name.to_string(), bytes));
        Ok(())
    }

    pub fn text(&mut self, name: &str, text: &str) -> Result<(), SupportError> {
        self.bytes(name, text.as_bytes().to_vec())
    }

    /// Add `value` as pretty JSON.
    pub fn json(&mut self, name: &str, value: &impl Serialize) -> Result<(), SupportError> {
        let mut v = serde_json::to_vec_pretty(value).map_err(|source| SupportError::Json {
            entry: name.into(),
            source,
        })?;
        v.push(b'\n');
        self.bytes(name, v)
    }

    /// The sections every bundle has, from the configuration: `config.json`,
    /// `disk.json`, `journal.txt`; `model.json` with `running` (the
    /// daemon's model, when it told), and `power.json` with `power` (the
    /// daemon's last reading; read from sysfs here when `None`).
    pub fn common(
        &mut self,
        settings: &Settings,
        running_model: Option<Value>,
        power: Option<crate::power::Reading>,
        journal: &dyn Journal,
        journal_lines: usize,
    ) -> Result<(), SupportError> {
        self.json("config.json", &effective_config(settings))?;
        let mut disks = vec![disk_of(&settings.daemon.state_dir)];
        if settings.store.dir != settings.daemon.state_dir {
            disks.push(disk_of(&settings.store.dir));
        }
        self.json("disk.json", &disks)?;
        self.json(
            "model.json",
            &model_info(&settings.daemon.state_dir, running_model),
        )?;
        let power = match power {
            Some(p) => Some(p),
            None if settings.power.enabled => {
                use crate::power::Sensors;
                Some(crate::power::Sysfs::new(&settings.power.sysfs_root).read())
            }
            None => None,
        };
        let flags = |t: &Option<crate::power::Throttle>| t.map(|t| t.names());
        self.json(
            "power.json",
            &serde_json::json!({
                "enabled": settings.power.enabled,
                "reading": power,
                "throttled_now": power.as_ref().and_then(|p| flags(&p.now)),
                "throttled_since_boot": power.as_ref().and_then(|p| flags(&p.since_boot)),
            }),
        )?;
        self.text("journal.txt", &journal.tail(journal_lines))
    }

    /// The sections only a running daemon has: `checks.json` (readiness),
    /// `status.json`, `metrics.txt` and `store.json`, from its state and
    /// store.
    pub fn daemon(
        &mut self,
        state: &crate::state::AppState,
        store: &crate::store::Store,
    ) -> Result<(), SupportError> {
        let r = state.readiness();
        self.json(
            "checks.json",
            &serde_json::json!({"ready": r.ready(), "checks": r}),
        )?;
        let stats = store.stats();
        self.bytes("status.json", state.status_json(stats.clone()).to_vec())?;
        self.text("metrics.txt", &crate::state::render_metrics(state, &stats))?;
        self.json("store.json", &store_figures(store))
    }

    /// The bundle as a gzip-compressed tar.
    pub fn finish(self) -> Result<Vec<u8>, SupportError> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in &self.entries {
            let path = format!("{}/{name}", self.root);
            let err = |source| SupportError::Write {
                entry: name.clone(),
                source,
            };
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(self.mtime);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, &path, bytes.as_slice())
                .map_err(err)?;
        }
        let end = |source| SupportError::Write {
            entry: "(end)".into(),
            source,
        };
        let gz = tar.into_inner().map_err(end)?;
        let mut out = gz.finish().map_err(end)?;
        out.flush().map_err(end)?;
        Ok(out)
    }
}

const README: &str = "\
Spotter support bundle

version.json  version and build
config.json   the effective configuration; secrets are \"<redacted>\", file paths stay
checks.json   readiness checks (from the running daemon), or
doctor.txt    `spotter doctor`'s checks (built by the CLI without a daemon)
status.json   the status document (GET /api/v1/status), when the daemon runs
metrics.txt   the OpenMetrics text (GET /metrics), when the daemon runs
store.json    store figures
model.json    the running model and the installed versions
disk.json     space on the state and store filesystems
power.json    SoC temperature and throttling / under-voltage flags
journal.txt   the unit's last journal lines

Never included: API keys or their hashes, session cookies, passwords,
private keys, the contents of any key, password or credentials file.
";

#[cfg(test)]
mod tests;
