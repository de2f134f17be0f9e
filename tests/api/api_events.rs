//! `GET /api/v1/events` (Server-Sent Events) against a real `Server` over
//! TLS, and the upload concurrency bound of `POST /api/v1/classify`.

use crate::api_harness;

use std::sync::Arc;
use std::time::Duration;

use api_harness::{assert_problem, read_response, record, relaxed_access, start_with, Harness};
use spotter::state::Check;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Open an event stream and return the connection and the response head.
async fn subscribe(h: &Harness) -> (TlsStream<TcpStream>, String) {
    let mut tls = h.raw_tls().await;
    let req = format!(
        "GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
        h.read_key
    );
    tls.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&buf).contains("\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(30), tls.read(&mut chunk))
            .await
            .expect("no head")
            .unwrap();
        assert!(
            n > 0,
            "closed before the head: {}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    (tls, String::from_utf8_lossy(&buf).into_owned())
}

/// Read from `tls` until `done` accepts everything read so far, or EOF.
/// Returns the text and whether EOF was reached.
async fn read_until(
    tls: &mut TlsStream<TcpStream>,
    mut text: String,
    done: impl Fn(&str) -> bool,
) -> (String, bool) {
    let mut chunk = [0u8; 16384];
    while !done(&text) {
        // Bound so a stream that never delivers fails the test instead of hanging it.
        match tokio::time::timeout(Duration::from_secs(30), tls.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (text, true),
            Ok(Ok(n)) => text.push_str(&String::from_utf8_lossy(&chunk[..n])),
            Err(_) => panic!(
                "nothing more within 30 s; so far: {}",
                &text[text.len().saturating_sub(500)..]
            ),
        }
    }
    (text, false)
}

/// The `data:` of every `event: result` message, parsed.
fn results(text: &str) -> Vec<serde_json::Value> {
    text.split("event: result\ndata: ")
        .skip(1)
        // The last message may still be arriving: only complete lines count.
        .filter_map(|rest| {
            rest.split_once('\n')
                .map(|(line, _)| serde_json::from_str(line).unwrap())
        })
        .collect()
}

fn dropped_count(h: &Harness) -> u64 {
    let m = spotter::state::render_metrics(&h.state, &spotter::store::StoreStats::default());
    m.lines()
        .find_map(|l| l.strip_prefix("spotter_event_subscribers_dropped_total "))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

// Catches: results or state changes not streamed, streamed out of order or
// lost, a wrong content type, or the stream missing security headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_and_state_changes_are_streamed_in_order() {
    let h = start_with(|_| {}, relaxed_access()).await;
    let (mut tls, head) = subscribe(&h).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/event-stream"), "{head}");
    assert!(
        lower.contains("x-content-type-options: nosniff")
            && lower.contains("cache-control: no-store"),
        "{head}"
    );
    // Wait for the opening comment, so the subscription exists before publishing.
    let (text, _) = read_until(&mut tls, head, |t| t.contains(": spotter events")).await;
    for i in 1..=100u64 {
        h.state.set_last_result(record(i));
    }
    h.state
        .update_readiness(|r| r.source = Check::passing("frames flowing"));
    let (text, eof) = read_until(&mut tls, text, |t| t.contains("event: readiness")).await;
    assert!(!eof);
    let ts: Vec<u64> = results(&text)
        .iter()
        .map(|r| r["ts_ns"].as_u64().unwrap())
        .collect();
    assert_eq!(ts, (1..=100).collect::<Vec<_>>());
    let ready = text
        .split("event: readiness\ndata: ")
        .nth(1)
        .unwrap()
        .split('\n')
        .next()
        .unwrap();
    let ready: serde_json::Value = serde_json::from_str(ready).unwrap();
    assert_eq!(ready["checks"]["source"]["detail"], "frames flowing");
    // An unchanged readiness is not an event.
    h.state
        .update_readiness(|r| r.source = Check::passing("frames flowing"));
    h.state.set_last_result(record(101));
    let (text, _) = read_until(&mut tls, text, |t| results(t).len() == 101).await;
    assert_eq!(text.matches("event: readiness").count(), 1);
    assert_eq!(dropped_count(&h), 0);
    h.stop().await;
}

// Catches: a subscriber that stops reading being buffered for without bound
// (memory) or holding its connection forever, and one slow subscriber
// delaying or dropping events for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_is_dropped_and_others_keep_up() {
    let h = start_with(|_| {}, relaxed_access()).await;
    let (mut stalled, head) = subscribe(&h).await;
    let (mut reader, head2) = subscribe(&h).await;
    let (mut seen, _) = read_until(&mut reader, head2, |t| t.contains(": spotter events")).await;
    // The stalled one reads its head only, then nothing.
    let _ = head;
    let mut published = 0u64;
    let mut batches = 0;
    while dropped_count(&h) == 0 {
        batches += 1;
        assert!(batches <= 2000, "the stalled subscriber was never dropped");
        for _ in 0..100 {
            published += 1;
            let mut r = record(published);
            r.origin = "x".repeat(2000);
            h.state.set_last_result(r);
        }
        let want = published as usize;
        // Keep only the tail so the text stays small; count as we go.
        let (text, eof) = read_until(&mut reader, seen, |t| results(t).len() >= want).await;
        assert!(!eof, "the reading subscriber was dropped");
        seen = text;
    }
    let ts: Vec<u64> = results(&seen)
        .iter()
        .map(|r| r["ts_ns"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ts,
        (1..=published).collect::<Vec<_>>(),
        "the reader got every event in order"
    );
    assert_eq!(dropped_count(&h), 1);
    // The stalled connection is closed: draining it ends in EOF.
    let mut buf = vec![0u8; 1 << 16];
    let eof = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(eof.is_ok(), "the slow subscriber's connection stayed open");
    h.stop().await;
}

// Catches: unbounded subscribers, a slot not freed when a subscriber leaves,
// and the 503 lacking Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_are_capped() {
    let h = start_with(|o| o.max_event_subscribers = 2, relaxed_access()).await;
    let (a, _) = subscribe(&h).await;
    let (_b, _) = subscribe(&h).await;
    let r = h.get("/api/v1/events").await;
    assert_problem(&r, 503, "too_many_subscribers");
    assert!(r.header("retry-after").is_some());
    drop(a);
    // The slot comes back once the server notices the closed connection.
    let mut tries = 0;
    loop {
        let mut tls = h.raw_tls().await;
        let req = format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\r\n",
            h.read_key
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        let (head, _) = read_until(&mut tls, String::new(), |t| t.contains("\r\n\r\n")).await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        tries += 1;
        assert!(tries < 300, "slot never freed: {head}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.stop().await;
}

// Catches: idle streams without heartbeats (proxies and clients time out),
// and streams that keep shutdown waiting instead of ending cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_then_clean_end_on_shutdown() {
    let h = start_with(
        |o| o.event_heartbeat = Duration::from_millis(200),
        relaxed_access(),
    )
    .await;
    let (mut tls, head) = subscribe(&h).await;
    let (text, _) = read_until(&mut tls, head, |t| t.matches(": heartbeat").count() >= 2).await;
    let reading = tokio::spawn(async move { read_until(&mut tls, text, |_| false).await });
    h.stop().await;
    let (text, eof) = tokio::time::timeout(Duration::from_secs(30), reading)
        .await
        .unwrap()
        .unwrap();
    assert!(eof);
    assert!(
        text.contains(": server shutting down"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    // The chunked body was terminated properly, not cut off.
    assert!(
        text.ends_with("0\r\n\r\n"),
        "{:?}",
        &text[text.len().saturating_sub(100)..]
    );
}

// Catches: uploads beyond the concurrency bound (and an empty wait queue,
// `upload_queue = 0`) queued or run instead of refused with 503 and
// Retry-After, and uploads accepted without a pipeline. The bounded queue
// itself is tested in `api::classify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_beyond_the_bound_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let slot = Arc::new(spotter::pipeline::FrameSlot::new());
    let handle = spotter::api::PipelineHandle {
        slot: slot.clone(),
        control: Arc::new(spotter::pipeline::InferenceControl::default()),
        models: spotter::modelstore::ModelStore::new(dir.path()),
        model: spotter::config::from_sources(vec![]).unwrap().model,
    };
    let h = api_harness::start_piped(
        |o| {
            o.max_concurrent_uploads = 1;
            o.upload_queue = 0;
        },
        relaxed_access(),
        handle,
    )
    .await;
    let photo = std::fs::read(api_harness::testdata().join("images/grace_hopper.bmp")).unwrap();
    // First upload: reaches the (unserved) slot and waits there.
    let mut first = h.raw_tls().await;
    let head = format!(
        "POST /api/v1/classify HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        h.read_key,
        photo.len()
    );
    first.write_all(head.as_bytes()).await.unwrap();
    first.write_all(&photo).await.unwrap();
    let job = tokio::task::spawn_blocking(move || match slot.take(Duration::from_secs(30)) {
        spotter::pipeline::Taken::Job(j) => j,
        other => panic!("expected the upload in the slot, got {other:?}"),
    })
    .await
    .unwrap();
    // Second upload while the first holds the only slot.
    let r = h.call_with_body("POST", "/api/v1/classify", &photo).await;
    assert_problem(&r, 503, "busy");
    assert_eq!(r.header("retry-after"), Some("1"));
    // The pipeline answers the first: no model.
    job.reply
        .send(Err(spotter::pipeline::ClassifyError::NoModel))
        .unwrap();
    let (status, text) = read_response(&mut first).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("model_unavailable"), "{text}");
    h.stop().await;
}
