//! Logical backups of the result store: export to and import from NDJSON,
//! optionally encrypted with age (issue 23).
//!
//! sled's on-disk format may change between versions, so backups are
//! logical: a header line
//! `{"spotter_export":1,"schema":1,"created_ns":…,"count_hint":…}` followed by
//! one line per item, each a JSON object whose FIRST key says its kind:
//! - a [`ResultRecord`] (its own fields, `{"id":…}`), oldest first, each
//!   followed, when the result kept a snapshot, by
//!   `{"snapshot":{"result":"<id>","data":"<base64 image>"}}`;
//! - then (issue 18) `{"sighting":{…}}` per [`Sighting`], by id, each
//!   followed, when it has a best frame, by
//!   `{"sighting_snapshot":{"sighting":<id>,"data":"<base64 image>"}}`;
//! - then `{"audit":{…}}` per audit record (issue 23, see `audit`), oldest
//!   first, imported by id like the others.
//!
//! So snapshots (JPEG, PNG or BMP as stored, byte for byte) travel in the
//! backup right after what they belong to, and a restore is complete. The
//! export streams: one record and at most one snapshot are in memory at a
//! time. A new kind of line is one more arm in [`line_kind`] and one more
//! block in [`export`] and [`import`]. Import validates every line, skips
//! items whose id already exists (so it is idempotent; a snapshot is restored
//! only onto a stored result or sighting that has none), reports bad lines
//! by number and still imports the rest. The format version stays 1: a build
//! from before sightings or snapshots imports the results of a newer export
//! and lists the lines it does not know as invalid.
//!
//! Encryption: [`export_encrypted`] writes the same NDJSON inside an age
//! file (binary, X25519 recipients; the device only ever holds public
//! keys). [`import_file`] recognises an age file (binary or ASCII-armored)
//! by its first line, refuses it without an identity, and otherwise
//! decrypts it TWICE: the first pass reads it to the end, which
//! authenticates every STREAM chunk and the final-chunk flag (so a wrong
//! identity, a changed byte or a truncated file is refused), and only the
//! second pass writes to the store. Nothing is imported from a file that
//! does not decrypt completely, and no plaintext is written anywhere but
//! into the store.
//!
//! Both work on an open [`Store`]. sled locks its directory, so while the
//! daemon runs only the daemon itself can export: `GET /api/v1/backup`, which
//! `spotter export` then calls ([`crate::tools::localapi`]).
//!
//! The `impl Store` block at the end restores snapshots: it needs the
//! store's private trees and counters, which this child module may use.
//!
//! Why one file of some 800 lines: export, import, the age wrapping and
//! the snapshot restore share the line format (kinds, limits, the snapshot
//! encoding) that must stay in step between writer and reader; the tests
//! live in `backup_tests.rs`.

use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use crate::core::result::ResultRecord;
use crate::core::sighting::Sighting;
use crate::store::{parse_id, snapshot_content_type, Snapshot, Store, StoreError, RECORD_VERSION};

/// The export format version this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;
/// The longest line import accepts; a longer one is reported invalid.
/// Snapshot lines have their own limit, [`MAX_SNAPSHOT_LINE_BYTES`].
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// The largest snapshot (decoded image bytes) a backup carries; export
/// leaves out a larger one with a warning (frames are at most
/// `source.max_frame_bytes`, 16 MiB by default).
pub const MAX_SNAPSHOT_BYTES: usize = 32 << 20;
/// The longest snapshot line import accepts: the base64 of
/// [`MAX_SNAPSHOT_BYTES`] and its wrapper.
pub const MAX_SNAPSHOT_LINE_BYTES: usize = MAX_SNAPSHOT_BYTES.div_ceil(3) * 4 + 256;
/// How an age file starts (binary format).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";
/// How an ASCII-armored age file starts.
pub const AGE_ARMOR_MAGIC: &[u8] = b"-----BEGIN AGE ENCRYPTED FILE-----";
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
    #[error("backup: no age recipient to encrypt to")]
    NoRecipients,
    /// Boxed: age's error is large, and every backup result carries it.
    #[error("backup: cannot encrypt: {0}")]
    Encrypt(Box<age::EncryptError>),
    #[error(
        "backup: the file is encrypted (age); pass --identity FILE with the private key of one of \
         the recipients it was encrypted to. Nothing was imported"
    )]
    NeedsIdentity,
    #[error("backup: cannot decrypt the file: {reason}. Nothing was imported")]
    Decrypt { reason: String },
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
    /// Snapshots restored, of results and of sightings (issue 23).
    pub snapshots_added: u64,
    /// Valid snapshots whose result or sighting already had one, or that
    /// the disk guard dropped (free space below the snapshot floor).
    pub snapshots_skipped: u64,
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

