//! `GET /api/v1/backup` under `[backup]` (issue 23): encrypted to the
//! configured recipients or the request's, plain ones refused with
//! `encryption_required` when `require_encryption` is set.

use crate::api_harness;

use std::io::Read;

use api_harness::{assert_problem, record, relaxed_access, Auth, Harness};
use spotter::config::BackupSettings;
use spotter::store::backup::{import_file, AGE_MAGIC};

/// Three records, the second with a snapshot.
fn fill(h: &Harness) -> Vec<u8> {
    let jpeg: Vec<u8> = [0xFF, 0xD8, 0xFF, 0xE0]
        .into_iter()
        .chain((0..5000u32).map(|i| (i * 7 % 251) as u8))
        .collect();
    for ts in 1..=3u64 {
        let snap = spotter::store::Snapshot {
            bytes: jpeg.clone(),
        };
        h.store
            .insert_with_snapshot(&mut record(ts * 1_000), (ts == 2).then_some(&snap))
            .unwrap();
    }
    jpeg
}

/// The body of `GET path` with the admin key, as bytes, and its type.
async fn get_bytes(h: &Harness, path: &str) -> (u16, String, Vec<u8>) {
    let req = h
        .agent
        .get(&format!("{}{path}", h.base))
        .set("Authorization", &format!("Bearer {}", h.admin_key));
    tokio::task::spawn_blocking(move || {
        let r = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        let (status, ct) = (r.status(), r.content_type().to_string());
        let mut body = Vec::new();
        r.into_reader().read_to_end(&mut body).unwrap();
        (status, ct, body)
    })
    .await
    .unwrap()
}

/// Import `file` with `who` into an empty store: its records and the
/// snapshot of the second.
fn restore(file: &[u8], who: &age::x25519::Identity) -> (usize, Option<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let store = spotter::store::Store::open(dir.path()).unwrap();
    let ids: Vec<Box<dyn age::Identity>> = vec![Box::new(who.clone())];
    import_file(&store, std::io::Cursor::new(file), &ids).unwrap();
    // Read the snapshot back through a plain export of the restored store.
    let mut out = Vec::new();
    spotter::store::backup::export(&store, None, &mut out, |_| {}).unwrap();
    let text = String::from_utf8(out).unwrap();
    let snap = text
        .lines()
        .find(|l| l.starts_with("{\"snapshot\""))
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(
                v["snapshot"]["result"],
                store.range(None, None, 10).unwrap()[1].id
            );
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(v["snapshot"]["data"].as_str().unwrap())
                .unwrap()
        });
    (store.len(), snap)
}

// Would catch the configured recipients ignored (a plain backup served),
// a backup that does not decrypt with the recipient's identity or loses
// the snapshot, `plain=true` honoured despite `require_encryption`, or a
// request able to redirect the backup to its own key when the site
// configured recipients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_recipients_get_encrypted_backups_and_plain_is_refused() {
    let a = age::x25519::Identity::generate();
    let backup = BackupSettings {
        recipients: vec![a.to_public().to_string()],
        require_encryption: true,
    };
    let h = api_harness::start_with(move |o| o.backup = backup, relaxed_access()).await;
    let jpeg = fill(&h);
    let (status, ct, body) = get_bytes(&h, "/api/v1/backup").await;
    assert_eq!(status, 200);
    assert_eq!(ct, "application/octet-stream");
    assert!(body.starts_with(AGE_MAGIC));
    assert_eq!(restore(&body, &a), (3, Some(jpeg)));

    let admin = h.admin_key.clone();
    let r = h
        .call_as("GET", "/api/v1/backup?plain=true", Auth::Bearer(&admin))
        .await;
    assert_problem(&r, 403, "encryption_required");
    assert!(r.json()["detail"]
        .as_str()
        .unwrap()
        .contains("backup.require_encryption"));
    let other = age::x25519::Identity::generate().to_public();
    let r = h
        .call_as(
            "GET",
            &format!("/api/v1/backup?recipient={other}"),
            Auth::Bearer(&admin),
        )
        .await;
    assert_problem(&r, 400, "invalid_parameter");
    h.stop().await;
}

// Would catch `require_encryption` without recipients serving a plain
// backup (or failing without naming the settings), a request's own
// recipients not honoured, and, without `[backup]`, plain backups no
// longer served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_encryption_without_recipients_refuses_plain() {
    let backup = BackupSettings {
        recipients: vec![],
        require_encryption: true,
    };
    let h = api_harness::start_with(move |o| o.backup = backup, relaxed_access()).await;
    let jpeg = fill(&h);
    let admin = h.admin_key.clone();
    for path in ["/api/v1/backup", "/api/v1/backup?plain=true"] {
        let r = h.call_as("GET", path, Auth::Bearer(&admin)).await;
        assert_problem(&r, 403, "encryption_required");
        let detail = r.json()["detail"].as_str().unwrap().to_string();
        assert!(detail.contains("backup.require_encryption"), "{detail}");
    }
    let b = age::x25519::Identity::generate();
    let (status, _, body) =
        get_bytes(&h, &format!("/api/v1/backup?recipient={}", b.to_public())).await;
    assert_eq!(status, 200);
    assert_eq!(restore(&body, &b), (3, Some(jpeg)));
    h.stop().await;

    let h = api_harness::start_with(|_| {}, relaxed_access()).await;
    fill(&h);
    let (status, ct, body) = get_bytes(&h, "/api/v1/backup?plain=true").await;
    assert_eq!((status, ct.as_str()), (200, "application/x-ndjson"));
    assert!(body.starts_with(b"{\"spotter_export\""));
    h.stop().await;
}
