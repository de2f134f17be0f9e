//! `spotter import`: add the results of an NDJSON export to the result store
//! (service stopped), idempotent by result id.

use std::path::Path;

use anyhow::Context;

use super::{fail, load_settings, Failure, EXIT_FAILURE};
use crate::{config, logging};

pub(super) fn import(path: &Path, file: &Path) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let settings = load_settings(path)?;
    let store = open_store(&settings)?;
    let f = std::fs::File::open(file)
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
        "added {}, skipped {} (already present), invalid {}; sightings: added {}, skipped {}",
        r.added, r.skipped, r.invalid_count, r.sightings_added, r.sightings_skipped
    );
    if r.invalid_count > 0 {
        return Err(Failure {
            error: anyhow::anyhow!("{} invalid lines", r.invalid_count),
            code: EXIT_FAILURE,
        });
    }
    Ok(())
}

/// Open the store for an offline command; a running daemon holds sled's lock,
/// and the error says so.
fn open_store(settings: &config::Settings) -> Result<crate::store::Store, Failure> {
    crate::store::Store::open_with(&settings.store.dir, settings.store.flush_every_ms)
        .map_err(|e| anyhow::Error::new(e).context("opening the result store"))
        .map_err(fail(EXIT_FAILURE))
}
