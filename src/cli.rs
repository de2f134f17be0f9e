//! Command-line interface: the clap definitions and the small commands
//! (`check-config`, `classify`). The daemon itself lives in [`crate::app`].

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Fit, JpegScaling, ModelSettings, RuntimeSetting};
use crate::core::frame::{Frame, PixelFormat};
use crate::logging;
use crate::modelstore::ModelStore;
use crate::pipeline::load_model;

#[derive(Debug, Parser)]
#[command(
    name = "spotter",
    version,
    about = "Camera inference appliance: V4L2 → TFLite → sled → HTTPS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RuntimeArg {
    Auto,
    Litert,
    Builtin,
}

impl From<RuntimeArg> for RuntimeSetting {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Auto => RuntimeSetting::Auto,
            RuntimeArg::Litert => RuntimeSetting::Litert,
            RuntimeArg::Builtin => RuntimeSetting::Builtin,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// The main config file; drop-ins are read from <name>.d/*.toml beside it.
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        /// Path of libLiteRt.so (overrides model.litert_lib).
        #[arg(long, env = "SPOTTER_LITERT_LIB")]
        litert_lib: Option<PathBuf>,
    },
    /// Validate a config (with its drop-ins) and print the effective settings.
    CheckConfig { file: PathBuf },
    /// Measure per-stage latency (decode, resize, quantize, invoke, post, store) of a model per runtime.
    Bench(crate::tools::bench::BenchArgs),
    /// Measure the result store's flash wear: results/s, bytes written to
    /// disk per result and database bytes per million results (one JSON line).
    BenchStore(crate::tools::wear::WearArgs),
    /// Write the result store as NDJSON to stdout. While the daemon runs (it
    /// holds the store's lock) the export comes from its API
    /// (GET /api/v1/backup), with an admin key.
    Export {
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        /// Only results at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// An admin API key for the running daemon (else $SPOTTER_API_KEY,
        /// else <state_dir>/initial-admin-key).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Import an NDJSON export into the result store (service stopped);
    /// idempotent by result id.
    Import {
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        file: PathBuf,
    },
    /// Manage API keys in the state directory (run as the service user).
    Keys {
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Manage model versions in the state directory.
    Model {
        /// The daemon's config (for the state directory and runtime settings).
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        #[command(subcommand)]
        action: ModelAction,
    },
    /// systemd generator (installed as
    /// /usr/lib/systemd/system-generators/spotter-generator): writes a
    /// drop-in granting CAP_NET_BIND_SERVICE when api.listen's port is below
    /// 1024. systemd passes the normal, early and late output directories.
    #[command(hide = true)]
    SystemdGenerator {
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        normal_dir: PathBuf,
        early_dir: Option<PathBuf>,
        late_dir: Option<PathBuf>,
    },
    /// Check camera, model, TLS certificate, state directory, clock and
    /// recent results; one line per check with a fix hint; exit 1 if any
    /// check fails. Run it as the service user: sudo -u spotter spotter doctor
    Doctor {
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
    },
    /// Classify image files with a model and print the top-k for each.
    Classify {
        #[arg(long)]
        model: PathBuf,
        /// Labels file; optional when the model embeds its labels.
        #[arg(long)]
        labels: Option<PathBuf>,
        /// One JSON object per image, one per line.
        #[arg(long)]
        json: bool,
        #[arg(long, value_enum, default_value = "auto")]
        runtime: RuntimeArg,
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// Path of libLiteRt.so.
        #[arg(long, env = "SPOTTER_LITERT_LIB")]
        litert_lib: Option<PathBuf>,
        /// The files are raw frames as a camera delivers them, e.g.
        /// `yuyv:640x480` (packed, no row padding), as written by
        /// `v4l2-ctl --stream-to`; without it they are JPEG, PNG or BMP.
        #[arg(long, value_parser = parse_raw_spec, value_name = "FORMAT:WxH")]
        raw: Option<RawSpec>,
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
}

/// `--raw`: the pixel format and size of raw frame files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSpec {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
}

impl RawSpec {
    /// Bytes per row: packed formats without padding.
    fn stride(&self) -> u32 {
        match self.format {
            PixelFormat::Yuyv => self.width * 2,
            _ => self.width * 3,
        }
    }

    /// The frame in `data`, or why the file cannot be one.
    fn frame(&self, data: Vec<u8>, seq: u64, origin: String) -> anyhow::Result<Frame> {
        let want = self.stride() as usize * self.height as usize;
        if data.len() != want {
            anyhow::bail!(
                "{} bytes, but a {}x{} {:?} frame has {want}",
                data.len(),
                self.width,
                self.height,
                self.format
            );
        }
        let mut frame = Frame::encoded(data, seq, origin);
        frame.format = self.format;
        (frame.width, frame.height, frame.stride) = (self.width, self.height, self.stride());
        Ok(frame)
    }
}

fn parse_raw_spec(s: &str) -> Result<RawSpec, String> {
    let (fmt, size) = s
        .split_once(':')
        .ok_or("expected FORMAT:WxH, e.g. yuyv:640x480")?;
    let format = match fmt.to_ascii_lowercase().as_str() {
        "yuyv" | "yuy2" => PixelFormat::Yuyv,
        "rgb" | "rgb24" | "rgb8" => PixelFormat::Rgb8,
        other => return Err(format!("unknown raw format '{other}' (yuyv or rgb24)")),
    };
    let (w, h) = size
        .split_once(['x', 'X'])
        .ok_or("size must be WxH, e.g. 640x480")?;
    let dim = |v: &str| v.parse::<u32>().ok().filter(|n| (1..=16_384).contains(n));
    let (Some(width), Some(height)) = (dim(w), dim(h)) else {
        return Err(format!(
            "size '{size}': width and height must be 1 to 16384"
        ));
    };
    if format == PixelFormat::Yuyv && width % 2 == 1 {
        return Err(format!(
            "yuyv width {width} must be even (two pixels share U and V)"
        ));
    }
    Ok(RawSpec {
        format,
        width,
        height,
    })
}

#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Create a key; the secret is printed once and never stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "read", value_parser = ["read", "admin"])]
        scope: String,
    },
    /// List keys (metadata only).
    List,
    /// Revoke by id or name; the daemon applies it on the next request.
    Revoke { id_or_name: String },
}

