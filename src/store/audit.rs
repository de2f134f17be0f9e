//! The audit trail (issue 23): one record per administrative action (a key
//! created or revoked, a model installed, activated or rolled back, the
//! configuration reloaded, a backup exported, a sign-in or sign-out on the
//! page), kept in its own append-only tree with its own retention, and the
//! journal line that goes with each record ([`ids::ADMIN_ACTION`]).
//!
//! Tree `audit` of the store's sled database: the record id (u64
//! big-endian, from sled's `generate_id`, so key order is append order and
//! ids stay unique across restarts) → `[AUDIT_FORMAT_JSON, json...]`, the
//! [`AuditRecord`]'s serde JSON. Records are never changed once written;
//! they leave only by retention (`[audit] max_age_s`, `max_records`, applied
//! on every append and by the store's pruner) or by deleting the store.
//!
//! A record names the acting key by id and name (never a secret), the
//! client address (or `cli` for the command line) and the outcome (`ok`, or
//! `refused` with the reason). Records travel in backups as lines
//! `{"audit": {...}}` and are imported idempotently by id (see `backup`).
//!
//! Why one file of some 730 lines: the record type, the tree's write paths
//! (append, import, the command line's pending file), its reads, its
//! retention and its backup lines share the private tree and counters; a
//! third of it is tests.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, PRUNE_BATCH};
use crate::core::ids;

const AUDIT_TREE: &str = "audit";
/// First byte of a stored audit record: the rest is its JSON.
const AUDIT_FORMAT_JSON: u8 = 1;
/// Longest reason or target kept in a record (characters): a reason quoting
/// a client's input stays bounded.
const MAX_TEXT: usize = 300;
/// Largest page of `GET /api/v1/audit`.
pub const MAX_AUDIT_PAGE: usize = 1000;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    KeyCreated,
    KeyRevoked,
    ModelInstalled,
    ModelActivated,
    ModelRolledBack,
    ConfigReloaded,
    BackupExported,
    SignIn,
    SignOut,
    // --- Shadow evaluation (issue 22) ---
    ModelShadowStarted,
    ModelShadowPromoted,
    ModelShadowDiscarded,
    /// `GET /api/v1/support-bundle` (issue 22).
    SupportBundle,
}

impl AuditAction {
    /// The name records and log lines carry (`key_created`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::KeyCreated => "key_created",
            AuditAction::KeyRevoked => "key_revoked",
            AuditAction::ModelInstalled => "model_installed",
            AuditAction::ModelActivated => "model_activated",
            AuditAction::ModelRolledBack => "model_rolled_back",
            AuditAction::ConfigReloaded => "config_reloaded",
            AuditAction::BackupExported => "backup_exported",
            AuditAction::SignIn => "sign_in",
            AuditAction::SignOut => "sign_out",
            AuditAction::ModelShadowStarted => "model_shadow_started",
            AuditAction::ModelShadowPromoted => "model_shadow_promoted",
            AuditAction::ModelShadowDiscarded => "model_shadow_discarded",
            AuditAction::SupportBundle => "support_bundle",
        }
    }
}

/// Whether the action was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Refused,
}

