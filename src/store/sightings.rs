//! Sightings in the store (issue 18): what the store keeps of each sighting
//! and how it is listed, summarized, closed after a crash and pruned.
//!
//! Trees of the store's sled database:
//! - `sightings`: the sighting id (u64 big-endian, so key order is id order
//!   and ids grow with time) → `[SIGHTING_FORMAT_JSON, json...]`, the
//!   [`Sighting`]'s serde JSON (the key is authoritative for the id).
//! - `sighting_snapshots`: the same id → the best frame, encoded like a
//!   result's snapshot (`[format byte, JPEG...]`, see [`Snapshot`]).
//! - `sightings_open`: the ids of the sightings still open → empty, so
//!   start-up ([`Store::close_open_sightings`]) and `open=true` listings
//!   read only those.
//! - `meta` key `sighting_last_id`: the largest id ever written, so ids stay
//!   unique after the newest sightings are pruned.
//!
//! [`Store::put_sighting`] writes all of these, with the MQTT outbox entry of
//! a start or end, in ONE sled transaction: a crash never leaves a snapshot
//! without its sighting, an open marker of a closed sighting, or a change
//! stored but never queued. The outbox entry's sequence number comes from
//! the same `generate_id` as the results', so the backlog drains in the
//! order things happened.
//!
//! Sighting snapshots count toward the store's snapshot budgets
//! (`snapshot_max_count`, `snapshot_max_bytes`: the oldest of either kind go
//! first, see `retention`); the sightings themselves have their own limits
//! (`sightings.max_age_s` on closed ones by end time, `sightings.max_records`)
//! enforced by the pruner ([`Store::prune_sightings`]), and are not part of
//! the results' record and byte counts.
//!
//! Why one file of some 850 lines: the write (one transaction over four
//! trees and the outbox), the reads, the summary, the start-up close and the
//! pruning share the private trees and their counters, as `mod.rs` does for
//! results; the tests live in `sightings_tests.rs`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sled::Transactional;

use super::{
    outbox, Outbox, OutboxKind, Snapshot, Store, StoreError, MAX_SCAN_PER_PAGE, PRUNE_BATCH,
};
use crate::core::sighting::{Sighting, SightingChange, SightingEvent};

const SIGHTINGS_TREE: &str = "sightings";
const SIGHTING_SNAPSHOTS_TREE: &str = "sighting_snapshots";
const SIGHTINGS_OPEN_TREE: &str = "sightings_open";
/// Key in `meta` of the largest sighting id ever written (u64 BE).
const LAST_ID_KEY: &[u8] = b"sighting_last_id";
/// First byte of a stored sighting: the rest is its JSON.
const SIGHTING_FORMAT_JSON: u8 = 1;
/// First byte of a stored snapshot (as [`Snapshot::encode`] writes it).
const SNAPSHOT_FORMAT: u8 = 1;
/// Positions of the trees in the transaction of [`Store::put_sighting`].
const TS_ROWS: usize = 0;
const TS_SNAPS: usize = 1;
const TS_OPEN: usize = 2;
const TS_META: usize = 3;
const TS_OUTBOX: usize = 4;

/// `GET /api/v1/sightings` filters (all optional but `limit`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SightingQuery {
    /// Sightings that were present at or after this time (end, or still
    /// open, ≥ since), ns since the Unix epoch.
    pub since_ns: Option<i64>,
    /// Sightings that started at or before this time.
    pub until_ns: Option<i64>,
    pub label: Option<String>,
    pub source: Option<String>,
    pub zone: Option<String>,
    /// `Some(true)`: only open ones; `Some(false)`: only closed ones.
    pub open: Option<bool>,
    pub limit: usize,
    /// Continue below this id (from the previous page's `next_cursor`).
    pub cursor: Option<u64>,
}

