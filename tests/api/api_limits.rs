//! Connection-level limits of the HTTPS API over real sockets: slowloris
//! clients are cut off by the header read timeout while others are served,
//! and a flood of connections beyond `max_connections` leaves the server
//! responsive. Only "eventually, within a generous bound" is asserted.

use crate::api_harness;

use std::time::{Duration, Instant};

use api_harness::{relaxed_access, start_with, Auth, Harness};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound for anything that must happen "eventually" (never a measurement).
const GENEROUS: Duration = Duration::from_secs(60);

/// Retry `GET /healthz` until it answers; `Some(status)` if one did in time.
async fn served_within(h: &Harness, bound: Duration) -> Option<u16> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Ok(r) = h.try_call("GET", "/healthz", Auth::None).await {
            return Some(r.status);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

// Catches: no header read timeout (a slowloris client holds its connection,
// and its slot, forever), or a slow client blocking others from being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_client_is_closed_while_others_are_served() {
    let h = start_with(
        |o| {
            o.header_read_timeout = Duration::from_secs(2);
            o.keep_alive_idle = Duration::from_secs(120);
        },
        relaxed_access(),
    )
    .await;
    // About 100 bytes at one per second: the request would complete only
    // after ~100 s, beyond the bound below, if nothing cut it off.
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(60)
    );
    let tls = h.raw_tls().await;
    let slow = tokio::spawn(async move {
        let (mut rd, mut wr) = tokio::io::split(tls);
        let mut sent = 0usize;
        let writer = async {
            for b in request.as_bytes() {
                if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Everything sent: wait for the answer below.
            std::future::pending::<()>().await;
        };
        let mut answer = Vec::new();
        tokio::select! {
            _ = writer => unreachable!("the writer never returns"),
            _ = rd.read_to_end(&mut answer) => {}
        }
        (sent, answer)
    });
    // While the slow client dribbles, others are served.
    for _ in 0..3 {
        assert_eq!(h.get("/healthz").await.status, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (sent, answer) = tokio::time::timeout(GENEROUS, slow)
        .await
        .expect("the slowloris connection was not closed within the bound")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        !answer.contains(" 200 "),
        "the slow request was served: {answer}"
    );
    assert!(
        sent < 100,
        "closed only after the whole request was sent ({sent} bytes)"
    );
    assert_eq!(h.get("/healthz").await.status, 200);
    h.stop().await;
}

// Catches: a flood of connections exhausting the server (unbounded
// connections, or slots never freed so it stays unavailable afterwards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_twice_the_connection_limit_leaves_the_server_responsive() {
    let max = 4;
    let h = start_with(
        |o| {
            o.max_connections = max;
            o.header_read_timeout = Duration::from_secs(3);
        },
        relaxed_access(),
    )
    .await;
    // 2× the limit of connections that never start a handshake.
    let mut flood = Vec::new();
    for _ in 0..2 * max {
        flood.push(tokio::net::TcpStream::connect(h.addr).await.unwrap());
    }
    // A normal client gets served within the bound (retrying as a client
    // would while the server sheds the flood).
    assert_eq!(
        served_within(&h, GENEROUS).await,
        Some(200),
        "not served during the flood"
    );
    // The server closes every flood connection: none is held forever.
    for (i, conn) in flood.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(GENEROUS, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("flood connection {i} got {n} bytes"),
            Err(_) => panic!("flood connection {i} still open after {GENEROUS:?}"),
        }
    }
    drop(flood);
    // Recovered: several sequential clients are served.
    for _ in 0..2 * max {
        assert_eq!(
            served_within(&h, GENEROUS).await,
            Some(200),
            "not served after the flood"
        );
    }
    let v = h.get("/api/v1/status").await;
    assert_eq!(v.status, 200);
    h.stop().await;
}

// hyper's own answers to unparsable requests (400, 414, 431) are replaced by
// problem+json bodies with the security headers: see
// dos_conn::hyper_level_errors_are_problem_json.
