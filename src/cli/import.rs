//! `spotter import`: add the results, sightings and snapshots of an export
//! to the result store (service stopped), idempotent by id. An age-encrypted
//! export (issue 23) needs `--identity FILE` (an age identity file holding
//! the private key of one of its recipients) and is decrypted completely,
//! and so authenticated, before anything is written: a wrong identity, a
//! changed byte or a truncated file imports nothing.

use std::path::Path;

use anyhow::Context;

use super::{fail, load_settings, Failure, EXIT_CONFIG, EXIT_FAILURE};
use crate::{config, logging};

pub(super) fn import(path: &Path, file: &Path, identity: Option<&Path>) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let settings = load_settings(path)?;
    let identities = identity
        .map(read_identities)
        .transpose()
        .map_err(fail(EXIT_CONFIG))?
        .unwrap_or_default();
    let store = open_store(&settings)?;
    let f = std::fs::File::open(file)
        .with_context(|| format!("opening {}", file.display()))
        .map_err(fail(EXIT_FAILURE))?;
    let r = crate::store::backup::import_file(&store, f, &identities)
        .map_err(|e| anyhow::Error::new(e).context(format!("import of {}", file.display())))
        .map_err(fail(EXIT_FAILURE))?;
    store
        .flush()
        .map_err(|e| anyhow::Error::new(e).context("flushing the store"))
        .map_err(fail(EXIT_FAILURE))?;
    for (line, reason) in &r.invalid {
        eprintln!("{}:{line}: {reason}", file.display());
    }
    println!(
        "added {}, skipped {} (already present), invalid {}; sightings: added {}, skipped {}; \
         snapshots: added {}, skipped {}",
        r.added,
        r.skipped,
        r.invalid_count,
        r.sightings_added,
        r.sightings_skipped,
        r.snapshots_added,
        r.snapshots_skipped
    );
    if r.invalid_count > 0 {
        return Err(Failure {
            error: anyhow::anyhow!("{} invalid lines", r.invalid_count),
            code: EXIT_FAILURE,
        });
    }
    Ok(())
}

/// The identities (private keys) in an age identity file.
fn read_identities(path: &Path) -> anyhow::Result<Vec<Box<dyn age::Identity>>> {
    let f = std::fs::File::open(path)
        .with_context(|| format!("opening the identity file {}", path.display()))?;
    let ids = age::IdentityFile::from_buffer(std::io::BufReader::new(f))
        .with_context(|| format!("reading the identity file {}", path.display()))?
        .into_identities()
        .map_err(|e| anyhow::anyhow!("the identity file {}: {e}", path.display()))?;
    if ids.is_empty() {
        anyhow::bail!("the identity file {} holds no identity", path.display());
    }
    Ok(ids)
}

/// Open the store for an offline command; a running daemon holds sled's lock,
/// and the error says so.
fn open_store(settings: &config::Settings) -> Result<crate::store::Store, Failure> {
    crate::store::Store::open_with(&settings.store.dir, settings.store.flush_every_ms)
        .map_err(|e| anyhow::Error::new(e).context("opening the result store"))
        .map_err(fail(EXIT_FAILURE))
}
