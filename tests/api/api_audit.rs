//! The audit trail over the API (issue 23): administrative actions against a
//! real `Server` each leave one record (`GET /api/v1/audit`, admin) and one
//! journal line (`MESSAGE_ID` ADMIN_ACTION), with no secret in either, nor
//! in the store's export.

use std::sync::{Mutex, OnceLock};

use crate::api_harness::{assert_problem, start, Auth, Harness, Reply};
use spotter::core::ids::ADMIN_ACTION;

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        struct Kv(String);
        impl<'kvs> log::kv::VisitSource<'kvs> for Kv {
            fn visit_pair(
                &mut self,
                k: log::kv::Key<'kvs>,
                v: log::kv::Value<'kvs>,
            ) -> Result<(), log::kv::Error> {
                self.0.push_str(&format!(" {k}={v}"));
                Ok(())
            }
        }
        let mut kv = Kv(String::new());
        let _ = record.key_values().visit(&mut kv);
        self.0
            .lock()
            .unwrap()
            .push(format!("{}{}", record.args(), kv.0));
    }
    fn flush(&self) {}
}

/// Every log line of this test binary from now on (one logger per process;
/// other tests' lines are told apart by the acting key's id).
/// `None` when another logger was installed first (then no line is seen).
fn capture() -> Option<&'static Capture> {
    static C: OnceLock<Option<&'static Capture>> = OnceLock::new();
    *C.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).ok()?;
        log::set_max_level(log::LevelFilter::Trace);
        Some(c)
    })
}

async fn send(h: &Harness, method: &str, path: &str, auth: Auth<'_>, body: &str) -> Reply {
    let mut req = h
        .agent
        .request(method, &format!("{}{path}", h.base))
        .set("Content-Type", "application/json");
    match auth {
        Auth::Bearer(k) => req = req.set("Authorization", &format!("Bearer {k}")),
        // A cookie's state change must come from this server's origin.
        Auth::Cookie(c) => {
            req = req
                .set("Cookie", &format!("__Host-spotter_session={c}"))
                .set("Origin", &h.base)
        }
        _ => {}
    }
    let body = body.to_string();
    tokio::task::spawn_blocking(move || {
        let resp = match req.send_string(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        crate::api_harness::reply_from(resp).unwrap()
    })
    .await
    .unwrap()
}

// Catches: an administrative action (key create/revoke, sign-in with a good
// or a wrong key, sign-out, backup) leaving no record, two records or no
// journal line; a record without the acting key, the client address or the
// outcome; a secret (the admin key, the created key, a wrong key typed at
// sign-in) in a record, a journal line or the export; the audit route open
// to read keys; audit lines missing from the export or imported twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_are_audited_without_secrets() {
    let log = capture();
    let h = start().await;
    let admin = Auth::Bearer(&h.admin_key);
    let keys = h.call_as("GET", "/api/v1/keys", admin).await.json();
    let admin_id = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "admin")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The actions.
    let r = send(&h, "POST", "/api/v1/keys", admin, r#"{"name":"tablet"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let created = r.json();
    let secret = created["secret"].as_str().unwrap().to_string();
    let tablet = created["key"]["id"].as_str().unwrap().to_string();
    let r = send(&h, "DELETE", &format!("/api/v1/keys/{tablet}"), admin, "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = h.session_cookie(&h.admin_key).await;
    let r = send(&h, "DELETE", "/api/v1/session", Auth::Cookie(&cookie), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let planted = format!("spk_{}", "5a".repeat(32));
    let body = serde_json::json!({ "key": planted }).to_string();
    let r = send(&h, "POST", "/api/v1/session", Auth::None, &body).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = h.call_as("GET", "/api/v1/backup", admin).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // The records, newest first.
    let r = h.call_as("GET", "/api/v1/audit?limit=50", admin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let records = v["records"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = records
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("backup_exported", "ok"),
            ("sign_in", "refused"),
            ("sign_out", "ok"),
            ("sign_in", "ok"),
            ("key_revoked", "ok"),
            ("key_created", "ok"),
        ],
        "{}",
        r.body
    );
    for rec in records {
        assert_eq!(rec["client"], "127.0.0.1", "{rec}");
        if rec["outcome"] == "ok" {
            assert_eq!(rec["key_id"], admin_id.as_str(), "{rec}");
            assert_eq!(rec["key_name"], "admin", "{rec}");
        }
    }
    assert_eq!(records[4]["target"], tablet.as_str());
    assert_eq!(records[5]["target"], tablet.as_str());
    assert!(records[1]["reason"].as_str().is_some_and(|s| !s.is_empty()));
    // Paged: one at a time gives the same records.
    let page = h
        .call_as("GET", "/api/v1/audit?limit=1", admin)
        .await
        .json();
    assert_eq!(page["records"][0], records[0]);
    let next = page["next_cursor"].as_str().unwrap();
    let page2 = h
        .call_as(
            "GET",
            &format!("/api/v1/audit?limit=1&cursor={next}"),
            admin,
        )
        .await
        .json();
    assert_eq!(page2["records"][0], records[1]);
    // Admin only.
    assert_problem(
        &h.call_as("GET", "/api/v1/audit", Auth::Bearer(&h.read_key))
            .await,
        403,
        "insufficient_scope",
    );

    // One journal line per action (this test's: by its admin key, or the
    // refused sign-in naming no key).
    if let Some(log) = log {
        let lines: Vec<String> = log
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(ADMIN_ACTION))
            .cloned()
            .collect();
        for action in ["key_created", "key_revoked", "sign_out", "backup_exported"] {
            let n = lines
                .iter()
                .filter(|l| l.contains(&format!("spotter_audit_action={action} ")))
                .filter(|l| l.contains(&format!("spotter_key_id={admin_id}")))
                .count();
            assert_eq!(n, 1, "{action}: {lines:#?}");
        }
        for l in &lines {
            for s in [&secret, &h.admin_key, &planted] {
                assert!(!l.contains(&s[4..]), "secret in a journal line: {l}");
            }
        }
    }

    // The export carries the records, without secrets; importing twice adds
    // them once.
    let mut out = Vec::new();
    spotter::store::backup::export(&h.store, None, &mut out, |_| {}).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("{\"audit\"")).count(),
        6
    );
    for s in [&secret, &h.admin_key, &planted] {
        assert!(!text.contains(&s[4..]), "secret in the export");
        assert!(!r.body.contains(&s[4..]), "secret in the audit route");
    }
    // The status states the audit trail's retention (the pruner's figures).
    h.store
        .refresh_statement(&spotter::store::Retention::unlimited());
    let status = h.call("GET", "/api/v1/status").await.json();
    assert_eq!(status["retention"]["audit"]["stored"], 6, "{status}");
    assert_eq!(status["retention"]["audit"]["max_count"], 10_000);
    let dir = tempfile::tempdir().unwrap();
    let other = spotter::store::Store::open(dir.path()).unwrap();
    let first = spotter::store::backup::import(&other, &out[..]).unwrap();
    let again = spotter::store::backup::import(&other, &out[..]).unwrap();
    assert_eq!((first.audit_added, first.audit_skipped), (6, 0));
    assert_eq!((again.audit_added, again.audit_skipped), (0, 6));
    h.stop().await;
}
