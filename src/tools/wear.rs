//! Flash-wear benchmark of the result store (`spotter bench-store`): write N
//! typical results through the real [`Store`] and measure results/s, bytes
//! the process wrote to disk per result (`/proc/self/io` `write_bytes`, so
//! sled's log, page rewrites and flushes all count), and the database's size
//! on disk per million results.
//!
//! With `ndjson`, the same records are also written as a backup file (the
//! `spotter export` format) after the measurement, so another database (the
//! SQLite baseline in `benches/py/store_bench.py`) can store exactly these
//! records in the same run.
//!
//! Measure on a real filesystem: on tmpfs `write_bytes` stays 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::core::result::{ClassScore, ResultRecord, StageLatency};
use crate::store::{Store, StoreError};

/// Arguments of `spotter bench-store`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct WearArgs {
    /// An empty or absent directory for the throw-away store (on the
    /// filesystem to measure; not tmpfs).
    #[arg(long)]
    pub dir: PathBuf,
    /// Results to write.
    #[arg(long, default_value_t = 100_000)]
    pub results: u64,
    /// Pace the inserts at this many results per second (default: as fast
    /// as possible). Camera rates show what each flush costs.
    #[arg(long)]
    pub rate: Option<f64>,
    /// sled's background flush interval (the daemon's store.flush_every_ms).
    #[arg(long, default_value_t = 1000)]
    pub flush_every_ms: u64,
    /// sled's page cache in bytes (default: what the daemon uses).
    #[arg(long, default_value_t = crate::store::CACHE_CAPACITY)]
    pub cache_bytes: u64,
    /// Afterwards, write the stored records here (`spotter export` format).
    #[arg(long)]
    pub ndjson: Option<PathBuf>,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WearReport {
    pub results: u64,
    pub seconds: f64,
    pub results_per_s: f64,
    /// `/proc/self/io` `write_bytes` over the inserts, the final flush and
    /// closing the database.
    pub write_bytes: u64,
    pub write_bytes_per_result: f64,
    /// Keys plus encoded values of records and index entries.
    pub logical_bytes_per_result: f64,
    /// Bytes of the store directory after closing it.
    pub dir_bytes: u64,
    pub db_bytes_per_million: u64,
    /// Peak resident memory of the process (VmHWM), KiB.
    pub peak_rss_kib: u64,
    pub cache_bytes: u64,
    pub flush_every_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WearError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{dir} is not empty; give an empty or absent directory (the benchmark writes a fresh store)")]
    NotEmpty { dir: PathBuf },
    #[error("/proc/self/io is not readable (no task I/O accounting): {0}")]
    NoIoAccounting(String),
    #[error("writing {path}: {source}")]
    Export {
        path: PathBuf,
        source: crate::store::backup::BackupError,
    },
}

