//! Configuration: one TOML file plus drop-ins, validated once into typed
//! [`Settings`].
//!
//! Every file is parsed strictly on its own (unknown keys and wrongly typed
//! values are errors naming the file, line and column), then the files are
//! layered: the main file first, then `<name>.d/*.toml` beside it in lexical
//! order, later files winning key by key. Range and consistency checks run on
//! the layered result and still name the file and line that set the offending
//! value. Every setting has a default, documented in `docs/spotter.example.toml`.
//!
//! Why one file of some 1,200 lines: it is the table of every section's keys,
//! defaults and range checks (`build`), read beside `docs/spotter.example.toml`;
//! `[gpio]`, `[model]`, the `[api]` defaults and the several-sources rules
//! (`sources.rs`) already have files of their own. `[source]`'s own keys
//! (`build_source`, with the `command` and `http_mjpeg` checks) are the next
//! to move into `sources.rs`, and would bring this file back under 1,000.

pub(crate) mod api;
pub(crate) mod audit;
// Encrypted backups (issue 23).
pub(crate) mod backup;
pub(crate) mod gpio;
mod model;
pub(crate) mod power;
pub(crate) mod privacy;
mod raw;
// Model rollout over the broker (issue 22).
pub(crate) mod rollout;
pub(crate) mod sightings;
// Signed model bundles (issue 22).
pub(crate) mod signing;
mod sources;

pub use sources::DEFAULT_SOURCE_NAME;
pub(crate) use sources::UPLOAD_SOURCE_NAME;

pub use api::{is_valid_origin, ClientAuth};
pub use audit::AuditSettings;
pub use backup::{parse_recipient, BackupSettings};
pub use model::{DetectionRules, ModelSettings, DEFAULT_IOU_THRESHOLD, DEFAULT_MAX_DETECTIONS};
pub use privacy::{PrivacyMaskSettings, PrivacySettings};
pub use sightings::{KeepFrames, MotionConfig, Roi, SightingRule, SightingsSettings, ZoneSettings};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use raw::{Layers, Origin};

/// Errors from reading or validating configuration. Each names the file and,
/// where known, the line, column and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}:{line}:{column}: `{key}`: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("{path}: `{key}`: {message}")]
    Missing {
        path: String,
        key: String,
        message: String,
    },
}

/// Which frame source the daemon runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    V4l2,
    Files,
    /// `multipart/x-mixed-replace` JPEG over HTTP(S) (IP cameras, ESP32-CAM, mjpg-streamer).
    #[serde(rename = "http_mjpeg")]
    HttpMjpeg,
    /// A program whose standard output is the video (`source.command`).
    Command,
}

/// Preferred capture pixel format for V4L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureFormat {
    Auto,
    Mjpeg,
    Yuyv,
    /// Planar YUV 4:2:0 (I420): `command` sources only.
    Yuv420,
    /// Semi-planar YUV 4:2:0: `command` sources only.
    Nv12,
}

/// How a frame is fitted to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fit {
    Stretch,
    Crop,
    Letterbox,
}

/// How JPEG frames are decoded: `auto` (libjpeg-turbo, scaled down in the
/// DCT domain when the frame is much larger than the model input) or `off`
/// (full-size libjpeg-turbo decode, the reference path; byte for byte the
/// Pillow-made reference
/// inputs). See `inference::preprocess`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum JpegScaling {
    /// libjpeg-turbo, scaling down inside the IDCT by the largest factor
    /// (1/2, 1/4 or 1/8) that still needs no upscaling.
    Auto,
    /// The reference path: full-size decode, then bilinear resize (what
    /// Pillow does, to the byte).
    Off,
}

