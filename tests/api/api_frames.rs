//! The latest-frame route (issue 20) against a real `Server` over TLS:
//! `GET /api/v1/sources/{name}/frame` serves the source's latest frame as a
//! JPEG with its focus figure, bounded in viewers and per-viewer rate.

use std::io::Read;
use std::time::{Duration, SystemTime};

use crate::api_harness::{assert_problem, relaxed_access, start_with, Auth, Harness};
use spotter::core::frame::{Frame, PixelFormat};

/// A YUYV frame of `w`×`h`: a checkerboard of `cell`-pixel squares.
pub fn yuyv_checker(w: u32, h: u32, cell: u32, seq: u64) -> Frame {
    let data = (0..h)
        .flat_map(|y| {
            (0..w).flat_map(move |x| {
                let luma = if (x / cell + y / cell) % 2 == 0 {
                    30
                } else {
                    220
                };
                [luma, 128]
            })
        })
        .collect();
    Frame {
        data,
        format: PixelFormat::Yuyv,
        width: w,
        height: h,
        stride: w * 2,
        seq,
        captured_at: SystemTime::now(),
        origin: "test".into(),
        source: "test".into(),
    }
}

/// A GET of `path` with `key` as bearer: status, headers and raw body.
async fn fetch(h: &Harness, path: &str, auth: Auth<'_>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut req = h.agent.get(&format!("{}{path}", h.base));
    match auth {
        Auth::Bearer(k) => req = req.set("Authorization", &format!("Bearer {k}")),
        Auth::Cookie(c) => req = req.set("Cookie", &format!("__Host-spotter_session={c}")),
        _ => {}
    }
    tokio::task::spawn_blocking(move || {
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("transport error: {e}"),
        };
        let headers = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| resp.header(&n).map(|v| (n.clone(), v.to_string())))
            .collect();
        let status = resp.status();
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body).unwrap();
        (status, headers, body)
    })
    .await
    .unwrap()
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

// Catches: a raw frame served as is (YUYV bytes labelled image/jpeg), a
// stale frame served after a newer one arrived, no focus figure (or one
// that does not fall when the image blurs: a sharp checkerboard against
// a flat frame), the figure missing from status, and unknown sources or
// sources without a frame answered with anything but their 404 codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_frame_as_jpeg_with_its_focus() {
    let h = start_with(|_| {}, relaxed_access()).await;
    let cam = h.state.register_source("cam");
    h.state.register_source("idle");
    let r = h.get("/api/v1/sources/nowhere/frame").await;
    assert_problem(&r, 404, "source_not_found");
    let r = h.get("/api/v1/sources/idle/frame").await;
    assert_problem(&r, 404, "no_frame");

    cam.latest.publish(yuyv_checker(320, 240, 16, 41));
    let (status, headers, body) =
        fetch(&h, "/api/v1/sources/cam/frame", Auth::Bearer(&h.read_key)).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("image/jpeg"));
    assert!(body.starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG");
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (320, 240));
    assert_eq!(header(&headers, "x-spotter-frame-seq"), Some("41"));
    let sharp: f64 = header(&headers, "x-spotter-focus")
        .unwrap()
        .parse()
        .unwrap();
    assert!(sharp > 0.0, "{sharp}");
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));

    let v = h.get("/api/v1/status").await.json();
    let f = &v["focus"]["sources"];
    assert_eq!(f[0]["source"], "cam");
    assert_eq!(f[0]["frame_seq"], 41);
    assert!((f[0]["focus"].as_f64().unwrap() - sharp).abs() < 0.1, "{v}");
    assert!(f[1]["focus"].is_null(), "{v}");

    // A newer, flat frame: served instead, and its figure is lower.
    let mut flat = yuyv_checker(320, 240, 16, 42);
    flat.data.iter_mut().step_by(2).for_each(|y| *y = 120);
    cam.latest.publish(flat);
    let (status, headers, _) =
        fetch(&h, "/api/v1/sources/cam/frame", Auth::Bearer(&h.read_key)).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-spotter-frame-seq"), Some("42"));
    let soft: f64 = header(&headers, "x-spotter-focus")
        .unwrap()
        .parse()
        .unwrap();
    assert!(soft < sharp, "{soft} !< {sharp}");

    // A session stands for its key here too.
    let s = h.session_cookie(&h.read_key).await;
    let (status, _, body) = fetch(&h, "/api/v1/sources/cam/frame", Auth::Cookie(&s)).await;
    assert_eq!(status, 200);
    assert!(body.starts_with(&[0xFF, 0xD8]));
    h.stop().await;
}

// Catches: more viewers than api.max_frame_viewers served (watching
// starving inference), a viewer served faster than api.frame_max_fps, or
// either refusal without Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_and_their_rate_are_bounded() {
    let h = start_with(
        |o| {
            o.max_frame_viewers = 1;
            o.frame_max_fps = 0.5;
        },
        relaxed_access(),
    )
    .await;
    h.state
        .register_source("cam")
        .latest
        .publish(yuyv_checker(64, 48, 8, 1));
    let path = "/api/v1/sources/cam/frame";
    let (s, _, _) = fetch(&h, path, Auth::Bearer(&h.read_key)).await;
    assert_eq!(s, 200);
    // Another key is another viewer: refused while the first watches.
    let r = h.call_as("GET", path, Auth::Bearer(&h.admin_key)).await;
    assert_problem(&r, 503, "too_many_viewers");
    assert!(r.header("retry-after").is_some());
    // The first viewer: its burst (2), then refused until its rate allows.
    let (s, _, _) = fetch(&h, path, Auth::Bearer(&h.read_key)).await;
    assert_eq!(s, 200);
    let r = h.call_as("GET", path, Auth::Bearer(&h.read_key)).await;
    assert_problem(&r, 429, "rate_limited");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // Other routes are not limited by it.
    assert_eq!(h.get("/api/v1/status").await.status, 200);
    tokio::time::sleep(Duration::from_millis(10)).await;
    h.stop().await;
}