/// `write_bytes` from `/proc/self/io`.
fn write_bytes() -> Result<u64, WearError> {
    crate::metrics::process_write_bytes()
        .ok_or_else(|| WearError::NoIoAccounting("no write_bytes line".into()))
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Total size of the files under `dir`.
fn dir_bytes(dir: &Path) -> Result<u64, WearError> {
    let io = |source| WearError::Io {
        path: dir.to_path_buf(),
        action: "read directory",
        source,
    };
    let mut total = 0;
    for e in std::fs::read_dir(dir).map_err(io)? {
        let e = e.map_err(io)?;
        let md = e.metadata().map_err(io)?;
        total += if md.is_dir() {
            dir_bytes(&e.path())?
        } else {
            md.len()
        };
    }
    Ok(total)
}

/// A typical classification result: top-5 classes of a 1000-class model.
pub fn typical_record(i: u64) -> ResultRecord {
    const LABELS: [&str; 8] = [
        "person",
        "tabby",
        "golden retriever",
        "sports car",
        "bicycle",
        "umbrella",
        "backpack",
        "pizza",
    ];
    ResultRecord {
        id: String::new(),
        ts_ns: 1_700_000_000_000_000_000 + i * 33_333_333,
        source: "v4l2:/dev/video0".into(),
        origin: "/dev/video0".into(),
        frame_seq: i,
        model_sha256: "0123456789abcdef".repeat(4),
        runtime: "litert".into(),
        classes: (0..5u64)
            .map(|k| ClassScore {
                index: (100 + (i + k) % 900) as usize,
                label: LABELS[((i + k) % LABELS.len() as u64) as usize].into(),
                raw: 200.0 - k as f32 * 30.0,
                score: 0.78 - k as f32 * 0.12,
            })
            .collect(),
        detections: vec![],
        image_width: 640,
        image_height: 480,
        latency: StageLatency {
            decode_us: 900,
            resize_us: 400,
            quantize_us: 50,
            invoke_us: 21000,
            post_us: 20,
            store_us: 30,
        },
        clock_synchronized: true,
        boottime_ns: 1_000_000_000 + i * 33_333_333,
        source_name: String::new(),
    }
}

/// Run the benchmark (blocking; minutes for millions of results).
pub(crate) fn run(args: &WearArgs) -> Result<WearReport, WearError> {
    if std::fs::read_dir(&args.dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(WearError::NotEmpty {
            dir: args.dir.clone(),
        });
    }
    let store = Store::open_with_cache(&args.dir, args.flush_every_ms, args.cache_bytes)?;
    let records: Vec<ResultRecord> = (0..args.results).map(typical_record).collect();
    let before = write_bytes()?;
    let started = Instant::now();
    for (i, mut rec) in records.into_iter().enumerate() {
        store.insert(&mut rec)?;
        if let Some(rate) = args.rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64((i + 1) as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    store.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    let logical = store.data_bytes();
    let written = write_bytes()?.saturating_sub(before);
    if let Some(path) = &args.ndjson {
        let file = std::fs::File::create(path).map_err(|source| WearError::Io {
            path: path.clone(),
            action: "create",
            source,
        })?;
        let mut w = std::io::BufWriter::new(file);
        crate::store::backup::export(&store, None, &mut w, |_| {}).map_err(|source| {
            WearError::Export {
                path: path.clone(),
                source,
            }
        })?;
        w.flush().map_err(|source| WearError::Io {
            path: path.clone(),
            action: "write",
            source,
        })?;
    }
    drop(store);
    let n = args.results.max(1);
    let size = dir_bytes(&args.dir)?;
    Ok(WearReport {
        results: args.results,
        seconds,
        results_per_s: args.results as f64 / seconds,
        write_bytes: written,
        write_bytes_per_result: written as f64 / n as f64,
        logical_bytes_per_result: logical as f64 / n as f64,
        dir_bytes: size,
        db_bytes_per_million: (size as u128 * 1_000_000 / n as u128) as u64,
        peak_rss_kib: peak_rss_kib(),
        cache_bytes: args.cache_bytes,
        flush_every_ms: args.flush_every_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: a benchmark that measures nothing (no records stored, zero
    // size), refuses to reuse a store silently, or writes an NDJSON file the
    // SQLite baseline cannot read (a different record count or format).
    #[test]
    fn writes_the_records_and_the_same_records_as_ndjson() {
        let tmp = tempfile::tempdir().unwrap();
        let args = WearArgs {
            dir: tmp.path().join("store"),
            results: 300,
            rate: None,
            flush_every_ms: 1000,
            cache_bytes: crate::store::CACHE_CAPACITY,
            ndjson: Some(tmp.path().join("records.ndjson")),
        };
        let r = run(&args).unwrap();
        assert_eq!(r.results, 300);
        assert!(
            r.dir_bytes > 0 && r.logical_bytes_per_result > 300.0,
            "{r:?}"
        );
        let text = std::fs::read_to_string(tmp.path().join("records.ndjson")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 301, "header plus one line per record");
        let first: ResultRecord = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(first.classes.len(), 5);
        assert!(matches!(run(&args), Err(WearError::NotEmpty { .. })));
    }
}
