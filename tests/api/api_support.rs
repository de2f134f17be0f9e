//! `GET /api/v1/support-bundle` (issue 22) against a real `Server`: an
//! admin gets one tar.gz with every section, a read key gets 403, the
//! request is audited, and no planted secret (API keys, their hashes, the
//! TLS private key, a session cookie) is anywhere in the bundle.

use std::io::Read;
use std::time::Duration;

use crate::api_harness::{assert_problem, start, Auth, Harness};
use crate::common::unpack_support_bundle as unpack;

/// GET the bundle with `key`: status, headers we look at, body bytes.
async fn fetch(h: &Harness, key: &str, query: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let req = h
        .agent
        .get(&format!("{}/api/v1/support-bundle{query}", h.base))
        .set("Authorization", &format!("Bearer {key}"));
    tokio::task::spawn_blocking(move || {
        let r = match req.call() {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let headers = ["content-type", "content-disposition", "cache-control"]
            .iter()
            .filter_map(|n| r.header(n).map(|v| (n.to_string(), v.to_string())))
            .collect();
        let status = r.status();
        let mut body = Vec::new();
        r.into_reader().read_to_end(&mut body).unwrap();
        (status, headers, body)
    })
    .await
    .unwrap()
}

/// Sign in with `key` and return the session cookie's value.
async fn session_cookie(h: &Harness, key: &str) -> String {
    let req = h
        .agent
        .post(&format!("{}/api/v1/session", h.base))
        .set("Content-Type", "application/json");
    let body = serde_json::json!({ "key": key }).to_string();
    let cookie = tokio::task::spawn_blocking(move || {
        let r = req.send_string(&body).expect("sign-in");
        r.header("set-cookie").expect("Set-Cookie").to_string()
    })
    .await
    .unwrap();
    cookie
        .split(';')
        .next()
        .and_then(|c| c.split_once('='))
        .map(|(_, v)| v.to_string())
        .expect("cookie value")
}

/// Every line of base64 in a PEM file (the key material itself).
pub(crate) fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

// Catches: a section missing or empty, JSON that does not parse, the wrong
// content type or no attachment header, a read key let in, the action
// unaudited, and any planted secret (keys, key hashes, TLS private key,
// session cookie) leaking into the bundle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_gets_a_bundle_without_secrets() {
    let h = start().await;
    let cookie = session_cookie(&h, &h.admin_key).await;

    let (status, _, body) = fetch(&h, &h.read_key, "").await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let r = h
        .call_as(
            "GET",
            "/api/v1/support-bundle?journal_lines=0",
            Auth::Bearer(&h.admin_key),
        )
        .await;
    assert_problem(&r, 400, "invalid_parameter");

    let (status, headers, gz) = fetch(&h, &h.admin_key, "?journal_lines=20").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&gz));
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    assert_eq!(header("content-type"), "application/gzip");
    assert!(header("content-disposition").starts_with("attachment; filename=\"spotter-support-"));
    assert!(header("content-disposition").ends_with(".tar.gz\""));
    assert_eq!(header("cache-control"), "no-store");

    let (raw, entries) = unpack(&gz);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "README.txt",
        "version.json",
        "config.json",
        "checks.json",
        "status.json",
        "metrics.txt",
        "store.json",
        "model.json",
        "power.json",
        "journal.txt",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    for (name, bytes) in &entries {
        assert!(!bytes.is_empty(), "{name} is empty");
        if name.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(bytes)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    let metrics = &entries.iter().find(|(n, _)| n == "metrics.txt").unwrap().1;
    assert!(String::from_utf8_lossy(metrics).contains("# EOF"));

    // Secrets: the keys, their stored hashes, the TLS private key, the cookie.
    let keys: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.state_dir.join("keys.json")).unwrap()).unwrap();
    let mut secrets = vec![h.admin_key.clone(), h.read_key.clone(), cookie];
    for k in keys["keys"].as_array().unwrap() {
        secrets.push(k["sha256"].as_str().unwrap().to_string());
    }
    let tls_key = std::fs::read_to_string(h.state_dir.join("tls/key.pem")).unwrap();
    let key_lines = pem_body_lines(&tls_key);
    assert!(!key_lines.is_empty());
    secrets.extend(key_lines);
    let text = String::from_utf8_lossy(&raw);
    for s in &secrets {
        assert!(
            s.len() >= 16,
            "a planted secret too short to mean anything: {s}"
        );
        assert!(!text.contains(s.as_str()), "a secret is in the bundle: {s}");
        assert!(!String::from_utf8_lossy(&gz).contains(s.as_str()));
    }

    // Audited, by the admin key, ok.
    let mut found = false;
    for _ in 0..50 {
        let page = h.store.audit_page(None, 100).unwrap();
        found = page.records.iter().any(|r| {
            r.action.as_str() == "support_bundle"
                && r.key_name.as_deref() == Some("admin")
                && r.outcome == spotter::store::Outcome::Ok
        });
        if found {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(found, "no support_bundle audit record");
}
