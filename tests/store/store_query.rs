//! Cursor pagination while results are inserted and pruned concurrently.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rand::{rngs::StdRng, Rng, SeedableRng};
use spotter::core::result::{ClassScore, ResultRecord, StageLatency};
use spotter::store::{Query, Store};

const SEED: u64 = 0x9a6e_c0de_0005;

fn rec(ts_ns: u64, label: &str) -> ResultRecord {
    ResultRecord {
        id: String::new(),
        ts_ns,
        source: "files:/srv/demo".into(),
        origin: format!("/srv/demo/{ts_ns}.jpg"),
        frame_seq: ts_ns,
        model_sha256: "ab".repeat(32),
        runtime: "tflite".into(),
        classes: vec![ClassScore {
            index: 0,
            label: label.into(),
            raw: 200.0,
            score: 0.8,
        }],
        detections: vec![],
        image_width: 224,
        image_height: 224,
        latency: StageLatency::default(),
        clock_synchronized: true,
        boottime_ns: 0,
        source_name: String::new(),
    }
}

/// Page through `q` to the end; returns the ids in the order seen.
fn page_all(store: &Store, mut q: Query) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let page = store.query(&q).unwrap();
        seen.extend(page.results.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return seen,
        }
    }
}

// Catches: offset-style paging (inserts shift later pages: repeats; deletes shift them:
// skips) or a cursor that is not strictly exclusive.
#[test]
fn paging_during_inserts_and_pruning_neither_skips_nor_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let mut rng = StdRng::seed_from_u64(SEED);
    // 3 000 records at even timestamps 2..=6000 (ns), every third labelled "cat".
    for i in 1..=3000u64 {
        store
            .insert(&mut rec(2 * i, if i % 3 == 0 { "cat" } else { "dog" }))
            .unwrap();
    }
    let initial: Vec<ResultRecord> = store.iter_since(None).map(|r| r.unwrap()).collect();
    for label in [None, Some("cat")] {
        let stop = Arc::new(AtomicBool::new(false));
        // A writer inserting at random (odd) timestamps across the whole
        // range, both above and below wherever the reader's cursor is, and
        // a pruner deleting the oldest records meanwhile.
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            let seed = rng.gen::<u64>();
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) || n < 500 {
                    let ts = 2 * rng.gen_range(0..4000u64) + 1;
                    store
                        .insert(&mut rec(ts, if n % 2 == 0 { "cat" } else { "dog" }))
                        .unwrap();
                    n += 1;
                    if n % 50 == 0 {
                        store.retain_newest(store.len().saturating_sub(20)).unwrap();
                    }
                }
            })
        };
        let mut q = Query::newest(17);
        q.label = label.map(str::to_string);
        let seen = page_all(&store, q);
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();

        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "label {label:?}: a record was returned twice"
        );
        // Newest first, strictly.
        assert!(
            seen.windows(2).all(|w| w[0] > w[1]),
            "label {label:?}: pages out of order"
        );
        // Every initial record matching the filter was seen, unless it had
        // been pruned (pruning only removes; a pruned record is gone now).
        let mut missed = 0;
        for r in initial
            .iter()
            .filter(|r| label.is_none_or(|l| r.classes[0].label == l))
        {
            if !unique.contains(&r.id) {
                assert!(
                    store.get(&r.id).unwrap().is_none(),
                    "label {label:?}: {} skipped but still stored",
                    r.id
                );
                missed += 1;
            }
        }
        // The test would prove little if pruning had removed everything.
        let matching = initial
            .iter()
            .filter(|r| label.is_none_or(|l| r.classes[0].label == l))
            .count();
        assert!(
            missed < matching / 2,
            "label {label:?}: {missed} of {matching} pruned before being read"
        );
    }
}

// Catches (several sources, issue 19): `source` not filtering, filtering
// another field, or a filtered page losing records across its cursor (the
// filter runs within each page's scan budget, so short pages with a cursor
// must still add up to every matching record exactly once).
#[test]
fn source_filter_returns_each_sources_records_once_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut want: std::collections::BTreeMap<&str, HashSet<String>> = Default::default();
    for i in 1..=600u64 {
        // Uneven shares: "yard" one record in five.
        let name = if i % 5 == 0 { "yard" } else { "gate" };
        let mut r = rec(i, "cat");
        r.source_name = name.into();
        store.insert(&mut r).unwrap();
        want.entry(name).or_default().insert(r.id.clone());
    }
    for (name, ids) in &want {
        let mut q = Query::newest(7);
        q.source = Some(name.to_string());
        let got = page_all(&store, q);
        assert_eq!(got.len(), ids.len(), "{name}: repeats or losses");
        assert_eq!(got.iter().cloned().collect::<HashSet<_>>(), *ids, "{name}");
    }
    let mut q = Query::newest(10);
    q.source = Some("nosuch".into());
    assert!(page_all(&store, q).is_empty());
}