/// One administrative action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Assigned when appended (0 before).
    pub id: u64,
    /// When, ns since the Unix epoch.
    pub ts_ns: i64,
    pub action: AuditAction,
    /// The acting key's id and name; `None` from the command line or for a
    /// refused sign-in whose key matched none.
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    /// The client's IP address, or `cli`.
    pub client: String,
    pub outcome: Outcome,
    /// Why it was refused (`None` when ok).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What it acted on: the key id created or revoked, the model version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl AuditRecord {
    /// A record of `action` by `client`, timestamped now, outcome ok.
    pub fn new(action: AuditAction, client: impl Into<String>) -> AuditRecord {
        let ts_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        AuditRecord {
            id: 0,
            ts_ns,
            action,
            key_id: None,
            key_name: None,
            client: client.into(),
            outcome: Outcome::Ok,
            reason: None,
            target: None,
        }
    }

    /// By the key with this id and name.
    pub fn by_key(mut self, id: &str, name: &str) -> AuditRecord {
        self.key_id = Some(bounded(id));
        self.key_name = Some(bounded(name));
        self
    }

    /// Acting on `target` (a key id, a model version).
    pub fn target(mut self, target: impl AsRef<str>) -> AuditRecord {
        self.target = Some(bounded(target.as_ref()));
        self
    }

    /// Refused, for this reason.
    pub fn refused(mut self, reason: impl AsRef<str>) -> AuditRecord {
        self.outcome = Outcome::Refused;
        self.reason = Some(bounded(reason.as_ref()));
        self
    }

    /// With the outcome of `r`: ok, or refused with its error.
    pub fn outcome_of<T, E: std::fmt::Display>(self, r: &Result<T, E>) -> AuditRecord {
        match r {
            Ok(_) => self,
            Err(e) => self.refused(e.to_string()),
        }
    }

    /// Write the journal line of this record ([`ids::ADMIN_ACTION`]).
    pub fn log(&self) {
        let key = self.key_id.as_deref().unwrap_or("-");
        let name = self.key_name.as_deref().unwrap_or("-");
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
        };
        let reason = self.reason.as_deref().unwrap_or("");
        let target = self.target.as_deref().unwrap_or("");
        log::info!(
            message_id = ids::ADMIN_ACTION,
            spotter_audit_action = self.action.as_str(),
            spotter_key_id = key,
            spotter_key_name = name,
            client = self.client.as_str(),
            spotter_outcome = outcome,
            spotter_reason = reason,
            spotter_target = target;
            "audit: {} {outcome} (key {key} \"{name}\", from {}{}{})",
            self.action.as_str(),
            self.client,
            if target.is_empty() { String::new() } else { format!(", target {target}") },
            if reason.is_empty() { String::new() } else { format!(": {reason}") },
        );
    }
}

/// Cut `s` to [`MAX_TEXT`] characters.
fn bounded(s: &str) -> String {
    s.chars().take(MAX_TEXT).collect()
}

/// `[audit]` retention: 0 means no limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditLimits {
    pub max_age: Option<Duration>,
    pub max_records: Option<usize>,
}

impl AuditLimits {
    /// From `[audit]`.
    pub fn from_settings(s: &crate::config::AuditSettings) -> AuditLimits {
        AuditLimits {
            max_age: (s.max_age_s > 0).then(|| Duration::from_secs(s.max_age_s)),
            max_records: (s.max_records > 0).then_some(s.max_records),
        }
    }
}

impl Default for AuditLimits {
    fn default() -> AuditLimits {
        AuditLimits::from_settings(&crate::config::AuditSettings::default())
    }
}

/// One page of audit records, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Pass as `cursor` for the next page; `None` on the last one.
    pub next_cursor: Option<u64>,
}

/// The audit tree, its counters and limits (part of [`Store`]).
#[derive(Debug)]
pub(super) struct AuditTrail {
    tree: sled::Tree,
    count: AtomicUsize,
    bytes: AtomicU64,
    limits: Mutex<AuditLimits>,
    /// Held by appends (so the id above the last one is taken once) and by
    /// pruning (so two passes never subtract the same record twice).
    append: Mutex<()>,
}

impl AuditTrail {
    pub(super) fn open(db: &sled::Db) -> Result<AuditTrail, sled::Error> {
        let tree = db.open_tree(AUDIT_TREE)?;
        let (n, b) = super::tally(&tree)?;
        Ok(AuditTrail {
            tree,
            count: AtomicUsize::new(n),
            bytes: AtomicU64::new(b),
            limits: Mutex::new(AuditLimits::default()),
            append: Mutex::new(()),
        })
    }
}

fn decode(key: &[u8], value: &[u8]) -> Option<AuditRecord> {
    let id = u64::from_be_bytes(key.try_into().ok()?);
    let (&fmt, json) = value.split_first()?;
    if fmt != AUDIT_FORMAT_JSON {
        return None;
    }
    let mut r: AuditRecord = serde_json::from_slice(json).ok()?;
    r.id = id;
    Some(r)
}