#[derive(Debug, Subcommand)]
pub enum ModelAction {
    /// Validate (load + canary) and install a model version.
    Install {
        file: PathBuf,
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Make it the active version right away.
        #[arg(long)]
        activate: bool,
    },
    /// List installed versions; `*` marks the active one.
    List,
    /// Make a version (sha256 or unique prefix) the active one.
    Activate { version: String },
    /// Return to the previously active version.
    Rollback,
}

/// An error for `main` to report, with the process exit code.
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub code: u8,
}

/// Exit code for invalid configuration or usage.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code for any other failure.
pub const EXIT_FAILURE: u8 = 1;

fn fail(code: u8) -> impl FnOnce(anyhow::Error) -> Failure {
    move |error| Failure { error, code }
}

/// Whether log records reach stderr (so `main` need not print errors twice).
pub fn logs_to_stderr() -> bool {
    !systemd_journal_logger::connected_to_journal()
}

pub fn execute(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run {
            config: path,
            litert_lib,
        } => {
            // Log to stderr until the config says otherwise; errors in the
            // config itself must be visible.
            let mut settings = config::load(&path)
                .map_err(|e| {
                    let _ = logging::init(log::LevelFilter::Info);
                    anyhow::Error::new(e).context("invalid configuration")
                })
                .map_err(fail(EXIT_CONFIG))?;
            logging::init(logging::parse_level(&settings.daemon.log_level)).map_err(|e| {
                Failure {
                    error: e.into(),
                    code: EXIT_FAILURE,
                }
            })?;
            if litert_lib.is_some() {
                settings.model.litert_lib = litert_lib;
            }
            crate::app::run(settings, Some(path)).map_err(fail(EXIT_FAILURE))
        }
        Command::CheckConfig { file } => {
            let _ = logging::init(log::LevelFilter::Warn);
            let s = config::load(&file)
                .map_err(|e| anyhow::Error::new(e).context("invalid configuration"))
                .map_err(fail(EXIT_CONFIG))?;
            let mut out = std::io::stdout().lock();
            let files: Vec<String> = s.files.iter().map(|p| p.display().to_string()).collect();
            let _ = writeln!(out, "# valid; read: {}", files.join(", "));
            let _ = write!(out, "{}", s.to_toml());
            Ok(())
        }
        Command::Bench(args) => {
            let _ = logging::init(log::LevelFilter::Warn);
            let report = crate::tools::bench::run_bench(&args).map_err(|e| {
                let code = if matches!(e, crate::tools::bench::BenchError::Args(_)) {
                    EXIT_CONFIG
                } else {
                    EXIT_FAILURE
                };
                Failure {
                    error: anyhow::Error::new(e).context("spotter bench"),
                    code,
                }
            })?;
            let mut out = std::io::stdout().lock();
            let _ = if args.json {
                writeln!(out, "{}", report.to_json())
            } else {
                write!(out, "{}", report.to_text())
            };
            Ok(())
        }
        Command::BenchStore(args) => {
            let _ = logging::init(log::LevelFilter::Warn);
            let report = crate::tools::wear::run(&args).map_err(|e| Failure {
                error: anyhow::Error::new(e).context("spotter bench-store"),
                code: EXIT_FAILURE,
            })?;
            // A plain struct of numbers always serializes.
            let _ = writeln!(
                std::io::stdout().lock(),
                "{}",
                serde_json::to_string(&report).unwrap_or_default()
            );
            Ok(())
        }
        Command::Export {
            config: path,
            since,
            key_file,
        } => {
            let _ = logging::init(log::LevelFilter::Warn);
            let settings = load_settings(&path)?;
            let since_ns = since
                .as_deref()
                .map(|s| -> anyhow::Result<u64> {
                    let t = time::OffsetDateTime::parse(
                        s,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .with_context(|| format!("--since {s:?} is not an RFC 3339 time"))?;
                    u64::try_from(t.unix_timestamp_nanos()).context("--since is before 1970")
                })
                .transpose()
                .map_err(fail(EXIT_CONFIG))?;
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            let store = match crate::store::Store::open_with(
                &settings.store.dir,
                settings.store.flush_every_ms,
            ) {
                Ok(store) => store,
                Err(crate::store::StoreError::Locked { path }) => {
                    eprintln!(
                        "{} is held by the running daemon; exporting through its API",
                        path.display()
                    );
                    let n = export_from_daemon(&settings, key_file.as_deref(), since_ns, out)
                        .map_err(fail(EXIT_FAILURE))?;
                    eprintln!("exported {n} results");
                    return Ok(());
                }
                Err(e) => {
                    return Err(anyhow::Error::new(e).context("opening the result store"))
                        .map_err(fail(EXIT_FAILURE))
                }
            };
            let bar = indicatif::ProgressBar::new(store.len() as u64);
            let n = crate::store::backup::export(&store, since_ns, out, |k| bar.set_position(k))
                .map_err(|e| anyhow::Error::new(e).context("export"))
                .map_err(fail(EXIT_FAILURE))?;
            bar.finish_and_clear();
            eprintln!("exported {n} results");
            Ok(())
        }
        Command::Import { config: path, file } => {
            let _ = logging::init(log::LevelFilter::Warn);
            let settings = load_settings(&path)?;
            let store = open_store(&settings)?;
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))
                .map_err(fail(EXIT_FAILURE))?;
            let r = crate::store::backup::import(&store, std::io::BufReader::new(f))
                .map_err(|e| anyhow::Error::new(e).context("import"))
                .map_err(fail(EXIT_FAILURE))?;
            store
                .flush()
                .map_err(|e| anyhow::Error::new(e).context("flushing the store"))
                .map_err(fail(EXIT_FAILURE))?;
            for (line, reason) in &r.invalid {
                eprintln!("{}:{line}: {reason}", file.display());
            }
            println!(
                "added {}, skipped {} (already present), invalid {}",
                r.added, r.skipped, r.invalid_count
            );
            if r.invalid_count > 0 {
                return Err(Failure {
                    error: anyhow::anyhow!("{} invalid lines", r.invalid_count),
                    code: EXIT_FAILURE,
                });
            }
            Ok(())
        }
        Command::Keys {
            config: path,
            action,
        } => {
            let _ = logging::init(log::LevelFilter::Warn);
            let settings = config::load(&path)
                .map_err(|e| anyhow::Error::new(e).context("invalid configuration"))
                .map_err(fail(EXIT_CONFIG))?;
            keys_command(&settings, action).map_err(fail(EXIT_FAILURE))
        }
        Command::Model {
            config: path,
            action,
        } => {
            let _ = logging::init(log::LevelFilter::Warn);
            let settings = config::load(&path)
                .map_err(|e| anyhow::Error::new(e).context("invalid configuration"))
                .map_err(fail(EXIT_CONFIG))?;
            model_command(&settings, action).map_err(fail(EXIT_FAILURE))
        }
        Command::SystemdGenerator {
            config: path,
            normal_dir,
            ..
        } => {
            // Generators run early at boot, logging to the kernel log: say
            // what is wrong but never fail the boot transaction.
            let _ = logging::init(log::LevelFilter::Warn);
            match config::load(&path) {
                Ok(s) => match crate::systemd::generate(s.api.listen, &normal_dir) {
                    Ok(Some(p)) => eprintln!(
                        "spotter-generator: api.listen {} is a privileged port; wrote {}",
                        s.api.listen,
                        p.display()
                    ),
                    Ok(None) => {}
                    Err(e) => eprintln!("spotter-generator: {e}"),
                },
                Err(e) => eprintln!(
                    "spotter-generator: {}: {e}; no drop-in written",
                    path.display()
                ),
            }
            Ok(())
        }
        Command::Doctor { config: path } => {
            let _ = logging::init(log::LevelFilter::Error);
            let settings = load_settings(&path)?;
            let report = crate::tools::doctor::run(&settings);
            crate::tools::doctor::print(&report, &mut std::io::stdout().lock()).map_err(|e| {
                Failure {
                    error: e.into(),
                    code: EXIT_FAILURE,
                }
            })?;
            if report.failed() {
                return Err(Failure {
                    error: anyhow::anyhow!("some checks failed (see the fix hints above)"),
                    code: EXIT_FAILURE,
                });
            }
            Ok(())
        }
        Command::Classify {
            model,
            labels,
            json,
            runtime,
            threads,
            top_k,
            litert_lib,
            raw,
            images,
        } => {
            let _ = logging::init(log::LevelFilter::Warn);
            classify(
                model,
                labels,
                json,
                runtime.into(),
                threads,
                top_k,
                litert_lib,
                raw,
                images,
            )
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn classify(
    model: PathBuf,
    labels: Option<PathBuf>,
    json: bool,
    runtime: RuntimeSetting,
    threads: usize,
    top_k: usize,
    litert_lib: Option<PathBuf>,
    raw: Option<RawSpec>,
    images: Vec<PathBuf>,
) -> Result<(), Failure> {
    if threads == 0 || top_k == 0 {
        return Err(Failure {
            error: anyhow::anyhow!("--threads and --top-k must be at least 1"),
            code: EXIT_CONFIG,
        });
    }
    let settings = ModelSettings {
        path: model,
        labels,
        runtime,
        litert_lib,
        threads,
        top_k,
        min_score: 0.0,
        fit: Fit::Stretch,
        label_filter: vec![],
        max_pixels: 100_000_000,
        jpeg_scaling: JpegScaling::Auto,
        input_mean: None,
        input_std: None,
        retry_ms: 1000,
    };
    let mut loaded = load_model(&settings)
        .with_context(|| format!("loading model {}", settings.path.display()))
        .map_err(fail(EXIT_FAILURE))?;
    let mut failed = 0usize;
    let mut out = std::io::stdout().lock();
    for (seq, path) in images.iter().enumerate() {
        let result = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|data| {
                let origin = path.display().to_string();
                let frame = match raw {
                    Some(spec) => spec
                        .frame(data, seq as u64, origin)
                        .with_context(|| format!("raw frame {}", path.display()))?,
                    None => Frame::encoded(data, seq as u64, origin),
                };
                loaded
                    .engine
                    .run(&frame)
                    .with_context(|| format!("classifying {}", path.display()))
            });
        match result {
            Ok(o) => {
                if json {
                    let v = serde_json::json!({
                        "path": path.display().to_string(),
                        "model_sha256": loaded.status.sha256,
                        "runtime": loaded.status.runtime,
                        "results": o.classes,
                        "detections": o.detections,
                        "latency": o.latency,
                    });
                    let _ = writeln!(out, "{v}");
                } else {
                    let _ = writeln!(out, "{}", path.display());
                    for (rank, c) in o.classes.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "  {}. {:<32} {:.4}  (index {}, raw {})",
                            rank + 1,
                            c.label,
                            c.score,
                            c.index,
                            c.raw
                        );
                    }
                    for d in &o.detections {
                        let _ = writeln!(
                            out,
                            "  {:<16} {:.3}  box x={:.0} y={:.0} w={:.0} h={:.0}",
                            d.label, d.score, d.x, d.y, d.width, d.height
                        );
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("spotter: {e:#}");
            }
        }
    }
    if failed > 0 {
        return Err(Failure {
            error: anyhow::anyhow!("{failed} of {} images failed", images.len()),
            code: EXIT_FAILURE,
        });
    }
    Ok(())
}

