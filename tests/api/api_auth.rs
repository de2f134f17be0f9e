//! Authentication, authorisation, body limits, security headers and CORS of
//! the HTTPS API, against a real `Server` over TLS.

use crate::api_harness;

use api_harness::{
    assert_problem, assert_security_headers, raw_exchange, record, relaxed_access, start,
    start_with, Auth, Reply,
};
use spotter::api::{AccessOptions, ROUTES};
use spotter::keys::{KeyStore, Scope};

/// A small JPEG, the latest frame of the matrix's source.
fn tiny_jpeg() -> Vec<u8> {
    let mut out = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 9, 9]))
        .write_to(
            &mut std::io::Cursor::new(&mut out),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    out
}

/// The status a route gives a caller allowed to call it with GET or HEAD.
fn ok_status(route: &spotter::api::RouteSpec) -> u16 {
    // Nothing is ready in the harness, so /readyz is 503 even when allowed.
    if route.path == "/readyz" {
        503
    } else if !route.allow.split(", ").any(|m| m == "GET") {
        405
    } else {
        200
    }
}

// Catches: any route answering without a key (other than the probes), a read
// key reaching admin routes, revoked or malformed keys accepted, missing
// WWW-Authenticate on 401, and keys created or revoked after start not applied
// until a restart. Counts unauthorized successes, which must be zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix() {
    // Frames (issue 20): a rate that the matrix's few requests per viewer never meet.
    let h = start_with(|o| o.frame_max_fps = 30.0, relaxed_access()).await;
    // A source with a frame, so /api/v1/sources/{name}/frame answers 200
    // to allowed callers.
    h.state
        .register_source("cam")
        .latest
        .publish(spotter::core::frame::Frame::encoded(
            tiny_jpeg(),
            1,
            "matrix".into(),
        ));
    let mut rec = record(7);
    // With a snapshot, so /api/v1/results/{id}/image answers 200 to allowed callers
    // (a BMP header: ASCII, so the harness can read the body as text).
    h.store
        .insert_with_snapshot(
            &mut rec,
            Some(&spotter::store::Snapshot {
                bytes: b"BM-test".to_vec(),
            }),
        )
        .unwrap();
    // A sighting with a snapshot, so the sighting routes (issue 18) answer
    // 200 to allowed callers.
    let sighting = spotter::core::sighting::Sighting {
        id: 1,
        label: "person".into(),
        source: "default".into(),
        zone: None,
        start_ns: 1,
        end_ns: Some(2),
        last_seen_ns: 2,
        peak_score: 0.9,
        frames: 2,
        max_objects: 1,
        best_result_id: Some(rec.id.clone()),
        best_ns: 1,
    };
    h.store
        .put_sighting(
            &sighting,
            Some(&spotter::store::Snapshot {
                bytes: b"BM-sighting".to_vec(),
            }),
            None,
        )
        .unwrap();
    let keys = KeyStore::new(&h.state_dir);
    // Created after the server started: must be picked up without a restart.
    let (ri, revoked_read) = keys.create("soon-revoked-read", Scope::Read).unwrap();
    let (ai, revoked_admin) = keys.create("soon-revoked-admin", Scope::Admin).unwrap();
    assert_eq!(
        h.call_as("GET", "/api/v1/keys", Auth::Bearer(revoked_admin.expose()))
            .await
            .status,
        200
    );
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Bearer(revoked_read.expose()))
            .await
            .status,
        200
    );
    // Sessions (issue 20): the cookie stands for its key; one whose key is
    // revoked, and a forged one, are no one (401 `session_expired`).
    let session_read = h.session_cookie(&h.read_key).await;
    let session_admin = h.session_cookie(&h.admin_key).await;
    let session_revoked = h.session_cookie(revoked_admin.expose()).await;
    let session_forged = format!("{}.{}", "0".repeat(16), "0".repeat(64));
    keys.revoke(&ri.id).unwrap();
    keys.revoke(&ai.id).unwrap();

    let wrong = format!("spk_{}", "0".repeat(64));
    let read_upper = h.read_key.to_uppercase();
    let read_unprefixed = h.read_key["spk_".len()..].to_string();
    let read_bearer = format!("Bearer {}", h.read_key);
    let basic = format!("Basic {}", h.read_key);
    let read_extra = format!("{}0", h.read_key);
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Who {
        Nobody,
        Read,
        Admin,
        Bad,
        /// A session cookie naming no valid session.
        Stale,
    }
    let callers: Vec<(&str, Auth, Who)> = vec![
        ("no key", Auth::None, Who::Nobody),
        ("read", Auth::Bearer(&h.read_key), Who::Read),
        ("admin", Auth::Bearer(&h.admin_key), Who::Admin),
        (
            "revoked read",
            Auth::Bearer(revoked_read.expose()),
            Who::Bad,
        ),
        (
            "revoked admin",
            Auth::Bearer(revoked_admin.expose()),
            Who::Bad,
        ),
        ("unknown well-formed", Auth::Bearer(&wrong), Who::Bad),
        ("upper-cased read key", Auth::Bearer(&read_upper), Who::Bad),
        (
            "read key without prefix",
            Auth::Bearer(&read_unprefixed),
            Who::Bad,
        ),
        (
            "read key with a digit appended",
            Auth::Bearer(&read_extra),
            Who::Bad,
        ),
        ("garbage", Auth::Bearer("hunter2"), Who::Bad),
        ("Basic scheme", Auth::Raw(&basic), Who::Bad),
        ("no scheme", Auth::Raw(&h.read_key), Who::Bad),
        ("empty bearer", Auth::Raw("Bearer"), Who::Bad),
        ("session of read", Auth::Cookie(&session_read), Who::Read),
        ("session of admin", Auth::Cookie(&session_admin), Who::Admin),
        (
            "session of a revoked key",
            Auth::Cookie(&session_revoked),
            Who::Stale,
        ),
        ("forged session", Auth::Cookie(&session_forged), Who::Stale),
    ];
    // Sanity: the header form the client sends for Bearer is the raw one.
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Raw(&read_bearer))
            .await
            .status,
        200
    );

    let mut unauthorized_successes = Vec::new();
    let mut cells = 0;
    for route in ROUTES {
        let id = if route.path.starts_with("/api/v1/sightings/") {
            sighting.id.to_string()
        } else {
            rec.id.clone()
        };
        let path = route.path.replace("{id}", &id).replace("{name}", "cam");
        for (what, auth, who) in &callers {
            for method in ["GET", "HEAD"] {
                // A granted GET of the event stream never ends; HEAD covers that cell.
                let granted =
                    *who == Who::Admin || (*who == Who::Read && route.scope != Some(Scope::Admin));
                if route.name == "events" && method == "GET" && granted {
                    cells += 1;
                    continue;
                }
                let r = h.call_as(method, &path, *auth).await;
                cells += 1;
                let allowed = match (route.scope, who) {
                    (_, Who::Bad) => false,
                    (None, _) => true,
                    (Some(_), Who::Nobody | Who::Stale) => false,
                    (Some(need), Who::Read) => Scope::Read.allows(need),
                    (Some(_), Who::Admin) => true,
                };
                let expected = match (allowed, who) {
                    (true, _) => ok_status(route),
                    (false, Who::Bad | Who::Nobody | Who::Stale) => 401,
                    (false, _) => 403,
                };
                if !allowed && (200..300).contains(&r.status) {
                    unauthorized_successes.push(format!("{method} {path} as {what}: {}", r.status));
                }
                assert_eq!(r.status, expected, "{method} {path} as {what}: {}", r.body);
                if method == "GET" && !allowed {
                    let code = match (expected, who) {
                        (403, _) => "insufficient_scope",
                        (_, Who::Nobody) => "missing_key",
                        (_, Who::Stale) => "session_expired",
                        _ => "invalid_key",
                    };
                    assert_problem(&r, expected, code);
                    let challenge = r
                        .header("www-authenticate")
                        .unwrap_or_else(|| panic!("{path} {what}: no challenge"));
                    assert!(challenge.starts_with("Bearer"), "{challenge}");
                    if expected == 403 {
                        assert!(
                            challenge.contains("insufficient_scope") && challenge.contains("admin"),
                            "{challenge}"
                        );
                    }
                }
            }
        }
    }
    assert_eq!(cells, ROUTES.len() * callers.len() * 2);
    assert!(
        unauthorized_successes.is_empty(),
        "{unauthorized_successes:#?}"
    );
    // A wrong method on a protected route without a key is 401, not 405 (no route
    // detail for anonymous callers); on a public route it is 405.
    assert_eq!(
        h.call_as("POST", "/api/v1/status", Auth::None).await.status,
        401
    );
    assert_eq!(h.call_as("POST", "/healthz", Auth::None).await.status, 405);
    h.stop().await;
}