fn encode(rec: &AuditRecord) -> Result<Vec<u8>, serde_json::Error> {
    let mut v = vec![AUDIT_FORMAT_JSON];
    serde_json::to_writer(&mut v, rec)?;
    Ok(v)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Store {
    fn audit_db_err(&self, source: sled::Error) -> StoreError {
        StoreError::Db {
            path: self.dir.clone(),
            source,
        }
    }

    /// Set the audit trail's retention (`[audit]`); applied from the next
    /// append or pruner pass.
    pub fn set_audit_limits(&self, limits: AuditLimits) {
        // A poisoned lock only means a panic elsewhere; the value is a Copy.
        *self.audit.limits.lock().unwrap_or_else(|p| p.into_inner()) = limits;
    }

    /// The audit trail's retention.
    pub fn audit_limits(&self) -> AuditLimits {
        *self.audit.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Log `rec` ([`ids::ADMIN_ACTION`]) and append it to the audit trail;
    /// returns its id. The journal line is written even when the store
    /// refuses the write (logged as a warning then).
    pub fn audit(&self, mut rec: AuditRecord) -> Result<u64, StoreError> {
        rec.log();
        let r = self.audit_append(&mut rec);
        if let Err(e) = &r {
            log::warn!(spotter_audit_action = rec.action.as_str(); "audit record not stored: {e}");
        }
        r
    }

    /// Append `rec` (its id assigned) without logging, then apply the
    /// retention.
    pub(crate) fn audit_append(&self, rec: &mut AuditRecord) -> Result<u64, StoreError> {
        let _retire = super::flush::Retire;
        // A poisoned lock guards nothing but the id order: carry on.
        let _one = self.audit.append.lock().unwrap_or_else(|p| p.into_inner());
        // Above every stored id, imported ones included.
        let last = self
            .audit
            .tree
            .last()
            .map_err(|e| self.audit_db_err(e))?
            .and_then(|(k, _)| Some(u64::from_be_bytes(k.as_ref().try_into().ok()?)))
            .unwrap_or(0);
        let id = self
            .db
            .generate_id()
            .map_err(|e| self.audit_db_err(e))?
            .max(last.saturating_add(1));
        rec.id = id;
        let value = encode(rec).map_err(|e| StoreError::Db {
            path: self.dir.clone(),
            source: sled::Error::Unsupported(format!("audit record: {e}")),
        })?;
        let key = id.to_be_bytes();
        let n = value.len() as u64 + 8;
        self.audit
            .tree
            .insert(key, value)
            .map_err(|e| self.audit_db_err(e))?;
        self.audit.count.fetch_add(1, Ordering::Relaxed);
        self.audit.bytes.fetch_add(n, Ordering::Relaxed);
        drop(_one);
        self.prune_audit_with(now_ns(), false)?;
        Ok(id)
    }

    /// Import `rec` under its own id unless a record with that id exists;
    /// returns whether it was written (a second import adds nothing).
    pub(crate) fn audit_import(&self, rec: &AuditRecord) -> Result<bool, StoreError> {
        let _retire = super::flush::Retire;
        let value = encode(rec).map_err(|e| StoreError::Db {
            path: self.dir.clone(),
            source: sled::Error::Unsupported(format!("audit record: {e}")),
        })?;
        let n = value.len() as u64 + 8;
        let prev = self
            .audit
            .tree
            .compare_and_swap(rec.id.to_be_bytes(), None::<&[u8]>, Some(value))
            .map_err(|e| self.audit_db_err(e))?;
        if prev.is_err() {
            return Ok(false);
        }
        self.audit.count.fetch_add(1, Ordering::Relaxed);
        self.audit.bytes.fetch_add(n, Ordering::Relaxed);
        Ok(true)
    }

    /// Records stored and the sum of their key and value lengths.
    pub fn audit_figures(&self) -> (usize, u64) {
        (
            self.audit.count.load(Ordering::Relaxed),
            self.audit.bytes.load(Ordering::Relaxed),
        )
    }

    /// The oldest record's timestamp (ns), if any.
    pub fn audit_oldest_ns(&self) -> Result<Option<i64>, StoreError> {
        let first = self.audit.tree.first().map_err(|e| self.audit_db_err(e))?;
        Ok(first.and_then(|(k, v)| decode(&k, &v)).map(|r| r.ts_ns))
    }

    /// One page of records, newest first, below `cursor` (an id).
    pub fn audit_page(&self, cursor: Option<u64>, limit: usize) -> Result<AuditPage, StoreError> {
        let limit = limit.clamp(1, MAX_AUDIT_PAGE);
        let iter = match cursor {
            Some(c) => self.audit.tree.range(..c.to_be_bytes()),
            None => self.audit.tree.iter(),
        };
        let mut records = Vec::new();
        let mut more = false;
        for item in iter.rev() {
            let (k, v) = item.map_err(|e| self.audit_db_err(e))?;
            let Some(r) = decode(&k, &v) else { continue };
            if records.len() == limit {
                more = true;
                break;
            }
            records.push(r);
        }
        let next_cursor = if more {
            records.last().map(|r| r.id)
        } else {
            None
        };
        Ok(AuditPage {
            records,
            next_cursor,
        })
    }

    /// Every record, oldest first (for exports).
    pub(crate) fn audit_iter(&self) -> impl Iterator<Item = Result<AuditRecord, StoreError>> + '_ {
        self.audit.tree.iter().filter_map(move |item| match item {
            Ok((k, v)) => decode(&k, &v).map(Ok),
            Err(e) => Some(Err(self.audit_db_err(e))),
        })
    }

    /// Delete records older than `max_age` and the oldest beyond
    /// `max_records`; returns how many went (the pruner's pass).
    pub(crate) fn prune_audit(&self, now_ns: u64) -> Result<u64, StoreError> {
        let _retire = super::flush::Retire;
        self.prune_audit_with(now_ns, true)
    }

    /// With `by_age` false only the count limit (every append: no scan).
    /// The age limit reads every record's time, not just the oldest ids':
    /// records taken from the command line or a backup carry older times
    /// than their ids say.
    fn prune_audit_with(&self, now_ns: u64, by_age: bool) -> Result<u64, StoreError> {
        let limits = self.audit_limits();
        let cutoff = limits
            .max_age
            .filter(|_| by_age)
            .map(|a| i64::try_from(now_ns.saturating_sub(a.as_nanos() as u64)).unwrap_or(0));
        let mut deleted = 0u64;
        // See `audit_append`.
        let _one = self.audit.append.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let mut batch = sled::Batch::default();
            let mut n = 0usize;
            let mut freed = 0u64;
            let over = limits.max_records.map_or(0, |m| {
                self.audit.count.load(Ordering::Relaxed).saturating_sub(m)
            });
            for item in self.audit.tree.iter() {
                if n == PRUNE_BATCH || (cutoff.is_none() && n >= over) {
                    break;
                }
                let (k, v) = item.map_err(|e| self.audit_db_err(e))?;
                let go = n < over
                    || match (cutoff, decode(&k, &v)) {
                        (Some(c), Some(r)) => r.ts_ns < c,
                        // Unreadable: nothing can show it; let it go.
                        (Some(_), None) => true,
                        (None, _) => false,
                    };
                if go {
                    freed += (k.len() + v.len()) as u64;
                    batch.remove(k);
                    n += 1;
                }
            }
            if n == 0 {
                return Ok(deleted);
            }
            self.audit
                .tree
                .apply_batch(batch)
                .map_err(|e| self.audit_db_err(e))?;
            self.audit.count.fetch_sub(n, Ordering::Relaxed);
            self.audit.bytes.fetch_sub(freed, Ordering::Relaxed);
            deleted += n as u64;
        }
    }
}