const RELOAD_HINT: &str = "the running daemon switches on SIGHUP: systemctl reload spotter";

fn model_command(settings: &config::Settings, action: ModelAction) -> anyhow::Result<()> {
    let ms = ModelStore::new(&settings.daemon.state_dir);
    let mut out = std::io::stdout().lock();
    match action {
        ModelAction::Install {
            file,
            labels,
            activate,
        } => {
            let meta = ms.install(&file, labels.as_deref(), |model, labels| {
                let mut m = settings.model.clone();
                m.path = model.to_path_buf();
                m.labels = labels.map(|l| l.to_path_buf());
                load_model(&m)
                    .map(|l| l.status.kind)
                    .map_err(|e| e.to_string())
            })?;
            let _ = writeln!(
                out,
                "installed {} ({}, {})",
                meta.sha256, meta.original_name, meta.kind
            );
            if activate {
                ms.activate(&meta.sha256)?;
                let _ = writeln!(out, "active: {}; {RELOAD_HINT}", meta.sha256);
            }
        }
        ModelAction::List => {
            for (m, active) in ms.list()? {
                let _ = writeln!(
                    out,
                    "{} {}  {:<14} {}{}",
                    if active { "*" } else { " " },
                    m.sha256,
                    m.kind,
                    m.original_name,
                    if m.has_labels { " (+labels)" } else { "" }
                );
            }
        }
        ModelAction::Activate { version } => {
            let m = ms.activate(&version)?;
            let _ = writeln!(
                out,
                "active: {} ({}); {RELOAD_HINT}",
                m.sha256, m.original_name
            );
        }
        ModelAction::Rollback => {
            let m = ms.rollback()?;
            let _ = writeln!(
                out,
                "active: {} ({}); {RELOAD_HINT}",
                m.sha256, m.original_name
            );
        }
    }
    Ok(())
}