/// Which inference runtime to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeSetting {
    Auto,
    Litert,
    Builtin,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DaemonSettings {
    pub state_dir: PathBuf,
    pub log_level: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SourceSettings {
    pub kind: SourceKind,
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub format: CaptureFormat,
    pub buffers: u32,
    pub dir: Option<PathBuf>,
    #[serde(rename = "loop")]
    pub looping: bool,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    pub stall_timeout_ms: u64,
    // --- kind = "http_mjpeg" (issue 19) ---
    /// `http://…` or `https://…` stream URL (no credentials in it).
    pub url: Option<String>,
    /// File holding `user:password` (first line); must not be readable by group or others.
    pub credentials_file: Option<PathBuf>,
    /// PEM CA certificate(s) the camera's certificate must chain to (unset: the system's roots).
    pub ca_file: Option<PathBuf>,
    // kind = "command"
    /// The program and its arguments (no shell); empty for other kinds.
    pub command: Vec<String>,
    /// `command` and `http_mjpeg`: the largest frame read; larger ones are
    /// dropped (skipped, never buffered whole) and counted.
    pub max_frame_bytes: u64,
    // --- Several sources per daemon (issue 19) ---
    /// The source's name (`[[source]] name`; `default` for a single
    /// `[source]` without one): results, readiness, metrics and the journal
    /// carry it.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoreSettings {
    pub dir: PathBuf,
    pub flush_every_ms: u64,
    /// sled's page cache bound in bytes (the store's share of RSS).
    pub cache_bytes: u64,
    /// Results older than this are pruned (0: no age limit).
    pub max_age_s: u64,
    /// At most this many results are kept (0: no limit).
    pub max_records: usize,
    /// The results' logical size (keys plus encoded values) is kept at or
    /// below this (0: no limit). sled's files take more than this on disk.
    pub max_bytes: u64,
    /// Below this much free space on the store's filesystem no result is
    /// written; below twice this no snapshot (0: no floor).
    pub min_free_bytes: u64,
    /// Keep the frame of results matching the snapshot rule.
    pub snapshots: bool,
    /// Snapshot only results with one of these labels (empty: any label).
    pub snapshot_labels: Vec<String>,
    /// ... scoring at least this.
    pub snapshot_min_score: f32,
    /// At most this many snapshots per minute (0: no limit).
    pub snapshot_max_per_minute: u32,
    /// Snapshots kept at most (oldest deleted first; 0: no limit).
    pub snapshot_max_count: usize,
    /// Bytes of snapshots kept at most (0: no limit).
    pub snapshot_max_bytes: u64,
    /// Which per-frame results are stored (issue 18).
    pub keep_frames: sightings::KeepFrames,
    /// With `keep_frames` = sightings or sampled: one frame stored every
    /// this many seconds.
    pub frame_sample_s: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub max_connections: usize,
    pub header_read_timeout_ms: u64,
    pub keep_alive_idle_ms: u64,
    pub max_results_limit: usize,
    pub auth_fail_rate_per_s: f64,
    pub auth_fail_burst: u32,
    pub key_rate_per_s: f64,
    pub key_burst: u32,
    pub max_body_bytes: u64,
    pub cors_allowed_origins: Vec<String>,
    pub max_concurrent_uploads: usize,
    pub upload_queue: usize,
    pub max_upload_pixels: u64,
    pub max_model_bytes: u64,
    pub max_event_subscribers: usize,
    pub event_heartbeat_ms: u64,
    /// PEM CA certificate(s) API clients' certificates must chain to (mTLS).
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    // --- Request bodies (issue 21) ---
    /// Every body may take this long plus a second per `body_min_bytes_per_s`.
    pub body_timeout_ms: u64,
    pub body_min_bytes_per_s: u64,
    /// Bytes of request bodies held at once (default: 4 × `max_body_bytes`).
    pub body_budget_bytes: u64,
    // Connection limits (issue 21).
    pub max_connections_per_address: usize,
    pub max_handshakes_per_address: usize,
    pub tls_handshake_timeout_ms: u64,
    // Browser sessions (issue 20, web page).
    /// A session unused for this long ends.
    pub session_idle_s: u64,
    /// A session ends this long after sign-in, used or not.
    pub session_max_s: u64,
    /// Viewers of the latest frames at once.
    pub max_frame_viewers: usize,
    /// Frames per second each viewer may fetch.
    pub frame_max_fps: f64,
}

/// The MQTT protocol version spoken to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum MqttProtocol {
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

/// `[mqtt]`: publishing results to a broker, with store-and-forward.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MqttSettings {
    pub enabled: bool,
    pub host: String,
    pub port: u16,
    pub protocol: MqttProtocol,
    pub tls: bool,
    /// PEM CA certificates the broker's certificate must chain to (unset:
    /// the system's roots).
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    /// A file holding the password (first line), so the config holds no secret.
    pub password_file: Option<PathBuf>,
    /// Empty: the host name.
    pub device_id: String,
    /// Empty: `spotter-<device_id>`.
    pub client_id: String,
    /// Topics; `{device_id}` is replaced.
    pub result_topic: String,
    pub status_topic: String,
    pub event_topic: String,
    /// Sightings started and ended (issue 18), store-and-forward like results.
    pub sighting_topic: String,
    pub keep_alive_s: u64,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// Results published and not yet acknowledged, at most.
    pub max_inflight: u16,
    /// The backlog (results queued before the current connection) is sent
    /// at most this fast; live results are not limited.
    pub drain_rate_per_s: f64,
    pub outbox_max_records: usize,
    pub outbox_max_bytes: u64,
    pub homeassistant: bool,
    pub homeassistant_prefix: String,
    pub homeassistant_labels: Vec<String>,
}

/// The validated, effective settings.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Settings {
    pub daemon: DaemonSettings,
    /// The first source (the only one with a single `[source]`).
    #[serde(skip)]
    pub source: SourceSettings,
    /// Every configured source, in file order (several cameras, issue 19);
    /// `sources[0]` is `source`. Written back as `[source]` when there is
    /// one, as `[[source]]` when there are several.
    #[serde(rename = "source", serialize_with = "sources::serialize")]
    pub sources: Vec<SourceSettings>,
    pub model: ModelSettings,
    pub store: StoreSettings,
    pub api: ApiSettings,
    pub mqtt: MqttSettings,
    pub gpio: gpio::GpioSettings,
    /// `[sightings]` (issue 18).
    pub sightings: sightings::SightingsSettings,
    /// `[[zone]]` entries (issue 18).
    #[serde(rename = "zone")]
    pub zones: Vec<sightings::ZoneSettings>,
    /// `[motion]` (issue 18).
    pub motion: sightings::MotionConfig,
    /// `[[privacy_mask]]` entries (issue 23).
    #[serde(rename = "privacy_mask")]
    pub privacy_masks: Vec<privacy::PrivacyMaskSettings>,
    /// `[privacy]` (issue 23).
    pub privacy: privacy::PrivacySettings,
    /// `[power]` (issue 22).
    pub power: power::PowerSettings,
    /// `[rollout]` (issue 22).
    pub rollout: rollout::RolloutSettings,
    /// `[audit]` (issue 23).
    pub audit: audit::AuditSettings,
    /// `[backup]` (issue 23).
    pub backup: backup::BackupSettings,
    /// `[signing]` (issue 22): trusted model-signing keys.
    pub signing: signing::SigningSettings,
    /// The files that were read, in the order they were layered.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

impl SourceSettings {
    pub(crate) fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }
}

/// `[source]` keys of `kind = "http_mjpeg"` (issue 19): `url` (required for
/// that kind; http or https, with a host, no credentials in it),
/// `credentials_file` and `ca_file` (https only); `max_frame_bytes` is
/// shared with `command` ([`check_command_source`]).
fn http_mjpeg_source(l: &Layers, mut s: SourceSettings) -> Result<SourceSettings, ConfigError> {
    let url = l.get(|r| r.source.as_ref()?.url.as_ref());
    let creds = l.get(|r| r.source.as_ref()?.credentials_file.as_ref());
    let ca = l.get(|r| r.source.as_ref()?.ca_file.as_ref());
    if let Some(o) = &url {
        check_stream_url(&o.value).map_err(|m| invalid(o, "source.url", m))?;
    }
    if s.kind == SourceKind::HttpMjpeg && url.is_none() {
        let kind = l.get(|r| r.source.as_ref()?.kind.as_ref());
        return Err(ConfigError::Missing {
            path: kind
                .map(|o| o.path.display().to_string())
                .unwrap_or_default(),
            key: "source.url".into(),
            message: "required when source.kind = \"http_mjpeg\" (e.g. \"http://192.0.2.10/mjpg/video.mjpg\")".into(),
        });
    }
    if let (Some(o), Some(u)) = (&ca, &url) {
        if !u.value.to_ascii_lowercase().starts_with("https://") {
            return Err(invalid(
                o,
                "source.ca_file",
                "only used with an https:// source.url",
            ));
        }
    }
    s.url = url.map(|o| o.value);
    s.credentials_file = creds.map(|o| o.value);
    s.ca_file = ca.map(|o| o.value);
    Ok(s)
}

