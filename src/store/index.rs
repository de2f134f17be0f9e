//! Secondary indexes (by label, by model) and filtered, cursor-paginated
//! queries over the result store.
//!
//! Index layout (both trees map to a record key of the `results` tree):
//! - `by_label`: `u16 BE label length ‖ label bytes ‖ record key (16)` →
//!   the label's best score in that record (`f32` big-endian bits). Every
//!   label of the top-k classes and of the detections is indexed once.
//! - `by_model`: `u16 BE length ‖ model_sha256 bytes ‖ record key` → empty.
//!
//! Index entries are written in the same sled transaction as their record
//! and removed with it (see `Store::insert_new` and the retention deleter),
//! so an index never points at a record that was never written. An index
//! entry whose record is missing (only possible for a record that could not
//! be decoded when it was pruned) is skipped by queries.
//!
//! Pagination is newest first. A cursor is an opaque token naming the last
//! record key a page examined; the next page holds records strictly older
//! than it. Keys are unique and never reused, so paging neither repeats nor
//! skips a record, whatever is inserted or pruned meanwhile (records pruned
//! before their page is read are, of course, gone).

use super::{make_key, Store, StoreError};
use crate::core::result::ResultRecord;

/// Index entries one query examines at most before it returns a partial page
/// with a cursor to continue from, so a rare filter cannot make one request
/// scan the whole store.
pub const MAX_SCAN_PER_PAGE: usize = 10_000;
/// Version tag of the cursor encoding (first byte of the decoded cursor).
const CURSOR_VERSION: u8 = 1;
/// Longest indexed term (label or model); longer labels are indexed by their
/// first `MAX_TERM_LEN` bytes and matched the same way.
pub const MAX_TERM_LEN: usize = 1024;

/// Which tree an index entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IndexKind {
    Label,
    Model,
}

/// The prefix of every index key of `term`.
fn term_prefix(term: &str) -> Vec<u8> {
    let bytes = truncate_term(term);
    let mut k = Vec::with_capacity(2 + bytes.len() + 16);
    // truncate_term bounds the length to MAX_TERM_LEN, which fits in u16.
    k.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    k.extend_from_slice(bytes);
    k
}

fn truncate_term(term: &str) -> &[u8] {
    let b = term.as_bytes();
    &b[..b.len().min(MAX_TERM_LEN)]
}

fn index_key(term: &str, rec_key: &[u8; 16]) -> Vec<u8> {
    let mut k = term_prefix(term);
    k.extend_from_slice(rec_key);
    k
}

/// The index entries of a record: `(tree, key, value)`.
pub(super) fn index_entries(
    rec_key: &[u8; 16],
    rec: &ResultRecord,
) -> Vec<(IndexKind, Vec<u8>, Vec<u8>)> {
    let mut best: Vec<(&str, f32)> = Vec::new();
    let labels = rec
        .classes
        .iter()
        .map(|c| (c.label.as_str(), c.score))
        .chain(rec.detections.iter().map(|d| (d.label.as_str(), d.score)));
    for (label, score) in labels {
        match best
            .iter_mut()
            .find(|(l, _)| truncate_term(l) == truncate_term(label))
        {
            Some((_, s)) => *s = s.max(score),
            None => best.push((label, score)),
        }
    }
    let mut out: Vec<_> = best
        .into_iter()
        .map(|(l, s)| {
            (
                IndexKind::Label,
                index_key(l, rec_key),
                s.to_be_bytes().to_vec(),
            )
        })
        .collect();
    out.push((
        IndexKind::Model,
        index_key(&rec.model_sha256, rec_key),
        Vec::new(),
    ));
    out
}

/// The best score of any class or detection in `rec` (`-inf` if none).
pub fn best_score(rec: &ResultRecord) -> f32 {
    rec.classes
        .iter()
        .map(|c| c.score)
        .chain(rec.detections.iter().map(|d| d.score))
        .fold(f32::NEG_INFINITY, f32::max)
}

/// A filtered page request. All filters are optional and combine with AND.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Inclusive lower bound on `ts_ns`.
    pub since: Option<u64>,
    /// Inclusive upper bound on `ts_ns`.
    pub until: Option<u64>,
    /// Only records with this label among their classes or detections.
    pub label: Option<String>,
    /// With `label`: that label's score is at least this. Without: the
    /// record's best score is at least this.
    pub min_score: Option<f32>,
    /// Only records produced by the model with this SHA-256 (hex).
    pub model: Option<String>,
    /// Continue after this cursor (from [`Page::next_cursor`]).
    pub cursor: Option<String>,
    /// At most this many records.
    pub limit: usize,
    /// Only records of the source with this name (`source_name`; several
    /// sources, issue 19). Not indexed: filtered as records are read, within
    /// the page's scan budget (a page may come back short, with a cursor).
    pub source: Option<String>,
}

impl Query {
    /// A query for the newest `limit` records, no filters.
    pub fn newest(limit: usize) -> Query {
        Query {
            since: None,
            until: None,
            label: None,
            min_score: None,
            model: None,
            cursor: None,
            limit,
            source: None,
        }
    }
}