fn keys_command(settings: &config::Settings, action: KeysAction) -> anyhow::Result<()> {
    use crate::keys::{KeyStore, Scope};
    let ks = KeyStore::new(&settings.daemon.state_dir);
    let mut out = std::io::stdout().lock();
    match action {
        KeysAction::Create { name, scope } => {
            let (info, secret) = ks.create(&name, scope.parse::<Scope>()?)?;
            let _ = writeln!(out, "{}", secret.expose());
            eprintln!(
                "created key {} ({}, {}); the secret above is shown only once",
                info.id, info.name, info.scope
            );
        }
        KeysAction::List => {
            for k in ks.list()? {
                let _ = writeln!(
                    out,
                    "{}  {:<5}  {:<24} created {}{}",
                    k.id,
                    k.scope,
                    k.name,
                    k.created_unix_s,
                    if k.revoked { "  REVOKED" } else { "" }
                );
            }
        }
        KeysAction::Revoke { id_or_name } => {
            let k = ks.revoke(&id_or_name)?;
            let _ = writeln!(out, "revoked {} ({})", k.id, k.name);
        }
    }
    Ok(())
}

fn load_settings(path: &std::path::Path) -> Result<config::Settings, Failure> {
    config::load(path)
        .map_err(|e| anyhow::Error::new(e).context("invalid configuration"))
        .map_err(fail(EXIT_CONFIG))
}

