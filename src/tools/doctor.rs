//! `spotter doctor`: the checks a technician runs first. Each check looks at
//! one thing the daemon needs (camera, model, TLS certificate, state
//! directory, clock, recent results) and yields one [`Finding`]: a verdict,
//! what was seen, and a fix hint. The report exits non-zero when any check
//! fails; warnings (an unsynchronized clock, a certificate close to expiry)
//! do not fail it.
//!
//! Every check takes its inputs explicitly (paths, thresholds, the current
//! time) so tests can drive it with temporary directories and fake files.
//! Nothing here changes the system: the camera is queried, not streamed;
//! the store is opened only when the daemon is not holding it (otherwise
//! the newest result is asked of the daemon's API, read-only).
//!
//! Why one file of some 1,110 lines: about 750 are the checks, each a small
//! function a technician's report line comes from, and the rest their tests.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config::{
    ApiSettings, CaptureFormat, ModelSettings, Settings, SourceKind, SourceSettings, StoreSettings,
};
use crate::core::result::ResultRecord;

/// Less free space than this on the state filesystem fails the state check:
/// sled needs room to write new segments before it can reclaim old ones.
pub(crate) const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// A certificate expiring within this is a warning.
pub(crate) const CERT_WARN_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The newest result older than this fails the last-result check (the
/// daemon stores a result for every frame it infers).
pub(crate) const MAX_RESULT_AGE: Duration = Duration::from_secs(5 * 60);

/// Errors setting up the doctor itself (not findings: those are the report).
#[derive(Debug, thiserror::Error)]
pub(crate) enum DoctorError {
    #[error("writing the report: {0}")]
    Output(#[source] std::io::Error),
}

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ok,
    /// Works, but needs attention.
    Warn,
    /// The daemon cannot do its job until this is fixed.
    Fail,
    /// Not applicable or not checkable here (said why).
    Skip,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Finding {
    pub check: &'static str,
    pub verdict: Verdict,
    /// What was seen.
    pub detail: String,
    /// What to do about it (empty when nothing is needed).
    pub hint: String,
    /// A configuration block to paste, printed under the line as is
    /// (empty when there is none).
    pub paste: String,
}

impl Finding {
    fn new(
        check: &'static str,
        verdict: Verdict,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Finding {
        Finding {
            check,
            verdict,
            detail: detail.into(),
            hint: hint.into(),
            paste: String::new(),
        }
    }
    fn with_paste(self, paste: String) -> Finding {
        Finding { paste, ..self }
    }
    fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding::new(check, Verdict::Ok, detail, "")
    }
}

/// All findings, in the order the checks ran.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any check failed (the command's exit status).
    pub(crate) fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.verdict == Verdict::Fail)
    }

    /// One line per check: `verdict check: detail (fix: hint)`.
    pub(crate) fn to_text(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            s.push_str(&format!(
                "{:<4} {:<11} {}",
                f.verdict.label(),
                f.check,
                one_line(&f.detail)
            ));
            if !f.hint.is_empty() {
                s.push_str(&format!(" (fix: {})", one_line(&f.hint)));
            }
            s.push('\n');
            for line in f.paste.lines() {
                s.push_str(&format!("    {line}\n"));
            }
        }
        let failed = self
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Fail)
            .count();
        let warned = self
            .findings
            .iter()
            .filter(|f| f.verdict == Verdict::Warn)
            .count();
        s.push_str(&format!(
            "{} checks: {failed} failed, {warned} warnings\n",
            self.findings.len()
        ));
        s
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Run every check against `settings` at the current time.
pub(crate) fn run(settings: &Settings) -> Report {
    let now = SystemTime::now();
    let synced = crate::core::clock::clock_synchronized();
    // Every configured source, named when there are several.
    let sources = if settings.sources.is_empty() {
        std::slice::from_ref(&settings.source)
    } else {
        &settings.sources[..]
    };
    let mut findings: Vec<Finding> = sources
        .iter()
        .map(|s| {
            let mut f = check_source(s);
            if sources.len() > 1 {
                f.detail = format!("{}: {}", s.name, f.detail);
            }
            f
        })
        .collect();
    findings.extend([
        check_model(&settings.model, &settings.daemon.state_dir),
        check_tls(&settings.api, &settings.daemon.state_dir, now),
        check_state_dir(&settings.daemon.state_dir, &settings.store, MIN_FREE_BYTES),
        check_clock(synced),
        check_last_result(&settings.store, now, MAX_RESULT_AGE, || {
            latest_from_daemon(settings)
        }),
    ]);
    Report { findings }
}

/// The frame source: a camera that exists, may be opened, is a V4L2 capture
/// device and offers a format Spotter decodes; or a folder with images; or
/// a program that can be run.
pub(crate) fn check_source(s: &SourceSettings) -> Finding {
    match s.kind {
        SourceKind::Files => check_folder(s),
        SourceKind::V4l2 => check_camera(s),
        SourceKind::HttpMjpeg => check_http_mjpeg(s),
        SourceKind::Command => check_command(s),
    }
}