/// Why `url` is not a usable stream URL: scheme http/https, a host, no
/// `user:password@` (credentials belong in `source.credentials_file`, not in
/// a file that logs and status may show).
pub(crate) fn check_stream_url(url: &str) -> Result<(), String> {
    let lower = url.to_ascii_lowercase();
    let rest = if let Some(r) = lower.strip_prefix("http://") {
        r
    } else if let Some(r) = lower.strip_prefix("https://") {
        r
    } else {
        return Err("must start with http:// or https://".into());
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(
            "must not contain credentials (user:password@); put `user:password` in the file named by source.credentials_file".into(),
        );
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return Err("has an unclosed [ in its host".into()),
        },
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
        return Err("has a port that is not a number between 1 and 65535".into());
    }
    if host.is_empty() {
        return Err("has no host".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters".into());
    }
    Ok(())
}

/// The drop-in directory for a config file: `spotter.toml` → `spotter.d/`.
pub(crate) fn dropin_dir(main: &Path) -> PathBuf {
    let stem = main
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    main.with_file_name(format!("{stem}.d"))
}

/// Load the main file and its drop-ins, then validate.
pub(crate) fn load(main: &Path) -> Result<Settings, ConfigError> {
    let mut files = vec![main.to_path_buf()];
    let dir = dropin_dir(main);
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            let mut dropins: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
                .collect();
            dropins.sort();
            files.extend(dropins);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError::Read {
                path: dir.display().to_string(),
                source: e,
            })
        }
    }
    let mut sources = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| ConfigError::Read {
            path: f.display().to_string(),
            source: e,
        })?;
        sources.push((f.clone(), text));
    }
    from_sources(sources)
}

/// Validate already-read files (path, text), layered in the given order.
pub fn from_sources(sources: Vec<(PathBuf, String)>) -> Result<Settings, ConfigError> {
    let layers = Layers::parse(sources)?;
    build(&layers)
}

fn invalid<T>(o: &Origin<T>, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: o.path.display().to_string(),
        line: o.line,
        column: o.column,
        key: key.to_string(),
        message: message.into(),
    }
}

/// A layered value or its default.
fn val<T: Clone>(o: &Option<Origin<T>>, default: T) -> T {
    o.as_ref().map(|o| o.value.clone()).unwrap_or(default)
}

/// A default duration as the milliseconds its `_ms` key holds.
fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn in_range<T>(
    o: &Option<Origin<T>>,
    key: &str,
    ok: impl Fn(&T) -> bool,
    what: &str,
) -> Result<(), ConfigError> {
    match o {
        Some(o) if !ok(&o.value) => Err(invalid(o, key, what.to_string())),
        _ => Ok(()),
    }
}

/// Default `store.cache_bytes`: sled's page cache (its own default is 1 GiB,
/// more than a Pi Zero 2 has). 4 MiB holds the recent pages of every tree
/// the pipeline writes and the API reads; it was 16 MiB, which a long-running
/// daemon filled (the soak's anonymous memory climbing 26 -> 33-35 MiB), a
/// third of the "model + 30 MiB" RSS goal (issue 21).
pub const DEFAULT_STORE_CACHE_BYTES: u64 = 4 << 20;
/// Bounds of `store.cache_bytes`.
const MIN_STORE_CACHE_BYTES: u64 = 1 << 20;
const MAX_STORE_CACHE_BYTES: u64 = 1 << 30;

/// Default `source.max_frame_bytes` (`command`, `http_mjpeg`): room for a
/// high-quality 4K JPEG or a raw 4K YUYV frame.
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 16 * 1024 * 1024;

/// The `[source]` rules of `kind = "command"` and of the formats only it
/// reads: a named program, a format it can read (not `auto`), and the frame
/// size set explicitly for raw formats; v4l2 refuses the YUV 4:2:0 formats.
fn check_command_source(
    kind_v: SourceKind,
    kind: &Option<Origin<SourceKind>>,
    format: &Option<Origin<CaptureFormat>>,
    command: &Option<Origin<Vec<String>>>,
    width: &Option<Origin<u32>>,
    height: &Option<Origin<u32>>,
    max_frame: &Option<Origin<u64>>,
) -> Result<(), ConfigError> {
    in_range(
        max_frame,
        "source.max_frame_bytes",
        |v| (1024..=268_435_456).contains(v),
        "must be between 1024 and 268435456 (256 MiB)",
    )?;
    let fmt = format.as_ref().map(|o| o.value);
    if kind_v != SourceKind::Command {
        if let Some(o) = format
            .as_ref()
            .filter(|o| matches!(o.value, CaptureFormat::Yuv420 | CaptureFormat::Nv12))
        {
            return Err(invalid(
                o,
                "source.format",
                "a v4l2 camera is read as \"auto\", \"mjpeg\" or \"yuyv\"; \"yuv420\" and \"nv12\" are for kind = \"command\"",
            ));
        }
        return Ok(());
    }
    let kind_path = || {
        kind.as_ref()
            .map(|o| o.path.display().to_string())
            .unwrap_or_default()
    };
    let Some(cmd) = command else {
        return Err(ConfigError::Missing {
            path: kind_path(),
            key: "source.command".into(),
            message: "required when source.kind = \"command\": the program and its arguments, e.g. [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"-o\", \"-\"]".into(),
        });
    };
    if cmd.value.first().is_none_or(|p| p.trim().is_empty()) {
        return Err(invalid(
            cmd,
            "source.command",
            "must name a program first (an argv list, run without a shell)",
        ));
    }
    if let Some(o) = format.as_ref().filter(|o| o.value == CaptureFormat::Auto) {
        return Err(invalid(
            o,
            "source.format",
            "a command's output is not negotiated: say \"mjpeg\", \"yuv420\", \"nv12\" or \"yuyv\"",
        ));
    }
    if let Some(f @ (CaptureFormat::Yuyv | CaptureFormat::Yuv420 | CaptureFormat::Nv12)) = fmt {
        let name = format!("{f:?}").to_lowercase();
        for (o, key) in [(width, "source.width"), (height, "source.height")] {
            if o.is_none() {
                return Err(ConfigError::Missing {
                    path: kind_path(),
                    key: key.into(),
                    message: format!(
                        "required when source.kind = \"command\" and source.format = \"{name}\" (raw frames carry no size)"
                    ),
                });
            }
        }
    }
    Ok(())
}