impl SightingQuery {
    /// Whether `s` passes every filter but the cursor and the limit.
    pub fn matches(&self, s: &Sighting) -> bool {
        self.since_ns
            .is_none_or(|t| s.end_ns.unwrap_or(s.last_seen_ns) >= t)
            && self.until_ns.is_none_or(|t| s.start_ns <= t)
            && self.label.as_deref().is_none_or(|l| l == s.label)
            && self.source.as_deref().is_none_or(|x| x == s.source)
            && self
                .zone
                .as_deref()
                .is_none_or(|z| s.zone.as_deref() == Some(z))
            && self.open.is_none_or(|o| o == s.is_open())
    }
}

/// One page of sightings, newest (largest id) first.
#[derive(Debug, Clone, PartialEq)]
pub struct SightingPage {
    pub sightings: Vec<Sighting>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<u64>,
}

/// `bucket=` of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    Hour,
    Day,
}

impl Bucket {
    /// The bucket's length in ns.
    pub fn len_ns(self) -> i64 {
        match self {
            Bucket::Minute => 60 * 1_000_000_000,
            Bucket::Hour => 3_600 * 1_000_000_000,
            Bucket::Day => 86_400 * 1_000_000_000,
        }
    }

    /// The start of the (UTC) bucket holding `t_ns`.
    pub fn floor(self, t_ns: i64) -> i64 {
        t_ns - t_ns.rem_euclid(self.len_ns())
    }
}

/// One row of the summary: per bucket (UTC) and label, how many sightings
/// started in it and the seconds of presence inside it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SummaryRow {
    pub bucket_start_ns: i64,
    pub label: String,
    pub count: u64,
    pub seconds: f64,
}

/// Buckets one summary may hold at most (`[since, until)` over the bucket
/// length); a wider request is refused rather than answered with millions
/// of rows.
pub const MAX_SUMMARY_BUCKETS: i64 = 10_000;

/// What a [`Store::prune_sightings`] pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SightingPruneReport {
    /// Closed sightings that ended before `now - max_age`.
    pub by_age: u64,
    /// Sightings deleted (oldest first) to get down to `max_records`.
    pub by_records: u64,
    /// Their snapshots, deleted with them.
    pub snapshots: u64,
}

/// The sighting trees and their counters (part of [`Store`]).
#[derive(Debug)]
pub(super) struct SightingTrees {
    pub(super) rows: sled::Tree,
    pub(super) snaps: sled::Tree,
    open: sled::Tree,
    /// Sightings stored, and the sum of their key and value lengths.
    count: AtomicUsize,
    bytes: AtomicU64,
    /// Sighting snapshots stored, and the sum of their key and value lengths
    /// (part of the snapshot budgets).
    pub(super) snap_count: AtomicUsize,
    pub(super) snap_bytes: AtomicU64,
}

impl SightingTrees {
    /// Open (create) the trees of `db`.
    pub(super) fn open(db: &sled::Db) -> Result<SightingTrees, sled::Error> {
        let t = SightingTrees {
            rows: db.open_tree(SIGHTINGS_TREE)?,
            snaps: db.open_tree(SIGHTING_SNAPSHOTS_TREE)?,
            open: db.open_tree(SIGHTINGS_OPEN_TREE)?,
            count: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
            snap_count: AtomicUsize::new(0),
            snap_bytes: AtomicU64::new(0),
        };
        // Counted by `Store::recount` when the store opens.
        Ok(t)
    }

    /// Recount the counters from the trees.
    pub(super) fn recount(&self) -> Result<(), sled::Error> {
        let (n, b) = super::tally(&self.rows)?;
        let (sn, sb) = super::tally(&self.snaps)?;
        self.count.store(n, Ordering::Relaxed);
        self.bytes.store(b, Ordering::Relaxed);
        self.snap_count.store(sn, Ordering::Relaxed);
        self.snap_bytes.store(sb, Ordering::Relaxed);
        Ok(())
    }
}

fn id_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

type TxError = sled::transaction::ConflictableTransactionError<()>;

