//! Result store: owns the on-disk database of [`ResultRecord`]s (sled 0.34).
//!
//! Layout of a store directory:
//! - `SCHEMA_VERSION`: a one-line text file holding the store schema version.
//!   It is written (atomically) when the store is created and checked before
//!   the database is opened, so a store written by a newer Spotter is refused
//!   without a single byte being written to it (opening sled itself may write,
//!   e.g. a fresh snapshot, so the check cannot live inside sled).
//! - `db/`: the sled database. Tree `results` maps a 16-byte big-endian key
//!   `(ts_ns: u64, seq: u64)` to a value `[VALUE_FORMAT_JSON, json...]`; key
//!   order is time order. Trees `by_label` and `by_model` index it (see
//!   `index`), tree `snapshots` holds the frames kept for some results (see
//!   `snapshot`), all under the same record key. Tree `meta` holds the
//!   write probe.
//!
//! Everything one result writes goes into one sled transaction over
//! [`Store::tx_trees`] (see `Store::insert_new`), and retention removes it
//! the same way, so a crash never leaves an index entry or a snapshot
//! without its record. To write another tree with each result (an outbox,
//! say), add it to `tx_trees` and to the entries built in `insert_new`.
//!
//! A record's id is the 32-hex-digit encoding of its key. `seq` comes from
//! sled's `generate_id`, which is monotonic across restarts, so ids are unique
//! even when records share a timestamp.
//!
//! All methods block (disk I/O). The pipeline calls [`Store::insert`] from its
//! own thread; the API calls the read methods through `spawn_blocking`.
//!
//! With MQTT enabled, tree `outbox` holds each result to publish, written in
//! the same transaction as the result (see `outbox`).
//!
//! Trees `sightings`, `sighting_snapshots` and `sightings_open` hold the
//! sightings (issue 18), each written in one transaction with its outbox
//! entry; listing, summary, retention and backup of them are in `sightings`.
//!
//! Tree `audit` holds the audit trail of administrative actions (issue 23),
//! append-only with its own retention; see `audit`.
//!
//! Retention (age, count and byte limits, enforced oldest-first by a
//! background [`Pruner`]) lives in `retention` (clock synchronization, which
//! suspends the age limit, in [`crate::core::clock`]); the free-space floor below which
//! nothing is written lives in `pressure`.
//!
//! Why one file of some 980 lines: the `Store` type's write paths (result,
//! indexes, snapshot and outbox entry in one sled transaction), its reads and its
//! figures share the private trees and counters; the pieces that can stand
//! alone (flush, index, outbox, pressure, retention, snapshot, backup) are
//! already files of their own, and the tests live in `tests.rs`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sled::Transactional;

use crate::core::result::ResultRecord;

mod audit;
pub mod backup;
mod flush;
mod index;
mod outbox;
mod pressure;
mod retention;
mod sightings;
mod snapshot;
mod statement;

pub use audit::{
    spool as audit_spool, AuditAction, AuditLimits, AuditPage, AuditRecord, Outcome,
    MAX_AUDIT_PAGE, PENDING_FILE as AUDIT_PENDING_FILE,
};
pub use index::{
    best_score, decode_cursor, encode_cursor, Page, Query, MAX_SCAN_PER_PAGE, MAX_TERM_LEN,
};
pub use outbox::{Outbox, OutboxEntry, OutboxError, OutboxKind, OutboxLimits};
pub use pressure::{DiskGuard, FreeSpace, PressureLevel, Statvfs, RESTART_MIN_FREE};
pub use retention::{PruneReport, Pruner, Retention, DEFAULT_PRUNE_EVERY};
pub use sightings::{
    Bucket, SightingPage, SightingPruneReport, SightingQuery, SummaryRow, MAX_SUMMARY_BUCKETS,
};
pub use snapshot::{snapshot_content_type, Snapshot, SnapshotGate, SnapshotRule};
pub use statement::{Kept, RetentionStatement};

use index::IndexKind;