/// One result snapshot line: `{"snapshot":{"result":…,"data":…}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotLine {
    snapshot: SnapshotOf<String>,
}

/// One sighting snapshot line: `{"sighting_snapshot":{"sighting":…,"data":…}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SightingSnapshotLine {
    sighting_snapshot: SnapshotOfSighting,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotOf<I> {
    result: I,
    data: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotOfSighting {
    sighting: u64,
    data: String,
}

/// The kind of a line, from its first key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Result,
    Sighting,
    Snapshot,
    SightingSnapshot,
    /// An audit record (issue 23).
    Audit,
}

/// The kind of a line, judged by its first key (so that a damaged line is
/// reported as a bad item of its kind); anything else is a result record.
fn line_kind(line: &[u8]) -> Kind {
    let Some(rest) = line
        .trim_ascii_start()
        .strip_prefix(b"{")
        .and_then(|r| r.trim_ascii_start().strip_prefix(b"\""))
    else {
        return Kind::Result;
    };
    let key = rest.split(|&b| b == b'"').next().unwrap_or_default();
    match key {
        b"sighting" => Kind::Sighting,
        b"snapshot" => Kind::Snapshot,
        b"sighting_snapshot" => Kind::SightingSnapshot,
        b"audit" => Kind::Audit,
        _ => Kind::Result,
    }
}

/// Write every record with `ts_ns >= since_ns` (all if `None`) to `writer` as
/// NDJSON, oldest first, after a header line, each followed by its snapshot
/// line if it kept one; then every sighting present at or after `since_ns`
/// (ended, or last seen while open), each followed by its best frame's line.
/// Calls `progress` with the number of records and sightings written so far
/// every [`PROGRESS_EVERY`] of them and once at the end; returns that number
/// (snapshot lines are not counted). The store keeps accepting writes
/// meanwhile. Records that cannot be decoded are skipped with a warning.
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
        // The id came from the store's own key, so it parses.
        if let Ok(key) = parse_id(&rec.id) {
            let snap = store.snapshots.get(key).map_err(|e| store.db_err(e))?;
            if let Some(img) = snap.as_deref().and_then(stored_image) {
                let id = serde_json::to_string(&rec.id).map_err(|e| io_err(e.into()))?;
                write_snapshot_line(&mut writer, "snapshot", "result", &id, img, &rec.id)
                    .map_err(io_err)?;
            }
        }
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
        let snap = store
            .sight
            .snaps
            .get(id.to_be_bytes())
            .map_err(|e| store.db_err(e))?;
        if let Some(img) = snap.as_deref().and_then(stored_image) {
            let what = format!("sighting {id}");
            write_snapshot_line(
                &mut writer,
                "sighting_snapshot",
                "sighting",
                &id.to_string(),
                img,
                &what,
            )
            .map_err(io_err)?;
        }
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

/// [`export`] inside an age file encrypted to `recipients` (at least one):
/// only the holders of their private keys can read it. The age STREAM
/// writer seals 64 KiB chunks, so memory stays bounded as in [`export`].
pub fn export_encrypted<W: Write>(
    store: &Store,
    since_ns: Option<u64>,
    writer: W,
    recipients: &[age::x25519::Recipient],
    progress: impl FnMut(u64),
) -> Result<u64, BackupError> {
    if recipients.is_empty() {
        return Err(BackupError::NoRecipients);
    }
    let io_err = |source| BackupError::Io {
        action: "write the encrypted export",
        source,
    };
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| BackupError::Encrypt(Box::new(e)))?;
    let mut sealed = encryptor.wrap_output(writer).map_err(io_err)?;
    let n = export(store, since_ns, &mut sealed, progress)?;
    // `finish` writes the last (flagged) chunk; without it the file would
    // be refused as truncated.
    sealed.finish().map_err(io_err)?.flush().map_err(io_err)?;
    Ok(n)
}