/// An `http_mjpeg` source: connect and read one frame.
fn check_http_mjpeg(s: &SourceSettings) -> Finding {
    use crate::capture::http_mjpeg::{HttpMjpegOptions, HttpMjpegSource};
    use crate::capture::{CaptureError, FrameSource};
    let opts = HttpMjpegOptions::from_settings(s);
    let url = crate::capture::http_mjpeg::shown_url(&opts.url);
    match HttpMjpegSource::open(opts).and_then(|mut src| src.next_frame()) {
        Ok(f) => Finding::ok(
            "source",
            format!("MJPEG stream {url}: a {}-byte frame arrived", f.data.len()),
        ),
        Err(e) => {
            let hint = match &e {
                CaptureError::HttpAuth { .. } => {
                    "put the camera's user:password on the first line of source.credentials_file"
                }
                CaptureError::HttpSetup { .. } => {
                    "fix the file named (readable by the service user only: chmod 600)"
                }
                _ => {
                    "open source.url in a browser or `curl -s --max-time 3 URL | head -c 300`; \
                     it must serve multipart/x-mixed-replace (the camera's MJPEG stream)"
                }
            };
            Finding::new("source", Verdict::Fail, one_line(&e.to_string()), hint)
        }
    }
}

/// A `command` source: its program is found (in `PATH` or at the path
/// given) and executable. It is not started: doctor changes nothing.
fn check_command(s: &SourceSettings) -> Finding {
    let program = s.command.first().cloned().unwrap_or_default();
    let found = crate::capture::command::find_program(&program);
    match found {
        Some(path) => Finding::ok(
            "source",
            format!(
                "command {} ({}), format {}",
                path.display(),
                s.command.join(" "),
                format_name(s.format)
            ),
        ),
        None => Finding::new(
            "source",
            Verdict::Fail,
            format!("command {program}: not found or not executable"),
            "install it (rpicam-vid: apt install rpicam-apps; ffmpeg: apt install ffmpeg) or give its full path as the first item of source.command",
        ),
    }
}

fn format_name(f: CaptureFormat) -> &'static str {
    match f {
        CaptureFormat::Auto => "auto",
        CaptureFormat::Mjpeg => "mjpeg",
        CaptureFormat::Yuyv => "yuyv",
        CaptureFormat::Yuv420 => "yuv420",
        CaptureFormat::Nv12 => "nv12",
    }
}

fn check_folder(s: &SourceSettings) -> Finding {
    let dir = s.dir.clone().unwrap_or_default();
    let opts = crate::capture::files::FilesOptions {
        dir: dir.clone(),
        fps: s.fps,
        looping: s.looping,
    };
    match crate::capture::files::FilesSource::open(opts) {
        Ok(src) => Finding::ok(
            "source",
            format!("folder {}: {} images", dir.display(), src.image_count()),
        ),
        Err(e) => Finding::new(
            "source",
            Verdict::Fail,
            e.to_string(),
            format!(
                "put JPEG, PNG or BMP photos in {} readable by the service user, or set source.dir",
                dir.display()
            ),
        ),
    }
}

fn check_camera(s: &SourceSettings) -> Finding {
    use v4l::video::Capture;
    let device = s.device.as_path();
    let name = device.display();
    let meta = match std::fs::metadata(device) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Finding::new(
                "source",
                Verdict::Fail,
                format!("camera {name}: not found"),
                "check the cable; `ls -l /dev/video*` and `v4l2-ctl --list-devices` list cameras; set source.device",
            )
        }
        Err(e) => return Finding::new("source", Verdict::Fail, format!("camera {name}: {e}"), "check the device path"),
    };
    if !meta.file_type().is_char_device() {
        return Finding::new(
            "source",
            Verdict::Fail,
            format!("camera {name}: not a character device"),
            "source.device must be a /dev/video* node",
        );
    }
    let dev = match v4l::Device::with_path(device) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Finding::new(
                "source",
                Verdict::Fail,
                format!("camera {name}: permission denied"),
                "the service user must be in group `video` (`id spotter`); run doctor as that user: sudo -u spotter spotter doctor",
            )
        }
        Err(e) => return Finding::new("source", Verdict::Fail, format!("camera {name}: open: {e}"), "check `dmesg` for driver errors"),
    };
    let caps = match dev.query_caps() {
        Ok(c) => c,
        Err(e) => {
            return Finding::new(
                "source",
                Verdict::Fail,
                format!("camera {name}: not a V4L2 device ({e})"),
                "source.device must be a camera's capture node; `v4l2-ctl --list-devices`",
            )
        }
    };
    let formats = match dev.enum_formats() {
        Ok(f) => f,
        Err(e) => {
            return Finding::new(
                "source",
                Verdict::Fail,
                format!("camera {name}: VIDIOC_ENUM_FMT: {e}"),
                "check `dmesg`",
            )
        }
    };
    let cam = CameraDescription {
        card: caps.card,
        driver: caps.driver,
        formats: formats
            .iter()
            .map(|f| f.fourcc.str().unwrap_or("????").to_string())
            .collect(),
    };
    judge_camera(&name.to_string(), &cam, s)
}