/// Open the store for an offline command; a running daemon holds sled's lock,
/// and the error says so.
/// Stream the running daemon's `GET /api/v1/backup` to `out`, line by line,
/// with progress; returns the number of records.
fn export_from_daemon(
    settings: &config::Settings,
    key_file: Option<&std::path::Path>,
    since_ns: Option<u64>,
    mut out: impl Write,
) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let api = crate::tools::localapi::LocalApi::new(settings, key_file)
        .context("export through the daemon's API")?;
    let path = match since_ns {
        Some(ns) => format!("/api/v1/backup?since={ns}"),
        None => "/api/v1/backup".to_string(),
    };
    let mut body =
        std::io::BufReader::new(api.get(&path).context("export through the daemon's API")?);
    let bar = indicatif::ProgressBar::new_spinner();
    let (mut line, mut records) = (Vec::new(), 0u64);
    let incomplete = "the daemon's export stopped; the output is incomplete";
    loop {
        line.clear();
        if body.read_until(b'\n', &mut line).context(incomplete)? == 0 {
            break;
        }
        if records == 0 && line.starts_with(b"{\"spotter_export\"") {
            // The header: its count_hint sizes the bar.
            if let Some(n) = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|h| h["count_hint"].as_u64())
            {
                bar.set_length(n);
                bar.set_style(indicatif::ProgressStyle::default_bar());
            }
        } else {
            records += 1;
            bar.set_position(records);
        }
        out.write_all(&line).context("writing the export")?;
    }
    out.flush().context("writing the export")?;
    bar.finish_and_clear();
    Ok(records)
}