/// The image of a stored snapshot value (`[format byte, image...]`), if it
/// is one this build knows and not over [`MAX_SNAPSHOT_BYTES`].
fn stored_image(value: &[u8]) -> Option<&[u8]> {
    match value.split_first() {
        Some((&SNAPSHOT_FORMAT, img)) if img.len() <= MAX_SNAPSHOT_BYTES => Some(img),
        Some((&SNAPSHOT_FORMAT, img)) => {
            log::warn!(
                "export: leaving out a snapshot of {} bytes (over {MAX_SNAPSHOT_BYTES})",
                img.len()
            );
            None
        }
        _ => {
            log::warn!("export: leaving out a snapshot in an unknown format");
            None
        }
    }
}

/// `{"<kind>":{"<owner_key>":<owner_json>,"data":"<base64>"}}\n`, the image
/// base64-encoded straight into `w` (no second copy in memory).
fn write_snapshot_line<W: Write>(
    w: &mut W,
    kind: &str,
    owner_key: &str,
    owner_json: &str,
    img: &[u8],
    what: &str,
) -> io::Result<()> {
    write!(w, "{{\"{kind}\":{{\"{owner_key}\":{owner_json},\"data\":\"")?;
    {
        let mut enc =
            base64::write::EncoderWriter::new(&mut *w, &base64::engine::general_purpose::STANDARD);
        enc.write_all(img)?;
        enc.finish()?;
    }
    log::trace!("export: snapshot of {what}, {} bytes", img.len());
    w.write_all(b"\"}}\n")
}