/// One page of results, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub results: Vec<ResultRecord>,
    /// Present when there may be more: pass it as [`Query::cursor`] for the
    /// next page. A page can hold fewer than `limit` results (even none)
    /// and still have a cursor when the scan budget ran out.
    pub next_cursor: Option<String>,
}

/// Encode a record key as an opaque cursor.
pub fn encode_cursor(key: &[u8; 16]) -> String {
    let mut b = [0u8; 17];
    b[0] = CURSOR_VERSION;
    b[1..].copy_from_slice(key);
    hex::encode(b)
}

/// Decode a cursor made by [`encode_cursor`].
pub fn decode_cursor(cursor: &str) -> Result<[u8; 16], StoreError> {
    let bad = || StoreError::BadCursor {
        cursor: cursor.chars().take(64).collect(),
    };
    if cursor.len() != 34 {
        return Err(bad());
    }
    let mut b = [0u8; 17];
    hex::decode_to_slice(cursor, &mut b).map_err(|_| bad())?;
    if b[0] != CURSOR_VERSION {
        return Err(bad());
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&b[1..]);
    Ok(key)
}

/// The key just below `key` in byte order (`None` for the smallest key).
fn predecessor(key: [u8; 16]) -> Option<[u8; 16]> {
    let v = u128::from_be_bytes(key).checked_sub(1)?;
    Some(v.to_be_bytes())
}

impl Store {
    /// The records matching `q`, newest first, with a cursor for the next
    /// page. Uses the label index when `label` is given, else the model
    /// index when `model` is given, else the time-ordered results.
    pub fn query(&self, q: &Query) -> Result<Page, StoreError> {
        let lo = make_key(q.since.unwrap_or(0), 0);
        let mut hi = make_key(q.until.unwrap_or(u64::MAX), u64::MAX);
        if let Some(c) = &q.cursor {
            let after = decode_cursor(c)?;
            match predecessor(after) {
                Some(p) => hi = hi.min(p),
                None => {
                    return Ok(Page {
                        results: Vec::new(),
                        next_cursor: None,
                    })
                }
            }
        }
        let mut page = Page {
            results: Vec::with_capacity(q.limit.min(1024)),
            next_cursor: None,
        };
        if q.limit == 0 || lo > hi {
            return Ok(page);
        }
        let (tree, prefix) = match (&q.label, &q.model) {
            (Some(l), _) => (Some(&self.by_label), term_prefix(l)),
            (None, Some(m)) => (Some(&self.by_model), term_prefix(m)),
            (None, None) => (None, Vec::new()),
        };
        let iter: Box<dyn DoubleEndedIterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match tree {
                Some(t) => {
                    let (mut a, mut b) = (prefix.clone(), prefix.clone());
                    a.extend_from_slice(&lo);
                    b.extend_from_slice(&hi);
                    Box::new(t.range(a..=b))
                }
                None => Box::new(self.results.range(lo..=hi)),
            };
        let mut scanned = 0usize;
        for item in iter.rev() {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let Some(rec_key) = k
                .get(prefix.len()..)
                .and_then(|s| <[u8; 16]>::try_from(s).ok())
            else {
                continue;
            };
            scanned += 1;
            if let Some(rec) = self.matching(q, tree.is_some(), &rec_key, &v)? {
                page.results.push(rec);
                if page.results.len() >= q.limit {
                    page.next_cursor = Some(encode_cursor(&rec_key));
                    break;
                }
            }
            if scanned >= MAX_SCAN_PER_PAGE {
                page.next_cursor = Some(encode_cursor(&rec_key));
                break;
            }
        }
        Ok(page)
    }

    /// The record behind one scanned entry if it passes the filters. `v` is
    /// the index value (`from_index`) or the record value.
    fn matching(
        &self,
        q: &Query,
        from_index: bool,
        rec_key: &[u8; 16],
        v: &[u8],
    ) -> Result<Option<ResultRecord>, StoreError> {
        // The label index carries the label's score: filter before fetching.
        if let (true, Some(_), Some(min)) = (from_index, &q.label, q.min_score) {
            let score = <[u8; 4]>::try_from(v)
                .map(f32::from_be_bytes)
                .unwrap_or(f32::NEG_INFINITY);
            if score < min {
                return Ok(None);
            }
        }
        let decoded = if from_index {
            match self.results.get(rec_key).map_err(|e| self.db_err(e))? {
                Some(value) => self.decode(rec_key, &value),
                None => return Ok(None), // pruned since the index was read
            }
        } else {
            self.decode(rec_key, v)
        };
        let rec = match decoded {
            Ok(r) => r,
            Err(e) => {
                log::warn!("skipping unreadable record: {e}");
                return Ok(None);
            }
        };
        if q.model
            .as_deref()
            .is_some_and(|m| truncate_term(m) != truncate_term(&rec.model_sha256))
        {
            return Ok(None);
        }
        if q.label.is_none() && q.min_score.is_some_and(|min| best_score(&rec) < min) {
            return Ok(None);
        }
        if q.source.as_deref().is_some_and(|s| s != rec.source_name) {
            return Ok(None);
        }
        Ok(Some(rec))
    }
}
