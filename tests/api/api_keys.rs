//! Key management over the API (issue 20, the page's device view):
//! `POST /api/v1/keys` and `DELETE /api/v1/keys/{id}` against a real
//! `Server` over TLS.

use crate::api_harness::{assert_problem, start, Auth, Harness, Reply};

async fn send(
    h: &Harness,
    method: &str,
    path: &str,
    auth: Auth<'_>,
    ct: &str,
    body: &str,
    origin: Option<&str>,
) -> Reply {
    let mut req = h
        .agent
        .request(method, &format!("{}{path}", h.base))
        .set("Content-Type", ct);
    match auth {
        Auth::Bearer(k) => req = req.set("Authorization", &format!("Bearer {k}")),
        Auth::Cookie(c) => req = req.set("Cookie", &format!("__Host-spotter_session={c}")),
        _ => {}
    }
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

// Catches: a created key's secret not working (or stored in the listing),
// a read key creating or revoking keys, a revoked key or its session still
// working, revocation by name or of an unknown id answered as success,
// duplicate names accepted, and a cookie's key change accepted from another
// origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_and_revoke_keys() {
    let h = start().await;
    let admin = Auth::Bearer(&h.admin_key);
    let json = "application/json";
    let r = send(
        &h,
        "POST",
        "/api/v1/keys",
        admin,
        json,
        r#"{"name":"tablet","scope":"read"}"#,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let secret = v["secret"].as_str().unwrap().to_string();
    let id = v["key"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["key"]["scope"], "read");
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Bearer(&secret))
            .await
            .status,
        200
    );
    let list = h.call_as("GET", "/api/v1/keys", admin).await;
    assert!(list.body.contains("tablet") && !list.body.contains(&secret[4..]));
    // Duplicate names, bad names, bad scopes.
    let r = send(
        &h,
        "POST",
        "/api/v1/keys",
        admin,
        json,
        r#"{"name":"tablet"}"#,
        None,
    )
    .await;
    assert_problem(&r, 409, "key_conflict");
    let r = send(
        &h,
        "POST",
        "/api/v1/keys",
        admin,
        "application/x-www-form-urlencoded",
        "name=a%20b",
        None,
    )
    .await;
    assert_problem(&r, 400, "invalid_parameter");
    let r = send(
        &h,
        "POST",
        "/api/v1/keys",
        admin,
        json,
        r#"{"name":"x","scope":"root"}"#,
        None,
    )
    .await;
    assert_problem(&r, 400, "invalid_parameter");
    // A read key may do neither.
    let read = Auth::Bearer(&h.read_key);
    let r = send(
        &h,
        "POST",
        "/api/v1/keys",
        read,
        json,
        r#"{"name":"sneaky","scope":"admin"}"#,
        None,
    )
    .await;
    assert_problem(&r, 403, "insufficient_scope");
    let r = send(
        &h,
        "DELETE",
        &format!("/api/v1/keys/{}", h.read_info.id),
        read,
        json,
        "",
        None,
    )
    .await;
    assert_problem(&r, 403, "insufficient_scope");

    // Revoke by session cookie: only from this server's origin.
    let tablet_session = h.session_cookie(&secret).await;
    let admin_session = h.session_cookie(&h.admin_key).await;
    let path = format!("/api/v1/keys/{id}");
    let r = send(
        &h,
        "DELETE",
        &path,
        Auth::Cookie(&admin_session),
        json,
        "",
        Some("https://evil.example"),
    )
    .await;
    assert_problem(&r, 403, "cross_origin");
    assert_eq!(
        h.call_as("GET", "/api/v1/status", Auth::Bearer(&secret))
            .await
            .status,
        200
    );
    let r = send(
        &h,
        "DELETE",
        &path,
        Auth::Cookie(&admin_session),
        json,
        "",
        Some(&h.base),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["key"]["revoked"], true);
    assert_problem(
        &h.call_as("GET", "/api/v1/status", Auth::Bearer(&secret))
            .await,
        401,
        "invalid_key",
    );
    assert_problem(
        &h.call_as("GET", "/api/v1/status", Auth::Cookie(&tablet_session))
            .await,
        401,
        "session_expired",
    );
    let r = send(&h, "DELETE", &path, admin, json, "", None).await;
    assert_problem(&r, 409, "key_conflict");
    for missing in ["/api/v1/keys/0000000000000000", "/api/v1/keys/reader"] {
        let r = send(&h, "DELETE", missing, admin, json, "", None).await;
        assert_problem(&r, 404, "key_not_found");
    }
    // The read key named "reader" was not revoked by name.
    assert_eq!(h.get("/api/v1/status").await.status, 200);
    h.stop().await;
}