// Catches: the admin key listing leaking secrets or stored hashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_listing_has_no_secrets_or_hashes() {
    let h = start().await;
    let r = h
        .call_as("GET", "/api/v1/keys", Auth::Bearer(&h.admin_key))
        .await;
    assert_eq!(r.status, 200);
    let v = r.json();
    let names: Vec<&str> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["reader", "admin"]);
    assert_eq!(v["keys"][0]["scope"], "read");
    assert_eq!(v["keys"][0]["id"], h.read_info.id.as_str());
    use sha2::Digest;
    for secret in [&h.read_key, &h.admin_key] {
        assert!(!r.body.contains(&secret[4..]), "secret leaked");
        assert!(
            !r.body
                .contains(&hex::encode(sha2::Sha256::digest(secret.as_bytes()))),
            "hash leaked"
        );
    }
    h.stop().await;
}

// Catches: a declared oversize body being read (or waited for) before refusal,
// the connection kept open with the unread body on the wire, oversize chunked
// bodies accepted while streaming, or bodies under the limit refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limit_before_and_while_reading() {
    let h = start().await;
    // 11 MiB declared, not one body byte sent: the reply must still arrive.
    let mut tls = h.raw_tls().await;
    let head = format!(
        "POST /api/v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        h.read_key,
        11 * 1024 * 1024
    );
    let (status, text) = raw_exchange(&mut tls, &head).await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    assert!(text.contains("payload_too_large"), "{text}");
    // Also without a key (nothing is read for anyone).
    let mut tls = h.raw_tls().await;
    let head = "PUT /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 11534336\r\n\r\n";
    assert_eq!(raw_exchange(&mut tls, head).await.0, 413);
    h.stop().await;

    let h = start_with(
        |o| o.max_model_bytes = 1024,
        AccessOptions {
            max_body_bytes: 1024,
            ..relaxed_access()
        },
    )
    .await;
    let chunked = |path: &str, key: &str| {
        let mut req = format!(
            "{path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        for _ in 0..4 {
            req.push_str(&format!("400\r\n{}\r\n", "x".repeat(1024)));
        }
        req.push_str("0\r\n\r\n");
        req
    };
    // Chunked, no Content-Length, to a route that reads its body: refused
    // once more than the limit arrived.
    let mut tls = h.raw_tls().await;
    let (status, text) = raw_exchange(&mut tls, &chunked("PUT /api/v1/model", &h.admin_key)).await;
    assert_eq!(status, 413, "{text}");
    // To a route that takes no body: refused without reading it, and the
    // connection closed (the body's length is unknown).
    let mut tls = h.raw_tls().await;
    let (status, text) = raw_exchange(&mut tls, &chunked("POST /api/v1/status", &h.read_key)).await;
    assert_eq!(status, 405, "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    // Exactly at the limit, to a route that takes no body: the method is
    // refused (the short body is discarded, not read).
    let mut tls = h.raw_tls().await;
    let req = format!(
        "POST /api/v1/status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: 1024\r\n\r\n{}",
        h.read_key,
        "y".repeat(1024)
    );
    let (status, text) = raw_exchange(&mut tls, &req).await;
    assert_eq!(status, 405, "{text}");
    assert!(
        text.contains("allow: GET, HEAD") || text.contains("Allow: GET, HEAD"),
        "{text}"
    );
    h.stop().await;
}