/// Read an export from `reader` into `store`. The header must be present
/// and of a version this build reads, else nothing is imported. Each line
/// is validated (JSON, id well-formed and matching `ts_ns`, a snapshot's
/// image a JPEG, PNG or BMP whose result or sighting is stored); bad lines
/// are listed with their number and the others are imported. Items whose
/// id exists are skipped, so importing twice adds nothing. Blank lines are
/// ignored. The store is flushed at the end. This reads plain NDJSON; for a
/// file that may be encrypted use [`import_file`].
pub fn import<R: BufRead>(store: &Store, mut reader: R) -> Result<ImportReport, BackupError> {
    let mut report = ImportReport::default();
    let mut buf = Vec::with_capacity(1024);
    let mut line_no = 0u64;

    // The header, refused (before anything is written) unless it is ours.
    line_no += 1;
    match read_line(&mut reader, &mut buf, MAX_LINE_BYTES)? {
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
        let line = read_line(&mut reader, &mut buf, MAX_SNAPSHOT_LINE_BYTES)?;
        let kind = line_kind(&buf);
        let is_snapshot = matches!(kind, Kind::Snapshot | Kind::SightingSnapshot);
        let reason = match line {
            Line::Eof => break,
            Line::TooLong => format!("line longer than {MAX_SNAPSHOT_LINE_BYTES} bytes"),
            Line::Ok if !is_snapshot && buf.len() > MAX_LINE_BYTES => {
                format!("line longer than {MAX_LINE_BYTES} bytes")
            }
            Line::Ok if buf.trim_ascii().is_empty() => continue,
            Line::Ok => match import_line(store, kind, &buf, &mut report)? {
                None => continue,
                Some(reason) => reason,
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

/// Import one line of `kind`: `Ok(None)` when it was written or skipped as
/// present (counted in `report`), `Ok(Some(reason))` when it is invalid.
fn import_line(
    store: &Store,
    kind: Kind,
    buf: &[u8],
    report: &mut ImportReport,
) -> Result<Option<String>, BackupError> {
    let counted = |written: bool, added: &mut u64, skipped: &mut u64| {
        *if written { added } else { skipped } += 1;
        None
    };
    Ok(match kind {
        Kind::Sighting => match serde_json::from_slice::<SightingLine>(buf) {
            Err(e) => Some(format!("not a sighting: {e}")),
            Ok(SightingLine { sighting }) => match store.insert_sighting_with_id(&sighting) {
                Ok(w) => counted(
                    w,
                    &mut report.sightings_added,
                    &mut report.sightings_skipped,
                ),
                Err(e @ StoreError::InvalidRecord { .. }) => Some(e.to_string()),
                Err(e) => return Err(e.into()),
            },
        },
        Kind::Snapshot => match serde_json::from_slice::<SnapshotLine>(buf) {
            Err(e) => Some(format!("not a snapshot: {e}")),
            Ok(SnapshotLine { snapshot }) => {
                match (parse_id(&snapshot.result), decode_image(&snapshot.data)) {
                    (Err(e), _) => Some(format!("snapshot: {e}")),
                    (_, Err(reason)) => {
                        Some(format!("snapshot of result {}: {reason}", snapshot.result))
                    }
                    (Ok(key), Ok(img)) => match store.restore_result_snapshot(&key, img)? {
                        Restored::NoOwner => Some(format!(
                            "snapshot of result {}, which is not in the store",
                            snapshot.result
                        )),
                        Restored::Written(w) => counted(
                            w,
                            &mut report.snapshots_added,
                            &mut report.snapshots_skipped,
                        ),
                    },
                }
            }
        },
        Kind::SightingSnapshot => match serde_json::from_slice::<SightingSnapshotLine>(buf) {
            Err(e) => Some(format!("not a sighting snapshot: {e}")),
            Ok(SightingSnapshotLine {
                sighting_snapshot: s,
            }) => match decode_image(&s.data) {
                Err(reason) => Some(format!("snapshot of sighting {}: {reason}", s.sighting)),
                Ok(img) => match store.restore_sighting_snapshot(s.sighting, img)? {
                    Restored::NoOwner => Some(format!(
                        "snapshot of sighting {}, which is not in the store",
                        s.sighting
                    )),
                    Restored::Written(w) => counted(
                        w,
                        &mut report.snapshots_added,
                        &mut report.snapshots_skipped,
                    ),
                },
            },
        },
        // --- Audit trail (issue 23): imported by id, idempotently. ---
        Kind::Audit => match super::audit::import_line(store, buf)? {
            Ok(w) => counted(w, &mut report.audit_added, &mut report.audit_skipped),
            Err(reason) => Some(reason),
        },
        Kind::Result => match serde_json::from_slice::<ResultRecord>(buf) {
            Err(e) => Some(format!("not a result record: {e}")),
            Ok(rec) => match store.insert_with_id(&rec) {
                Ok(w) => counted(w, &mut report.added, &mut report.skipped),
                Err(e @ (StoreError::MalformedId { .. } | StoreError::InvalidRecord { .. })) => {
                    Some(e.to_string())
                }
                Err(e) => return Err(e.into()),
            },
        },
    })
}

/// The image of a snapshot line: base64 of a JPEG, PNG or BMP of at most
/// [`MAX_SNAPSHOT_BYTES`].
fn decode_image(data: &str) -> Result<Vec<u8>, String> {
    let img = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("data is not base64: {e}"))?;
    if img.len() > MAX_SNAPSHOT_BYTES {
        return Err(format!("image over {MAX_SNAPSHOT_BYTES} bytes"));
    }
    if snapshot_content_type(&img).is_none() {
        return Err("data is not a JPEG, PNG or BMP image".into());
    }
    Ok(img)
}

/// Import a backup file that may be encrypted: a plain export is read as by
/// [`import`] (`identities` unused); an age file (binary or armored) needs
/// `identities` ([`BackupError::NeedsIdentity`] otherwise) and is decrypted
/// to the end once, writing nothing, before a second pass imports it, so a
/// wrong identity ([`BackupError::Decrypt`]), a tampered or a truncated
/// file imports nothing. Memory stays bounded: both passes stream.
pub fn import_file<F: Read + Seek>(
    store: &Store,
    mut file: F,
    identities: &[Box<dyn age::Identity>],
) -> Result<ImportReport, BackupError> {
    let io_err = |source| BackupError::Io {
        action: "read the import",
        source,
    };
    let mut start = [0u8; AGE_ARMOR_MAGIC.len()];
    let n = crate::core::fsutil::read_up_to(&mut file, &mut start).map_err(io_err)?;
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    if !is_age(&start[..n]) {
        return import(store, io::BufReader::new(file));
    }
    if identities.is_empty() {
        return Err(BackupError::NeedsIdentity);
    }
    // Pass 1: authenticate every chunk, through the final one.
    let mut plain = decrypting(&mut file, identities)?;
    io::copy(&mut plain, &mut io::sink()).map_err(decrypt_err)?;
    drop(plain);
    // Pass 2: the same bytes again (the file stays open), into the store.
    file.seek(SeekFrom::Start(0)).map_err(io_err)?;
    let plain = decrypting(&mut file, identities)?;
    import(store, io::BufReader::with_capacity(64 * 1024, plain)).map_err(|e| match e {
        BackupError::Io { source, .. } => BackupError::Decrypt {
            reason: format!(
                "{source} on the second pass (the file changed while it was imported?); \
                 part of it may have been imported"
            ),
        },
        e => e,
    })
}

/// Whether these first bytes start an age file, binary or armored.
pub fn is_age(start: &[u8]) -> bool {
    start.starts_with(AGE_MAGIC) || start.starts_with(AGE_ARMOR_MAGIC)
}

fn decrypt_err(e: impl std::fmt::Display) -> BackupError {
    BackupError::Decrypt {
        reason: e.to_string(),
    }
}

/// A reader of the plaintext of the age file `file` (from its start).
fn decrypting<'a, F: Read>(
    file: &'a mut F,
    identities: &'a [Box<dyn age::Identity>],
) -> Result<impl Read + 'a, BackupError> {
    let decryptor =
        age::Decryptor::new_buffered(age::armor::ArmoredReader::new(file)).map_err(decrypt_err)?;
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref()))
        .map_err(decrypt_err)
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

