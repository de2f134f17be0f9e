//! Tests of `backup` (issue 23: snapshots in backups, age encryption).

use super::*;
use crate::store::tests::rec;
use std::io::Cursor;

const S: i64 = 1_000_000_000;

/// An "image" of `len` bytes after `magic`, every byte value present
/// (quotes, newlines, NULs) so a line format that does not escape or
/// encode them breaks the comparison.
fn image(magic: &[u8], len: usize, seed: u8) -> Vec<u8> {
    let mut v = magic.to_vec();
    let mut x = u32::from(seed) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push((x >> 3) as u8);
    }
    v
}

fn sighting(id: u64, label: &str, start_s: i64, end_s: i64) -> Sighting {
    let t0 = 1_700_000_000 * S;
    Sighting {
        id,
        label: label.into(),
        source: "default".into(),
        zone: None,
        start_ns: t0 + start_s * S,
        end_ns: Some(t0 + end_s * S),
        last_seen_ns: t0 + end_s * S,
        peak_score: 0.9,
        frames: 3,
        max_objects: 1,
        best_result_id: None,
        best_ns: t0 + start_s * S,
    }
}

/// What a store holds, snapshots included, for comparing two stores.
type Contents = (
    Vec<ResultRecord>,
    Vec<Option<Vec<u8>>>,
    Vec<Sighting>,
    Vec<Option<Vec<u8>>>,
);

fn contents(store: &Store) -> Contents {
    let recs: Vec<ResultRecord> = store.iter_since(None).map(Result::unwrap).collect();
    let snaps = recs
        .iter()
        .map(|r| store.snapshot(&r.id).unwrap().map(|(_, b)| b))
        .collect();
    let sights: Vec<Sighting> = store.iter_sightings().map(Result::unwrap).collect();
    let ssnaps = sights
        .iter()
        .map(|s| store.sighting_snapshot(s.id).unwrap().map(|s| s.bytes))
        .collect();
    (recs, snaps, sights, ssnaps)
}

/// A store with results (two with snapshots, one large enough to span
/// several age chunks) and sightings (one with a best frame).
fn source_store(dir: &Path) -> Store {
    let store = Store::open_with(dir, 0).unwrap();
    for i in 0..20u64 {
        let snap = match i {
            3 => Some(image(&[0xFF, 0xD8, 0xFF, 0xE0], 200_000, 7)),
            11 => Some(image(b"\x89PNG\r\n\x1a\n", 5_000, 9)),
            _ => None,
        };
        let mut r = rec(1_000 + i, i);
        store
            .insert_with_snapshot(&mut r, snap.map(|bytes| Snapshot { bytes }).as_ref())
            .unwrap();
    }
    store
        .put_sighting(
            &sighting(4, "person", 0, 5),
            Some(&Snapshot {
                bytes: image(&[0xFF, 0xD8, 0xFF, 0xDB], 70_000, 3),
            }),
            None,
        )
        .unwrap();
    store
        .put_sighting(&sighting(6, "cat", 10, 12), None, None)
        .unwrap();
    store
}

use std::path::Path;

fn empty_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), 0).unwrap();
    (dir, store)
}

fn key() -> (age::x25519::Identity, age::x25519::Recipient) {
    let id = age::x25519::Identity::generate();
    let r = id.to_public();
    (id, r)
}

fn ids(i: &age::x25519::Identity) -> Vec<Box<dyn age::Identity>> {
    vec![Box::new(i.clone())]
}

fn assert_empty(store: &Store) {
    assert_eq!(
        (
            store.len(),
            store.sighting_count(),
            store.snapshot_count(),
            store.sighting_snapshot_count()
        ),
        (0, 0, 0, 0),
        "something was imported"
    );
}

// Would catch snapshots left out of backups (a restore losing the
// pictures), bytes changed on the way (escaping, a newline or quote in
// the image, a base64 chunk boundary), a snapshot restored onto the
// wrong result or sighting, counters not following (budgets and status
// wrong after a restore), and an import that is not idempotent.
#[test]
fn a_restore_brings_back_snapshots_byte_identical() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source_store(src_dir.path());
    let mut out = Vec::new();
    assert_eq!(export(&src, None, &mut out, |_| {}).unwrap(), 22);
    let text = String::from_utf8(out.clone()).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("{\"snapshot\""))
            .count(),
        2
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("{\"sighting_snapshot\""))
            .count(),
        1
    );

    let (_d, dst) = empty_store();
    let r = import(&dst, Cursor::new(&out)).unwrap();
    assert_eq!(
        (
            r.added,
            r.sightings_added,
            r.snapshots_added,
            r.invalid_count
        ),
        (20, 2, 3, 0),
        "{r:?}"
    );
    assert_eq!(contents(&dst), contents(&src));
    assert_eq!(dst.snapshot_count(), 2);
    assert_eq!(dst.sighting_snapshot_count(), 1);
    assert_eq!(dst.data_bytes(), src.data_bytes());
    assert_eq!(dst.sighting_snapshot_bytes(), src.sighting_snapshot_bytes());

    let again = import(&dst, Cursor::new(&out)).unwrap();
    assert_eq!(
        (again.added, again.snapshots_added, again.snapshots_skipped),
        (0, 0, 3)
    );
    assert_eq!(contents(&dst), contents(&src));
}