/// What doctor learned of a V4L2 capture node: the seam between probing
/// the device and judging it, so the judgement is tested with fake devices.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CameraDescription {
    pub card: String,
    pub driver: String,
    /// The fourccs VIDIOC_ENUM_FMT lists, e.g. `MJPG`, `YUYV`, `pRAA`.
    pub formats: Vec<String>,
}

/// V4L2 drivers of Raspberry Pi CSI receivers: only libcamera can drive
/// the sensor behind them (ISP, tuning, controls).
const LIBCAMERA_DRIVERS: &[&str] = &["unicam", "bcm2835-unicam", "rp1-cfe"];

/// Raw Bayer fourccs (8 to 16 bits, packed, MIPI-packed and the Pi 5's
/// compressed ones): a camera offering only these needs an ISP.
fn is_raw_bayer(fourcc: &str) -> bool {
    const BAYER: &[&str] = &[
        "BA81", "GBRG", "GRBG", "RGGB", "BG10", "GB10", "BA10", "RG10", "pBAA", "pGAA", "pgAA",
        "pRAA", "BG12", "GB12", "BA12", "RG12", "pBCC", "pGCC", "pgCC", "pRCC", "BG14", "GB14",
        "GR14", "RG14", "pBEE", "pGEE", "pgEE", "pREE", "BYR2", "GB16", "GR16", "RG16", "PC1B",
        "PC1G", "PC1g", "PC1R",
    ];
    BAYER.contains(&fourcc)
}

/// Whether the camera is one only libcamera can drive (a Pi camera module).
fn is_libcamera_only(cam: &CameraDescription) -> bool {
    LIBCAMERA_DRIVERS.contains(&cam.driver.as_str())
        || (!cam.formats.is_empty() && cam.formats.iter().all(|f| is_raw_bayer(f)))
}

/// The `[source]` block that reads a Pi camera module through rpicam-vid
/// (MJPEG), at the configured size and rate.
pub(crate) fn libcamera_source_block(s: &SourceSettings) -> String {
    let fps = s.fps.round().max(1.0) as u32;
    // A source with a name of its own is a `[[source]]` entry; the single
    // `[source]` table (what the package installs) is named "default".
    let header = if s.name.is_empty() || s.name == crate::config::DEFAULT_SOURCE_NAME {
        "[source]\n".to_string()
    } else {
        format!("[[source]]\nname = \"{}\"\n", s.name)
    };
    format!(
        "{header}\
         kind = \"command\"\n\
         command = [\"rpicam-vid\", \"-t\", \"0\", \"--codec\", \"mjpeg\", \"--width\", \"{w}\", \"--height\", \"{h}\", \"--framerate\", \"{fps}\", \"-n\", \"-o\", \"-\"]\n\
         format = \"mjpeg\"\n",
        w = s.width,
        h = s.height,
    )
}

/// Judge a described camera against the settings.
pub(crate) fn judge_camera(name: &str, cam: &CameraDescription, s: &SourceSettings) -> Finding {
    let has = |code: &str| cam.formats.iter().any(|o| o == code);
    let usable = match s.format {
        CaptureFormat::Auto => has("MJPG") || has("YUYV"),
        CaptureFormat::Mjpeg => has("MJPG"),
        CaptureFormat::Yuyv => has("YUYV"),
        // Not for v4l2 (config refuses them there).
        CaptureFormat::Yuv420 | CaptureFormat::Nv12 => false,
    };
    let detail = format!(
        "camera {name}: {} ({}), formats {}",
        cam.card,
        cam.driver,
        cam.formats.join(" ")
    );
    if usable {
        Finding::ok("source", detail)
    } else if is_libcamera_only(cam) {
        Finding::new(
            "source",
            Verdict::Fail,
            format!("{detail}: a libcamera camera (Pi camera module), not readable as V4L2"),
            "read it through rpicam-vid (apt install rpicam-apps): replace this source's section with the block below",
        )
        .with_paste(libcamera_source_block(s))
    } else {
        Finding::new(
            "source",
            Verdict::Fail,
            detail,
            "Spotter needs MJPG or YUYV; set source.format = \"auto\" or use another camera",
        )
    }
}

/// The model the daemon would load (a managed active version, else
/// `model.path`): it loads and passes its canary inference.
pub(crate) fn check_model(model: &ModelSettings, state_dir: &Path) -> Finding {
    let store = crate::modelstore::ModelStore::new(state_dir);
    let m = crate::pipeline::effective_model(model, Some(&store));
    match crate::pipeline::load_model(&m) {
        Ok(l) => Finding::ok(
            "model",
            format!(
                "{} loads and passes its canary on {} ({}; sha256 {})",
                m.path.display(),
                l.status.runtime,
                l.status.kind,
                l.status.sha256.get(..16).unwrap_or(&l.status.sha256)
            ),
        ),
        Err(e) => Finding::new(
            "model",
            Verdict::Fail,
            format!("{}: {e}", m.path.display()),
            "`spotter model list` / `spotter model rollback`, or set model.path; test a model with `spotter classify --model M photo.jpg`",
        ),
    }
}

