//! Command-line interface: the clap definitions, [`execute`] dispatching each
//! command to its file, and what the commands share (loading the settings,
//! the [`Failure`] with its exit code). The daemon itself lives in
//! [`crate::app`].

mod bench;
mod check_config;
mod classify;
mod doctor;
mod export;
mod generator;
mod import;
mod keys;
mod model;
mod retention;
mod run;
mod support_bundle;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use crate::config;

pub use classify::{ClassifyArgs, RawSpec, RuntimeArg};
pub use keys::KeysAction;
pub use model::ModelAction;

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
    /// Validate a config (with its drop-ins), check that its model and labels
    /// load as the daemon would load them, and print the effective settings.
    CheckConfig {
        file: PathBuf,
        /// Check the file's syntax and values only, not the model and labels
        /// it names (e.g. a config for another machine).
        #[arg(long)]
        syntax_only: bool,
    },
    /// Measure per-stage latency (decode, resize, quantize, invoke, post, store) of a model per runtime;
    /// for a detector also pre- and post-processing as fractions of invoke beside their targets.
    Bench(crate::tools::bench::BenchArgs),
    /// Measure the result store's flash wear: results/s, bytes written to
    /// disk per result and database bytes per million results (one JSON line).
    BenchStore(crate::tools::wear::WearArgs),
    /// Write the result store (with snapshots) as NDJSON to stdout, or an
    /// age file with --recipient. While the daemon runs (it holds the
    /// store's lock) the export comes from its API (GET /api/v1/backup),
    /// with an admin key.
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
        /// Encrypt the backup with age to this X25519 public key (age1…);
        /// repeatable. Without it, `[backup] recipients` apply.
        #[arg(long = "recipient", value_name = "AGE_PUBLIC_KEY")]
        recipients: Vec<String>,
        /// Encrypt to the public keys in this file (one per line, `#` comments).
        #[arg(long, value_name = "FILE")]
        recipients_file: Option<PathBuf>,
    },
    /// Import an export (plain NDJSON, or age-encrypted with --identity)
    /// into the result store (service stopped); idempotent by id.
    Import {
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        /// An age identity file (AGE-SECRET-KEY-1…) to decrypt an encrypted
        /// backup; nothing is imported unless the whole file decrypts.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        file: PathBuf,
    },
    /// How long results, sightings, snapshots and audit records are kept
    /// and how much space they take at the current rate (issue 23). While
    /// the daemon runs, from its status (GET /api/v1/status).
    Retention {
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        /// A read API key for the running daemon (else $SPOTTER_API_KEY,
        /// else <state_dir>/initial-admin-key).
        #[arg(long)]
        key_file: Option<PathBuf>,
        /// Print the statement as JSON.
        #[arg(long)]
        json: bool,
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
    /// Classify image files with a model and print the top-k for each, or
    /// a detector's detections.
    Classify(classify::ClassifyArgs),
    /// Write one tar.gz for support: version, configuration (secrets
    /// redacted), doctor's checks, status, metrics, journal, store, model,
    /// disk, temperature. While the daemon runs, from its API
    /// (GET /api/v1/support-bundle) with an admin key.
    SupportBundle {
        #[arg(long, short, default_value = "/etc/spotter/spotter.toml")]
        config: PathBuf,
        /// Where to write it (`-` for stdout); default
        /// ./spotter-support-<unix time>.tar.gz.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The unit's last journal lines to include.
        #[arg(long, default_value_t = crate::support::DEFAULT_JOURNAL_LINES)]
        journal_lines: usize,
        /// An admin API key for the running daemon (else $SPOTTER_API_KEY,
        /// else <state_dir>/initial-admin-key).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

/// An error for `main` to report, with the process exit code.
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub code: u8,
}

/// Exit code for invalid configuration or usage.
pub(crate) const EXIT_CONFIG: u8 = 2;
/// Exit code for any other failure.
pub(crate) const EXIT_FAILURE: u8 = 1;

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
        } => run::run(path, litert_lib),
        Command::CheckConfig { file, syntax_only } => {
            check_config::check_config(&file, syntax_only)
        }
        Command::Bench(args) => bench::bench(&args),
        Command::BenchStore(args) => bench::bench_store(&args),
        Command::Export {
            config: path,
            since,
            key_file,
            recipients,
            recipients_file,
        } => export::export(
            &path,
            since.as_deref(),
            key_file.as_deref(),
            &recipients,
            recipients_file.as_deref(),
        ),
        Command::Import {
            config: path,
            identity,
            file,
        } => import::import(&path, &file, identity.as_deref()),
        Command::Retention {
            config: path,
            key_file,
            json,
        } => retention::retention(&path, key_file.as_deref(), json),
        Command::Keys {
            config: path,
            action,
        } => with_settings(&path, action, keys::keys),
        Command::Model {
            config: path,
            action,
        } => model::dispatch(&path, action),
        Command::SystemdGenerator {
            config: path,
            normal_dir,
            ..
        } => {
            generator::generate(&path, &normal_dir);
            Ok(())
        }
        Command::Doctor { config: path } => doctor::doctor(&path),
        Command::Classify(args) => classify::classify(args),
        Command::SupportBundle {
            config: path,
            out,
            journal_lines,
            key_file,
        } => support_bundle::support_bundle(
            &path,
            out.as_deref(),
            journal_lines,
            key_file.as_deref(),
        ),
    }
}

/// Run a command that needs only the settings in the config file at
/// `path`, logging warnings: an invalid configuration exits with
/// [`EXIT_CONFIG`], a failing command with [`EXIT_FAILURE`].
fn with_settings<A>(
    path: &Path,
    action: A,
    command: fn(&config::Settings, A) -> anyhow::Result<()>,
) -> Result<(), Failure> {
    let _ = crate::logging::init(log::LevelFilter::Warn);
    let settings = load_settings(path)?;
    command(&settings, action).map_err(fail(EXIT_FAILURE))
}

/// The settings in the config file at `path` (with its drop-ins); an invalid
/// configuration exits with [`EXIT_CONFIG`].
fn load_settings(path: &Path) -> Result<config::Settings, Failure> {
    config::load(path)
        .map_err(|e| anyhow::Error::new(e).context("invalid configuration"))
        .map_err(fail(EXIT_CONFIG))
}
