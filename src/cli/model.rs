//! `spotter model`: install, list, activate and roll back model versions in
//! the state directory ([`crate::modelstore::ModelStore`]).

use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use crate::config;
use crate::modelstore::ModelStore;
use crate::pipeline::load_model;
use crate::store::{AuditAction, AuditRecord};

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

const RELOAD_HINT: &str = "the running daemon switches on SIGHUP: systemctl reload spotter";

pub(super) fn model(settings: &config::Settings, action: ModelAction) -> anyhow::Result<()> {
    let ms = ModelStore::new(&settings.daemon.state_dir);
    let mut out = std::io::stdout().lock();
    match action {
        ModelAction::Install {
            file,
            labels,
            activate,
        } => {
            let installed = ms.install(&file, labels.as_deref(), |model, labels| {
                let mut m = settings.model.clone();
                m.path = model.to_path_buf();
                m.labels = labels.map(|l| l.to_path_buf());
                load_model(&m)
                    .map(|l| l.status.kind)
                    .map_err(|e| e.to_string())
            });
            audit(settings, AuditAction::ModelInstalled, &installed);
            let meta = installed?;
            let _ = writeln!(
                out,
                "installed {} ({}, {})",
                meta.sha256, meta.original_name, meta.kind
            );
            if activate {
                let activated = ms.activate(&meta.sha256);
                audit(settings, AuditAction::ModelActivated, &activated);
                activated?;
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
            let activated = ms.activate(&version);
            audit(settings, AuditAction::ModelActivated, &activated);
            let m = activated?;
            let _ = writeln!(
                out,
                "active: {} ({}); {RELOAD_HINT}",
                m.sha256, m.original_name
            );
        }
        ModelAction::Rollback => {
            let rolled = ms.rollback();
            audit(settings, AuditAction::ModelRolledBack, &rolled);
            let m = rolled?;
            let _ = writeln!(
                out,
                "active: {} ({}); {RELOAD_HINT}",
                m.sha256, m.original_name
            );
        }
    }
    Ok(())
}

/// The audit record of a model change from the command line (issue 23):
/// the version it made active or installed, or why it was refused.
fn audit<E: std::fmt::Display>(
    settings: &config::Settings,
    action: AuditAction,
    r: &Result<crate::modelstore::VersionMeta, E>,
) {
    let rec = AuditRecord::new(action, "cli");
    let rec = match r {
        Ok(m) => rec.target(&m.sha256),
        Err(e) => rec.refused(e.to_string()),
    };
    super::keys::spool(settings, &rec);
}