/// The schema version this build writes and understands. Version 2 added
/// the label and model indexes and the snapshots tree; a version 1 store is
/// migrated (indexes built) when it is opened.
pub(crate) const SCHEMA_VERSION: u32 = 2;
/// The version of one exported record (the `schema` of a backup header):
/// records themselves have not changed since version 1.
pub const RECORD_VERSION: u32 = 1;
/// Name of the schema-version file inside the store directory.
pub(crate) const SCHEMA_FILE: &str = "SCHEMA_VERSION";
/// sled's default background flush interval, used by [`Store::open`].
pub(crate) const DEFAULT_FLUSH_EVERY_MS: u64 = 500;
/// sled's page cache bound when none is given: the daemon's default,
/// `store.cache_bytes` ([`crate::config::DEFAULT_STORE_CACHE_BYTES`], where
/// the choice is explained); `spotter bench-store --cache-bytes` compares
/// other values (README, "Data and backups").
pub(crate) const CACHE_CAPACITY: u64 = crate::config::DEFAULT_STORE_CACHE_BYTES;
/// Name of the sled directory inside the store directory.
const DB_DIR: &str = "db";
const RESULTS_TREE: &str = "results";
const BY_LABEL_TREE: &str = "by_label";
const BY_MODEL_TREE: &str = "by_model";
const SNAPSHOTS_TREE: &str = "snapshots";
const META_TREE: &str = "meta";
/// Positions of the trees in [`Store::tx_trees`].
const T_RESULTS: usize = 0;
const T_BY_LABEL: usize = 1;
const T_BY_MODEL: usize = 2;
const T_SNAPSHOTS: usize = 3;
const PROBE_KEY: &[u8] = b"write_probe";
/// First byte of every stored value: the value is serde_json of `ResultRecord`.
const VALUE_FORMAT_JSON: u8 = 1;
/// Records deleted per batch by [`Store::retain_newest`] and
/// [`Store::prune_once`]. A batch holds sled's writer lock while it is
/// applied, so it is kept small enough to take a few milliseconds at most.
pub const PRUNE_BATCH: usize = 64;
/// Length of a record id: 16 key bytes as lowercase hex.
pub const ID_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("result store {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("result store {path}: database error: {source}")]
    Db { path: PathBuf, source: sled::Error },
    #[error(
        "result store {path} has schema version {found}, but this build only understands \
         versions up to {supported}; refusing to open it (nothing was written). \
         Upgrade Spotter or point it at another state directory"
    )]
    FutureSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("result store {path}: invalid schema file: {reason}")]
    BadSchema { path: PathBuf, reason: String },
    #[error("malformed result id {id:?}: expected {ID_LEN} hexadecimal digits")]
    MalformedId { id: String },
    #[error("result store {path}: cannot encode record: {source}")]
    Encode {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("result store {path}: corrupt record {key}: {reason}")]
    Corrupt {
        path: PathBuf,
        key: String,
        reason: String,
    },
    #[error(
        "result store {path} is in use by another process (the spotter service?); stop it \
         (systemctl stop spotter) or use the running daemon's API (GET /api/v1/backup)"
    )]
    Locked { path: PathBuf },
    #[error("result store {path}: record {id} is invalid: {reason}")]
    InvalidRecord {
        path: PathBuf,
        id: String,
        reason: String,
    },
    #[error("malformed cursor {cursor:?}: pass the next_cursor of the previous page unchanged")]
    BadCursor { cursor: String },
    #[error(
        "result store {path}: the disk is (nearly) full: {free} bytes free, below the floor of \
         {floor} bytes (store.min_free_bytes); results are not stored until space returns"
    )]
    DiskFull {
        path: PathBuf,
        free: u64,
        floor: u64,
    },
    #[error(
        "result store {path}: the database failed to write ({cause}) and refuses writes until \
         it is reopened; Spotter restarts itself once the disk has space again"
    )]
    Poisoned { path: PathBuf, cause: String },
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// Issue 18: a sightings summary over too many buckets.
    #[error(
        "sightings summary: the range spans {buckets} buckets, more than the {max} one summary \
         holds; use a larger bucket or a shorter range"
    )]
    SummaryTooWide { buckets: i64, max: i64 },
}

pub use crate::metrics::StoreStats;

/// The result database. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    /// Held for its `Drop` (stop and join). Declared first so it is dropped
    /// before `db`.
    _flusher: flush::Flusher,
    /// How far writes are known to be on disk ([`Store::durable_through`]).
    durability: std::sync::Arc<flush::Durability>,
    dir: PathBuf,
    db: sled::Db,
    results: sled::Tree,
    by_label: sled::Tree,
    by_model: sled::Tree,
    snapshots: sled::Tree,
    meta: sled::Tree,
    /// Refuses writes below the free-space floor.
    guard: DiskGuard,
    /// Snapshots stored, and the sum of their key and value lengths.
    snap_count: AtomicUsize,
    snap_bytes: AtomicU64,
    /// Number of records, counted once at open and maintained by `insert`
    /// and the deleters (sled's `Tree::len` is a full scan).
    count: AtomicUsize,
    /// Sum of key and value lengths of all records, their index entries and
    /// their snapshots (the logical size that [`Retention::max_bytes`]
    /// limits), maintained like `count`.
    bytes: AtomicU64,
    /// Serializes deleters (pruner, `retain_newest`) so two of them never
    /// remove, and subtract, the same record twice. Writers never take it.
    delete_lock: Mutex<()>,
    /// sled's size on disk as of the last [`Store::size_on_disk`] (at open,
    /// then after every pruner pass), so per-request readers need no
    /// directory walk.
    disk_bytes: AtomicU64,
    /// The MQTT outbox, when publishing is enabled ([`Store::with_outbox`]).
    outbox: Option<std::sync::Arc<Outbox>>,
    /// Issue 18: the sightings' trees and counters (see `sightings`).
    sight: sightings::SightingTrees,
    /// Issue 23: the audit trail (see `audit`).
    audit: audit::AuditTrail,
    /// Issue 23: the last retention statement (see `statement`).
    said: statement::Said,
    /// [`Store::size_on_disk`] when opened.
    size_at_open: u64,
    /// Logical bytes written since open: all, and snapshots only.
    written: AtomicU64,
    snap_written: AtomicU64,
    /// sled returned an I/O error from a write: sled 0.34 then fails every
    /// later write until the database is reopened. Holds that error.
    poisoned: std::sync::Arc<std::sync::OnceLock<String>>,
    /// Wakes the pruner early when the count runs past `max_records`.
    early_prune: retention::EarlyPrune,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("records", &self.len())
            .finish()
    }
}

