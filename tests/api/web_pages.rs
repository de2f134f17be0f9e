//! The web interface's pages and assets over real HTTPS (issue 20), with
//! bearer keys (the browser test in tests/daemon/web.rs signs in with a
//! session cookie): redirects, headers, the size budget and
//! scope-dependent controls. The key routes the Device page calls are
//! tested in `api_keys`.

use std::time::Duration;

use crate::api_harness::{start, Auth, Harness, Reply};

/// An agent that does not follow redirects (to see the 303s themselves).
fn agent(h: &Harness) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .tls_config(h.client_config.clone())
        .timeout(Duration::from_secs(30))
        .redirects(0)
        .build()
}

async fn page(h: &Harness, path: &str, key: Option<&str>) -> Reply {
    let mut req = agent(h).get(&format!("{}{path}", h.base));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    tokio::task::spawn_blocking(move || {
        let r = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{e}"),
        };
        crate::api_harness::reply_from(r).unwrap()
    })
    .await
    .unwrap()
}

/// The `src` and `href` of `/assets/...` links in a page.
fn asset_links(html: &str) -> Vec<String> {
    html.match_indices("\"/assets/")
        .map(|(i, _)| {
            let rest = &html[i + 1..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

// Would catch: a page answering without a key (the live view of a camera
// open to the LAN), the sign-in page not redirecting a signed-in caller, a
// page served with the API's `default-src 'none'` (its own script blocked)
// or with inline script, pages cached, an asset link that 404s or is
// served without a long cache lifetime, or a page over 100 KB with its files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_redirect_by_sign_in_and_carry_a_strict_csp() {
    let h = start().await;
    let signin = page(&h, "/", None).await;
    assert_eq!(signin.status, 200, "{}", signin.body);
    assert!(signin.body.contains("id=\"signin\""), "{}", signin.body);
    assert!(signin
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    for path in ["/live", "/history", "/device"] {
        let r = page(&h, path, None).await;
        assert_eq!(r.status, 303, "{path}: {}", r.body);
        assert_eq!(r.header("location"), Some("/"), "{path}");
    }
    let r = page(&h, "/", Some(&h.read_key)).await;
    assert_eq!((r.status, r.header("location")), (303, Some("/live")));
    for path in ["/", "/live", "/history", "/device"] {
        let r = page(&h, path, Some(&h.admin_key)).await;
        let r = if r.status == 303 {
            page(&h, r.header("location").unwrap(), Some(&h.admin_key)).await
        } else {
            r
        };
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert!(!r.body.contains("<script>"), "{path}: inline script");
        assert!(!r.body.contains("style="), "{path}: inline style");
        let links = asset_links(&r.body);
        assert!(links.len() >= 2, "{path}: {links:?}");
        // The budget: a page with its files (fonts included: there
        // are none) is at most 100 KB on first load, the frame image aside.
        let mut bytes = r.body.len();
        for link in links {
            let a = page(&h, &link, None).await;
            bytes += a.body.len();
            assert_eq!(a.status, 200, "{link}");
            assert!(a
                .header("cache-control")
                .unwrap()
                .contains("max-age=31536000"));
            assert!(a.header("content-security-policy").is_some());
        }
        assert!(bytes <= 100 * 1024, "{path}: {bytes} bytes on first load");
    }
    let stale = page(&h, "/assets/0000000000000000/app.css", None).await;
    assert_eq!(stale.status, 404);
    assert_eq!(stale.header("cache-control"), Some("no-store"));
    // Pages are GET only.
    let r = h.call_as("POST", "/live", Auth::Bearer(&h.admin_key)).await;
    assert_eq!(r.status, 405);
}

// Would catch: admin controls rendered for a read key, or missing for an
// admin; the keys list leaking into a read key's page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_page_shows_admin_controls_only_to_admin_keys() {
    let h = start().await;
    let read = page(&h, "/device", Some(&h.read_key)).await;
    assert_eq!(read.status, 200);
    for control in [
        "id=\"create-key\"",
        "class=\"revoke",
        "id=\"rollback\"",
        "class=\"activate",
    ] {
        assert!(!read.body.contains(control), "read key sees {control}");
    }
    assert!(
        !read.body.contains(&h.read_info.id),
        "key ids shown to a read key"
    );
    let admin = page(&h, "/device", Some(&h.admin_key)).await;
    for control in ["id=\"create-key\"", "class=\"revoke", "id=\"rollback\""] {
        assert!(admin.body.contains(control), "admin lacks {control}");
    }
    assert!(admin.body.contains(&h.read_info.id));
}

// Would catch: the History charts counting the wrong period (a sighting from
// three days ago in the 24-hour chart, or a recent one missing from the
// week's), e.g. when the day's chart is cut from the week's summary at the
// wrong bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_charts_cover_their_own_periods() {
    use spotter::core::sighting::{Sighting, SightingChange};
    let h = start().await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = 3_600_000_000_000i64;
    let sighting = |id: u64, label: &str, start: i64| Sighting {
        id,
        label: label.into(),
        source: "cam".into(),
        zone: None,
        start_ns: start,
        end_ns: Some(start + 60_000_000_000),
        last_seen_ns: start + 60_000_000_000,
        peak_score: 0.9,
        frames: 10,
        max_objects: 1,
        best_result_id: None,
        best_ns: start,
    };
    for s in [
        sighting(1, "heron", now - 2 * hour),
        sighting(2, "fox", now - 72 * hour),
        sighting(3, "badger", now - 9 * 24 * hour),
    ] {
        h.store
            .put_sighting(&s, None, Some(SightingChange::Ended))
            .unwrap();
    }
    let r = page(&h, "/history", Some(&h.read_key)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let charts: Vec<&str> = r
        .body
        .split("<section class=\"chart-box\">")
        .skip(1)
        .map(|s| &s[..s.find("</section>").unwrap()])
        .collect();
    assert_eq!(charts.len(), 2, "{}", r.body);
    let legend = |c: &str| -> Vec<String> {
        c.split("</span>")
            .skip(1)
            .map(|s| s[..s.find("</li>").unwrap()].to_string())
            .collect()
    };
    assert!(charts[0].contains("Last 24 hours"), "{}", charts[0]);
    assert_eq!(legend(charts[0]), vec!["heron"]);
    assert!(charts[1].contains("Last 7 days"), "{}", charts[1]);
    let mut week = legend(charts[1]);
    week.sort();
    assert_eq!(week, vec!["fox", "heron"]);
}
