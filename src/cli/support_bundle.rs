//! `spotter support-bundle [--out FILE] [--journal-lines N]`: write the
//! support bundle of [`crate::support`] (one tar.gz).
//!
//! While the daemon runs (it holds the store's lock) the bundle comes from
//! its `GET /api/v1/support-bundle` (admin key, as `spotter export` finds
//! one) and doctor's report is added as `doctor.txt`. Otherwise it is
//! built from the files: the configuration, the model store, the result
//! store's figures, doctor's checks, the journal; `status.json` then says
//! the daemon is not running, and there are no metrics. Either way an
//! audit record `support_bundle` is kept (by the daemon, or spooled with
//! client `cli`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

use super::{fail, load_settings, Failure, EXIT_CONFIG, EXIT_FAILURE};
use crate::config::Settings;
use crate::store::{AuditAction, AuditRecord, Store, StoreError};
use crate::support::{Bundle, Journalctl, MAX_BUNDLE_BYTES, MAX_JOURNAL_LINES};

pub(super) fn support_bundle(
    path: &Path,
    out: Option<&Path>,
    journal_lines: usize,
    key_file: Option<&Path>,
) -> Result<(), Failure> {
    let _ = crate::logging::init(log::LevelFilter::Warn);
    if !(1..=MAX_JOURNAL_LINES).contains(&journal_lines) {
        return Err(anyhow::anyhow!(
            "--journal-lines: an integer from 1 to {MAX_JOURNAL_LINES}"
        ))
        .map_err(fail(EXIT_CONFIG));
    }
    let settings = load_settings(path)?;
    let (bytes, root) = build(&settings, journal_lines, key_file).map_err(fail(EXIT_FAILURE))?;
    let target = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(format!("{root}.tar.gz")));
    write_private(&target, &bytes)
        .with_context(|| format!("writing {}", target.display()))
        .map_err(fail(EXIT_FAILURE))?;
    eprintln!(
        "wrote the support bundle {} ({} bytes)",
        target.display(),
        bytes.len()
    );
    Ok(())
}

/// The bundle's bytes and top directory.
fn build(
    settings: &Settings,
    journal_lines: usize,
    key_file: Option<&Path>,
) -> anyhow::Result<(Vec<u8>, String)> {
    let doctor = crate::tools::doctor::run(settings).to_text();
    let store = if settings.store.dir.exists() {
        match Store::open_with(&settings.store.dir, settings.store.flush_every_ms) {
            Ok(store) => Some(Ok(store)),
            Err(StoreError::Locked { path }) => {
                eprintln!(
                    "{} is held by the running daemon; fetching its support bundle",
                    path.display()
                );
                let mut b = from_daemon(settings, journal_lines, key_file)?;
                b.text("doctor.txt", &doctor)?;
                let root = b.root().to_string();
                return Ok((b.finish()?, root));
            }
            Err(e) => Some(Err(e)),
        }
    } else {
        None
    };
    let mut b = Bundle::new(SystemTime::now());
    b.common(settings, None, None, &Journalctl::default(), journal_lines)?;
    b.text("doctor.txt", &doctor)?;
    b.json(
        "status.json",
        &serde_json::json!({"daemon_running": false,
            "note": "built by `spotter support-bundle` from the files; no status or metrics"}),
    )?;
    b.json(
        "store.json",
        &match &store {
            Some(Ok(s)) => crate::support::store_figures(s),
            Some(Err(e)) => serde_json::json!({"error": e.to_string()}),
            None => serde_json::json!({"error": format!("{} does not exist", settings.store.dir.display())}),
        },
    )?;
    drop(store);
    super::keys::spool(
        settings,
        &AuditRecord::new(AuditAction::SupportBundle, "cli"),
    );
    let root = b.root().to_string();
    Ok((b.finish()?, root))
}

/// The running daemon's bundle, read back (bounded) to add to it.
fn from_daemon(
    settings: &Settings,
    journal_lines: usize,
    key_file: Option<&Path>,
) -> anyhow::Result<Bundle> {
    let api = crate::tools::localapi::LocalApi::new(settings, key_file)
        .context("the support bundle through the daemon's API")?;
    let mut gz = Vec::new();
    api.get(&format!(
        "/api/v1/support-bundle?journal_lines={journal_lines}"
    ))
    .context("the support bundle through the daemon's API")?
    .take(MAX_BUNDLE_BYTES as u64 + 1)
    .read_to_end(&mut gz)
    .context("reading the daemon's support bundle")?;
    Ok(Bundle::read(&gz)?)
}

/// Write `bytes` to `path` readable by its owner only (`-` is stdout).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path == Path::new("-") {
        let mut out = std::io::stdout().lock();
        out.write_all(bytes)?;
        return out.flush();
    }
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}
