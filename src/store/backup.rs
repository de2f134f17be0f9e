//! Logical backups of the result store: export to and import from NDJSON.
//!
//! sled's on-disk format may change between versions, so backups are
//! logical: a header line
//! `{"spotter_export":1,"schema":1,"created_ns":…,"count_hint":…}` followed by
//! one [`ResultRecord`] as JSON per line, oldest first, then (issue 18) one
//! line `{"sighting":{…}}` per [`Sighting`], by id. Import validates every
//! line, skips records and sightings whose id already exists (so it is
//! idempotent), reports bad lines by number and still imports the rest.
//! Then one line `{"audit":{…}}` per audit record (issue 23, see `audit`),
//! oldest first, imported by id like the others.
//!
//! Backups carry no snapshots, of results or of sightings. The format
//! version stays 1: a build from before sightings imports the results of a
//! newer export and lists its sighting lines as invalid.
//!
//! Both work on an open [`Store`]. sled locks its directory, so while the
//! daemon runs only the daemon itself can export: `GET /api/v1/backup`, which
//! `spotter export` then calls ([`crate::tools::localapi`]).

use std::io::{self, BufRead, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::core::result::ResultRecord;
use crate::core::sighting::Sighting;
use crate::store::{Store, StoreError, RECORD_VERSION};

/// The export format version this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;
/// The longest line import accepts; a longer one is reported invalid.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// At most this many invalid lines are listed in [`ImportReport::invalid`]
/// (all are counted in [`ImportReport::invalid_count`]).
pub(crate) const MAX_INVALID_LISTED: usize = 1000;
/// `export` reports progress every this many records (and at the end).
pub(crate) const PROGRESS_EVERY: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup: {action}: {source}")]
    Io {
        action: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("backup: cannot encode record {id}: {source}")]
    Encode {
        id: String,
        source: serde_json::Error,
    },
    #[error("backup: the input is empty; expected a spotter export header on line 1")]
    Empty,
    #[error("backup: line 1 is not a spotter export header: {reason}")]
    BadHeader { reason: String },
    #[error(
        "backup: the file is export format {found} (store schema {schema}), but this build reads \
         format {EXPORT_VERSION} (record schema {RECORD_VERSION}) at most; upgrade Spotter to import it"
    )]
    FutureVersion { found: u32, schema: u32 },
}

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    pub spotter_export: u32,
    pub schema: u32,
    /// When the export started, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// How many records the store held when the export started (records
    /// written or pruned meanwhile make the real count differ).
    pub count_hint: u64,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportReport {
    /// Records written.
    pub added: u64,
    /// Valid records whose id was already in the store.
    pub skipped: u64,
    /// Sightings written (issue 18).
    pub sightings_added: u64,
    /// Valid sightings whose id was already in the store.
    pub sightings_skipped: u64,
    /// Audit records written (issue 23), and those already there.
    pub audit_added: u64,
    pub audit_skipped: u64,
    /// `(line number, reason)` of rejected lines, 1-based, at most
    /// [`MAX_INVALID_LISTED`] of them.
    pub invalid: Vec<(u64, String)>,
    /// Rejected lines in total.
    pub invalid_count: u64,
}

/// One sighting line of an export.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SightingLine {
    sighting: Sighting,
}

