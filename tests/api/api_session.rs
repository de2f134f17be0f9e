//! Browser sessions (issue 20) against a real `Server` over TLS: sign-in
//! with a key in a form or JSON body, the cookie standing for the key,
//! revocation, sign-out, expiry, the same-origin check of state changes the
//! cookie authenticates, and failed sign-ins under the auth-failure limits.

use std::time::Duration;

use crate::api_harness::{assert_problem, relaxed_access, start, start_with, Auth, Harness, Reply};
use spotter::api::AccessOptions;
use spotter::keys::{KeyStore, Scope};

/// `POST /api/v1/session` with `body` of `content_type`, and `Origin` when
/// given; redirects are not followed.
async fn sign_in(h: &Harness, content_type: &str, body: &str, origin: Option<&str>) -> Reply {
    let agent = ureq::AgentBuilder::new()
        .tls_config(h.client_config.clone())
        .redirects(0)
        .timeout(Duration::from_secs(30))
        .build();
    let mut req = agent
        .post(&format!("{}/api/v1/session", h.base))
        .set("Content-Type", content_type);
    if let Some(o) = origin {
        req = req.set("Origin", o);
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

/// Sign in with `key` (JSON) and return the session cookie's value.
async fn session_of(h: &Harness, key: &str) -> String {
    let r = sign_in(
        h,
        "application/json",
        &serde_json::json!({ "key": key }).to_string(),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    cookie_value(&r)
}

fn cookie_value(r: &Reply) -> String {
    let c = r.header("set-cookie").expect("a Set-Cookie header");
    let first = c.split(';').next().unwrap();
    first
        .strip_prefix("__Host-spotter_session=")
        .unwrap_or_else(|| panic!("{c}"))
        .to_string()
}

// Catches: a cookie without Secure/HttpOnly/SameSite=Strict/Path=/ (or with
// a Domain, which `__Host-` forbids), a form sign-in not redirected to the
// page, the session not standing for its key (wrong scope: a read key's
// session reaching admin routes), and the token appearing in the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_gives_a_strict_cookie_with_the_keys_scope() {
    let h = start().await;
    let form = sign_in(
        &h,
        "application/x-www-form-urlencoded",
        &format!("key={}", h.read_key),
        Some(&h.base),
    )
    .await;
    assert_eq!(form.status, 303, "{}", form.body);
    assert_eq!(form.header("location"), Some("/"));
    let set = form.header("set-cookie").unwrap().to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split("; ").any(|a| a == attr), "{attr}: {set}");
    }
    assert!(!set.to_ascii_lowercase().contains("domain"), "{set}");
    let read = cookie_value(&form);
    assert!(read.len() >= 64, "a 256-bit token: {read}");
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Cookie(&read))
            .await
            .status,
        200
    );
    assert_problem(
        &h.call_as("GET", "/api/v1/keys", Auth::Cookie(&read)).await,
        403,
        "insufficient_scope",
    );

    let json = sign_in(
        &h,
        "application/json",
        &serde_json::json!({ "key": h.admin_key }).to_string(),
        None,
    )
    .await;
    assert_eq!(json.status, 200, "{}", json.body);
    let v = json.json();
    assert_eq!(v["scope"], "admin");
    assert_eq!(v["key_name"], "admin");
    assert_eq!(v["idle_timeout_s"], 1800);
    let admin = cookie_value(&json);
    assert!(!json.body.contains(&admin));
    assert_eq!(
        h.call_as("GET", "/api/v1/keys", Auth::Cookie(&admin))
            .await
            .status,
        200
    );
    // A made-up or altered token is no session.
    let mut forged = admin.clone();
    forged.pop();
    forged.push(if admin.ends_with('0') { '1' } else { '0' });
    assert_problem(
        &h.call_as("GET", "/api/v1/status", Auth::Cookie(&forged))
            .await,
        401,
        "session_expired",
    );
    h.stop().await;
}

// Catches: a revoked key's session still working (the session trusted
// without consulting the key file), or working again after the key file
// changes once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_key_ends_its_sessions_on_the_next_request() {
    let h = start().await;
    let keys = KeyStore::new(&h.state_dir);
    let (info, secret) = keys.create("tablet", Scope::Admin).unwrap();
    let a = session_of(&h, secret.expose()).await;
    let b = session_of(&h, secret.expose()).await;
    let other = session_of(&h, &h.read_key).await;
    assert_eq!(
        h.call_as("GET", "/api/v1/keys", Auth::Cookie(&a))
            .await
            .status,
        200
    );
    keys.revoke(&info.id).unwrap();
    for s in [&a, &b] {
        let r = h.call_as("GET", "/api/v1/status", Auth::Cookie(s)).await;
        assert_problem(&r, 401, "session_expired");
        assert!(r.header("www-authenticate").is_some());
    }
    // Another key's session is untouched; the revoked one stays ended.
    keys.create("later", Scope::Read).unwrap();
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Cookie(&other))
            .await
            .status,
        200
    );
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Cookie(&a))
            .await
            .status,
        401
    );
    // A sign-in with the revoked key fails like a wrong key.
    let r = sign_in(
        &h,
        "application/json",
        &serde_json::json!({ "key": secret.expose() }).to_string(),
        None,
    )
    .await;
    assert_problem(&r, 401, "invalid_key");
    h.stop().await;
}