fn open_store(settings: &config::Settings) -> Result<crate::store::Store, Failure> {
    crate::store::Store::open_with(&settings.store.dir, settings.store.flush_every_ms)
        .map_err(|e| anyhow::Error::new(e).context("opening the result store"))
        .map_err(fail(EXIT_FAILURE))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch `--raw` accepting sizes or formats the frame code cannot
    // handle (odd YUYV widths, zero sizes) or mixing up width and height.
    #[test]
    fn raw_spec_parses_and_rejects() {
        assert_eq!(
            parse_raw_spec("yuyv:640x480"),
            Ok(RawSpec {
                format: PixelFormat::Yuyv,
                width: 640,
                height: 480
            })
        );
        assert_eq!(
            parse_raw_spec("RGB24:3X2").map(|s| (s.format, s.stride(), s.height)),
            Ok((PixelFormat::Rgb8, 9, 2))
        );
        for bad in [
            "yuyv",
            "yuyv:640",
            "yuyv:0x480",
            "yuyv:641x480",
            "nv12:640x480",
            "yuyv:99999x2",
        ] {
            assert!(parse_raw_spec(bad).is_err(), "{bad} accepted");
        }
        let spec = parse_raw_spec("yuyv:4x2").unwrap();
        assert!(spec.frame(vec![0; 15], 0, "f".into()).is_err());
        let f = spec.frame(vec![0; 16], 0, "f".into()).unwrap();
        assert_eq!(
            (f.format, f.width, f.height, f.stride),
            (PixelFormat::Yuyv, 4, 2, 8)
        );
    }
}