// Catches: security headers only on successful responses (or only on errors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_every_status() {
    let h = start_with(
        |_| {},
        AccessOptions {
            key_rate_per_s: 0.01,
            key_burst: 5,
            ..relaxed_access()
        },
    )
    .await;
    let admin = h.admin_key.clone();
    let cases: Vec<(u16, Reply)> = vec![
        (200, h.get("/healthz").await),
        (401, h.call_as("GET", "/api/v1/status", Auth::None).await),
        (
            401,
            h.call_as("GET", "/api/v1/status", Auth::Bearer("spk_nope"))
                .await,
        ),
        (403, h.get("/api/v1/keys").await),
        (404, h.get("/nope").await),
        (405, h.call("DELETE", "/api/v1/results").await),
        // Not ready: a 5xx from the server.
        (503, h.call_as("GET", "/readyz", Auth::None).await),
    ];
    for (status, r) in &cases {
        assert_eq!(r.status, *status, "{}", r.body);
        assert_security_headers(r, &status.to_string());
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "CORS must be off by default"
        );
    }
    // The admin key's bucket (5, refilled every 100 s) runs out: 429 with Retry-After.
    let mut limited = None;
    for _ in 0..10 {
        let r = h
            .call_as("GET", "/api/v1/status", Auth::Bearer(&admin))
            .await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("key bucket never refused");
    assert_problem(&r, 429, "rate_limited");
    assert_security_headers(&r, "429");
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=100).contains(&retry), "{retry}");
    // Another key is not affected by this key's bucket.
    assert_eq!(h.get("/api/v1/status").await.status, 200);
    // 413 too (raw, since it closes the connection).
    let mut tls = h.raw_tls().await;
    let (status, text) = raw_exchange(
        &mut tls,
        "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    )
    .await;
    assert_eq!(status, 413);
    let lower = text.to_ascii_lowercase();
    for (name, value) in api_harness::SECURITY_HEADERS {
        assert!(
            lower.contains(&format!("{name}: {}", value.to_ascii_lowercase())),
            "413 lacks {name}: {text}"
        );
    }
    h.stop().await;
}