/// The certificate the API serves: configured (`api.cert`/`api.key`) or
/// generated in `<state_dir>/tls/`. Valid now, not expiring within
/// [`CERT_WARN_BEFORE`], with a readable private key.
pub(crate) fn check_tls(api: &ApiSettings, state_dir: &Path, now: SystemTime) -> Finding {
    let generated = api.cert.is_none();
    let cert = api
        .cert
        .clone()
        .unwrap_or_else(|| state_dir.join("tls/cert.pem"));
    let key = api
        .key
        .clone()
        .unwrap_or_else(|| state_dir.join("tls/key.pem"));
    let fail = |detail: String, hint: &str| Finding::new("tls", Verdict::Fail, detail, hint);
    let pem = match std::fs::read(&cert) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && generated => {
            return Finding::new(
                "tls",
                Verdict::Warn,
                format!("no certificate yet at {}", cert.display()),
                "the daemon generates one on first start: systemctl start spotter",
            )
        }
        Err(e) => {
            return fail(
                format!("certificate {}: {e}", cert.display()),
                "set api.cert to a readable PEM file",
            )
        }
    };
    let der = match rustls_pemfile::certs(&mut &pem[..]).next() {
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            return fail(
                format!("certificate {}: {e}", cert.display()),
                "api.cert must be a PEM certificate chain",
            )
        }
        None => {
            return fail(
                format!("certificate {}: no CERTIFICATE block", cert.display()),
                "api.cert must be a PEM certificate chain",
            )
        }
    };
    let parsed = match x509_parser::parse_x509_certificate(der.as_ref()) {
        Ok((_, c)) => c,
        Err(e) => {
            return fail(
                format!("certificate {}: {e}", cert.display()),
                "replace the certificate",
            )
        }
    };
    match std::fs::read(&key).map(|k| rustls_pemfile::private_key(&mut &k[..])) {
        Ok(Ok(Some(_))) => {}
        Ok(_) => {
            return fail(
                format!("private key {}: no PEM private key in it", key.display()),
                "set api.key to the certificate's PEM key",
            )
        }
        Err(e) => {
            return fail(
                format!("private key {}: {e}", key.display()),
                "set api.key to a file readable by the service user",
            )
        }
    }
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    };
    let now_s = unix(now);
    let not_before = parsed.validity().not_before.timestamp();
    let not_after = parsed.validity().not_after.timestamp();
    let fp = crate::api::tls::fingerprint(der.as_ref());
    let until = parsed
        .validity()
        .not_after
        .to_rfc2822()
        .unwrap_or_else(|_| not_after.to_string());
    let renew = if generated {
        format!(
            "delete {} and restart: a new self-signed certificate is generated (clients must trust the new fingerprint)",
            state_dir.join("tls").display()
        )
    } else {
        "install a renewed certificate at api.cert/api.key and reload".to_string()
    };
    if now_s < not_before {
        return fail(
            format!(
                "certificate {} not valid before {}",
                cert.display(),
                parsed.validity().not_before
            ),
            "the clock may be wrong (see the clock check); else replace the certificate",
        );
    }
    if now_s > not_after {
        return fail(
            format!("certificate {} expired {until}", cert.display()),
            &renew,
        );
    }
    let left = Duration::from_secs((not_after - now_s) as u64);
    if left < CERT_WARN_BEFORE {
        return Finding::new(
            "tls",
            Verdict::Warn,
            format!(
                "certificate {} expires in {} days ({until})",
                cert.display(),
                left.as_secs() / 86_400
            ),
            renew,
        );
    }
    Finding::ok(
        "tls",
        format!(
            "certificate {} valid until {until}, SHA-256 {fp}",
            cert.display()
        ),
    )
}