/// A record id reserved by [`Store::reserve_id`], not yet written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReservedId {
    key: [u8; 16],
    seq: u64,
}

impl ReservedId {
    /// The id as records and the API spell it (32 lower-case hex digits).
    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.key)
    }
}

/// The 16-byte key of a record.
fn make_key(ts_ns: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&ts_ns.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// Parse a record id (32 hex digits, either case) into its key.
pub(crate) fn parse_id(id: &str) -> Result<[u8; 16], StoreError> {
    let malformed = || StoreError::MalformedId {
        id: id.chars().take(64).collect(),
    };
    if id.len() != ID_LEN {
        return Err(malformed());
    }
    let mut key = [0u8; 16];
    hex::decode_to_slice(id, &mut key).map_err(|_| malformed())?;
    Ok(key)
}

impl Store {
    /// Open the store in `dir`, creating it (and the directory) if absent.
    ///
    /// A store whose schema version is newer than [`SCHEMA_VERSION`] is refused
    /// with [`StoreError::FutureSchema`] before anything is written.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(dir, DEFAULT_FLUSH_EVERY_MS)
    }

    /// [`Store::open`] with the flush interval: the store's flusher makes
    /// writes durable at most `flush_every_ms` after they are made (0: only
    /// on [`Store::flush`] and when the store is dropped); how far it got is
    /// [`Store::durable_through`].
    pub fn open_with(dir: &Path, flush_every_ms: u64) -> Result<Store, StoreError> {
        Self::open_with_cache(dir, flush_every_ms, CACHE_CAPACITY)
    }

    /// [`Store::open_with`] with sled's page cache bounded to `cache_bytes`
    /// (`store.cache_bytes`; [`Store::open_with`] uses [`CACHE_CAPACITY`];
    /// `spotter bench-store` varies it).
    pub(crate) fn open_with_cache(
        dir: &Path,
        flush_every_ms: u64,
        cache_bytes: u64,
    ) -> Result<Store, StoreError> {
        let io_err = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io {
                path,
                action,
                source,
            }
        };
        let schema_path = dir.join(SCHEMA_FILE);
        let db_path = dir.join(DB_DIR);
        // Results and snapshots are private whatever the umask (the state
        // directory above may be shared, e.g. 0750 with the service group).
        crate::core::fsutil::create_private_dir(dir, SCHEMA_FILE)
            .map_err(io_err("create directory", dir))?;

        let mut migrate_from = None;
        match fs::read_to_string(&schema_path) {
            Ok(text) => {
                let found: u32 = text.trim().parse().map_err(|_| StoreError::BadSchema {
                    path: schema_path.clone(),
                    reason: format!("expected a version number, found {:?}", text.trim()),
                })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::FutureSchema {
                        path: dir.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                if found == 0 {
                    return Err(StoreError::BadSchema {
                        path: schema_path,
                        reason: "version 0 is not a valid schema version".into(),
                    });
                }
                if found < SCHEMA_VERSION {
                    migrate_from = Some(found);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if db_path.exists() {
                    // A database without a schema file: not something we created.
                    return Err(StoreError::BadSchema {
                        path: schema_path,
                        reason: "missing, but a database exists beside it; refusing to guess its \
                                 version"
                            .into(),
                    });
                }
                write_atomic(&schema_path, format!("{SCHEMA_VERSION}\n").as_bytes())
                    .map_err(io_err("write schema file", &schema_path))?;
                log::info!(path:display = dir.display(); "created result store");
            }
            Err(e) => {
                return Err(StoreError::Io {
                    path: schema_path,
                    action: "read schema file",
                    source: e,
                })
            }
        }

        let db_err = |source| StoreError::Db {
            path: db_path.clone(),
            source,
        };
        // The store's own flusher (`flush`) replaces sled's, so that each
        // flush's reach is known.
        let db = sled::Config::new()
            .path(&db_path)
            .flush_every_ms(None)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(|e| match e {
                // sled 0.34 reports its exclusive directory lock (flock) being
                // held only through this message.
                sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
                    StoreError::Locked {
                        path: dir.to_path_buf(),
                    }
                }
                e => db_err(e),
            })?;
        let results = db.open_tree(RESULTS_TREE).map_err(db_err)?;
        let by_label = db.open_tree(BY_LABEL_TREE).map_err(db_err)?;
        let by_model = db.open_tree(BY_MODEL_TREE).map_err(db_err)?;
        let snapshots = db.open_tree(SNAPSHOTS_TREE).map_err(db_err)?;
        let meta = db.open_tree(META_TREE).map_err(db_err)?;
        let sight = sightings::SightingTrees::open(&db).map_err(db_err)?;
        let audit = audit::AuditTrail::open(&db).map_err(db_err)?;
        let store = Store {
            dir: dir.to_path_buf(),
            db,
            results,
            by_label,
            by_model,
            snapshots,
            meta,
            guard: DiskGuard::disabled(),
            snap_count: AtomicUsize::new(0),
            snap_bytes: AtomicU64::new(0),
            count: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            delete_lock: Mutex::new(()),
            disk_bytes: AtomicU64::new(0),
            outbox: None,
            sight,
            audit,
            said: Default::default(),
            size_at_open: 0,
            written: AtomicU64::new(0),
            snap_written: AtomicU64::new(0),
            poisoned: Default::default(),
            early_prune: Default::default(),
            _flusher: flush::Flusher::default(),
            durability: Default::default(),
        };
        if let Some(from) = migrate_from {
            store.migrate(from)?;
            write_atomic(&schema_path, format!("{SCHEMA_VERSION}\n").as_bytes())
                .map_err(io_err("write schema file", &schema_path))?;
            log::info!(path:display = dir.display(); "result store migrated from schema {from} to {SCHEMA_VERSION}");
        }
        store.recount().map_err(db_err)?;
        let size_at_open = store.size_on_disk();
        let flusher = if flush_every_ms == 0 {
            flush::Flusher::default()
        } else {
            let every = Duration::from_millis(flush_every_ms);
            flush::Flusher::spawn(
                store.db.clone(),
                every,
                store.durability.clone(),
                store.poisoned.clone(),
            )
            .map_err(io_err("start the flusher thread", dir))?
        };
        Ok(Store {
            size_at_open,
            _flusher: flusher,
            ..store
        })
    }

    /// Use `guard` to refuse writes below a free-space floor (default: no floor).
    pub fn with_guard(mut self, guard: DiskGuard) -> Store {
        self.guard = guard;
        self
    }

    /// The free-space guard.
    pub fn guard(&self) -> &DiskGuard {
        &self.guard
    }

    /// Bring an older schema up to this one. Version 1 had no indexes:
    /// build them (idempotent, so a crash mid-way just builds them again on
    /// the next open, as the schema file still says 1), then flush.
    fn migrate(&self, from: u32) -> Result<(), StoreError> {
        let _retire = flush::Retire;
        debug_assert!(from == 1, "only schema 1 predates {SCHEMA_VERSION}");
        let mut n = 0u64;
        let mut batch_label = sled::Batch::default();
        let mut batch_model = sled::Batch::default();
        for item in self.results.iter() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let Ok(key) = <[u8; 16]>::try_from(&k[..]) else {
                continue;
            };
            let rec = match self.decode(&key, &v) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("migration: not indexing unreadable record: {e}");
                    continue;
                }
            };
            for (kind, ik, iv) in index::index_entries(&key, &rec) {
                match kind {
                    IndexKind::Label => batch_label.insert(ik, iv),
                    IndexKind::Model => batch_model.insert(ik, iv),
                }
            }
            n += 1;
            if n % PRUNE_BATCH as u64 == 0 {
                self.by_label
                    .apply_batch(std::mem::take(&mut batch_label))
                    .map_err(|e| self.db_err(e))?;
                self.by_model
                    .apply_batch(std::mem::take(&mut batch_model))
                    .map_err(|e| self.db_err(e))?;
            }
        }
        self.by_label
            .apply_batch(batch_label)
            .map_err(|e| self.db_err(e))?;
        self.by_model
            .apply_batch(batch_model)
            .map_err(|e| self.db_err(e))?;
        self.flush()
    }

    /// Recount the counters from the trees.
    fn recount(&self) -> Result<(), sled::Error> {
        let (count, rbytes) = tally(&self.results)?;
        let (_, lbytes) = tally(&self.by_label)?;
        let (_, mbytes) = tally(&self.by_model)?;
        let (scount, sbytes) = tally(&self.snapshots)?;
        self.count.store(count, Ordering::Relaxed);
        self.bytes
            .store(rbytes + lbytes + mbytes + sbytes, Ordering::Relaxed);
        self.snap_count.store(scount, Ordering::Relaxed);
        self.snap_bytes.store(sbytes, Ordering::Relaxed);
        self.sight.recount()
    }

    /// The trees every result writes in one transaction, in the order of the
    /// `T_*` constants.
    fn tx_trees(&self) -> [&sled::Tree; 4] {
        [
            &self.results,
            &self.by_label,
            &self.by_model,
            &self.snapshots,
        ]
    }

    /// Enable the MQTT outbox: from now on [`Store::insert`] also queues each
    /// result for publishing, in the same transaction.
    pub fn with_outbox(mut self, limits: OutboxLimits) -> Result<Store, StoreError> {
        self.outbox = Some(std::sync::Arc::new(Outbox::open(
            &self.db, &self.dir, limits,
        )?));
        Ok(self)
    }

    /// The MQTT outbox, if enabled.
    pub fn outbox(&self) -> Option<&std::sync::Arc<Outbox>> {
        self.outbox.as_ref()
    }

    /// The store directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn db_err(&self, source: sled::Error) -> StoreError {
        StoreError::Db {
            path: self.dir.join(DB_DIR),
            source,
        }
    }

    /// Store `rec`, assigning `rec.id` from `(rec.ts_ns, a fresh sequence number)`.
    /// Not flushed to disk: sled flushes in the background, and [`Store::flush`]
    /// forces it.
    pub fn insert(&self, rec: &mut ResultRecord) -> Result<(), StoreError> {
        self.insert_with_snapshot(rec, None).map(|_| ())
    }

    /// [`Store::insert`], keeping `snapshot` (the frame's encoded image)
    /// with the record when given. Returns whether the snapshot was kept: it
    /// is dropped (and counted) while free space is below the snapshot floor
    /// (see [`DiskGuard`]). Below the record floor nothing is written and
    /// the error is [`StoreError::DiskFull`].
    pub fn insert_with_snapshot(
        &self,
        rec: &mut ResultRecord,
        snapshot: Option<&Snapshot>,
    ) -> Result<bool, StoreError> {
        self.refuse_if_poisoned()?;
        // `generate_id` never repeats, so the key is fresh unless an imported
        // record (from another device) already holds the same (ts_ns, seq);
        // then a later sequence number is tried. Compare-and-swap against
        // "absent" makes an overwrite impossible rather than unlikely.
        for _ in 0..3 {
            let seq = self.db.generate_id().map_err(|e| self.db_err(e))?;
            let key = make_key(rec.ts_ns, seq);
            rec.id = hex::encode(key);
            if let Some(kept) = self.insert_new(&key, rec, snapshot, Some(seq))? {
                return Ok(kept);
            }
        }
        Err(StoreError::Corrupt {
            path: self.dir.clone(),
            key: rec.id.clone(),
            reason: "key already present three times in a row (sequence generator repeated)".into(),
        })
    }

    /// Reserve the id a result at `ts_ns` will be stored under, ahead of its
    /// write: the result sink's writer thread writes it
    /// ([`Store::insert_reserved`]) while the inference thread hands the id
    /// on at once (issue 21: the write is off the inference thread).
    pub(crate) fn reserve_id(&self, ts_ns: u64) -> Result<ReservedId, StoreError> {
        let seq = self.db.generate_id().map_err(|e| self.db_err(e))?;
        Ok(ReservedId {
            key: make_key(ts_ns, seq),
            seq,
        })
    }

    /// [`Store::insert_with_snapshot`] under the reserved `id` (which sets
    /// `rec.id`). Should an imported record hold that key already (the only
    /// way it can be taken), the record gets a fresh id as
    /// `insert_with_snapshot` gives, so nothing is ever overwritten.
    pub(crate) fn insert_reserved(
        &self,
        rec: &mut ResultRecord,
        id: ReservedId,
        snapshot: Option<&Snapshot>,
    ) -> Result<bool, StoreError> {
        self.refuse_if_poisoned()?;
        rec.id = hex::encode(id.key);
        match self.insert_new(&id.key, rec, snapshot, Some(id.seq))? {
            Some(kept) => Ok(kept),
            None => self.insert_with_snapshot(rec, snapshot),
        }
    }

    /// Store a record that already has an id (a restored backup): the id must
    /// be a valid record id whose timestamp half equals `rec.ts_ns`. Returns
    /// `false`, writing nothing, when a record with this id already exists, so
    /// importing the same backup twice adds nothing.
    pub(crate) fn insert_with_id(&self, rec: &ResultRecord) -> Result<bool, StoreError> {
        let key = parse_id(&rec.id)?;
        let key_ts = u64::from_be_bytes([
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
        ]);
        if key_ts != rec.ts_ns {
            return Err(StoreError::InvalidRecord {
                path: self.dir.clone(),
                id: rec.id.clone(),
                reason: format!("id encodes timestamp {key_ts} but ts_ns is {}", rec.ts_ns),
            });
        }
        self.refuse_if_poisoned()?;
        Ok(self.insert_new(&key, rec, None, None)?.is_some())
    }

    /// Write `rec` under `key`, with its index entries and `snapshot`, in one
    /// transaction, if the key is absent and the disk guard admits it (see
    /// [`DiskGuard::admit`]: a full disk is [`StoreError::DiskFull`], a low
    /// one drops the snapshot). `Ok(Some(kept_snapshot))` when written,
    /// `Ok(None)` (nothing written) if the key is present. With `outbox_seq`
    /// and the MQTT outbox enabled, the outbox entry joins the same
    /// transaction, so a result is never stored unqueued.
    fn insert_new(
        &self,
        key: &[u8; 16],
        rec: &ResultRecord,
        snapshot: Option<&Snapshot>,
        outbox_seq: Option<u64>,
    ) -> Result<Option<bool>, StoreError> {
        let _retire = flush::Retire;
        let mut value = Vec::with_capacity(512);
        value.push(VALUE_FORMAT_JSON);
        serde_json::to_writer(&mut value, rec).map_err(|source| StoreError::Encode {
            path: self.dir.clone(),
            source,
        })?;
        // (tree, key, value) of everything written besides the record.
        let mut entries: Vec<(usize, Vec<u8>, Vec<u8>)> = index::index_entries(key, rec)
            .into_iter()
            .map(|(kind, k, v)| {
                (
                    if kind == IndexKind::Label {
                        T_BY_LABEL
                    } else {
                        T_BY_MODEL
                    },
                    k,
                    v,
                )
            })
            .collect();
        let record_size = (key.len() + value.len()) as u64
            + entries
                .iter()
                .map(|(_, k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>();
        let mut trees: Vec<&sled::Tree> = self.tx_trees().to_vec();
        // The outbox entry (counted in the outbox's own bounds, not in `size`,
        // but written, so admitted with the record).
        let queued = match (&self.outbox, outbox_seq) {
            (Some(outbox), Some(seq)) => {
                let (okey, entry) = (
                    outbox::outbox_key(seq),
                    Outbox::encode(OutboxKind::Result, &value[1..]),
                );
                trees.push(outbox.tree());
                entries.push((trees.len() - 1, okey.to_vec(), entry));
                Some(outbox)
            }
            _ => None,
        };
        let outbox_size = match (queued, entries.last()) {
            (Some(_), Some((_, k, v))) => (k.len() + v.len()) as u64,
            _ => 0,
        };
        // `1 +`: the snapshot's format byte (see `Snapshot::encode`).
        let snapshot_len = snapshot.map(|s| (key.len() + 1 + s.bytes.len()) as u64);
        let (snapshot, _reservation) =
            match self
                .guard
                .admit(&self.dir, record_size + outbox_size, snapshot_len)
            {
                pressure::Admission::All(r) => (snapshot, r),
                pressure::Admission::ResultOnly(r) => (None, r),
                pressure::Admission::Refused { free, floor } => {
                    return Err(StoreError::DiskFull {
                        path: self.dir.clone(),
                        free,
                        floor,
                    })
                }
            };
        let snap_size = snapshot.map(|s| {
            let v = s.encode();
            let n = (key.len() + v.len()) as u64;
            entries.push((T_SNAPSHOTS, key.to_vec(), v));
            n
        });
        let size = record_size + snap_size.unwrap_or(0);
        let written = trees[..].transaction(|tx| {
            if tx[T_RESULTS].get(key)?.is_some() {
                return Ok(false);
            }
            tx[T_RESULTS].insert(&key[..], value.as_slice())?;
            for (t, k, v) in &entries {
                tx[*t].insert(k.as_slice(), v.as_slice())?;
            }
            Ok(true)
        });
        match written {
            Ok(true) => {
                self.durability.inserted(*key);
                let count = self.count.fetch_add(1, Ordering::Relaxed) + 1;
                self.early_prune.inserted(count);
                self.bytes.fetch_add(size, Ordering::Relaxed);
                self.written.fetch_add(size, Ordering::Relaxed);
                if let Some(n) = snap_size {
                    self.snap_count.fetch_add(1, Ordering::Relaxed);
                    self.snap_bytes.fetch_add(n, Ordering::Relaxed);
                    self.snap_written.fetch_add(n, Ordering::Relaxed);
                }
                if let Some(outbox) = queued {
                    outbox.committed(outbox_size);
                }
                Ok(Some(snapshot.is_some()))
            }
            Ok(false) => Ok(None),
            Err(sled::transaction::TransactionError::Abort(())) => Ok(None),
            Err(sled::transaction::TransactionError::Storage(e)) => Err(self.write_err(e)),
        }
    }

    /// A sled error from a write: ENOSPC becomes [`StoreError::DiskFull`]
    /// (and puts the guard in the full state until space returns). Any I/O
    /// error poisons the store (see [`Store::restart_due`]).
    fn write_err(&self, e: sled::Error) -> StoreError {
        if let sled::Error::Io(io) = &e {
            if self.poisoned.set(io.to_string()).is_ok() {
                log::error!(
                    message_id = crate::core::ids::DISK_FULL, spotter_error_kind = "store_poisoned";
                    "result store {}: write failed ({io}); the database refuses writes until it is \
                     reopened: results are refused (counted) and Spotter exits to be restarted by \
                     systemd once the disk has space again; reads keep working",
                    self.dir.display()
                );
            }
            // sled hands out its kept error as a copy that has the kind but
            // not the OS code (seen on a full tmpfs in tests/store/store_enospc.rs).
            if io.raw_os_error() == Some(nix::libc::ENOSPC)
                || io.kind() == io::ErrorKind::StorageFull
            {
                let (free, floor) = self.guard.note_enospc(&self.dir);
                return StoreError::DiskFull {
                    path: self.dir.clone(),
                    free,
                    floor,
                };
            }
        }
        self.db_err(e)
    }

    /// Refuse (and count) a write while the store is poisoned, without
    /// touching sled: each attempt would only fail again.
    fn refuse_if_poisoned(&self) -> Result<(), StoreError> {
        let Some(cause) = self.poisoned.get() else {
            return Ok(());
        };
        self.guard.count_refused_result();
        Err(StoreError::Poisoned {
            path: self.dir.clone(),
            cause: cause.clone(),
        })
    }

    /// True while the database refuses writes after an I/O error.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.get().is_some()
    }

    /// True once a poisoned store (a write failed with an I/O error, which
    /// sled 0.34 keeps returning until reopened) has space to write again:
    /// the daemon then exits non-zero so systemd restarts it with a fresh
    /// database handle. Probes free space; call it every few hundred ms at
    /// most, and only poisoned stores probe.
    pub(crate) fn restart_due(&self) -> bool {
        self.poisoned.get().is_some() && self.guard.space_back(&self.dir)
    }

    /// Size, wear and refusal figures (blocking: reads the file sizes).
    /// O(1): counters, and the size on disk as the pruner last measured it.
    pub fn stats(&self) -> StoreStats {
        let size_bytes = self.size_on_disk_cached();
        StoreStats {
            records: self.len(),
            size_bytes,
            size_growth_bytes: size_bytes as i64 - self.size_at_open as i64,
            written_bytes: self.written.load(Ordering::Relaxed),
            snapshot_written_bytes: self.snap_written.load(Ordering::Relaxed),
            refused_results: self.guard.refused_results(),
            refused_snapshots: self.guard.refused_snapshots(),
            enospc_errors: self.guard.enospc_errors(),
            poisoned: self.poisoned.get().is_some(),
            durable_through: self.durable_through(),
        }
    }

    fn decode(&self, key: &[u8], value: &[u8]) -> Result<ResultRecord, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: self.dir.clone(),
            key: hex::encode(key),
            reason,
        };
        match value.split_first() {
            Some((&VALUE_FORMAT_JSON, body)) => {
                let mut rec: ResultRecord =
                    serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
                // The key is authoritative for the id.
                rec.id = hex::encode(key);
                Ok(rec)
            }
            Some((&other, _)) => Err(corrupt(format!("unknown value format {other}"))),
            None => Err(corrupt("empty value".into())),
        }
    }

    /// The record with this id, if any. A malformed id is
    /// [`StoreError::MalformedId`].
    pub fn get(&self, id: &str) -> Result<Option<ResultRecord>, StoreError> {
        let key = parse_id(id)?;
        match self.results.get(key).map_err(|e| self.db_err(e))? {
            Some(v) => self.decode(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The newest record (largest key), if any.
    pub(crate) fn latest(&self) -> Result<Option<ResultRecord>, StoreError> {
        Ok(self.range(None, None, 1)?.pop())
    }

    /// Up to `limit` records with `since_ns <= ts_ns <= until_ns` (both bounds
    /// optional and inclusive), newest first. A record that cannot be decoded
    /// is skipped with a warning so one bad record does not hide the others.
    pub fn range(
        &self,
        since_ns: Option<u64>,
        until_ns: Option<u64>,
        limit: usize,
    ) -> Result<Vec<ResultRecord>, StoreError> {
        let lo = make_key(since_ns.unwrap_or(0), 0);
        let hi = make_key(until_ns.unwrap_or(u64::MAX), u64::MAX);
        let mut out = Vec::with_capacity(limit.min(1024));
        if limit == 0 || lo > hi {
            return Ok(out);
        }
        for item in self.results.range(lo..=hi).rev() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            match self.decode(&k, &v) {
                Ok(rec) => out.push(rec),
                Err(e) => log::warn!("skipping unreadable record: {e}"),
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Every record with `ts_ns >= since_ns` (all if `None`), oldest first,
    /// read lazily so the store keeps accepting writes while it is walked
    /// (records inserted meanwhile may or may not be seen). A record that
    /// cannot be decoded is an `Err` item; iteration continues after it.
    pub fn iter_since(
        &self,
        since_ns: Option<u64>,
    ) -> impl Iterator<Item = Result<ResultRecord, StoreError>> + '_ {
        self.results
            .range(make_key(since_ns.unwrap_or(0), 0)..)
            .map(move |item| {
                let (k, v) = item.map_err(|e| self.db_err(e))?;
                self.decode(&k, &v)
            })
    }

    /// Delete the oldest records so that at most `max_records` remain; returns
    /// how many were deleted. Deletes in batches of [`PRUNE_BATCH`] so a large
    /// backlog never builds one huge batch in memory.
    pub fn retain_newest(&self, max_records: usize) -> Result<usize, StoreError> {
        let policy = Retention {
            max_records: Some(max_records),
            ..Retention::unlimited()
        };
        Ok(self.prune_once(&policy, 0)?.by_records as usize)
    }

    /// Number of stored records.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Logical size of the stored records: the sum of their key and value
    /// lengths. This is what [`Retention::max_bytes`] limits; sled's files
    /// ([`Store::size_on_disk`]) are larger (log segments, page headers,
    /// space not yet reclaimed).
    pub fn data_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Release the store at shutdown. A healthy store is dropped, which
    /// stops the flusher and lets sled flush. A poisoned one is leaked
    /// instead: sled's `Drop` flushes in a loop and then waits for its
    /// flusher thread, and on a database whose log write failed that wait
    /// never ends (seen in CI: the daemon hung after "API shutting down"
    /// instead of exiting for systemd to restart it). What sled made durable
    /// before the error is on disk; the rest is lost either way, and the
    /// process is about to exit, which reclaims the memory and the lock.
    pub(crate) fn close(self: std::sync::Arc<Self>) {
        if self.is_poisoned() {
            std::mem::forget(self);
        }
    }

    /// Write everything buffered to disk (fsync).
    pub fn flush(&self) -> Result<(), StoreError> {
        // A poisoned sled fails (or, seen in CI, blocks) on flush: what it
        // could flush is already durable or lost; the restart reopens it.
        if let Some(cause) = self.poisoned.get() {
            return Err(StoreError::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        let mark = self.durability.mark();
        self.db.flush().map_err(|e| self.db_err(e))?;
        self.durability.flushed(mark);
        Ok(())
    }

    /// The id of the newest result stored before the last completed flush
    /// began (by the flusher or [`Store::flush`]): it and every result
    /// stored before it survive a crash. None until a flush completes.
    pub fn durable_through(&self) -> Option<String> {
        self.durability.durable().map(hex::encode)
    }

    #[cfg(test)]
    /// Flushes completed since open.
    pub(crate) fn flushes(&self) -> u64 {
        self.durability.flushes()
    }

    /// Bytes the database occupies on disk (0 if it cannot be determined,
    /// which is logged). Walks sled's files; also refreshes
    /// [`Store::size_on_disk_cached`].
    pub fn size_on_disk(&self) -> u64 {
        let n = match self.db.size_on_disk() {
            Ok(n) => n,
            Err(e) => {
                log::warn!("cannot determine result store size: {}", self.db_err(e));
                0
            }
        };
        self.disk_bytes.store(n, Ordering::Relaxed);
        n
    }

    /// [`Store::size_on_disk`] as last measured (at open and after each
    /// [`Pruner`] pass): O(1), for per-request use.
    pub(crate) fn size_on_disk_cached(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// Probe that the store accepts writes: write a small key and flush it.
    /// Costs one fsync; meant for readiness checks, not per-request use.
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        let _retire = flush::Retire;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64);
        let stamp = now.unwrap_or(0).to_be_bytes();
        if let Some(cause) = self.poisoned.get() {
            return Err(StoreError::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        if let PressureLevel::Full { free, floor } = self.guard.level(&self.dir) {
            return Err(StoreError::DiskFull {
                path: self.dir.clone(),
                free,
                floor,
            });
        }
        self.meta
            .insert(PROBE_KEY, &stamp)
            .map_err(|e| self.write_err(e))?;
        self.db.flush().map(|_| ()).map_err(|e| self.write_err(e))
    }
}

/// Count the records of `tree` and the sum of their key and value lengths.
fn tally(tree: &sled::Tree) -> Result<(usize, u64), sled::Error> {
    let (mut n, mut bytes) = (0usize, 0u64);
    for item in tree.iter() {
        let (k, v) = item?;
        n += 1;
        bytes += (k.len() + v.len()) as u64;
    }
    Ok((n, bytes))
}

/// Write `bytes` to `path` atomically (see [`crate::core::fsutil::write_atomic`]).
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::core::fsutil::write_atomic(path, bytes, 0o644)
}

#[cfg(test)]
pub(crate) mod tests;