// Would catch a snapshot line for a result that is not stored being
// written anyway (an orphan no retention ever removes), or undecodable
// or non-image data stored as a snapshot, instead of each being listed
// as an invalid line while the rest imports.
#[test]
fn bad_snapshot_lines_are_listed_and_the_rest_imported() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source_store(src_dir.path());
    let mut out = Vec::new();
    export(&src, None, &mut out, |_| {}).unwrap();
    let mut text = String::from_utf8(out).unwrap();
    text.push_str(&format!(
        "{{\"snapshot\":{{\"result\":\"{}\",\"data\":\"/9j/4AAQ\"}}}}\n",
        "ab".repeat(16)
    ));
    text.push_str("{\"sighting_snapshot\":{\"sighting\":6,\"data\":\"not base64!\"}}\n");
    text.push_str("{\"sighting_snapshot\":{\"sighting\":6,\"data\":\"aGVsbG8=\"}}\n");
    let (_d, dst) = empty_store();
    let r = import(&dst, Cursor::new(text)).unwrap();
    assert_eq!(
        (r.added, r.snapshots_added, r.invalid_count),
        (20, 3, 3),
        "{r:?}"
    );
    assert!(
        r.invalid[0].1.contains("not in the store"),
        "{:?}",
        r.invalid
    );
    assert!(r.invalid[1].1.contains("base64"), "{:?}", r.invalid);
    assert!(r.invalid[2].1.contains("not a JPEG"), "{:?}", r.invalid);
    assert_eq!(dst.sighting_snapshot(6).unwrap(), None);
}

// Would catch an encrypted export that is not age (or not to every
// recipient: each of two must decrypt it alone), plaintext leaking into
// the file, or an import that loses anything on the way.
#[test]
fn encrypted_to_one_and_to_two_recipients_imports_with_each_identity() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source_store(src_dir.path());
    let (a, ra) = key();
    let (b, rb) = key();

    let mut one = Vec::new();
    export_encrypted(&src, None, &mut one, std::slice::from_ref(&ra), |_| {}).unwrap();
    assert!(one.starts_with(AGE_MAGIC));
    let plain_marks: [&[u8]; 3] = [b"spotter_export", b"files:/srv/demo", b"person"];
    for m in plain_marks {
        assert!(
            !one.windows(m.len()).any(|w| w == m),
            "plaintext in the file"
        );
    }
    let (_d, dst) = empty_store();
    import_file(&dst, Cursor::new(&one), &ids(&a)).unwrap();
    assert_eq!(contents(&dst), contents(&src));

    let mut two = Vec::new();
    export_encrypted(&src, None, &mut two, &[ra, rb], |_| {}).unwrap();
    for who in [&a, &b] {
        let (_d, dst) = empty_store();
        let r = import_file(&dst, Cursor::new(&two), &ids(who)).unwrap();
        assert_eq!((r.added, r.snapshots_added), (20, 3));
        assert_eq!(contents(&dst), contents(&src));
    }

    // A plain file still imports, with or without an identity.
    let mut plain = Vec::new();
    export(&src, None, &mut plain, |_| {}).unwrap();
    let (_d, dst) = empty_store();
    import_file(&dst, Cursor::new(&plain), &[]).unwrap();
    assert_eq!(contents(&dst), contents(&src));
    assert!(matches!(
        export_encrypted(&src, None, Vec::new(), &[], |_| {}),
        Err(BackupError::NoRecipients)
    ));
}

// Would catch an importer that writes while it decrypts: the file is
// several age chunks long and the damage is in the LAST one (a changed
// byte, a cut), so a one-pass import would have written the first
// chunks' records before noticing. Also a wrong identity, and an
// encrypted file without one, must leave the store untouched.
#[test]
fn wrong_identity_tampered_or_truncated_files_import_nothing() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = source_store(src_dir.path());
    let (a, ra) = key();
    let (stranger, _) = key();
    let mut file = Vec::new();
    export_encrypted(&src, None, &mut file, &[ra], |_| {}).unwrap();
    assert!(file.len() > 3 * 64 * 1024, "{} bytes", file.len());

    let refused = |bytes: &[u8], who: &[Box<dyn age::Identity>]| {
        let (_d, dst) = empty_store();
        let e = import_file(&dst, Cursor::new(bytes), who).unwrap_err();
        assert_empty(&dst);
        e
    };
    assert!(matches!(refused(&file, &[]), BackupError::NeedsIdentity));
    let e = refused(&file, &ids(&stranger));
    assert!(matches!(e, BackupError::Decrypt { .. }), "{e}");
    assert!(e.to_string().contains("Nothing was imported"), "{e}");

    let mut tampered = file.clone();
    let at = tampered.len() - 20;
    tampered[at] ^= 0x01;
    assert!(matches!(
        refused(&tampered, &ids(&a)),
        BackupError::Decrypt { .. }
    ));
    // Cut inside the last chunk, and exactly at a chunk boundary (the
    // chunk before is then not marked last).
    let mac_line = file.windows(5).position(|w| w == b"\n--- ").unwrap() + 1;
    let header_end = mac_line + file[mac_line..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let payload = header_end + 16; // the nonce
    let last_chunk = (file.len() - payload) % (64 * 1024 + 16);
    assert!(last_chunk > 0);
    let boundary = file.len() - last_chunk;
    for cut in [file.len() - 1, file.len() - 300, boundary] {
        assert!(
            matches!(refused(&file[..cut], &ids(&a)), BackupError::Decrypt { .. }),
            "cut at {cut} of {}",
            file.len()
        );
    }
    // The intact file still imports with the right identity.
    let (_d, dst) = empty_store();
    import_file(&dst, Cursor::new(&file), &ids(&a)).unwrap();
    assert_eq!(contents(&dst), contents(&src));
}