fn build(l: &Layers) -> Result<Settings, ConfigError> {
    // [daemon]
    let state_dir = l.get(|r| r.daemon.as_ref()?.state_dir.as_ref());
    let log_level = l.get(|r| r.daemon.as_ref()?.log_level.as_ref());
    in_range(
        &log_level,
        "daemon.log_level",
        |s: &String| matches!(s.as_str(), "error" | "warn" | "info" | "debug" | "trace"),
        "must be one of error, warn, info, debug, trace",
    )?;
    let state_dir: PathBuf = val(&state_dir, PathBuf::from("/var/lib/spotter"));
    let daemon = DaemonSettings {
        state_dir: state_dir.clone(),
        log_level: val(&log_level, "info".into()),
    };

    // [source] or [[source]] (several cameras, issue 19): see `sources`.
    let (source, sources) = sources::build_sources(l)?;
    build_after_sources(l, daemon, source, sources)
}

/// One source from `[source]` keys: the layered `[source]` table, or one
/// `[[source]]` entry seen as such (see `sources`).
fn build_source(l: &Layers) -> Result<SourceSettings, ConfigError> {
    // [source]
    let kind = l.get(|r| r.source.as_ref()?.kind.as_ref());
    let device = l.get(|r| r.source.as_ref()?.device.as_ref());
    let width = l.get(|r| r.source.as_ref()?.width.as_ref());
    let height = l.get(|r| r.source.as_ref()?.height.as_ref());
    let fps = l.get(|r| r.source.as_ref()?.fps.as_ref());
    let format = l.get(|r| r.source.as_ref()?.format.as_ref());
    let buffers = l.get(|r| r.source.as_ref()?.buffers.as_ref());
    let dir = l.get(|r| r.source.as_ref()?.dir.as_ref());
    let looping = l.get(|r| r.source.as_ref()?.r#loop.as_ref());
    let retry_initial = l.get(|r| r.source.as_ref()?.retry_initial_ms.as_ref());
    let retry_max = l.get(|r| r.source.as_ref()?.retry_max_ms.as_ref());
    let stall = l.get(|r| r.source.as_ref()?.stall_timeout_ms.as_ref());
    // kind = "command"
    let command = l.get(|r| r.source.as_ref()?.command.as_ref());
    let max_frame = l.get(|r| r.source.as_ref()?.max_frame_bytes.as_ref());
    in_range(
        &width,
        "source.width",
        |v| (16..=8192).contains(v),
        "must be between 16 and 8192",
    )?;
    in_range(
        &height,
        "source.height",
        |v| (16..=8192).contains(v),
        "must be between 16 and 8192",
    )?;
    in_range(
        &fps,
        "source.fps",
        |v: &f64| v.is_finite() && *v > 0.0 && *v <= 240.0,
        "must be > 0 and at most 240",
    )?;
    in_range(
        &buffers,
        "source.buffers",
        |v| (2..=32).contains(v),
        "must be between 2 and 32",
    )?;
    in_range(
        &retry_initial,
        "source.retry_initial_ms",
        |v| (10..=600_000).contains(v),
        "must be between 10 and 600000",
    )?;
    in_range(
        &retry_max,
        "source.retry_max_ms",
        |v| (10..=3_600_000).contains(v),
        "must be between 10 and 3600000",
    )?;
    in_range(
        &stall,
        "source.stall_timeout_ms",
        |v| (100..=600_000).contains(v),
        "must be between 100 and 600000",
    )?;
    let kind_v = val(&kind, SourceKind::V4l2);
    if kind_v == SourceKind::Files && dir.is_none() {
        let path = kind
            .as_ref()
            .map(|o| o.path.display().to_string())
            .unwrap_or_default();
        return Err(ConfigError::Missing {
            path,
            key: "source.dir".into(),
            message: "required when source.kind = \"files\"".into(),
        });
    }
    check_command_source(
        kind_v, &kind, &format, &command, &width, &height, &max_frame,
    )?;
    // Short reopen delays: a camera that comes back is streaming again
    // within 2 s (issue 19); the same error is logged once, not per retry.
    let retry_initial_ms = val(&retry_initial, 250);
    let retry_max_ms = val(&retry_max, retry_initial_ms.max(1_000));
    if retry_max_ms < retry_initial_ms {
        // Both defaults satisfy the rule, so at least one of them was set.
        let (o, key) = match (&retry_max, &retry_initial) {
            (Some(o), _) => (o.as_pos(), "source.retry_max_ms"),
            (None, Some(o)) => (o.as_pos(), "source.retry_initial_ms"),
            (None, None) => unreachable!("defaults are consistent"),
        };
        return Err(invalid(
            &o,
            key,
            "source.retry_max_ms must be >= source.retry_initial_ms",
        ));
    }
    let mut source = SourceSettings {
        kind: kind_v,
        device: val(&device, PathBuf::from("/dev/video0")),
        width: val(&width, 640),
        height: val(&height, 480),
        fps: val(
            &fps,
            if kind_v == SourceKind::Files {
                2.0
            } else {
                15.0
            },
        ),
        format: val(
            &format,
            if kind_v == SourceKind::Command {
                CaptureFormat::Mjpeg
            } else {
                CaptureFormat::Auto
            },
        ),
        buffers: val(&buffers, 4),
        dir: dir.map(|o| o.value),
        looping: val(&looping, true),
        retry_initial_ms,
        retry_max_ms,
        // Unset: a multiple of the frame interval, set below.
        stall_timeout_ms: val(&stall, 0),
        url: None,
        credentials_file: None,
        ca_file: None,
        command: command.map(|o| o.value).unwrap_or_default(),
        max_frame_bytes: val(&max_frame, DEFAULT_MAX_FRAME_BYTES),
        // Several sources (issue 19): set by `sources::build_sources`.
        name: String::new(),
    };
    if stall.is_none() {
        source.stall_timeout_ms = sources::default_stall_ms(source.fps);
    }
    http_mjpeg_source(l, source)
}

/// The sections after the sources.
fn build_after_sources(
    l: &Layers,
    daemon: DaemonSettings,
    source: SourceSettings,
    sources: Vec<SourceSettings>,
) -> Result<Settings, ConfigError> {
    let state_dir = daemon.state_dir.clone();
    let model = model::build_model(l)?;

    // [store]
    let sdir = l.get(|r| r.store.as_ref()?.dir.as_ref());
    let flush = l.get(|r| r.store.as_ref()?.flush_every_ms.as_ref());
    in_range(
        &flush,
        "store.flush_every_ms",
        |v| (1..=600_000).contains(v),
        "must be between 1 and 600000",
    )?;
    let cache = l.get(|r| r.store.as_ref()?.cache_bytes.as_ref());
    in_range(
        &cache,
        "store.cache_bytes",
        |v| (MIN_STORE_CACHE_BYTES..=MAX_STORE_CACHE_BYTES).contains(v),
        "must be between 1048576 (1 MiB) and 1073741824 (1 GiB)",
    )?;
    let max_age = l.get(|r| r.store.as_ref()?.max_age_s.as_ref());
    let max_records = l.get(|r| r.store.as_ref()?.max_records.as_ref());
    let max_bytes = l.get(|r| r.store.as_ref()?.max_bytes.as_ref());
    let min_free = l.get(|r| r.store.as_ref()?.min_free_bytes.as_ref());
    let snapshots = l.get(|r| r.store.as_ref()?.snapshots.as_ref());
    let snap_labels = l.get(|r| r.store.as_ref()?.snapshot_labels.as_ref());
    let snap_min = l.get(|r| r.store.as_ref()?.snapshot_min_score.as_ref());
    in_range(
        &snap_min,
        "store.snapshot_min_score",
        |v: &f32| v.is_finite(),
        "must be a finite number",
    )?;
    let snap_rate = l.get(|r| r.store.as_ref()?.snapshot_max_per_minute.as_ref());
    let snap_count = l.get(|r| r.store.as_ref()?.snapshot_max_count.as_ref());
    let snap_bytes = l.get(|r| r.store.as_ref()?.snapshot_max_bytes.as_ref());
    let (keep_frames, frame_sample_s) = sightings::build_keep(l)?;
    let store = StoreSettings {
        dir: val(&sdir, state_dir.join("results")),
        flush_every_ms: val(&flush, 1_000),
        cache_bytes: val(&cache, DEFAULT_STORE_CACHE_BYTES),
        max_age_s: val(&max_age, 30 * 24 * 3600),
        max_records: val(&max_records, 1_000_000),
        max_bytes: val(&max_bytes, 1 << 30),
        min_free_bytes: val(&min_free, 64 << 20),
        snapshots: val(&snapshots, false),
        snapshot_labels: val(&snap_labels, Vec::new()),
        snapshot_min_score: val(&snap_min, 0.5),
        snapshot_max_per_minute: val(&snap_rate, 6),
        snapshot_max_count: val(&snap_count, 10_000),
        snapshot_max_bytes: val(&snap_bytes, 256 << 20),
        keep_frames,
        frame_sample_s,
    };

    // [api]
    let listen = l.get(|r| r.api.as_ref()?.listen.as_ref());
    let cert = l.get(|r| r.api.as_ref()?.cert.as_ref());
    let key = l.get(|r| r.api.as_ref()?.key.as_ref());
    let maxc = l.get(|r| r.api.as_ref()?.max_connections.as_ref());
    let hrt = l.get(|r| r.api.as_ref()?.header_read_timeout_ms.as_ref());
    let kai = l.get(|r| r.api.as_ref()?.keep_alive_idle_ms.as_ref());
    let mrl = l.get(|r| r.api.as_ref()?.max_results_limit.as_ref());
    let listen_v: SocketAddr = match &listen {
        Some(o) => o
            .value
            .parse()
            .map_err(|e| invalid(o, "api.listen", format!("not an address:port ({e})")))?,
        None => SocketAddr::from(([127, 0, 0, 1], 8443)),
    };
    in_range(
        &maxc,
        "api.max_connections",
        |v| (1..=65_536).contains(v),
        "must be between 1 and 65536",
    )?;
    in_range(
        &hrt,
        "api.header_read_timeout_ms",
        |v| (100..=600_000).contains(v),
        "must be between 100 and 600000",
    )?;
    in_range(
        &kai,
        "api.keep_alive_idle_ms",
        |v| (100..=3_600_000).contains(v),
        "must be between 100 and 3600000",
    )?;
    in_range(
        &mrl,
        "api.max_results_limit",
        |v| (1..=100_000).contains(v),
        "must be between 1 and 100000",
    )?;
    let afr = l.get(|r| r.api.as_ref()?.auth_fail_rate_per_s.as_ref());
    let afb = l.get(|r| r.api.as_ref()?.auth_fail_burst.as_ref());
    let krs = l.get(|r| r.api.as_ref()?.key_rate_per_s.as_ref());
    let kb = l.get(|r| r.api.as_ref()?.key_burst.as_ref());
    let mbb = l.get(|r| r.api.as_ref()?.max_body_bytes.as_ref());
    let cors = l.get(|r| r.api.as_ref()?.cors_allowed_origins.as_ref());
    let rate_ok = |v: &f64| v.is_finite() && (0.01..=1_000_000.0).contains(v);
    in_range(
        &afr,
        "api.auth_fail_rate_per_s",
        rate_ok,
        "must be between 0.01 and 1000000",
    )?;
    in_range(
        &krs,
        "api.key_rate_per_s",
        rate_ok,
        "must be between 0.01 and 1000000",
    )?;
    in_range(
        &afb,
        "api.auth_fail_burst",
        |v| (1..=1_000_000).contains(v),
        "must be between 1 and 1000000",
    )?;
    in_range(
        &kb,
        "api.key_burst",
        |v| (1..=1_000_000).contains(v),
        "must be between 1 and 1000000",
    )?;
    in_range(
        &mbb,
        "api.max_body_bytes",
        |v| (1..=1 << 30).contains(v),
        "must be between 1 and 1073741824",
    )?;
    in_range(
        &cors,
        "api.cors_allowed_origins",
        |v| v.iter().all(|o| is_valid_origin(o)),
        "each origin must be of the form \"https://host[:port]\" (lower case, no path or trailing slash)",
    )?;
    let mcu = l.get(|r| r.api.as_ref()?.max_concurrent_uploads.as_ref());
    let uq = l.get(|r| r.api.as_ref()?.upload_queue.as_ref());
    let mup = l.get(|r| r.api.as_ref()?.max_upload_pixels.as_ref());
    let mmb = l.get(|r| r.api.as_ref()?.max_model_bytes.as_ref());
    let mes = l.get(|r| r.api.as_ref()?.max_event_subscribers.as_ref());
    let ehb = l.get(|r| r.api.as_ref()?.event_heartbeat_ms.as_ref());
    in_range(
        &mcu,
        "api.max_concurrent_uploads",
        |v| (1..=64).contains(v),
        "must be between 1 and 64",
    )?;
    in_range(
        &uq,
        "api.upload_queue",
        |v| (0..=256).contains(v),
        "must be between 0 and 256",
    )?;
    in_range(
        &mup,
        "api.max_upload_pixels",
        |v| (1..=1_000_000_000).contains(v),
        "must be between 1 and 1000000000",
    )?;
    in_range(
        &mmb,
        "api.max_model_bytes",
        |v| (1..=1 << 32).contains(v),
        "must be between 1 and 4294967296",
    )?;
    in_range(
        &mes,
        "api.max_event_subscribers",
        |v| (1..=1024).contains(v),
        "must be between 1 and 1024",
    )?;
    in_range(
        &ehb,
        "api.event_heartbeat_ms",
        |v| (100..=3_600_000).contains(v),
        "must be between 100 and 3600000",
    )?;
    if cert.is_some() != key.is_some() {
        let (o, k) = match (&cert, &key) {
            (Some(o), None) => (o.as_pos(), "api.cert"),
            (None, Some(o)) => (o.as_pos(), "api.key"),
            _ => unreachable!("checked above that exactly one is set"),
        };
        return Err(invalid(&o, k, "api.cert and api.key must be set together"));
    }
    let client_ca = l.get(|r| r.api.as_ref()?.client_ca.as_ref());
    let client_auth = l.get(|r| r.api.as_ref()?.client_auth.as_ref());
    // Request bodies (issue 21).
    let bto = l.get(|r| r.api.as_ref()?.body_timeout_ms.as_ref());
    let bmr = l.get(|r| r.api.as_ref()?.body_min_bytes_per_s.as_ref());
    let bbb = l.get(|r| r.api.as_ref()?.body_budget_bytes.as_ref());
    in_range(
        &bto,
        "api.body_timeout_ms",
        |v| (100..=3_600_000).contains(v),
        "must be between 100 and 3600000",
    )?;
    in_range(
        &bmr,
        "api.body_min_bytes_per_s",
        |v| (1..=1 << 30).contains(v),
        "must be between 1 and 1073741824",
    )?;
    let max_body_bytes = val(&mbb, api::DEFAULT_MAX_BODY_BYTES);
    in_range(
        &bbb,
        "api.body_budget_bytes",
        |v| (max_body_bytes..=1 << 34).contains(v),
        "must be at least api.max_body_bytes (a body of the largest size must fit) and at most 17179869184",
    )?;
    // Connection limits (issue 21).
    let mcpa = l.get(|r| r.api.as_ref()?.max_connections_per_address.as_ref());
    let mhpa = l.get(|r| r.api.as_ref()?.max_handshakes_per_address.as_ref());
    let tht = l.get(|r| r.api.as_ref()?.tls_handshake_timeout_ms.as_ref());
    in_range(
        &mcpa,
        "api.max_connections_per_address",
        |v| (1..=65_536).contains(v),
        "must be between 1 and 65536",
    )?;
    in_range(
        &mhpa,
        "api.max_handshakes_per_address",
        |v| (1..=65_536).contains(v),
        "must be between 1 and 65536",
    )?;
    in_range(
        &tht,
        "api.tls_handshake_timeout_ms",
        |v| (100..=600_000).contains(v),
        "must be between 100 and 600000",
    )?;
    // Browser sessions (issue 20).
    let sis = l.get(|r| r.api.as_ref()?.session_idle_s.as_ref());
    let sms = l.get(|r| r.api.as_ref()?.session_max_s.as_ref());
    in_range(
        &sis,
        "api.session_idle_s",
        |v| (60..=604_800).contains(v),
        "must be between 60 and 604800",
    )?;
    let session_idle_s = val(&sis, api::DEFAULT_SESSION_IDLE.as_secs());
    in_range(
        &sms,
        "api.session_max_s",
        |v| (session_idle_s..=2_592_000).contains(v),
        "must be at least api.session_idle_s and at most 2592000",
    )?;
    let session_max_s = val(&sms, api::DEFAULT_SESSION_MAX.as_secs());
    if session_max_s < session_idle_s {
        if let Some(o) = &sis {
            return Err(invalid(
                o,
                "api.session_idle_s",
                format!("must be at most api.session_max_s ({session_max_s})"),
            ));
        }
    }
    // The latest-frame route (issue 20).
    let mfv = l.get(|r| r.api.as_ref()?.max_frame_viewers.as_ref());
    let fmf = l.get(|r| r.api.as_ref()?.frame_max_fps.as_ref());
    in_range(
        &mfv,
        "api.max_frame_viewers",
        |v| (1..=64).contains(v),
        "must be between 1 and 64",
    )?;
    in_range(
        &fmf,
        "api.frame_max_fps",
        |v| (0.1..=30.0).contains(v),
        "must be between 0.1 and 30",
    )?;
    // client_auth alone is accepted (and has no effect): `check-config`
    // prints it with its default, and its output must load back.
    let api = ApiSettings {
        listen: listen_v,
        cert: cert.map(|o| o.value),
        key: key.map(|o| o.value),
        max_connections: val(&maxc, api::DEFAULT_MAX_CONNECTIONS),
        header_read_timeout_ms: val(&hrt, ms(api::DEFAULT_HEADER_READ_TIMEOUT)),
        keep_alive_idle_ms: val(&kai, ms(api::DEFAULT_KEEP_ALIVE_IDLE)),
        max_results_limit: val(&mrl, 1_000),
        auth_fail_rate_per_s: val(&afr, api::DEFAULT_AUTH_FAIL_RATE_PER_S),
        auth_fail_burst: val(&afb, api::DEFAULT_AUTH_FAIL_BURST),
        key_rate_per_s: val(&krs, api::DEFAULT_KEY_RATE_PER_S),
        key_burst: val(&kb, api::DEFAULT_KEY_BURST),
        max_body_bytes: val(&mbb, api::DEFAULT_MAX_BODY_BYTES),
        cors_allowed_origins: val(&cors, Vec::new()),
        max_concurrent_uploads: val(&mcu, api::DEFAULT_MAX_CONCURRENT_UPLOADS),
        upload_queue: val(&uq, api::DEFAULT_UPLOAD_QUEUE),
        max_upload_pixels: val(&mup, api::DEFAULT_MAX_UPLOAD_PIXELS),
        max_model_bytes: val(&mmb, api::DEFAULT_MAX_MODEL_BYTES),
        max_event_subscribers: val(&mes, api::DEFAULT_MAX_EVENT_SUBSCRIBERS),
        event_heartbeat_ms: val(&ehb, api::DEFAULT_EVENT_HEARTBEAT.as_millis() as u64),
        client_ca: client_ca.map(|o| o.value),
        client_auth: val(&client_auth, ClientAuth::Required),
        body_timeout_ms: val(&bto, 10_000),
        body_min_bytes_per_s: val(&bmr, 32 * 1024),
        body_budget_bytes: val(&bbb, max_body_bytes.saturating_mul(4)),
        max_connections_per_address: val(&mcpa, api::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS),
        max_handshakes_per_address: val(&mhpa, api::DEFAULT_MAX_HANDSHAKES_PER_ADDRESS),
        tls_handshake_timeout_ms: val(&tht, ms(api::DEFAULT_TLS_HANDSHAKE_TIMEOUT)),
        session_idle_s,
        session_max_s,
        max_frame_viewers: val(&mfv, api::DEFAULT_MAX_FRAME_VIEWERS),
        frame_max_fps: val(&fmf, api::DEFAULT_FRAME_MAX_FPS),
    };

    let mqtt = build_mqtt(l)?;
    let gpio = gpio::build_gpio(l)?;
    let sightings = sightings::build_sightings(l)?;
    let names: Vec<String> = sources.iter().map(|s| s.name.clone()).collect();
    let zones = sightings::build_zones(l, &names)?;
    let motion = sightings::build_motion(l)?;
    let privacy_masks = privacy::build_privacy_masks(l, &names)?;
    let privacy = privacy::build_privacy(l)?;
    let power = power::build_power(l)?;
    let rollout = rollout::build_rollout(l)?;
    let audit = audit::build_audit(l)?;
    let backup = backup::build_backup(l)?;
    let signing = signing::build_signing(l)?;

    Ok(Settings {
        daemon,
        source,
        sources,
        model,
        store,
        api,
        mqtt,
        gpio,
        sightings,
        zones,
        motion,
        privacy_masks,
        privacy,
        power,
        rollout,
        audit,
        backup,
        signing,
        files: l.paths(),
    })
}

/// A topic (before `{device_id}` is replaced) that a broker accepts for publishing.
fn valid_topic(t: &str) -> bool {
    !t.is_empty() && t.len() <= 1024 && !t.contains(['+', '#', '\0'])
}

fn build_mqtt(l: &Layers) -> Result<MqttSettings, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.mqtt.as_ref()?.$f.as_ref())
        };
    }
    let (enabled, host, port, protocol, tls) = (
        get!(enabled),
        get!(host),
        get!(port),
        get!(protocol),
        get!(tls),
    );
    let (ca_file, client_cert, client_key) = (get!(ca_file), get!(client_cert), get!(client_key));
    let (username, password_file, device_id, client_id) = (
        get!(username),
        get!(password_file),
        get!(device_id),
        get!(client_id),
    );
    let (result_topic, status_topic, event_topic) =
        (get!(result_topic), get!(status_topic), get!(event_topic));
    // Sightings (issue 18).
    let sighting_topic = get!(sighting_topic);
    let (keep_alive, r_init, r_max, inflight) = (
        get!(keep_alive_s),
        get!(reconnect_initial_ms),
        get!(reconnect_max_ms),
        get!(max_inflight),
    );
    let (drain, ob_records, ob_bytes) = (
        get!(drain_rate_per_s),
        get!(outbox_max_records),
        get!(outbox_max_bytes),
    );
    let (ha, ha_prefix, ha_labels) = (
        get!(homeassistant),
        get!(homeassistant_prefix),
        get!(homeassistant_labels),
    );
    in_range(
        &host,
        "mqtt.host",
        |h: &String| !h.is_empty() && !h.contains(char::is_whitespace),
        "must be a host name or address",
    )?;
    in_range(
        &port,
        "mqtt.port",
        |p| *p > 0,
        "must be between 1 and 65535",
    )?;
    let id_ok = |s: &String| {
        s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    in_range(
        &device_id,
        "mqtt.device_id",
        id_ok,
        "at most 64 characters from A-Z a-z 0-9 - _ .",
    )?;
    in_range(
        &client_id,
        "mqtt.client_id",
        |s: &String| s.len() <= 128 && !s.contains(char::is_whitespace),
        "at most 128 characters, no spaces",
    )?;
    for (o, key) in [
        (&result_topic, "mqtt.result_topic"),
        (&status_topic, "mqtt.status_topic"),
        (&event_topic, "mqtt.event_topic"),
        (&sighting_topic, "mqtt.sighting_topic"),
    ] {
        in_range(
            o,
            key,
            |t: &String| valid_topic(t),
            "must be a non-empty topic without the wildcards + and #",
        )?;
    }
    in_range(
        &ha_prefix,
        "mqtt.homeassistant_prefix",
        |t: &String| valid_topic(t),
        "must be a non-empty topic without the wildcards + and #",
    )?;
    in_range(
        &keep_alive,
        "mqtt.keep_alive_s",
        |v| (5..=3600).contains(v),
        "must be between 5 and 3600",
    )?;
    in_range(
        &r_init,
        "mqtt.reconnect_initial_ms",
        |v| (10..=600_000).contains(v),
        "must be between 10 and 600000",
    )?;
    in_range(
        &r_max,
        "mqtt.reconnect_max_ms",
        |v| (10..=3_600_000).contains(v),
        "must be between 10 and 3600000",
    )?;
    in_range(
        &inflight,
        "mqtt.max_inflight",
        |v| (1..=1000).contains(v),
        "must be between 1 and 1000",
    )?;
    in_range(
        &drain,
        "mqtt.drain_rate_per_s",
        |v: &f64| v.is_finite() && (0.1..=1_000_000.0).contains(v),
        "must be between 0.1 and 1000000",
    )?;
    in_range(
        &ob_records,
        "mqtt.outbox_max_records",
        |v| (1..=100_000_000).contains(v),
        "must be between 1 and 100000000",
    )?;
    in_range(
        &ob_bytes,
        "mqtt.outbox_max_bytes",
        |v| (4096..=1 << 40).contains(v),
        "must be between 4096 and 1099511627776",
    )?;
    in_range(
        &ha_labels,
        "mqtt.homeassistant_labels",
        |v: &Vec<String>| {
            v.len() <= 100
                && v.iter()
                    .all(|s| !s.is_empty() && s.len() <= 200 && !s.contains(['{', '}', '%']))
        },
        "at most 100 non-empty labels without { } %",
    )?;
    if client_cert.is_some() != client_key.is_some() {
        let (o, k) = match (&client_cert, &client_key) {
            (Some(o), None) => (o.as_pos(), "mqtt.client_cert"),
            (None, Some(o)) => (o.as_pos(), "mqtt.client_key"),
            _ => unreachable!("checked above that exactly one is set"),
        };
        return Err(invalid(
            &o,
            k,
            "mqtt.client_cert and mqtt.client_key must be set together",
        ));
    }
    if let (Some(o), None) = (&password_file, &username) {
        return Err(invalid(
            o,
            "mqtt.password_file",
            "needs mqtt.username (MQTT sends no password without a user name)",
        ));
    }
    let reconnect_initial_ms = val(&r_init, 1_000);
    let reconnect_max_ms = val(&r_max, 30_000);
    if reconnect_max_ms < reconnect_initial_ms {
        let o = r_max
            .as_ref()
            .map(|o| o.as_pos())
            .or_else(|| r_init.as_ref().map(|o| o.as_pos()));
        if let Some(o) = o {
            return Err(invalid(
                &o,
                "mqtt.reconnect_max_ms",
                "must be >= mqtt.reconnect_initial_ms",
            ));
        }
    }
    Ok(MqttSettings {
        enabled: val(&enabled, false),
        host: val(&host, "localhost".into()),
        port: val(&port, 8883),
        protocol: val(&protocol, MqttProtocol::V311),
        tls: val(&tls, true),
        ca_file: ca_file.map(|o| o.value),
        client_cert: client_cert.map(|o| o.value),
        client_key: client_key.map(|o| o.value),
        username: username.map(|o| o.value),
        password_file: password_file.map(|o| o.value),
        device_id: val(&device_id, String::new()),
        client_id: val(&client_id, String::new()),
        result_topic: val(&result_topic, "spotter/{device_id}/result".into()),
        status_topic: val(&status_topic, "spotter/{device_id}/status".into()),
        event_topic: val(&event_topic, "spotter/{device_id}/event".into()),
        sighting_topic: val(&sighting_topic, "spotter/{device_id}/sighting".into()),
        keep_alive_s: val(&keep_alive, 30),
        reconnect_initial_ms,
        reconnect_max_ms,
        max_inflight: val(&inflight, 32),
        drain_rate_per_s: val(&drain, 200.0),
        outbox_max_records: val(&ob_records, 100_000),
        outbox_max_bytes: val(&ob_bytes, 64 << 20),
        homeassistant: val(&ha, false),
        homeassistant_prefix: val(&ha_prefix, "homeassistant".into()),
        homeassistant_labels: val(&ha_labels, Vec::new()),
    })
}

impl Settings {
    /// The effective settings as TOML, for `spotter check-config`.
    pub(crate) fn to_toml(&self) -> String {
        // Serialization of plain structs of strings, numbers, paths and
        // vectors cannot fail; fall back to Debug output if it ever does.
        let text = toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# could not render settings: {e}\n{self:#?}"));
        // Unset keys are left out; say what they mean for the two whose
        // default depends on the model.
        let unset: Vec<&str> = [
            ("min_score", self.model.min_score.is_none()),
            ("fit", self.model.fit.is_none()),
            ("pad_value", self.model.pad_value.is_none()),
        ]
        .into_iter()
        .filter_map(|(k, none)| none.then_some(k))
        .collect();
        if unset.is_empty() {
            return text;
        }
        let note = format!(
            "[model]\n# {} unset: the model family's default\n",
            unset.join(", ")
        );
        text.replacen("[model]\n", &note, 1)
    }
}

#[cfg(test)]
mod tests;