// Catches: sign-out not ending the session server-side (only the cookie
// cleared, so a copied cookie lives on), sign-out by a foreign origin, and
// a cookie's state change accepted without this server's Origin while a
// bearer key's is refused for the lack of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_and_the_origin_check() {
    let h = start().await;
    let s = session_of(&h, &h.admin_key).await;
    let own = h.base.clone();
    let with = |origin: &str| vec![("Origin", origin.to_string())];
    let call =
        |method: &'static str, path: &'static str, auth, hdrs: Vec<(&'static str, String)>| {
            let h = &h;
            async move {
                let refs: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
                h.try_call_with(method, path, auth, &refs).await.unwrap()
            }
        };
    // A state change by cookie: refused without Origin or from elsewhere;
    // with this server's origin it reaches the handler (no supervisor here).
    for hdrs in [vec![], with("https://evil.example"), with("null")] {
        let r = call("POST", "/api/v1/reload", Auth::Cookie(&s), hdrs).await;
        assert_problem(&r, 403, "cross_origin");
    }
    let r = call("POST", "/api/v1/reload", Auth::Cookie(&s), with(&own)).await;
    assert_problem(&r, 503, "reload_unavailable");
    // Bearer keys are unchanged: no Origin needed.
    let r = call("POST", "/api/v1/reload", Auth::Bearer(&h.admin_key), vec![]).await;
    assert_problem(&r, 503, "reload_unavailable");
    // Reads by cookie need no Origin.
    assert_eq!(
        call("GET", "/api/v1/status", Auth::Cookie(&s), vec![])
            .await
            .status,
        200
    );
    // A sign-in posted from another site is refused (login CSRF).
    let r = sign_in(
        &h,
        "application/x-www-form-urlencoded",
        &format!("key={}", h.read_key),
        Some("https://evil.example"),
    )
    .await;
    assert_problem(&r, 403, "cross_origin");

    // Sign-out from elsewhere does nothing.
    let r = call(
        "DELETE",
        "/api/v1/session",
        Auth::Cookie(&s),
        with("https://evil.example"),
    )
    .await;
    assert_problem(&r, 403, "cross_origin");
    assert_eq!(
        call("GET", "/api/v1/status", Auth::Cookie(&s), vec![])
            .await
            .status,
        200
    );
    let r = call("DELETE", "/api/v1/session", Auth::Cookie(&s), with(&own)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["signed_out"], true);
    let clear = r.header("set-cookie").unwrap();
    assert!(
        clear.starts_with("__Host-spotter_session=;") && clear.contains("Max-Age=0"),
        "{clear}"
    );
    let r = call("GET", "/api/v1/status", Auth::Cookie(&s), vec![]).await;
    assert_problem(&r, 401, "session_expired");
    // Signing out again (or without a session) still clears the cookie.
    let r = call("DELETE", "/api/v1/session", Auth::Cookie(&s), with(&own)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["signed_out"], false);
    h.stop().await;
}

// Catches: sessions outliving api.session_idle_s (the idle expiry not
// applied by the server, only by the cookie's Max-Age).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_end() {
    let h = start_with(
        |o| o.session_idle = Duration::from_millis(500),
        relaxed_access(),
    )
    .await;
    let s = session_of(&h, &h.read_key).await;
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Cookie(&s))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_problem(
        &h.call_as("GET", "/api/v1/status", Auth::Cookie(&s)).await,
        401,
        "session_expired",
    );
    h.stop().await;
}

// Catches: wrong sign-ins not counted against the client address (a form
// that allows unlimited key guessing), counted in a bucket apart from bad
// bearer keys, or not in the auth-failure metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_meet_the_auth_failure_limits() {
    let h = start_with(
        |_| {},
        AccessOptions {
            auth_fail_rate_per_s: 0.05,
            auth_fail_burst: 4,
            ..relaxed_access()
        },
    )
    .await;
    let wrong = format!("spk_{}", "1".repeat(64));
    for _ in 0..2 {
        let r = sign_in(
            &h,
            "application/x-www-form-urlencoded",
            &format!("key={wrong}"),
            None,
        )
        .await;
        assert_problem(&r, 401, "invalid_key");
    }
    // A wrong bearer key drains the same bucket.
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Bearer(&wrong))
            .await
            .status,
        401
    );
    let r = sign_in(&h, "application/json", r#"{"key":"spk_nope"}"#, None).await;
    assert_problem(&r, 401, "invalid_key");
    // Locked out now, even with the right key.
    let r = sign_in(
        &h,
        "application/json",
        &serde_json::json!({ "key": h.read_key }).to_string(),
        None,
    )
    .await;
    assert_problem(&r, 429, "rate_limited");
    assert!(r.header("retry-after").is_some());
    // (The client is locked out of /metrics too: read the exposition.)
    let metrics = spotter::state::render_metrics(&h.state, &h.store.stats());
    let failures: f64 = metrics
        .lines()
        .find(|l| l.starts_with("spotter_auth_failures"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no auth failure metric: {metrics}"));
    assert!(failures >= 4.0, "{failures}");
    h.stop().await;
}
