//! `spotter model`: install, list, activate and roll back model versions in
//! the state directory ([`crate::modelstore::ModelStore`]); and, on the
//! computer that holds the private key (no config needed), `keygen`, `sign`
//! and `verify` of signed model bundles ([`crate::modelstore::bundle`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::config;
use crate::modelstore::bundle::{self, BundleSpec};
use crate::modelstore::{BundleSettings, ModelStore, Trust};
use crate::pipeline::load_model;
use crate::store::{AuditAction, AuditRecord};

#[derive(Debug, Subcommand)]
pub enum ModelAction {
    /// Validate (load + canary) and install a model version: a signed
    /// bundle (verified against `[signing] trusted_keys`) or a bare .tflite
    /// (only with `signing.allow_unsigned_local`).
    Install {
        file: PathBuf,
        /// Labels for a bare .tflite (a bundle carries its own).
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
    /// Make an Ed25519 signing key pair: OUT (private, PKCS#8 PEM, mode
    /// 0600; keep it off the devices) and the public key beside it
    /// (`.pub.pem`) for `[signing] trusted_keys`.
    Keygen {
        #[arg(long)]
        out: PathBuf,
        /// Where the public key goes (default: OUT with extension `.pub.pem`).
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
    /// Make a signed model bundle.
    Sign {
        /// The private key (PKCS#8 PEM or DER; `openssl genpkey -algorithm ed25519` or `spotter model keygen`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// The model's own settings (TOML: min_score, top_k, min_score_by_label,
        /// label_filter, label_deny, min_box_area, max_detections,
        /// iou_threshold; top level or under [model]).
        #[arg(long)]
        settings: Option<PathBuf>,
        /// The oldest Spotter that may install it (X.Y.Z).
        #[arg(long)]
        min_spotter_version: Option<String>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a bundle as a device would; exits non-zero with the reason.
    Verify {
        bundle: PathBuf,
        /// A trusted public key (repeat for several).
        #[arg(long = "public-key", required = true)]
        public_keys: Vec<PathBuf>,
    },
}

/// `spotter model …`: keygen, sign and verify need no config (they run
/// where the private key is); the rest act on the config's state directory.
pub(super) fn dispatch(config: &Path, action: ModelAction) -> Result<(), super::Failure> {
    match action {
        ModelAction::Keygen { .. } | ModelAction::Sign { .. } | ModelAction::Verify { .. } => {
            let _ = crate::logging::init(log::LevelFilter::Warn);
            offline(action).map_err(super::fail(super::EXIT_FAILURE))
        }
        other => super::with_settings(config, other, model),
    }
}

fn offline(action: ModelAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        ModelAction::Keygen {
            out: path,
            public_out,
        } => {
            use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
            let public = public_out.unwrap_or_else(|| path.with_extension("pub.pem"));
            for p in [&path, &public] {
                anyhow::ensure!(!p.exists(), "{} exists; not overwriting a key", p.display());
            }
            let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(Default::default())
                .context("encoding the private key")?;
            crate::core::fsutil::write_atomic(&path, pem.as_bytes(), 0o600)
                .with_context(|| format!("writing {}", path.display()))?;
            let pub_pem = key
                .verifying_key()
                .to_public_key_pem(Default::default())
                .context("encoding the public key")?;
            crate::core::fsutil::write_atomic(&public, pub_pem.as_bytes(), 0o644)
                .with_context(|| format!("writing {}", public.display()))?;
            let _ = writeln!(
                out,
                "private key: {} (keep it off the devices)\npublic key:  {} (for [signing] trusted_keys)\nfingerprint: {}",
                path.display(),
                public.display(),
                bundle::fingerprint(&key.verifying_key())
            );
        }
        ModelAction::Sign {
            key,
            model,
            labels,
            name,
            version,
            settings,
            min_spotter_version,
            out: path,
        } => {
            let key = bundle::read_private_key(&key)?;
            let bytes =
                std::fs::read(&model).with_context(|| format!("reading {}", model.display()))?;
            anyhow::ensure!(
                bytes.get(4..8) == Some(&b"TFL3"[..]),
                "{}: not a TFLite model (no TFL3 identifier)",
                model.display()
            );
            let labels = labels
                .map(|l| std::fs::read(&l).with_context(|| format!("reading {}", l.display())))
                .transpose()?;
            let settings = match settings {
                Some(p) => {
                    let t = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?;
                    BundleSettings::from_toml(&t)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                }
                None => BundleSettings::default(),
            };
            let spec = BundleSpec {
                name: &name,
                version: &version,
                model: &bytes,
                labels: labels.as_deref(),
                settings,
                min_spotter_version,
            };
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("a temporary file in {}", dir.display()))?;
            let manifest = bundle::write_bundle(tmp.as_file_mut(), &spec, Some(&key))?;
            tmp.persist(&path)
                .map_err(|e| e.error)
                .with_context(|| format!("writing {}", path.display()))?;
            let _ = writeln!(
                out,
                "signed {}: {} {}, model sha256 {}, key {}",
                path.display(),
                manifest.name,
                manifest.version,
                manifest.model_sha256,
                bundle::fingerprint(&key.verifying_key())
            );
        }
        ModelAction::Verify {
            bundle: path,
            public_keys,
        } => {
            let keys = public_keys
                .iter()
                .map(|p| bundle::read_public_key(p))
                .collect::<Result<Vec<_>, _>>()?;
            let f = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let o = bundle::open(std::io::BufReader::new(f), &Trust::new(keys, false))
                .with_context(|| format!("{} refused", path.display()))?;
            let m = &o.manifest;
            let _ = writeln!(
                out,
                "ok: {} {}, signed by {}\nmodel sha256 {}{}\nsettings: {}",
                m.name,
                m.version,
                o.signer.as_deref().unwrap_or("-"),
                m.model_sha256,
                if o.labels.is_some() { " (+labels)" } else { "" },
                serde_json::to_string(&m.settings).unwrap_or_default()
            );
        }
        _ => unreachable!("dispatch sends only keygen, sign and verify here"),
    }
    Ok(())
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
            let validate = |model: &Path, labels: Option<&Path>| {
                let mut m = settings.model.clone();
                m.path = model.to_path_buf();
                m.labels = labels.map(|l| l.to_path_buf());
                load_model(&m)
                    .map(|l| l.status.kind)
                    .map_err(|e| e.to_string())
            };
            let allow = settings.signing.allow_unsigned_local;
            let installed = match labels {
                // A bare model with separate labels: install() takes both.
                Some(l) if !is_bundle_file(&file)? => {
                    anyhow::ensure!(
                        allow,
                        "{}: unsigned models are not accepted (signing.allow_unsigned_local = false); install a signed bundle",
                        file.display()
                    );
                    ms.install(&file, Some(&l), validate)
                }
                Some(_) => anyhow::bail!(
                    "{}: a bundle carries its own labels; drop --labels",
                    file.display()
                ),
                None => {
                    let trust = Trust::from_settings(&settings.signing, allow)?;
                    ms.install_bundle(&file, &trust, validate)
                }
            };
            audit(settings, AuditAction::ModelInstalled, &installed);
            let meta = installed?;
            let _ = writeln!(
                out,
                "installed {} ({}, {}{})",
                meta.sha256,
                meta.original_name,
                meta.kind,
                bundle_note(&meta)
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
                    "{} {}  {:<14} {}{}{}",
                    if active { "*" } else { " " },
                    m.sha256,
                    m.kind,
                    m.original_name,
                    if m.has_labels { " (+labels)" } else { "" },
                    bundle_note(&m)
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
        a
        @ (ModelAction::Keygen { .. } | ModelAction::Sign { .. } | ModelAction::Verify { .. }) => {
            return offline(a)
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

/// Whether `path` starts like a bundle (see [`bundle::is_bundle`]).
fn is_bundle_file(path: &Path) -> anyhow::Result<bool> {
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = std::io::Read::read(&mut f, &mut head)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(bundle::is_bundle(&head[..n]))
}

/// `, bundle NAME VERSION signed by FINGERPRINT` for a version from a bundle.
fn bundle_note(m: &crate::modelstore::VersionMeta) -> String {
    match &m.bundle {
        Some(b) => format!(
            ", bundle {} {} {}",
            b.name,
            b.version,
            b.signer
                .as_deref()
                .map_or("unsigned".to_string(), |s| format!("signed by {s}"))
        ),
        None => String::new(),
    }
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