/// The state directory exists, is writable by this user, and its filesystem
/// has at least `min_free` bytes free; a warning when the store's retention
/// (`max_bytes`, about twice that on disk) no longer fits.
pub(crate) fn check_state_dir(state_dir: &Path, store: &StoreSettings, min_free: u64) -> Finding {
    let dir = state_dir.display();
    match std::fs::metadata(state_dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Finding::new("state", Verdict::Fail, format!("{dir} is not a directory"), "set daemon.state_dir to a directory"),
        Err(e) => {
            return Finding::new(
                "state",
                Verdict::Fail,
                format!("{dir}: {e}"),
                "systemd creates it (StateDirectory=): systemctl start spotter; or set daemon.state_dir",
            )
        }
    }
    if let Err(e) = tempfile::Builder::new()
        .prefix(".doctor-")
        .tempfile_in(state_dir)
    {
        return Finding::new(
            "state",
            Verdict::Fail,
            format!("{dir} is not writable: {e}"),
            "it must belong to the service user: chown -R spotter:spotter /var/lib/spotter; run doctor as that user",
        );
    }
    let st = match nix::sys::statvfs::statvfs(state_dir) {
        Ok(s) => s,
        Err(e) => {
            return Finding::new(
                "state",
                Verdict::Fail,
                format!("{dir}: statvfs: {e}"),
                "check the filesystem (`df -h`)",
            )
        }
    };
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    let store_bytes = dir_size(&store.dir);
    let detail = format!(
        "{dir} writable, {} free, store {} on disk",
        mib(free),
        mib(store_bytes)
    );
    if free < min_free {
        return Finding::new(
            "state",
            Verdict::Fail,
            detail,
            format!("free space below {}: lower store.max_bytes or max_age_s, or export and delete old results", mib(min_free)),
        );
    }
    let wanted = store.max_bytes.saturating_mul(2);
    if store.max_bytes > 0 && free.saturating_add(store_bytes) < wanted {
        return Finding::new(
            "state",
            Verdict::Warn,
            detail,
            format!(
                "store.max_bytes = {} needs about {} on disk; lower it or free space",
                mib(store.max_bytes),
                mib(wanted)
            ),
        );
    }
    Finding::ok("state", detail)
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0))
}

/// Bytes in the files under `dir` (0 when it does not exist).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Clock synchronization (NTP): unsynchronized is a warning; results are
/// still stored, marked as such.
pub(crate) fn check_clock(synchronized: bool) -> Finding {
    if synchronized {
        Finding::ok("clock", "system clock synchronized")
    } else {
        Finding::new(
            "clock",
            Verdict::Warn,
            "system clock not synchronized: result times may be wrong (they are marked)",
            "`timedatectl`; enable NTP (`systemctl status systemd-timesyncd` or chrony) and check the network",
        )
    }
}