impl Store {
    fn sighting_corrupt(&self, id: u64, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.dir.clone(),
            key: format!("sighting {id}"),
            reason,
        }
    }

    fn encode_sighting(&self, s: &Sighting) -> Result<Vec<u8>, StoreError> {
        let mut v = Vec::with_capacity(384);
        v.push(SIGHTING_FORMAT_JSON);
        serde_json::to_writer(&mut v, s).map_err(|source| StoreError::Encode {
            path: self.dir.clone(),
            source,
        })?;
        Ok(v)
    }

    fn decode_sighting(&self, key: &[u8], value: &[u8]) -> Result<Sighting, StoreError> {
        let id = id_of(key).ok_or_else(|| StoreError::Corrupt {
            path: self.dir.clone(),
            key: hex::encode(key),
            reason: "sighting key is not 8 bytes".into(),
        })?;
        match value.split_first() {
            Some((&SIGHTING_FORMAT_JSON, body)) => {
                let mut s: Sighting = serde_json::from_slice(body)
                    .map_err(|e| self.sighting_corrupt(id, e.to_string()))?;
                s.id = id;
                Ok(s)
            }
            Some((other, _)) => {
                Err(self.sighting_corrupt(id, format!("unknown value format {other}")))
            }
            None => Err(self.sighting_corrupt(id, "empty value".into())),
        }
    }

    /// Write `s` (insert or replace by id) with `snapshot` (the best frame;
    /// `None` keeps the stored one) and, when `change` is given and MQTT is
    /// on, its outbox entry, in one transaction.
    pub fn put_sighting(
        &self,
        s: &Sighting,
        snapshot: Option<&Snapshot>,
        change: Option<SightingChange>,
    ) -> Result<(), StoreError> {
        self.put_sighting_inner(s, snapshot, change, false)
            .map(|_| ())
    }

    /// [`Store::put_sighting`]; with `only_new`, nothing is written when the
    /// id is already stored (an import). Returns whether it was written.
    fn put_sighting_inner(
        &self,
        s: &Sighting,
        snapshot: Option<&Snapshot>,
        change: Option<SightingChange>,
        only_new: bool,
    ) -> Result<bool, StoreError> {
        let _retire = super::flush::Retire;
        // Not `refuse_if_poisoned`: that counts a refused result.
        if let Some(cause) = self.poisoned.get() {
            return Err(StoreError::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            });
        }
        let key = s.id.to_be_bytes();
        let value = self.encode_sighting(s)?;
        let queued = match (&self.outbox, change) {
            (Some(outbox), Some(event)) => {
                let seq = self.db.generate_id().map_err(|e| self.db_err(e))?;
                let mut json = Vec::with_capacity(value.len() + 32);
                let ev = SightingEvent {
                    event,
                    sighting: s.clone(),
                };
                serde_json::to_writer(&mut json, &ev).map_err(|source| StoreError::Encode {
                    path: self.dir.clone(),
                    source,
                })?;
                Some((
                    outbox,
                    outbox::outbox_key(seq),
                    Outbox::encode(OutboxKind::Sighting, &json),
                ))
            }
            _ => None,
        };
        let outbox_size = queued
            .as_ref()
            .map_or(0, |(_, k, v)| (k.len() + v.len()) as u64);
        let row_size = (key.len() + value.len()) as u64;
        let snap_value = snapshot.map(Snapshot::encode);
        let snap_len = snap_value.as_ref().map(|v| (key.len() + v.len()) as u64);
        let (snap_value, _reservation) =
            match self
                .guard
                .admit(&self.dir, row_size + outbox_size + 16, snap_len)
            {
                super::pressure::Admission::All(r) => (snap_value, r),
                super::pressure::Admission::ResultOnly(r) => (None, r),
                super::pressure::Admission::Refused { free, floor } => {
                    return Err(StoreError::DiskFull {
                        path: self.dir.clone(),
                        free,
                        floor,
                    })
                }
            };
        let mut trees = vec![
            &self.sight.rows,
            &self.sight.snaps,
            &self.sight.open,
            &self.meta,
        ];
        if let Some((outbox, _, _)) = &queued {
            trees.push(outbox.tree());
        }
        let is_open = s.is_open();
        // (written, old row length, snapshot written: the old one's length)
        let done = trees[..].transaction(|tx| {
            if only_new && tx[TS_ROWS].get(key)?.is_some() {
                return Ok::<_, TxError>((false, None, None));
            }
            let old = tx[TS_ROWS].insert(&key[..], value.as_slice())?;
            // The same best frame again (an open sighting's progress) is not
            // rewritten: a read spares the card a snapshot's worth of writes.
            let snap_written = match &snap_value {
                Some(v) => match tx[TS_SNAPS].get(key)? {
                    Some(same) if same.as_ref() == v.as_slice() => None,
                    _ => Some(
                        tx[TS_SNAPS]
                            .insert(&key[..], v.as_slice())?
                            .map(|o| o.len()),
                    ),
                },
                None => None,
            };
            if is_open {
                tx[TS_OPEN].insert(&key[..], &[][..])?;
            } else {
                tx[TS_OPEN].remove(&key[..])?;
            }
            let last = tx[TS_META].get(LAST_ID_KEY)?.and_then(|v| id_of(&v));
            if last.is_none_or(|l| s.id > l) {
                tx[TS_META].insert(LAST_ID_KEY, &key[..])?;
            }
            if let Some((_, k, v)) = &queued {
                tx[TS_OUTBOX].insert(&k[..], v.as_slice())?;
            }
            Ok((true, old.map(|v| v.len()), snap_written))
        });
        let (written, old, snap_written) = match done {
            Ok(r) => r,
            Err(sled::transaction::TransactionError::Abort(())) => (false, None, None),
            Err(sled::transaction::TransactionError::Storage(e)) => return Err(self.write_err(e)),
        };
        if !written {
            return Ok(false);
        }
        let t = &self.sight;
        match old {
            Some(n) => {
                // Replaced: same key, new value.
                t.bytes.fetch_add(value.len() as u64, Ordering::Relaxed);
                t.bytes.fetch_sub(n as u64, Ordering::Relaxed);
            }
            None => {
                t.count.fetch_add(1, Ordering::Relaxed);
                t.bytes.fetch_add(row_size, Ordering::Relaxed);
            }
        }
        let mut written_bytes = row_size;
        if let (Some(v), Some(n), Some(old_snap)) = (&snap_value, snap_len, snap_written) {
            match old_snap {
                Some(o) => {
                    t.snap_bytes.fetch_add(v.len() as u64, Ordering::Relaxed);
                    t.snap_bytes.fetch_sub(o as u64, Ordering::Relaxed);
                }
                None => {
                    t.snap_count.fetch_add(1, Ordering::Relaxed);
                    t.snap_bytes.fetch_add(n, Ordering::Relaxed);
                }
            }
            written_bytes += n;
            self.snap_written.fetch_add(n, Ordering::Relaxed);
        }
        self.written.fetch_add(written_bytes, Ordering::Relaxed);
        if let Some((outbox, _, _)) = queued {
            outbox.committed(outbox_size);
        }
        Ok(true)
    }

    /// Store a sighting from a restored backup under its own id, without a
    /// snapshot or an outbox entry. Returns `false`, writing nothing, when
    /// the id is already stored (importing twice adds nothing). A sighting
    /// that cannot be right (id 0, no label, ending before it started) is
    /// [`StoreError::InvalidRecord`]. An open one stays open until the
    /// daemon's next start closes it.
    pub(crate) fn insert_sighting_with_id(&self, s: &Sighting) -> Result<bool, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidRecord {
            path: self.dir.clone(),
            id: format!("sighting {}", s.id),
            reason: reason.into(),
        };
        if s.id == 0 {
            return Err(invalid("id 0 is not a sighting id"));
        }
        if s.label.is_empty() {
            return Err(invalid("empty label"));
        }
        if s.last_seen_ns < s.start_ns || s.end_ns.is_some_and(|e| e < s.start_ns) {
            return Err(invalid("ends before it starts"));
        }
        self.put_sighting_inner(s, None, None, true)
    }

    /// The sighting `id`.
    pub fn sighting(&self, id: u64) -> Result<Option<Sighting>, StoreError> {
        let key = id.to_be_bytes();
        match self.sight.rows.get(key).map_err(|e| self.db_err(e))? {
            Some(v) => self.decode_sighting(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The best-frame snapshot of sighting `id`.
    pub fn sighting_snapshot(&self, id: u64) -> Result<Option<Snapshot>, StoreError> {
        let Some(v) = self
            .sight
            .snaps
            .get(id.to_be_bytes())
            .map_err(|e| self.db_err(e))?
        else {
            return Ok(None);
        };
        match v.split_first() {
            Some((&SNAPSHOT_FORMAT, img)) => Ok(Some(Snapshot {
                bytes: img.to_vec(),
            })),
            Some((other, _)) => {
                Err(self.sighting_corrupt(id, format!("snapshot: unknown format {other}")))
            }
            None => Err(self.sighting_corrupt(id, "snapshot: empty".into())),
        }
    }

    /// A page of sightings matching `q`, newest first. At most
    /// [`MAX_SCAN_PER_PAGE`] sightings are examined per page: a rare filter
    /// returns a short page (even an empty one) with a cursor to go on.
    pub fn sightings(&self, q: &SightingQuery) -> Result<SightingPage, StoreError> {
        let mut page = SightingPage {
            sightings: Vec::with_capacity(q.limit.min(1024)),
            next_cursor: None,
        };
        let hi = match q.cursor {
            Some(0) => return Ok(page),
            Some(c) => c - 1,
            None => u64::MAX,
        };
        if q.limit == 0 {
            return Ok(page);
        }
        // Open ones are few and indexed: walk the index instead of them all.
        let only_open = q.open == Some(true);
        let tree = if only_open {
            &self.sight.open
        } else {
            &self.sight.rows
        };
        let mut scanned = 0usize;
        for item in tree.range(..=hi.to_be_bytes()).rev() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let Some(id) = id_of(&k) else { continue };
            scanned += 1;
            let decoded = if only_open {
                match self.sight.rows.get(&k).map_err(|e| self.db_err(e))? {
                    Some(v) => self.decode_sighting(&k, &v),
                    None => continue,
                }
            } else {
                self.decode_sighting(&k, &v)
            };
            match decoded {
                Ok(s) if q.matches(&s) => {
                    page.sightings.push(s);
                    if page.sightings.len() >= q.limit {
                        let more = tree
                            .range(..k.as_ref())
                            .next_back()
                            .transpose()
                            .map_err(|e| self.db_err(e))?
                            .is_some();
                        page.next_cursor = more.then_some(id);
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => log::warn!("skipping unreadable sighting: {e}"),
            }
            if scanned >= MAX_SCAN_PER_PAGE {
                page.next_cursor = (id > 0).then_some(id);
                break;
            }
        }
        Ok(page)
    }

    /// Every sighting, oldest (smallest id) first, read lazily. A sighting
    /// that cannot be decoded is an `Err` item; iteration continues after it.
    pub fn iter_sightings(&self) -> impl Iterator<Item = Result<Sighting, StoreError>> + '_ {
        self.sight.rows.iter().map(move |item| {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            self.decode_sighting(&k, &v)
        })
    }

    /// Counts and seconds per label per bucket over `[since_ns, until_ns)`.
    ///
    /// A sighting counts once, in the (UTC) bucket where it starts, when it
    /// starts within `[since_ns, until_ns)`; its presence (start to end, to
    /// `last_seen_ns` while open) is clipped to `[since_ns, until_ns)` and
    /// its seconds split across the buckets it spans. Rows are sorted by
    /// bucket, then label; buckets without any presence have no row. A
    /// range of more than [`MAX_SUMMARY_BUCKETS`] buckets is
    /// [`StoreError::SummaryTooWide`]. Reads every stored sighting (at most
    /// `sightings.max_records`): meant for charts, not per-frame use.
    pub fn sighting_summary(
        &self,
        bucket: Bucket,
        since_ns: i64,
        until_ns: i64,
    ) -> Result<Vec<SummaryRow>, StoreError> {
        if until_ns <= since_ns {
            return Ok(Vec::new());
        }
        let len = bucket.len_ns();
        let first = bucket.floor(since_ns);
        let buckets =
            (i128::from(until_ns) - i128::from(first) + i128::from(len) - 1) / i128::from(len);
        if buckets > i128::from(MAX_SUMMARY_BUCKETS) {
            return Err(StoreError::SummaryTooWide {
                buckets: i64::try_from(buckets).unwrap_or(i64::MAX),
                max: MAX_SUMMARY_BUCKETS,
            });
        }
        // (bucket start, label) -> (count, ns present)
        let mut rows: BTreeMap<(i64, String), (u64, i64)> = BTreeMap::new();
        for item in self.sight.rows.iter() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let s = match self.decode_sighting(&k, &v) {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("summary: skipping unreadable sighting: {e}");
                    continue;
                }
            };
            let end = s.end_ns.unwrap_or(s.last_seen_ns).max(s.start_ns);
            if s.start_ns >= until_ns || end < since_ns {
                continue;
            }
            if s.start_ns >= since_ns {
                rows.entry((bucket.floor(s.start_ns), s.label.clone()))
                    .or_default()
                    .0 += 1;
            }
            let (mut a, e) = (s.start_ns.max(since_ns), end.min(until_ns));
            while a < e {
                let b = bucket.floor(a);
                let next = b.saturating_add(len).min(e);
                rows.entry((b, s.label.clone())).or_default().1 += next - a;
                a = next;
            }
        }
        Ok(rows
            .into_iter()
            .map(|((bucket_start_ns, label), (count, ns))| SummaryRow {
                bucket_start_ns,
                label,
                count,
                seconds: ns as f64 / 1e9,
            })
            .collect())
    }

    /// Close every stored sighting still open (a crash or kill left it):
    /// `end_ns = last_seen_ns`; each gets an `ended` outbox entry. Returns
    /// them (the caller logs them). Called once at start-up, before the
    /// pipeline runs.
    pub fn close_open_sightings(&self) -> Result<Vec<Sighting>, StoreError> {
        let _retire = super::flush::Retire;
        let mut ids = Vec::new();
        for item in self.sight.open.iter() {
            let (k, _) = item.map_err(|e| self.db_err(e))?;
            ids.push(k);
        }
        let mut closed = Vec::new();
        for k in ids {
            let id = id_of(&k);
            let row = self.sight.rows.get(&k).map_err(|e| self.db_err(e))?;
            let s = match (id, row) {
                (Some(_), Some(v)) => self.decode_sighting(&k, &v),
                // A marker without its sighting cannot be closed: drop it.
                _ => {
                    self.sight.open.remove(&k).map_err(|e| self.write_err(e))?;
                    continue;
                }
            };
            let mut s = match s {
                Ok(s) => s,
                Err(e) => {
                    log::warn!("cannot close unreadable open sighting: {e}");
                    self.sight.open.remove(&k).map_err(|e| self.write_err(e))?;
                    continue;
                }
            };
            if s.end_ns.is_none() {
                s.end_ns = Some(s.last_seen_ns);
                self.put_sighting(&s, None, Some(SightingChange::Ended))?;
                closed.push(s);
            } else {
                self.sight.open.remove(&k).map_err(|e| self.write_err(e))?;
            }
        }
        Ok(closed)
    }

    /// The largest sighting id ever stored (0 for none), so ids stay unique
    /// across restarts.
    pub fn last_sighting_id(&self) -> Result<u64, StoreError> {
        let meta = self
            .meta
            .get(LAST_ID_KEY)
            .map_err(|e| self.db_err(e))?
            .and_then(|v| id_of(&v))
            .unwrap_or(0);
        let newest = self
            .sight
            .rows
            .last()
            .map_err(|e| self.db_err(e))?
            .and_then(|(k, _)| id_of(&k))
            .unwrap_or(0);
        Ok(meta.max(newest))
    }

    /// The sighting snapshots, by id (which follows the time sightings
    /// open): `(key, key + value length, best frame's time)`; a snapshot
    /// whose sighting is gone or unreadable sorts as oldest.
    pub(super) fn sighting_snapshots_oldest_first(
        &self,
    ) -> impl Iterator<Item = Result<(sled::IVec, u64, i64), StoreError>> + '_ {
        self.sight.snaps.iter().map(move |item| {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let ts = match self.sight.rows.get(&k).map_err(|e| self.db_err(e))? {
                Some(row) => self
                    .decode_sighting(&k, &row)
                    .map_or(i64::MIN, |s| s.best_ns),
                None => i64::MIN,
            };
            let n = (k.len() + v.len()) as u64;
            Ok((k, n, ts))
        })
    }

    /// Remove these sighting snapshots; returns how many were there and
    /// their size, as subtracted from the counters. The caller holds
    /// `delete_lock`.
    pub(super) fn remove_sighting_snapshots(
        &self,
        keys: &[sled::IVec],
    ) -> Result<(usize, u64), StoreError> {
        let (mut n, mut bytes) = (0usize, 0u64);
        for k in keys {
            if let Some(v) = self.sight.snaps.remove(k).map_err(|e| self.write_err(e))? {
                n += 1;
                bytes += (k.len() + v.len()) as u64;
            }
        }
        self.sight.snap_count.fetch_sub(n, Ordering::Relaxed);
        self.sight.snap_bytes.fetch_sub(bytes, Ordering::Relaxed);
        Ok((n, bytes))
    }

    /// Enforce the sightings' limits of `policy` (`now_ns`: the wall clock,
    /// ns since the Unix epoch): closed sightings that ended before
    /// `now - sightings_max_age` go, then the oldest closed ones beyond
    /// `sightings_max_records`, each with its snapshot, in transactions of
    /// [`PRUNE_BATCH`]. Open sightings are never deleted (the tracker still
    /// updates them). The age pass walks from the oldest id and stops at the
    /// first sighting that started after the cutoff (ids follow the time
    /// sightings open), so a pass reads only what is due, plus the open and
    /// long ones. The caller holds `delete_lock`.
    pub(super) fn prune_sightings(
        &self,
        policy: &super::Retention,
        now_ns: u64,
        report: &mut SightingPruneReport,
    ) -> Result<(), StoreError> {
        if let Some(age) = policy.sightings_max_age {
            let age_ns = i64::try_from(age.as_nanos()).unwrap_or(i64::MAX);
            let now = i64::try_from(now_ns).unwrap_or(i64::MAX);
            let cutoff = now.saturating_sub(age_ns);
            let mut after: Option<sled::IVec> = None;
            'age: loop {
                let mut doomed = Vec::with_capacity(PRUNE_BATCH);
                let iter = match &after {
                    Some(k) => self.sight.rows.range::<&[u8], _>((
                        std::ops::Bound::Excluded(k.as_ref()),
                        std::ops::Bound::Unbounded,
                    )),
                    None => self.sight.rows.iter(),
                };
                let mut stop = true;
                for item in iter {
                    let (k, v) = item.map_err(|e| self.db_err(e))?;
                    after = Some(k.clone());
                    let s = match self.decode_sighting(&k, &v) {
                        Ok(s) => s,
                        // Unreadable: its end is unknown; left alone.
                        Err(_) => continue,
                    };
                    if s.start_ns >= cutoff {
                        break;
                    }
                    if s.end_ns.is_some_and(|e| e < cutoff) {
                        doomed.push(k);
                        if doomed.len() >= PRUNE_BATCH {
                            stop = false;
                            break;
                        }
                    }
                }
                report.by_age += self.delete_sightings(&doomed, report)?;
                if stop {
                    break 'age;
                }
            }
        }
        if let Some(max) = policy.sightings_max_records {
            let mut after: Option<sled::IVec> = None;
            loop {
                let excess = self.sighting_count().saturating_sub(max);
                if excess == 0 {
                    break;
                }
                let want = excess.min(PRUNE_BATCH);
                let mut doomed = Vec::with_capacity(want);
                let iter = match &after {
                    Some(k) => self.sight.rows.range::<&[u8], _>((
                        std::ops::Bound::Excluded(k.as_ref()),
                        std::ops::Bound::Unbounded,
                    )),
                    None => self.sight.rows.iter(),
                };
                for item in iter {
                    let (k, _) = item.map_err(|e| self.db_err(e))?;
                    after = Some(k.clone());
                    if self
                        .sight
                        .open
                        .contains_key(&k)
                        .map_err(|e| self.db_err(e))?
                    {
                        continue;
                    }
                    doomed.push(k);
                    if doomed.len() >= want {
                        break;
                    }
                }
                if doomed.is_empty() {
                    // Only open sightings are left above the limit.
                    break;
                }
                report.by_records += self.delete_sightings(&doomed, report)?;
            }
        }
        Ok(())
    }

    /// Delete these sightings with their snapshots and open markers in one
    /// transaction; returns how many sightings were there.
    fn delete_sightings(
        &self,
        keys: &[sled::IVec],
        report: &mut SightingPruneReport,
    ) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let trees = [&self.sight.rows, &self.sight.snaps, &self.sight.open];
        // (rows, row bytes, snapshots, snapshot bytes)
        let freed = trees[..]
            .transaction(|tx| {
                let mut f = (0usize, 0u64, 0usize, 0u64);
                for k in keys {
                    if let Some(v) = tx[TS_ROWS].remove(k.as_ref())? {
                        f.0 += 1;
                        f.1 += (k.len() + v.len()) as u64;
                    }
                    if let Some(v) = tx[TS_SNAPS].remove(k.as_ref())? {
                        f.2 += 1;
                        f.3 += (k.len() + v.len()) as u64;
                    }
                    tx[TS_OPEN].remove(k.as_ref())?;
                }
                Ok::<_, TxError>(f)
            })
            .map_err(|e| match e {
                sled::transaction::TransactionError::Storage(e) => self.write_err(e),
                sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
                    path: self.dir.clone(),
                    key: String::new(),
                    reason: "sighting prune transaction aborted".into(),
                },
            })?;
        let t = &self.sight;
        t.count.fetch_sub(freed.0, Ordering::Relaxed);
        t.bytes.fetch_sub(freed.1, Ordering::Relaxed);
        t.snap_count.fetch_sub(freed.2, Ordering::Relaxed);
        t.snap_bytes.fetch_sub(freed.3, Ordering::Relaxed);
        report.snapshots += freed.2 as u64;
        std::thread::yield_now();
        Ok(freed.0 as u64)
    }

    /// Number of stored sightings.
    pub fn sighting_count(&self) -> usize {
        self.sight.count.load(Ordering::Relaxed)
    }

    /// Logical size of the stored sightings (keys plus values, snapshots
    /// not included).
    pub fn sighting_bytes(&self) -> u64 {
        self.sight.bytes.load(Ordering::Relaxed)
    }

    /// Number of sighting snapshots stored.
    pub fn sighting_snapshot_count(&self) -> usize {
        self.sight.snap_count.load(Ordering::Relaxed)
    }

    /// Logical size of the sighting snapshots (keys plus values).
    pub fn sighting_snapshot_bytes(&self) -> u64 {
        self.sight.snap_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[path = "sightings_tests.rs"]
pub(super) mod tests;