/// Write every record with `ts_ns >= since_ns` (all if `None`) to `writer` as
/// NDJSON, oldest first, after a header line, then every sighting present
/// at or after `since_ns` (ended, or last seen while open). Calls `progress`
/// with the number of lines written so far every [`PROGRESS_EVERY`] lines
/// and once at the end; returns that number (results and sightings). The
/// store keeps accepting writes meanwhile. Records that cannot be decoded
/// are skipped with a warning.
pub fn export<W: Write>(
    store: &Store,
    since_ns: Option<u64>,
    mut writer: W,
    mut progress: impl FnMut(u64),
) -> Result<u64, BackupError> {
    let io_err = |source| BackupError::Io {
        action: "write the export",
        source,
    };
    let header = ExportHeader {
        spotter_export: EXPORT_VERSION,
        schema: RECORD_VERSION,
        created_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        count_hint: store.len() as u64,
    };
    // serde_json cannot fail on these plain structs except through the
    // writer, so every error here is an I/O error.
    serde_json::to_writer(&mut writer, &header).map_err(|e| io_err(e.into()))?;
    writer.write_all(b"\n").map_err(io_err)?;
    let (mut written, mut unreadable) = (0u64, 0u64);
    for item in store.iter_since(since_ns) {
        let rec = match item {
            Ok(rec) => rec,
            Err(e @ StoreError::Corrupt { .. }) => {
                unreadable += 1;
                log::warn!("export: skipping unreadable record: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        serde_json::to_writer(&mut writer, &rec).map_err(|source| BackupError::Encode {
            id: rec.id.clone(),
            source,
        })?;
        writer.write_all(b"\n").map_err(io_err)?;
        written += 1;
        if written % PROGRESS_EVERY == 0 {
            progress(written);
        }
    }
    let since = since_ns.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    for item in store.iter_sightings() {
        let sighting = match item {
            Ok(s) => s,
            Err(e @ StoreError::Corrupt { .. }) => {
                unreadable += 1;
                log::warn!("export: skipping unreadable sighting: {e}");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if since.is_some_and(|t| sighting.end_ns.unwrap_or(sighting.last_seen_ns) < t) {
            continue;
        }
        let id = sighting.id;
        serde_json::to_writer(&mut writer, &SightingLine { sighting }).map_err(|source| {
            BackupError::Encode {
                id: format!("sighting {id}"),
                source,
            }
        })?;
        writer.write_all(b"\n").map_err(io_err)?;
        written += 1;
        if written % PROGRESS_EVERY == 0 {
            progress(written);
        }
    }
    // --- Audit trail (issue 23): `{"audit": {...}}` lines, oldest first. ---
    written += super::audit::export_lines(store, since, &mut writer)?;
    // --- end audit trail ---
    writer.flush().map_err(io_err)?;
    progress(written);
    if unreadable > 0 {
        log::warn!(skipped = unreadable; "export finished without {unreadable} unreadable records");
    }
    Ok(written)
}

/// Read an export from `reader` into `store`. The header must be present
/// and of a version this build reads, else nothing is imported. Each record
/// line is validated (JSON, id well-formed and matching `ts_ns`); bad lines
/// are listed with their number and the others are imported. Records whose
/// id exists are skipped, so importing twice adds nothing. Blank lines are
/// ignored. The store is flushed at the end.
pub fn import<R: BufRead>(store: &Store, mut reader: R) -> Result<ImportReport, BackupError> {
    let mut report = ImportReport::default();
    let mut buf = Vec::with_capacity(1024);
    let mut line_no = 0u64;

    // The header, refused (before anything is written) unless it is ours.
    line_no += 1;
    match read_line(&mut reader, &mut buf)? {
        Line::Eof => return Err(BackupError::Empty),
        Line::TooLong => {
            return Err(BackupError::BadHeader {
                reason: "line too long".into(),
            })
        }
        Line::Ok => parse_header(&buf)?,
    };

    loop {
        line_no += 1;
        let reason = match read_line(&mut reader, &mut buf)? {
            Line::Eof => break,
            Line::TooLong => format!("line longer than {MAX_LINE_BYTES} bytes"),
            Line::Ok if buf.trim_ascii().is_empty() => continue,
            // --- Audit trail (issue 23): imported by id, idempotently. ---
            Line::Ok if super::audit::is_audit_line(&buf) => {
                match super::audit::import_line(store, &buf)? {
                    Ok(true) => {
                        report.audit_added += 1;
                        continue;
                    }
                    Ok(false) => {
                        report.audit_skipped += 1;
                        continue;
                    }
                    Err(reason) => reason,
                }
            }
            // --- end audit trail ---
            Line::Ok if is_sighting_line(&buf) => {
                match serde_json::from_slice::<SightingLine>(&buf) {
                    Err(e) => format!("not a sighting: {e}"),
                    Ok(SightingLine { sighting }) => match store.insert_sighting_with_id(&sighting)
                    {
                        Ok(true) => {
                            report.sightings_added += 1;
                            continue;
                        }
                        Ok(false) => {
                            report.sightings_skipped += 1;
                            continue;
                        }
                        Err(e @ StoreError::InvalidRecord { .. }) => e.to_string(),
                        Err(e) => return Err(e.into()),
                    },
                }
            }
            Line::Ok => match serde_json::from_slice::<ResultRecord>(&buf) {
                Err(e) => format!("not a result record: {e}"),
                Ok(rec) => match store.insert_with_id(&rec) {
                    Ok(true) => {
                        report.added += 1;
                        continue;
                    }
                    Ok(false) => {
                        report.skipped += 1;
                        continue;
                    }
                    Err(
                        e @ (StoreError::MalformedId { .. } | StoreError::InvalidRecord { .. }),
                    ) => e.to_string(),
                    Err(e) => return Err(e.into()),
                },
            },
        };
        report.invalid_count += 1;
        if report.invalid.len() < MAX_INVALID_LISTED {
            report.invalid.push((line_no, reason));
        }
    }
    store.flush()?;
    Ok(report)
}

/// Whether a line is a sighting's (`{"sighting": …}`), judged by its first
/// key so that a damaged one is reported as a bad sighting.
fn is_sighting_line(line: &[u8]) -> bool {
    let rest = line.trim_ascii_start();
    rest.strip_prefix(b"{")
        .map(|r| r.trim_ascii_start().starts_with(b"\"sighting\""))
        .unwrap_or(false)
}

fn parse_header(line: &[u8]) -> Result<ExportHeader, BackupError> {
    // Check the version before the exact shape, so a future header with new
    // fields is reported as a future version, not as garbage.
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| BackupError::BadHeader {
            reason: e.to_string(),
        })?;
    let version = value
        .get("spotter_export")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| BackupError::BadHeader {
            reason: "no numeric \"spotter_export\" field".into(),
        })?;
    let schema = value.get("schema").and_then(|v| v.as_u64()).unwrap_or(0);
    if version > u64::from(EXPORT_VERSION) || schema > u64::from(RECORD_VERSION) {
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        return Err(BackupError::FutureVersion {
            found: clamp(version),
            schema: clamp(schema),
        });
    }
    serde_json::from_value(value).map_err(|e| BackupError::BadHeader {
        reason: e.to_string(),
    })
}

enum Line {
    Ok,
    TooLong,
    Eof,
}

/// Read one line (without its newline) into `buf`, reading at most
/// [`MAX_LINE_BYTES`] into memory; a longer line is consumed and discarded.
fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>) -> Result<Line, BackupError> {
    let io_err = |source| BackupError::Io {
        action: "read the import",
        source,
    };
    buf.clear();
    let limit = MAX_LINE_BYTES as u64 + 1;
    let n = io::Read::take(&mut *reader, limit)
        .read_until(b'\n', buf)
        .map_err(io_err)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        return Ok(Line::Ok);
    }
    if buf.len() as u64 == limit {
        // Discard the rest of the line in bounded chunks.
        loop {
            let chunk = reader.fill_buf().map_err(io_err)?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    reader.consume(i + 1);
                    break;
                }
                None => {
                    let len = chunk.len();
                    reader.consume(len);
                }
            }
        }
        return Ok(Line::TooLong);
    }
    // The last line, without a trailing newline.
    Ok(Line::Ok)
}
