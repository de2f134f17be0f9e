//! The MQTT outbox: results waiting for a broker's acknowledgement.
//!
//! Tree `outbox` of the store's sled database maps an 8-byte big-endian
//! sequence number to `[OUTBOX_FORMAT_JSON, json...]`, the result exactly as
//! the API serves it. The sequence number is the one the result's own key
//! carries (sled's `generate_id`, monotonic across restarts), so key order is
//! insertion order and the backlog drains in the order results were stored
//! even when the wall clock jumps. The entry is written in the same sled
//! transaction as the result (see [`super::Store::insert`]); it leaves only
//! when the publisher has the broker's PUBACK ([`Outbox::remove`]), or when
//! the outbox is over its bounds and it is among the oldest
//! ([`Outbox::enforce_bounds`]), which is counted and warned about once per
//! overflow episode.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::core::ids;

pub(super) const OUTBOX_TREE: &str = "outbox";
/// First byte of every outbox value: the rest is the result's JSON.
const OUTBOX_FORMAT_JSON: u8 = 1;
/// First byte of a sighting's entry (issue 18): the rest is the
/// [`SightingEvent`](crate::core::sighting::SightingEvent)'s JSON.
const OUTBOX_FORMAT_SIGHTING_JSON: u8 = 2;
/// First byte of a model rollout's step report (issue 22): the rest is the
/// status JSON the fleet worker wrote.
const OUTBOX_FORMAT_MODEL_STATUS_JSON: u8 = 3;
/// Entries deleted per batch when the outbox is over its bounds.
const DROP_BATCH: usize = 256;

/// Errors of the outbox. Each names the store directory.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("MQTT outbox in {path}: database error: {source}")]
    Db { path: PathBuf, source: sled::Error },
    #[error("MQTT outbox in {path}: corrupt entry {key}: {reason}")]
    Corrupt {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

/// How much the outbox may hold; beyond either bound the oldest entries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    pub max_records: usize,
    pub max_bytes: u64,
}

/// What an outbox entry carries, so the publisher picks its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A result (`mqtt.result_topic`).
    Result,
    /// A sighting's start or end (`spotter/<device_id>/sighting`).
    Sighting,
    /// A model rollout step (`spotter/<device_id>/model_status`, issue 22).
    ModelStatus,
}

/// One result (or sighting change) waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Position in the outbox (insertion order).
    pub seq: u64,
    pub kind: OutboxKind,
    /// The result as JSON (the API's schema).
    pub payload: Vec<u8>,
}

/// The outbox tree with its counters. Shared by the store (writer) and the
/// MQTT publisher (reader, deleter) behind an `Arc`.
pub struct Outbox {
    dir: PathBuf,
    /// The database, for sequence numbers of entries queued outside a
    /// result's transaction ([`Outbox::push`]).
    db: sled::Db,
    tree: sled::Tree,
    limits: OutboxLimits,
    count: AtomicUsize,
    bytes: AtomicU64,
    /// Entries dropped, oldest first, because the outbox was full (since start).
    dropped: AtomicU64,
    /// Whether the current overflow episode has been logged; cleared when
    /// the outbox next becomes empty.
    warned: AtomicBool,
    /// Wakes the publisher when an entry is added.
    notify: tokio::sync::Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("dir", &self.dir)
            .field("entries", &self.len())
            .finish()
    }
}

/// The key of the entry with sequence number `seq`.
pub(super) fn outbox_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