// Catches: CORS echoing any Origin, preflight requiring a key (browsers never
// send one), or allowed origins not getting Access-Control-Allow-Origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_only_for_listed_origins() {
    let h = start_with(
        |_| {},
        AccessOptions {
            cors_allowed_origins: vec!["https://ui.example".into()],
            ..relaxed_access()
        },
    )
    .await;
    let pre = |origin: &'static str| {
        let h = &h;
        async move {
            h.try_call_with(
                "OPTIONS",
                "/api/v1/status",
                Auth::None,
                &[
                    ("Origin", origin),
                    ("Access-Control-Request-Method", "GET"),
                    ("Access-Control-Request-Headers", "authorization"),
                ],
            )
            .await
            .unwrap()
        }
    };
    let ok = pre("https://ui.example").await;
    assert_eq!(ok.status, 204, "{}", ok.body);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://ui.example")
    );
    assert_eq!(ok.header("access-control-allow-methods"), Some("GET, HEAD"));
    assert!(ok
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    assert_security_headers(&ok, "preflight");
    let evil = pre("https://evil.example").await;
    assert_ne!(evil.status, 204);
    assert_eq!(evil.header("access-control-allow-origin"), None);

    let key = h.read_key.clone();
    let get = |origin: &'static str| {
        let (h, key) = (&h, key.clone());
        async move {
            h.try_call_with(
                "GET",
                "/api/v1/status",
                Auth::Bearer(&key),
                &[("Origin", origin)],
            )
            .await
            .unwrap()
        }
    };
    let r = get("https://ui.example").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://ui.example")
    );
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("vary") && v.contains("origin")));
    let r = get("https://ui.example.evil").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    h.stop().await;
}
