//! The web interface (issue 20) in a real headless browser: Debian's
//! `chromium` driven over WebDriver (`webdriver`) against the daemon on the
//! `files` source. Screenshots of each page go to `.cache/screenshots/`
//! (the README shows the Live one).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{bin, testdata, Client, Daemon};
use crate::webdriver::{available, screenshot_dir, Browser};

const COOKIE: &str = "__Host-spotter_session";

/// A small classifier (cheap on two shared cores) on a folder of one photo,
/// replayed in a loop, so every result carries that photo's labels. `api`
/// is added to the `[api]` table.
fn start_daemon(dir: &Path, api: &str) -> Daemon {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let photo = testdata().join("images/grace_hopper.bmp");
    std::fs::copy(&photo, photos.join("grace_hopper.bmp")).unwrap();
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    let config = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 5.0\nloop = true\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nruntime = \"builtin\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n{api}",
        photos.display(),
        model.display(),
        labels.display()
    );
    Daemon::start(dir, &config)
}

/// A new key from `spotter keys create`: its secret.
fn create_key(d: &Daemon, name: &str, scope: &str) -> String {
    let out = std::process::Command::new(bin())
        .arg("keys")
        .arg("--config")
        .arg(&d.config)
        .args(["create", "--name", name, "--scope", scope])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn base(d: &Daemon) -> String {
    format!("https://127.0.0.1:{}", d.port)
}

/// Sign in on the page with `key` by keyboard only: the key field has the
/// focus when the page opens, Enter submits.
fn sign_in(b: &Browser, d: &Daemon, key: &str) {
    b.goto(&format!("{}/", base(d)));
    let input = b.must_find("#key");
    b.wait(5, "the focus in the key field", |b| {
        let id = b.execute("return document.activeElement.id;", json!([]));
        (id == json!("key")).then_some(())
    });
    b.clear(&input);
    b.type_into(&input, &format!("{key}\u{E007}"));
}

/// Fail on any console entry that is a CSP violation or an error (an
/// uncaught exception, a failed load) since the last call.
fn assert_clean_console(b: &Browser, page: &str) {
    let bad: Vec<_> = b
        .console()
        .into_iter()
        .filter(|(level, msg)| level == "SEVERE" || msg.contains("Content Security Policy"))
        .collect();
    assert!(bad.is_empty(), "{page}: console errors: {bad:#?}");
}

/// The page does not scroll sideways: nothing is wider than the window.
fn assert_fits_width(b: &Browser, page: &str) {
    let v = b.execute(
        "return [document.documentElement.scrollWidth, window.innerWidth];",
        json!([]),
    );
    let (content, window) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
    assert!(
        content <= window,
        "{page}: {content} px of content in a {window} px window"
    );
}

/// `GET path` with only a session cookie: the status.
fn status_with_cookie(d: &Daemon, cookie: &str, path: &str) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(d.cert()).unwrap();
    for c in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let agent = ureq::AgentBuilder::new()
        .tls_config(std::sync::Arc::new(cfg))
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .build();
    match agent
        .get(&format!("{}{path}", base(d)))
        .set("Cookie", &format!("{COOKIE}={cookie}"))
        .call()
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("GET {path}: {e}"),
    }
}

// Would catch: a wrong key signing in, the page not telling the person, or
// failed sign-ins escaping the failed-authentication rate limit (a script
// guessing keys through the form at full speed).
#[test]
fn wrong_key_sign_in_fails_and_is_rate_limited() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = start_daemon(
        tmp.path(),
        "auth_fail_burst = 5\nauth_fail_rate_per_s = 0.05\n",
    );
    d.client().wait_for("/healthz", 60, |r| r.status == 200);
    let b = Browser::start(1280, 900);
    let wrong = format!("spk_{}", "0".repeat(43));
    sign_in(&b, &d, &wrong);
    let first = b.wait(10, "the sign-in error", |b| {
        let t = b.text(&b.find("#signin-error")?);
        (!t.is_empty()).then_some(t)
    });
    assert!(first.contains("Sign-in failed"), "{first}");
    assert!(b.url().ends_with('/'), "{}", b.url());
    assert!(b.cookie(COOKIE).is_none());
    let mut limited = false;
    for _ in 0..10 {
        b.click(&b.must_find("#signin button[type=submit]"));
        std::thread::sleep(Duration::from_millis(300));
        let t = b.text(&b.must_find("#signin-error"));
        if t.contains("Too many attempts") {
            limited = true;
            break;
        }
    }
    assert!(limited, "ten more wrong keys were never rate limited");
    b.screenshot(&screenshot_dir().join("signin-rate-limited.png"));
    assert!(b.cookie(COOKIE).is_none());
}