impl Outbox {
    /// Open (or create) the outbox tree of `db`; `dir` is for messages.
    pub(super) fn open(
        db: &sled::Db,
        dir: &Path,
        limits: OutboxLimits,
    ) -> Result<Outbox, OutboxError> {
        let db_err = |source| OutboxError::Db {
            path: dir.to_path_buf(),
            source,
        };
        let tree = db.open_tree(OUTBOX_TREE).map_err(db_err)?;
        let (mut n, mut bytes) = (0usize, 0u64);
        for item in tree.iter() {
            let (k, v) = item.map_err(db_err)?;
            n += 1;
            bytes += (k.len() + v.len()) as u64;
        }
        Ok(Outbox {
            dir: dir.to_path_buf(),
            db: db.clone(),
            tree,
            limits,
            count: AtomicUsize::new(n),
            bytes: AtomicU64::new(bytes),
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn db_err(&self, source: sled::Error) -> OutboxError {
        OutboxError::Db {
            path: self.dir.clone(),
            source,
        }
    }

    pub(super) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    /// The stored value for a result (or, `kind` Sighting, a sighting
    /// change) whose JSON is `json`.
    pub(super) fn encode(kind: OutboxKind, json: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(json.len() + 1);
        v.push(match kind {
            OutboxKind::Result => OUTBOX_FORMAT_JSON,
            OutboxKind::Sighting => OUTBOX_FORMAT_SIGHTING_JSON,
            OutboxKind::ModelStatus => OUTBOX_FORMAT_MODEL_STATUS_JSON,
        });
        v.extend_from_slice(json);
        v
    }

    /// Account for an entry the store has committed, enforce the bounds and
    /// wake the publisher.
    pub(super) fn committed(&self, size: u64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        if let Err(e) = self.enforce_bounds() {
            log::error!("{e}");
        }
        self.notify.notify_one();
    }

    /// Queue an entry of `kind` on its own (not in a result's transaction):
    /// the model rollout's step reports (issue 22). Its sequence number comes
    /// from the same generator as the results', so it keeps its place in
    /// the outbox's order.
    pub(crate) fn push(&self, kind: OutboxKind, json: &[u8]) -> Result<u64, OutboxError> {
        let _retire = super::flush::Retire;
        let seq = self.db.generate_id().map_err(|e| self.db_err(e))?;
        let key = outbox_key(seq);
        let value = Outbox::encode(kind, json);
        self.tree
            .insert(key, value.as_slice())
            .map_err(|e| self.db_err(e))?;
        self.committed((key.len() + value.len()) as u64);
        Ok(seq)
    }

    /// Entries waiting.
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sum of key and value lengths of the waiting entries.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Entries dropped because the outbox was full, since this process started.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait until an entry is added (or a wake-up was already pending).
    pub(crate) async fn added(&self) {
        self.notify.notified().await
    }

    /// The sequence number of the newest entry, if any.
    pub(crate) fn last_seq(&self) -> Result<Option<u64>, OutboxError> {
        Ok(self
            .tree
            .last()
            .map_err(|e| self.db_err(e))?
            .and_then(|(k, _)| seq_of(&k)))
    }

    /// Up to `limit` entries with `after < seq <= until`, oldest first
    /// (`after = None`: from the first entry; `until = None`: no upper bound).
    pub fn read(
        &self,
        after: Option<u64>,
        until: Option<u64>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, OutboxError> {
        let lo = match after {
            None => 0,
            Some(u64::MAX) => return Ok(Vec::new()),
            Some(s) => s + 1,
        };
        let hi = until.unwrap_or(u64::MAX);
        let mut out = Vec::new();
        if lo > hi {
            return Ok(out);
        }
        for item in self.tree.range(outbox_key(lo)..=outbox_key(hi)).take(limit) {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let corrupt = |reason: &str| OutboxError::Corrupt {
                path: self.dir.clone(),
                key: hex::encode(&k),
                reason: reason.to_string(),
            };
            let seq = seq_of(&k).ok_or_else(|| corrupt("key is not 8 bytes"))?;
            match v.split_first() {
                Some((&OUTBOX_FORMAT_JSON, body)) => out.push(OutboxEntry {
                    seq,
                    kind: OutboxKind::Result,
                    payload: body.to_vec(),
                }),
                Some((&OUTBOX_FORMAT_SIGHTING_JSON, body)) => out.push(OutboxEntry {
                    seq,
                    kind: OutboxKind::Sighting,
                    payload: body.to_vec(),
                }),
                Some((&OUTBOX_FORMAT_MODEL_STATUS_JSON, body)) => out.push(OutboxEntry {
                    seq,
                    kind: OutboxKind::ModelStatus,
                    payload: body.to_vec(),
                }),
                Some((other, _)) => return Err(corrupt(&format!("unknown value format {other}"))),
                None => return Err(corrupt("empty value")),
            }
        }
        Ok(out)
    }

    /// Delete the entry `seq` (its PUBACK arrived, or it cannot be
    /// published). Returns whether it was still there: an entry already
    /// dropped for space is not subtracted twice.
    pub(crate) fn remove(&self, seq: u64) -> Result<bool, OutboxError> {
        let _retire = super::flush::Retire;
        match self
            .tree
            .remove(outbox_key(seq))
            .map_err(|e| self.db_err(e))?
        {
            Some(v) => {
                self.count.fetch_sub(1, Ordering::Relaxed);
                self.bytes
                    .fetch_sub((8 + v.len()) as u64, Ordering::Relaxed);
                if self.is_empty() {
                    self.warned.store(false, Ordering::Relaxed);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn over_bounds(&self) -> bool {
        let l = self.limits;
        (l.max_records > 0 && self.len() > l.max_records)
            || (l.max_bytes > 0 && self.bytes() > l.max_bytes)
    }

    /// Drop the oldest entries until both bounds hold; returns how many went.
    /// The first drop of an overflow episode is logged (once) with
    /// [`ids::MQTT_OUTBOX_OVERFLOW`].
    pub(crate) fn enforce_bounds(&self) -> Result<u64, OutboxError> {
        let mut dropped = 0u64;
        while self.over_bounds() {
            let mut planned = Vec::with_capacity(DROP_BATCH);
            // Plan deletions oldest first until the bounds would hold.
            let (mut n, mut bytes) = (self.len(), self.bytes());
            for item in self.tree.iter().take(DROP_BATCH) {
                let (k, v) = item.map_err(|e| self.db_err(e))?;
                let l = self.limits;
                let over = (l.max_records > 0 && n > l.max_records)
                    || (l.max_bytes > 0 && bytes > l.max_bytes);
                if !over {
                    break;
                }
                n -= 1;
                bytes -= (k.len() + v.len()) as u64;
                planned.push(k);
            }
            if planned.is_empty() {
                break;
            }
            // Remove one by one so an entry acknowledged (and removed) by the
            // publisher meanwhile is not subtracted twice.
            for k in planned {
                if let Some(v) = self.tree.remove(&k).map_err(|e| self.db_err(e))? {
                    self.count.fetch_sub(1, Ordering::Relaxed);
                    self.bytes
                        .fetch_sub((k.len() + v.len()) as u64, Ordering::Relaxed);
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            let total = self.dropped.fetch_add(dropped, Ordering::Relaxed) + dropped;
            if !self.warned.swap(true, Ordering::Relaxed) {
                log::warn!(
                    message_id = ids::MQTT_OUTBOX_OVERFLOW, spotter_error_kind = "mqtt_outbox_overflow", spotter_dropped = total;
                    "MQTT outbox full ({} results, {} bytes; limits {} results, {} bytes): dropping the oldest unpublished results; \
                     this is logged once until the outbox drains, spotter_mqtt_outbox_dropped_total counts them",
                    self.len(), self.bytes(), self.limits.max_records, self.limits.max_bytes
                );
            }
        }
        Ok(dropped)
    }
}

impl crate::state::OutboxGauge for Outbox {
    fn len(&self) -> usize {
        Outbox::len(self)
    }
    fn bytes(&self) -> u64 {
        Outbox::bytes(self)
    }
    fn dropped(&self) -> u64 {
        Outbox::dropped(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::result::ResultRecord;
    use crate::store::Store;

    fn rec(ts_ns: u64, label: &str) -> ResultRecord {
        ResultRecord {
            id: String::new(),
            ts_ns,
            source: "files:/x".into(),
            origin: format!("/x/{label}.jpg"),
            frame_seq: ts_ns,
            model_sha256: "ab".repeat(32),
            runtime: "builtin".into(),
            classes: vec![],
            detections: vec![],
            image_width: 1,
            image_height: 1,
            latency: Default::default(),
            clock_synchronized: true,
            boottime_ns: 0,
            source_name: String::new(),
        }
    }

    fn open(dir: &Path, max_records: usize, max_bytes: u64) -> Store {
        Store::open_with(dir, 0)
            .unwrap()
            .with_outbox(OutboxLimits {
                max_records,
                max_bytes,
            })
            .unwrap()
    }

    fn ids(entries: &[OutboxEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                serde_json::from_slice::<ResultRecord>(&e.payload)
                    .unwrap()
                    .id
            })
            .collect()
    }

    // Would catch results stored without an outbox entry, entries out of
    // insertion order (a wall clock going backwards must not reorder them),
    // or a payload that differs from the stored record.
    #[test]
    fn insert_queues_each_result_in_insertion_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 100, 1 << 20);
        let mut inserted = Vec::new();
        for ts in [300, 100, 200] {
            let mut r = rec(ts, "a");
            store.insert(&mut r).unwrap();
            inserted.push(r);
        }
        let ob = store.outbox().unwrap();
        let all = ob.read(None, None, 100).unwrap();
        assert_eq!(
            ids(&all),
            inserted.iter().map(|r| r.id.clone()).collect::<Vec<_>>()
        );
        for (e, r) in all.iter().zip(&inserted) {
            assert_eq!(
                &serde_json::from_slice::<ResultRecord>(&e.payload).unwrap(),
                r
            );
            assert_eq!(store.get(&r.id).unwrap().as_ref(), Some(r));
        }
        assert_eq!(ob.len(), 3);
        // Cursors: after the first, up to the second.
        let mid = ob.read(Some(all[0].seq), Some(all[1].seq), 100).unwrap();
        assert_eq!(mid, vec![all[1].clone()]);
        // Imports (restored backups) are not published.
        let mut other = rec(400, "b");
        other.id = format!("{:016x}{:016x}", 400u64, 1u64 << 40);
        assert!(store.insert_with_id(&other).unwrap());
        assert_eq!(ob.len(), 3);
    }

    // Would catch an acknowledged entry surviving (published twice on every
    // reconnect) or the counters drifting when an entry is removed twice.
    #[test]
    fn remove_deletes_once_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 100, 1 << 20);
        for ts in 1..=3 {
            store.insert(&mut rec(ts, "a")).unwrap();
        }
        let ob = store.outbox().unwrap();
        let all = ob.read(None, None, 10).unwrap();
        let bytes_before = ob.bytes();
        assert!(ob.remove(all[1].seq).unwrap());
        assert!(!ob.remove(all[1].seq).unwrap());
        assert_eq!(ob.len(), 2);
        assert_eq!(
            ob.bytes(),
            bytes_before - (8 + 1 + all[1].payload.len()) as u64
        );
        assert_eq!(
            ob.read(None, None, 10).unwrap(),
            vec![all[0].clone(), all[2].clone()]
        );
    }

    // Would catch a full outbox growing without bound, dropping the newest
    // instead of the oldest, or the drops going uncounted.
    #[test]
    fn bounds_drop_the_oldest_and_count_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 5, 1 << 20);
        let mut all = Vec::new();
        for ts in 1..=12 {
            let mut r = rec(ts, "a");
            store.insert(&mut r).unwrap();
            all.push(r.id);
        }
        let ob = store.outbox().unwrap();
        assert_eq!(ob.len(), 5);
        assert_eq!(ob.dropped(), 7);
        assert_eq!(ids(&ob.read(None, None, 100).unwrap()), all[7..].to_vec());
        assert_eq!(store.len(), 12, "results themselves are kept");

        // The byte bound: each entry is the same size here.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1000, 4096);
        let mut n = 0;
        while store.outbox().unwrap().dropped() == 0 {
            store.insert(&mut rec(1000 + n, "a")).unwrap();
            n += 1;
            assert!(n < 1000);
        }
        let ob = store.outbox().unwrap();
        assert!(
            ob.bytes() <= 4096 && ob.len() as u64 == n - 1,
            "{} entries, {} bytes",
            ob.len(),
            ob.bytes()
        );
    }

    // Would catch queued results lost on restart (store-and-forward must
    // survive the daemon stopping with the broker down) or counts not
    // recovered at open.
    #[test]
    fn outbox_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (len, bytes, first) = {
            let store = open(dir.path(), 100, 1 << 20);
            for ts in 1..=4 {
                store.insert(&mut rec(ts, "a")).unwrap();
            }
            let ob = store.outbox().unwrap();
            let first = ob.read(None, None, 1).unwrap();
            ob.remove(first[0].seq).unwrap();
            store.flush().unwrap();
            (ob.len(), ob.bytes(), first)
        };
        let store = open(dir.path(), 100, 1 << 20);
        let ob = store.outbox().unwrap();
        assert_eq!((ob.len(), ob.bytes()), (len, bytes));
        assert_ne!(ob.read(None, None, 1).unwrap(), first);
        // New entries go after the old ones.
        let before = ob.last_seq().unwrap().unwrap();
        store.insert(&mut rec(0, "late")).unwrap();
        assert!(ob.last_seq().unwrap().unwrap() > before);
    }
}