/// Where the command line (`spotter keys`, `spotter model`) leaves its
/// records, in the state directory: the daemon holds the store's lock, so
/// they wait there (one JSON record per line, mode 0600) until the daemon
/// takes them in at start and on each reload ([`Store::audit_take_pending`]).
pub const PENDING_FILE: &str = "audit-pending.ndjson";
/// Records taken from the pending file at most (a larger file is cut).
const MAX_PENDING: usize = 10_000;
/// Longest line of the pending file read.
const MAX_PENDING_LINE: u64 = 16 * 1024;

/// Log `rec` (its journal line) and leave it in `state_dir`'s pending file
/// for the daemon to store (see [`PENDING_FILE`]).
pub fn spool(state_dir: &std::path::Path, rec: &AuditRecord) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    rec.log();
    let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(state_dir.join(PENDING_FILE))?;
    f.write_all(&line)
}

impl Store {
    /// Store the records the command line left in `state_dir` (see
    /// [`PENDING_FILE`]), with their own timestamps and new ids, then remove
    /// the file; returns how many. Unreadable lines are skipped.
    pub fn audit_take_pending(&self, state_dir: &std::path::Path) -> Result<u64, StoreError> {
        use std::io::{BufRead, Read};
        let path = state_dir.join(PENDING_FILE);
        let taking = state_dir.join(format!("{PENDING_FILE}.taking"));
        let io = |action| {
            let path = path.clone();
            move |source| StoreError::Io {
                path,
                action,
                source,
            }
        };
        // Renamed first: a CLI appending meanwhile starts a new file.
        match std::fs::rename(&path, &taking) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !taking.exists() => return Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("take the pending audit records")(e)),
        }
        let f = std::fs::File::open(&taking).map_err(io("read the pending audit records"))?;
        let mut reader = std::io::BufReader::new(f);
        let (mut n, mut line) = (0u64, Vec::new());
        for _ in 0..MAX_PENDING {
            line.clear();
            let read = (&mut reader)
                .take(MAX_PENDING_LINE)
                .read_until(b'\n', &mut line)
                .map_err(io("read the pending audit records"))?;
            if read == 0 {
                break;
            }
            match serde_json::from_slice::<AuditRecord>(&line) {
                Ok(mut rec) => {
                    self.audit_append(&mut rec)?;
                    n += 1;
                }
                Err(e) => log::warn!("skipping an unreadable pending audit record: {e}"),
            }
            if !line.ends_with(b"\n") {
                // Cut at the bound: skip to the next line.
                let mut rest = Vec::new();
                let _ = reader.read_until(b'\n', &mut rest);
            }
        }
        std::fs::remove_file(&taking).map_err(io("remove the pending audit records"))?;
        Ok(n)
    }
}