// Would catch: the Live page not showing what the camera sees (label from
// the event stream, frame image), admin controls shown to a read key or an
// admin call from a read key's page accepted, key creation or revocation
// broken on the page, a revoked key's session or a signed-out session still
// accepted, CSP violations or script errors on any page (the strict CSP
// silently breaking a page), and a layout that scrolls sideways on a 360 px
// phone.
#[test]
fn pages_in_a_browser() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = start_daemon(tmp.path(), "");
    let admin_api = d.client();
    let admin_key = std::fs::read_to_string(d.dir.join("state/initial-admin-key"))
        .unwrap()
        .trim()
        .to_string();
    let read_key = create_key(&d, "phone", "read");
    let latest = admin_api.wait_for("/api/v1/results/latest", 90, |r| r.status == 200);
    let label = latest.json()["classes"][0]["label"]
        .as_str()
        .unwrap()
        .to_string();
    let shots = screenshot_dir();
    let b = Browser::start(1280, 900);

    // --- A read key: Live, History, Device ---
    b.goto(&format!("{}/live", base(&d)));
    b.wait(10, "the redirect to sign-in", |b| b.find("#signin"));
    b.screenshot(&shots.join("signin.png"));
    assert_clean_console(&b, "sign-in");
    sign_in(&b, &d, &read_key);
    let t0 = Instant::now();
    b.wait(10, "the Live page", |b| {
        b.url().ends_with("/live").then_some(())
    });
    let read_cookie = b.cookie(COOKIE).expect("a session cookie after sign-in");
    b.wait(5, &format!("the label {label:?} on the Live page"), |b| {
        let t = b.text(&b.find("section.source .labels")?);
        t.contains(&label).then_some(())
    });
    assert!(t0.elapsed() < Duration::from_secs(6));
    b.wait(10, "the frame image", |b| {
        let v = b.execute(
            "const i = document.querySelector('.frame-img'); return i && i.complete && i.naturalWidth > 0;",
            json!([]),
        );
        (v == json!(true)).then_some(())
    });
    b.wait(10, "the readiness line", |b| {
        let t = b.text(&b.find("#readiness")?);
        (t.starts_with("Ready") || t.starts_with("Not ready")).then_some(())
    });
    b.screenshot(&shots.join("live.png"));
    assert_clean_console(&b, "live");

    b.goto(&format!("{}/history", base(&d)));
    b.must_find("svg.chart");
    let top = b.wait(10, "a result row", |b| b.find("td.top"));
    assert!(!b.text(&top).is_empty());
    b.screenshot(&shots.join("history.png"));
    assert_clean_console(&b, "history");

    b.goto(&format!("{}/device", base(&d)));
    b.must_find("dl.kv");
    for control in ["#create-key", "button.revoke", "#rollback"] {
        assert!(b.find(control).is_none(), "{control} shown to a read key");
    }
    b.screenshot(&shots.join("device-read.png"));
    assert_clean_console(&b, "device (read key)");
    // Forced from the read key's page: the server refuses.
    let forced = b.execute_async(
        "const done = arguments[arguments.length - 1];
         Promise.all([
           fetch('/api/v1/keys', {method: 'POST', headers: {'content-type': 'application/json'},
                                 body: JSON.stringify({name: 'forced', scope: 'admin'})}),
           fetch('/api/v1/model/rollback', {method: 'POST'}),
           fetch('/api/v1/keys'),
         ]).then(rs => done(rs.map(r => r.status)), e => done(String(e)));",
        json!([]),
    );
    assert_eq!(
        forced,
        json!([403, 403, 403]),
        "admin calls from a read key's page"
    );
    let _ = b.console(); // the refused loads above are logged; expected

    // --- 360 px wide, every page ---
    b.set_size(360, 800);
    for page in ["live", "history", "device"] {
        b.goto(&format!("{}/{page}", base(&d)));
        b.must_find("main");
        std::thread::sleep(Duration::from_millis(500));
        assert_fits_width(&b, page);
        b.screenshot(&shots.join(format!("{page}-360.png")));
        assert_clean_console(&b, page);
    }
    b.set_size(1280, 900);

    // Forget the read session in this browser (it stays valid on the server).
    assert_eq!(status_with_cookie(&d, &read_cookie, "/api/v1/status"), 200);
    b.delete_cookies();

    // --- An admin key: create a key, revoke the read key ---
    sign_in(&b, &d, &admin_key);
    b.wait(10, "the Live page", |b| {
        b.url().ends_with("/live").then_some(())
    });
    let admin_cookie = b.cookie(COOKIE).expect("admin session cookie");
    b.goto(&format!("{}/device", base(&d)));
    let name = b.must_find("#new-key-name");
    b.type_into(&name, "tablet");
    b.click(&b.must_find("#create-key button[type=submit]"));
    let secret = b.wait(10, "the new key's secret", |b| {
        let t = b.text(&b.find("#secret")?);
        t.starts_with("spk_").then_some(t)
    });
    assert_eq!(
        Client::new(&d.cert(), d.port)
            .with_key(Some(secret.clone()))
            .get("/api/v1/status")
            .unwrap()
            .status,
        200,
        "the key created on the page works"
    );
    b.screenshot(&shots.join("device-admin.png"));
    let revoke = b
        .find_all("button.revoke")
        .into_iter()
        .find(|e| {
            b.execute(
                "return arguments[0].dataset.name;",
                json!([Browser::arg(e)]),
            ) == json!("phone")
        })
        .expect("a revoke button for the read key");
    b.click(&revoke);
    assert!(b.accept_alert(), "no confirmation asked before revoking");
    b.wait(10, "the read key shown revoked", |b| {
        let rows = b.find_all("tr[data-key-id]");
        rows.iter()
            .any(|r| {
                let t = b.text(r);
                t.contains("phone") && t.contains("revoked")
            })
            .then_some(())
    });
    assert_clean_console(&b, "device (admin)");
    // The revoked key's session ends on its next request.
    assert_eq!(status_with_cookie(&d, &read_cookie, "/api/v1/status"), 401);

    // --- Sign-out ends the session ---
    b.click(&b.must_find("#signout"));
    b.wait(10, "the sign-in page after sign-out", |b| b.find("#signin"));
    assert!(b.cookie(COOKIE).is_none(), "cookie kept after sign-out");
    assert_eq!(status_with_cookie(&d, &admin_cookie, "/api/v1/status"), 401);
    b.goto(&format!("{}/device", base(&d)));
    b.wait(10, "the redirect to sign-in", |b| b.find("#signin"));

    // The key made on the page signs in.
    sign_in(&b, &d, &secret);
    b.wait(10, "the Live page", |b| {
        b.url().ends_with("/live").then_some(())
    });
    assert_clean_console(&b, "live (new key)");
}