/// Read one line (without its newline) into `buf`, reading at most `max`
/// bytes into memory; a longer line is consumed and discarded.
fn read_line<R: BufRead>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<Line, BackupError> {
    let io_err = |source| BackupError::Io {
        action: "read the import",
        source,
    };
    buf.clear();
    let limit = max as u64 + 1;
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

/// First byte of a stored snapshot value (as `Snapshot::encode` writes it).
const SNAPSHOT_FORMAT: u8 = 1;

/// What restoring a snapshot did.
enum Restored {
    /// Its result or sighting is not stored: nothing written.
    NoOwner,
    /// `true`: written; `false`: one was already there, or the disk guard
    /// dropped it (free space below the snapshot floor).
    Written(bool),
}

impl Store {
    /// Keep `img` as the snapshot of the stored result `key` unless it has
    /// one: the check and the write are one transaction, and the counters
    /// (the record's bytes, the snapshot budgets) move as for a live one.
    fn restore_result_snapshot(
        &self,
        key: &[u8; 16],
        img: Vec<u8>,
    ) -> Result<Restored, StoreError> {
        let value = Snapshot { bytes: img }.encode();
        let n = (key.len() + value.len()) as u64;
        let restored =
            self.restore_snapshot(&self.results, &self.snapshots, &key[..], &value, n)?;
        if matches!(restored, Restored::Written(true)) {
            self.snap_count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            for c in [&self.snap_bytes, &self.bytes] {
                c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(restored)
    }

    /// Keep `img` as the best frame of the stored sighting `id` unless it
    /// has one (see [`Store::restore_result_snapshot`]).
    fn restore_sighting_snapshot(&self, id: u64, img: Vec<u8>) -> Result<Restored, StoreError> {
        let key = id.to_be_bytes();
        let value = Snapshot { bytes: img }.encode();
        let n = (key.len() + value.len()) as u64;
        let restored =
            self.restore_snapshot(&self.sight.rows, &self.sight.snaps, &key[..], &value, n)?;
        if matches!(restored, Restored::Written(true)) {
            self.sight
                .snap_count
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.sight
                .snap_bytes
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(restored)
    }

    /// Write `value` under `key` in `snaps` if `owners` has `key` and
    /// `snaps` does not, in one transaction, admitted by the disk guard.
    fn restore_snapshot(
        &self,
        owners: &sled::Tree,
        snaps: &sled::Tree,
        key: &[u8],
        value: &[u8],
        n: u64,
    ) -> Result<Restored, StoreError> {
        let _retire = super::flush::Retire;
        if let Some(cause) = self.poisoned.get() {
            return Err(StoreError::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        let _reservation = match self.guard.admit(&self.dir, 0, Some(n)) {
            super::pressure::Admission::All(r) => r,
            super::pressure::Admission::ResultOnly(_) => return Ok(Restored::Written(false)),
            super::pressure::Admission::Refused { free, floor } => {
                return Err(StoreError::DiskFull {
                    path: self.dir.clone(),
                    free,
                    floor,
                })
            }
        };
        let done = (owners, snaps).transaction(|(owners, snaps)| {
            if owners.get(key)?.is_none() {
                return Ok(Restored::NoOwner);
            }
            if snaps.get(key)?.is_some() {
                return Ok(Restored::Written(false));
            }
            snaps.insert(key, value)?;
            Ok::<_, sled::transaction::ConflictableTransactionError<()>>(Restored::Written(true))
        });
        match done {
            Ok(r) => {
                if matches!(r, Restored::Written(true)) {
                    for c in [&self.written, &self.snap_written] {
                        c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Ok(r)
            }
            Err(sled::transaction::TransactionError::Abort(())) => Ok(Restored::Written(false)),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(self.write_err(e)),
        }
    }
}

#[cfg(test)]
#[path = "backup_tests.rs"]
mod tests;