/// One audit line of an export: `{"audit": {...}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditLine {
    audit: AuditRecord,
}

/// Write every record with `ts_ns >= since_ns` (all if `None`) as an audit
/// line, oldest first; returns how many (for `backup::export`).
pub(super) fn export_lines<W: std::io::Write>(
    store: &Store,
    since_ns: Option<i64>,
    writer: &mut W,
) -> Result<u64, super::backup::BackupError> {
    let mut n = 0u64;
    for item in store.audit_iter() {
        let audit = item?;
        if since_ns.is_some_and(|t| audit.ts_ns < t) {
            continue;
        }
        let id = audit.id;
        serde_json::to_writer(&mut *writer, &AuditLine { audit }).map_err(|source| {
            super::backup::BackupError::Encode {
                id: format!("audit {id}"),
                source,
            }
        })?;
        writer
            .write_all(b"\n")
            .map_err(|source| super::backup::BackupError::Io {
                action: "write the export",
                source,
            })?;
        n += 1;
    }
    Ok(n)
}

/// Import one audit line: `Ok(Ok(true))` written, `Ok(Ok(false))` already
/// there (same id), `Ok(Err(reason))` not a valid audit line.
pub(super) fn import_line(store: &Store, line: &[u8]) -> Result<Result<bool, String>, StoreError> {
    match serde_json::from_slice::<AuditLine>(line) {
        Err(e) => Ok(Err(format!("not an audit record: {e}"))),
        Ok(AuditLine { audit }) if audit.id == 0 => Ok(Err(format!(
            "audit record without an id: {:?}",
            audit.action
        ))),
        Ok(AuditLine { audit }) => store.audit_import(&audit).map(Ok),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(action: AuditAction) -> AuditRecord {
        AuditRecord::new(action, "192.0.2.7").by_key("00112233445566aa", "admin")
    }

    // Catches: records lost on reopen (not written to the tree, or the
    // counters not recounted), or ids reused after a restart.
    #[test]
    fn records_survive_a_reopen_with_fresh_ids() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let s = Store::open(dir.path()).unwrap();
            let id = s.audit(rec(AuditAction::KeyCreated).target("k1")).unwrap();
            s.flush().unwrap();
            id
        };
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.audit_figures().0, 1);
        let page = s.audit_page(None, 10).unwrap();
        assert_eq!(page.records.len(), 1);
        assert_eq!(page.records[0].action, AuditAction::KeyCreated);
        assert_eq!(page.records[0].target.as_deref(), Some("k1"));
        let second = s.audit(rec(AuditAction::KeyRevoked)).unwrap();
        assert!(second > first);
    }

    // Catches: a page that repeats or skips records at the cursor, a last
    // page with a cursor, or pages oldest-first.
    #[test]
    fn pages_newest_first_without_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let ids: Vec<u64> = (0..7)
            .map(|_| s.audit(rec(AuditAction::SignIn)).unwrap())
            .collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let p = s.audit_page(cursor, 3).unwrap();
            seen.extend(p.records.iter().map(|r| r.id));
            match p.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut want = ids.clone();
        want.reverse();
        assert_eq!(seen, want);
    }

    // Catches: `max_records` not enforced on append, the newest deleted
    // instead of the oldest, or old records kept past `max_age`.
    #[test]
    fn retention_keeps_the_newest_within_both_limits() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.set_audit_limits(AuditLimits {
            max_age: None,
            max_records: Some(3),
        });
        let ids: Vec<u64> = (0..5)
            .map(|_| s.audit(rec(AuditAction::SignOut)).unwrap())
            .collect();
        let kept: Vec<u64> = s
            .audit_page(None, 10)
            .unwrap()
            .records
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(kept, [ids[4], ids[3], ids[2]]);
        assert_eq!(s.audit_figures().0, 3);
        // An old one (a day ago) goes with a one-hour age limit.
        let mut old = rec(AuditAction::ConfigReloaded);
        old.ts_ns -= 86_400_000_000_000;
        s.audit_append(&mut old).unwrap();
        s.set_audit_limits(AuditLimits {
            max_age: Some(Duration::from_secs(3600)),
            max_records: None,
        });
        s.prune_audit(now_ns()).unwrap();
        let left = s.audit_page(None, 10).unwrap().records;
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(left.iter().all(|r| r.action == AuditAction::SignOut));
    }

    // Catches: an import that duplicates records when run twice, or new
    // ids that collide with imported ones.
    #[test]
    fn import_is_idempotent_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut r = rec(AuditAction::BackupExported);
        r.id = 1_000_000;
        assert!(s.audit_import(&r).unwrap());
        assert!(!s.audit_import(&r).unwrap());
        assert_eq!(s.audit_figures().0, 1);
        let next = s.audit(rec(AuditAction::SignIn)).unwrap();
        assert!(next > r.id);
    }

    // Catches: records the command line left lost, stored twice (file not
    // removed), or given the daemon's time instead of their own.
    #[test]
    fn pending_records_are_taken_once() {
        let state = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut r = AuditRecord::new(AuditAction::KeyRevoked, "cli");
        r.ts_ns = 1_700_000_000_000_000_000;
        spool(state.path(), &r).unwrap();
        spool(
            state.path(),
            &AuditRecord::new(AuditAction::ModelActivated, "cli"),
        )
        .unwrap();
        std::fs::write(state.path().join("x"), b"").unwrap();
        s.set_audit_limits(AuditLimits {
            max_age: None,
            max_records: None,
        });
        assert_eq!(s.audit_take_pending(state.path()).unwrap(), 2);
        assert_eq!(s.audit_take_pending(state.path()).unwrap(), 0);
        let page = s.audit_page(None, 10).unwrap().records;
        assert_eq!(page.len(), 2);
        assert_eq!(page[1].ts_ns, r.ts_ns);
        assert_eq!(page[1].action, AuditAction::KeyRevoked);
        assert!(!state.path().join(PENDING_FILE).exists());
    }

    // Catches: an overlong reason (a client's input) stored unbounded.
    #[test]
    fn reasons_are_bounded() {
        let r = rec(AuditAction::SignIn).refused("x".repeat(10_000));
        assert_eq!(r.outcome, Outcome::Refused);
        assert_eq!(r.reason.unwrap().len(), MAX_TEXT);
    }
}