// Would catch: a detector's boxes or a source's zones missing from the Live
// page (boxes drawn in the wrong coordinates land off the canvas; zones
// not passed to the script, or not scaled from normalized coordinates, are
// not drawn), or the page showing a detector's label late. The photo and
// zone are not special: any detection and any zone must be drawn.
#[test]
fn live_draws_a_detectors_boxes_and_the_zones() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(
        testdata().join("images/grace_hopper.bmp"),
        photos.join("grace_hopper.bmp"),
    )
    .unwrap();
    let yolo = testdata().join("models/detection/yolov8n/yolov8n_full_integer_quant.tflite");
    let config = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 2.0\nloop = true\n\n\
         [model]\npath = \"{}\"\nruntime = \"auto\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n\n\
         [[zone]]\nname = \"doorway\"\npolygon = [[0.05, 0.05], [0.6, 0.05], [0.6, 0.9], [0.05, 0.9]]\n",
        photos.display(),
        yolo.display()
    );
    let d = Daemon::start(tmp.path(), &config);
    let latest = d
        .client()
        .wait_for("/api/v1/results/latest", 120, |r| {
            r.status == 200
                && r.json()["detections"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
        })
        .json();
    let label = latest["detections"][0]["label"]
        .as_str()
        .unwrap()
        .to_string();
    let key = create_key(&d, "tech", "read");
    let b = Browser::start(1280, 900);
    sign_in(&b, &d, &key);
    b.wait(10, "the Live page", |b| {
        b.url().ends_with("/live").then_some(())
    });
    b.wait(10, &format!("the label {label:?} on the Live page"), |b| {
        let t = b.text(&b.find("section.source .labels")?);
        t.contains(&label).then_some(())
    });
    // Pixels of the box colour (#f5a623) and the zone outline (#4a90e2) on
    // the overlay, once the frame has loaded and sized the canvas.
    let count = "const c = document.querySelector('canvas.overlay');
        const img = document.querySelector('.frame-img');
        if (!img.complete || !img.naturalWidth) return null;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const near = (i, r, g, b) => Math.abs(d[i]-r) < 12 && Math.abs(d[i+1]-g) < 12 && Math.abs(d[i+2]-b) < 12 && d[i+3] > 200;
        let box = 0, zone = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (near(i, 245, 166, 35)) box++;
          if (near(i, 74, 144, 226)) zone++;
        }
        return [box, zone, c.width, img.naturalWidth];";
    let (box_px, zone_px) = b.wait(10, "a box and a zone drawn over the frame", |b| {
        let v = b.execute(count, json!([]));
        let n = |i: usize| v.get(i).and_then(|x| x.as_u64()).unwrap_or(0);
        (n(0) > 100 && n(1) > 100 && n(2) == n(3)).then_some((n(0), n(1)))
    });
    eprintln!("overlay: {box_px} box pixels, {zone_px} zone pixels");
    b.screenshot(&screenshot_dir().join("live-detector.png"));
    assert_clean_console(&b, "live (detector)");
}