/// The newest result, asked of the running daemon's API (it holds the
/// store's lock): `GET /api/v1/results/latest` with an admin key found as
/// `spotter export` finds one ([`crate::tools::localapi`]). Ok(None): none stored.
fn latest_from_daemon(settings: &Settings) -> Result<Option<ResultRecord>, String> {
    let api = crate::tools::localapi::LocalApi::new(settings, None).map_err(|e| e.to_string())?;
    match api.get("/api/v1/results/latest") {
        Ok(body) => serde_json::from_reader(body)
            .map(Some)
            .map_err(|e| format!("unexpected answer: {e}")),
        Err(crate::tools::localapi::LocalApiError::Refused { status: 404, .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The newest stored result is younger than `max_age`. While the daemon
/// runs it holds the store's lock; the newest result then comes from
/// `ask_daemon` (its API), and if that fails the check is skipped with why.
pub(crate) fn check_last_result(
    store: &StoreSettings,
    now: SystemTime,
    max_age: Duration,
    ask_daemon: impl FnOnce() -> Result<Option<ResultRecord>, String>,
) -> Finding {
    if !store.dir.exists() {
        return Finding::new(
            "results",
            Verdict::Skip,
            format!("no store at {} yet", store.dir.display()),
            "start the daemon: systemctl start spotter",
        );
    }
    let (newest, via) = match crate::store::Store::open_with(&store.dir, store.flush_every_ms) {
        Ok(s) => (s.latest().map_err(|e| format!("reading the newest result: {e}")), ""),
        Err(crate::store::StoreError::Locked { .. }) => match ask_daemon() {
            Ok(r) => (Ok(r), " (asked the running daemon)"),
            Err(e) => {
                return Finding::new(
                    "results",
                    Verdict::Skip,
                    format!("the running daemon holds the store, and its API did not answer: {e}"),
                    "pass a key: SPOTTER_API_KEY=<admin key> spotter doctor, or run as the spotter user",
                )
            }
        },
        Err(e) => return Finding::new("results", Verdict::Fail, format!("{}: {e}", store.dir.display()), "see `journalctl -u spotter -p warning`"),
    };
    let latest = match newest {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Finding::new(
                "results",
                Verdict::Fail,
                "no result stored yet",
                "the daemon stores one per inferred frame: check the source and model lines above and `systemctl status spotter`",
            )
        }
        Err(e) => return Finding::new("results", Verdict::Fail, e, "see `journalctl -u spotter`"),
    };
    let ts = SystemTime::UNIX_EPOCH + Duration::from_nanos(latest.ts_ns);
    let age = now.duration_since(ts).unwrap_or_default();
    let detail = format!(
        "newest result {} s old ({}, {}){via}",
        age.as_secs(),
        latest.source,
        latest.model_sha256.get(..16).unwrap_or("")
    );
    if age > max_age {
        Finding::new(
            "results",
            Verdict::Fail,
            detail,
            "no new results: is the daemon running (`systemctl status spotter`)? look for camera lost / model rejected in `journalctl -u spotter`",
        )
    } else {
        Finding::ok("results", detail)
    }
}

/// Print the report to `out`; the caller turns [`Report::failed`] into the
/// exit status.
pub(crate) fn print(report: &Report, out: &mut impl std::io::Write) -> Result<(), DoctorError> {
    out.write_all(report.to_text().as_bytes())
        .map_err(DoctorError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::result::ResultRecord;
    use std::path::PathBuf;

    /// The documented defaults (an empty config file).
    fn defaults() -> Settings {
        crate::config::from_sources(vec![(PathBuf::from("spotter.toml"), String::new())]).unwrap()
    }

    fn api(cert: Option<PathBuf>, key: Option<PathBuf>) -> ApiSettings {
        let mut s = defaults();
        s.api.cert = cert;
        s.api.key = key;
        s.api
    }

    fn store_settings(dir: &Path, max_bytes: u64) -> StoreSettings {
        let mut s = defaults().store;
        s.dir = dir.to_path_buf();
        s.max_bytes = max_bytes;
        s
    }

    /// A self-signed certificate valid from `from` to `to` (seconds from now),
    /// written as cert.pem/key.pem under `dir`.
    fn cert(dir: &Path, from: i64, to: i64) -> (PathBuf, PathBuf) {
        let now = time::OffsetDateTime::now_utc();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_before = now + time::Duration::seconds(from);
        params.not_after = now + time::Duration::seconds(to);
        let key = rcgen::KeyPair::generate().unwrap();
        let c = params.self_signed(&key).unwrap();
        let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cp, c.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        (cp, kp)
    }

    const DAY: i64 = 86_400;

    // Would catch an expired, not-yet-valid or soon-expiring certificate
    // being reported as fine (clients would fail TLS with no hint why).
    #[test]
    fn tls_verdicts_follow_the_validity_window() {
        let d = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let verdict = |from, to| {
            let (c, k) = cert(d.path(), from, to);
            check_tls(&api(Some(c), Some(k)), d.path(), now)
        };
        let ok = verdict(-DAY, 365 * DAY);
        assert_eq!(ok.verdict, Verdict::Ok, "{ok:?}");
        assert!(ok.detail.contains("SHA-256"), "fingerprint shown: {ok:?}");
        let expired = verdict(-10 * DAY, -DAY);
        assert_eq!(expired.verdict, Verdict::Fail, "{expired:?}");
        assert!(expired.detail.contains("expired"));
        assert_eq!(
            verdict(DAY, 365 * DAY).verdict,
            Verdict::Fail,
            "not yet valid"
        );
        let soon = verdict(-DAY, 10 * DAY);
        assert_eq!(soon.verdict, Verdict::Warn, "{soon:?}");
        assert!(
            soon.detail.contains("expires in 9 days") || soon.detail.contains("expires in 10 days"),
            "{soon:?}"
        );
    }

    // Would catch a missing or unusable certificate/key passing, or the
    // not-yet-generated self-signed case being reported as a failure.
    #[test]
    fn tls_missing_or_broken_material() {
        let d = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let first_start = check_tls(&api(None, None), d.path(), now);
        assert_eq!(first_start.verdict, Verdict::Warn, "{first_start:?}");
        let missing = check_tls(&api(Some(d.path().join("nope.pem")), None), d.path(), now);
        assert_eq!(missing.verdict, Verdict::Fail, "{missing:?}");
        let garbage = d.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        assert_eq!(
            check_tls(&api(Some(garbage), None), d.path(), now).verdict,
            Verdict::Fail
        );
        let (c, _) = cert(d.path(), -DAY, 365 * DAY);
        let no_key = check_tls(
            &api(Some(c), Some(d.path().join("missing-key.pem"))),
            d.path(),
            now,
        );
        assert_eq!(no_key.verdict, Verdict::Fail, "{no_key:?}");
        assert!(no_key.detail.contains("private key"));
    }

    // Would catch a camera path that is missing, not a device, or not a V4L2
    // device passing the check, or the hint not saying where to look.
    #[test]
    fn camera_missing_not_a_device_or_not_v4l2_fails() {
        let d = tempfile::tempdir().unwrap();
        let cam = |p: &Path| {
            let mut s = defaults().source;
            s.device = p.to_path_buf();
            check_camera(&s)
        };
        let missing = cam(&d.path().join("video9"));
        assert_eq!(missing.verdict, Verdict::Fail);
        assert!(
            missing.detail.contains("not found") && missing.hint.contains("/dev/video"),
            "{missing:?}"
        );
        let file = d.path().join("video0");
        std::fs::write(&file, b"").unwrap();
        let plain = cam(&file);
        assert!(
            plain.verdict == Verdict::Fail && plain.detail.contains("not a character device"),
            "{plain:?}"
        );
        // /dev/null is a character device that answers VIDIOC_QUERYCAP with ENOTTY.
        let null = cam(Path::new("/dev/null"));
        assert!(
            null.verdict == Verdict::Fail && null.detail.contains("not a V4L2 device"),
            "{null:?}"
        );
    }

    fn described(driver: &str, formats: &[&str]) -> CameraDescription {
        CameraDescription {
            card: "test camera".into(),
            driver: driver.into(),
            formats: formats.iter().map(|f| f.to_string()).collect(),
        }
    }

    // Would catch a Pi camera module (unicam / rp1-cfe, or raw Bayer only)
    // getting "use another camera" instead of the block that reads it, a
    // block that does not parse or does not say kind = "command" with
    // rpicam-vid's MJPEG argv at the configured size, or a UVC camera with
    // an unusable format being taken for a libcamera one.
    #[test]
    fn libcamera_only_camera_gets_the_rpicam_vid_block_to_paste() {
        let mut s = defaults().source;
        s.width = 1280;
        s.height = 720;
        for cam in [
            described("unicam", &["pRAA", "RG10", "GREY"]),
            described("rp1-cfe", &["PC1R", "pRAA", "RGGB"]),
            described("some-bridge", &["pBAA", "BA81"]),
        ] {
            let f = judge_camera("/dev/video0", &cam, &s);
            assert_eq!(f.verdict, Verdict::Fail, "{f:?}");
            assert!(f.detail.contains("libcamera"), "{f:?}");
            assert!(!f.hint.contains("another camera"), "{f:?}");
            let parsed =
                crate::config::from_sources(vec![(PathBuf::from("pasted.toml"), f.paste.clone())])
                    .unwrap_or_else(|e| panic!("the block does not load: {e}\n{}", f.paste));
            assert_eq!(parsed.source.kind, SourceKind::Command);
            assert_eq!(parsed.source.format, CaptureFormat::Mjpeg);
            assert_eq!(
                parsed.source.command.join(" "),
                "rpicam-vid -t 0 --codec mjpeg --width 1280 --height 720 --framerate 15 -n -o -"
            );
            let mut r = Report::default();
            r.findings.push(f);
            let text = r.to_text();
            assert!(text.contains("\n    kind = \"command\"\n"), "{text}");
        }
        let uvc = judge_camera("/dev/video0", &described("uvcvideo", &["H264"]), &s);
        assert!(
            uvc.verdict == Verdict::Fail && uvc.paste.is_empty(),
            "{uvc:?}"
        );
        assert!(uvc.hint.contains("MJPG or YUYV"), "{uvc:?}");
        let ok = judge_camera("/dev/video0", &described("uvcvideo", &["YUYV", "MJPG"]), &s);
        assert_eq!(ok.verdict, Verdict::Ok, "{ok:?}");
        // A `[[source]]` entry (a name of its own) gets an entry with that
        // name, which loads as one of several sources.
        s.name = "door".into();
        let f = judge_camera("/dev/video2", &described("unicam", &["pRAA"]), &s);
        assert!(
            f.paste.starts_with("[[source]]\nname = \"door\"\n"),
            "{}",
            f.paste
        );
        let two = format!(
            "{}\n[[source]]\nname = \"usb\"\ndevice = \"/dev/video0\"\n",
            f.paste
        );
        let parsed = crate::config::from_sources(vec![(PathBuf::from("pasted.toml"), two)])
            .unwrap_or_else(|e| panic!("the entry does not load: {e}\n{}", f.paste));
        assert_eq!(parsed.sources[0].name, "door");
        assert_eq!(parsed.sources[0].kind, SourceKind::Command);
    }

    // Would catch a command source whose program is missing passing the
    // check, or one that exists failing it.
    #[test]
    fn command_source_needs_its_program() {
        let mut s = defaults().source;
        s.kind = SourceKind::Command;
        s.command = vec!["spotter-no-such-program".into(), "-o".into(), "-".into()];
        let missing = check_source(&s);
        assert!(
            missing.verdict == Verdict::Fail && missing.detail.contains("spotter-no-such-program"),
            "{missing:?}"
        );
        s.command = vec!["sh".into(), "-c".into(), "true".into()];
        let ok = check_source(&s);
        assert_eq!(ok.verdict, Verdict::Ok, "{ok:?}");
    }

    // Would catch an empty replay folder passing, or a usable one failing.
    #[test]
    fn folder_source_needs_images() {
        let d = tempfile::tempdir().unwrap();
        let mut s = defaults().source;
        s.kind = SourceKind::Files;
        s.dir = Some(d.path().to_path_buf());
        assert_eq!(check_source(&s).verdict, Verdict::Fail);
        image::RgbImage::new(4, 4)
            .save(d.path().join("a.png"))
            .unwrap();
        let ok = check_source(&s);
        assert!(
            ok.verdict == Verdict::Ok && ok.detail.contains("1 images"),
            "{ok:?}"
        );
    }

    // Would catch a missing or corrupt model passing the model check.
    #[test]
    fn model_that_does_not_load_fails() {
        let d = tempfile::tempdir().unwrap();
        let mut m = defaults().model;
        m.runtime = crate::config::RuntimeSetting::Builtin;
        m.path = d.path().join("missing.tflite");
        let missing = check_model(&m, d.path());
        assert_eq!(missing.verdict, Verdict::Fail, "{missing:?}");
        m.path = d.path().join("bad.tflite");
        std::fs::write(&m.path, vec![7u8; 4096]).unwrap();
        let bad = check_model(&m, d.path());
        assert!(
            bad.verdict == Verdict::Fail && bad.hint.contains("spotter model"),
            "{bad:?}"
        );
    }

    // Would catch an unusable state directory (missing, a file, too full)
    // passing, or a usable one failing.
    #[test]
    fn state_dir_must_exist_be_writable_and_have_room() {
        let d = tempfile::tempdir().unwrap();
        let store = store_settings(&d.path().join("results"), 0);
        let ok = check_state_dir(d.path(), &store, 0);
        assert_eq!(ok.verdict, Verdict::Ok, "{ok:?}");
        assert!(
            std::fs::read_dir(d.path()).unwrap().next().is_none(),
            "the write probe must clean up"
        );
        let missing = check_state_dir(&d.path().join("absent"), &store, 0);
        assert_eq!(missing.verdict, Verdict::Fail);
        let file = d.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(check_state_dir(&file, &store, 0).verdict, Verdict::Fail);
        let full = check_state_dir(d.path(), &store, u64::MAX);
        assert!(
            full.verdict == Verdict::Fail && full.hint.contains("free space"),
            "{full:?}"
        );
        let too_big = store_settings(&d.path().join("results"), u64::MAX / 4);
        assert_eq!(
            check_state_dir(d.path(), &too_big, 0).verdict,
            Verdict::Warn
        );
    }

    fn record(ts_ns: u64) -> ResultRecord {
        crate::store::tests::rec(ts_ns, 1)
    }

    // Would catch a stale pipeline (newest result old), an empty store or a
    // store held by the running daemon being reported as healthy.
    #[test]
    fn last_result_age_decides() {
        let d = tempfile::tempdir().unwrap();
        let settings = store_settings(&d.path().join("results"), 0);
        let now = SystemTime::now();
        let unasked = || -> Result<Option<ResultRecord>, String> {
            panic!("asked the daemon with the store free")
        };
        assert_eq!(
            check_last_result(&settings, now, MAX_RESULT_AGE, unasked).verdict,
            Verdict::Skip,
            "no store yet"
        );
        {
            let s = crate::store::Store::open(&settings.dir).unwrap();
            // Held open, as by the daemon: the check must not fight over the
            // lock; it asks the daemon, and says why when that fails.
            let held = check_last_result(&settings, now, MAX_RESULT_AGE, || Err("HTTP 401".into()));
            assert!(
                held.verdict == Verdict::Skip
                    && held.detail.contains("daemon")
                    && held.detail.contains("401"),
                "{held:?}"
            );
            let ts = crate::pipeline::unix_ns(now - Duration::from_secs(20));
            let asked = check_last_result(&settings, now, MAX_RESULT_AGE, || Ok(Some(record(ts))));
            assert!(
                asked.verdict == Verdict::Ok
                    && asked.detail.contains("20 s old")
                    && asked.detail.contains("asked"),
                "{asked:?}"
            );
            let none = check_last_result(&settings, now, MAX_RESULT_AGE, || Ok(None));
            assert_eq!(
                none.verdict,
                Verdict::Fail,
                "a running daemon without results is healthy: {none:?}"
            );
            drop(s);
        }
        // sled frees its lock from a background thread after the last
        // handle drops (slowly under qemu): wait for it, as a new process would.
        crate::store::tests::wait_until_free(&settings.dir);
        assert_eq!(
            check_last_result(&settings, now, MAX_RESULT_AGE, unasked).verdict,
            Verdict::Fail,
            "empty store"
        );
        {
            let s = crate::store::Store::open(&settings.dir).unwrap();
            let ts = crate::pipeline::unix_ns(now - Duration::from_secs(30));
            s.insert(&mut record(ts)).unwrap();
            s.flush().unwrap();
        }
        crate::store::tests::wait_until_free(&settings.dir);
        let fresh = check_last_result(&settings, now, MAX_RESULT_AGE, unasked);
        assert!(
            fresh.verdict == Verdict::Ok && fresh.detail.contains("30 s old"),
            "{fresh:?}"
        );
        let later = now + Duration::from_secs(3600);
        assert_eq!(
            check_last_result(&settings, later, MAX_RESULT_AGE, unasked).verdict,
            Verdict::Fail,
            "stale"
        );
    }

    // Would catch a failed check not failing the report (exit status 0), or
    // a warning failing it.
    #[test]
    fn report_fails_only_on_fail_and_prints_one_line_per_check() {
        let mut r = Report::default();
        r.findings.push(Finding::ok("clock", "synchronized"));
        r.findings.push(check_clock(false));
        assert!(!r.failed());
        r.findings.push(Finding::new(
            "model",
            Verdict::Fail,
            "x.tflite: not found\nsecond line",
            "set model.path",
        ));
        assert!(r.failed());
        let text = r.to_text();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(
            text.lines().nth(2).unwrap().starts_with("FAIL model")
                && text.contains("(fix: set model.path)"),
            "{text}"
        );
        assert!(text.ends_with("3 checks: 1 failed, 1 warnings\n"), "{text}");
    }
}
