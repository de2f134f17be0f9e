//! `spotter export`: write the result store as NDJSON to stdout, from the
//! store itself or, while the daemon holds its lock, through the daemon's
//! `GET /api/v1/backup`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::{fail, load_settings, Failure, EXIT_CONFIG, EXIT_FAILURE};
use crate::{config, logging};

pub(super) fn export(
    path: &Path,
    since: Option<&str>,
    key_file: Option<&Path>,
) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    let settings = load_settings(path)?;
    let since_ns = since
        .map(|s| -> anyhow::Result<u64> {
            let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("--since {s:?} is not an RFC 3339 time"))?;
            u64::try_from(t.unix_timestamp_nanos()).context("--since is before 1970")
        })
        .transpose()
        .map_err(fail(EXIT_CONFIG))?;
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let store =
        match crate::store::Store::open_with(&settings.store.dir, settings.store.flush_every_ms) {
            Ok(store) => store,
            Err(crate::store::StoreError::Locked { path }) => {
                eprintln!(
                    "{} is held by the running daemon; exporting through its API",
                    path.display()
                );
                let n = export_from_daemon(&settings, key_file, since_ns, out)
                    .map_err(fail(EXIT_FAILURE))?;
                eprintln!("exported {n} records (results and sightings)");
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
    eprintln!("exported {n} records (results and sightings)");
    Ok(())
}

/// Stream the running daemon's `GET /api/v1/backup` to `out`, line by line,
/// with progress; returns the number of records.
fn export_from_daemon(
    settings: &config::Settings,
    key_file: Option<&Path>,
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
