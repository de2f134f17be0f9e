//! The daemon on an `http_mjpeg` source (issue 19): a camera served by the
//! test over HTTPS (its certificate from a CA made here with rcgen and
//! configured as `source.ca_file`, Basic credentials in a 0600 file), which
//! streams a photo re-encoded as JPEG and cuts its first connection in the
//! middle of a frame.

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{photo_dir, reference_clear_top1, testdata, Daemon};

const MODEL: &str = "mobilenet_v2_1.0_224_quant";
const USER: &str = "viewer";
const PASS: &str = "Cam:Secret-77";

/// A CA (PEM) and a rustls server config for 127.0.0.1 signed by it.
fn tls() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "test camera CA");
    let ca = p.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let der_key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], der_key)
    .unwrap();
    (Arc::new(cfg), ca.pem())
}

/// The test camera: serves `frame` as an MJPEG stream at about 10 fps to
/// clients with the right Basic credentials (asked for with a 401 first);
/// the first stream is cut in the middle of its 10th frame. Stops when dropped.
struct Camera {
    port: u16,
    stop: Arc<AtomicBool>,
    /// Streams served (requests with the right credentials).
    streams: Arc<AtomicUsize>,
}

impl Camera {
    fn start(cfg: Arc<rustls::ServerConfig>, frame: Vec<u8>) -> Camera {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(AtomicUsize::new(0));
        let (s, n) = (stop.clone(), streams.clone());
        let frame = Arc::new(frame);
        std::thread::spawn(move || {
            for tcp in l.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(tcp) = tcp else { continue };
                let (cfg, s, n, frame) = (cfg.clone(), s.clone(), n.clone(), frame.clone());
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    let mut st = rustls::StreamOwned::new(conn, tcp);
                    let _ = stream(&mut st, &n, &s, &frame);
                });
            }
        });
        Camera {
            port,
            stop,
            streams,
        }
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn stream(
    s: &mut (impl Read + Write),
    streams: &AtomicUsize,
    stop: &AtomicBool,
    frame: &[u8],
) -> std::io::Result<()> {
    use base64::Engine as _;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let want = format!(
        "authorization: basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    );
    if !String::from_utf8_lossy(&head)
        .lines()
        .any(|l| l.eq_ignore_ascii_case(&want))
    {
        s.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n")?;
        return s.flush();
    }
    let cut = streams.fetch_add(1, Ordering::Relaxed) == 0;
    s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=camframe\r\nCache-Control: no-cache\r\n\r\n")?;
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut part = format!(
            "--camframe\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            frame.len()
        )
        .into_bytes();
        part.extend_from_slice(frame);
        part.extend_from_slice(b"\r\n");
        if cut && i == 9 {
            s.write_all(&part[..part.len() / 2])?;
            s.flush()?;
            return Ok(()); // the connection drops mid-frame
        }
        s.write_all(&part)?;
        s.flush()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// A photo with a clear reference top-1, as JPEG, and that label.
fn clear_photo_as_jpeg(dir: &Path) -> (Vec<u8>, String) {
    let (photos, names) = photo_dir(dir);
    for name in names {
        if let Some(label) = reference_clear_top1(MODEL, &name) {
            let img = image::open(photos.join(&name)).unwrap().to_rgb8();
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
                .encode_image(&img)
                .unwrap();
            return (out, label);
        }
    }
    panic!(
        "no photo in {} has a clear reference result for {MODEL}; the test would prove nothing",
        testdata().display()
    );
}

fn write_private(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

// Would catch an http_mjpeg source that does not reach results (config,
// opener, TLS with the configured CA or Basic credentials broken), frames
// altered on the way (wrong label on a clear photo), a cut connection that
// is not reconnected, or the password written to the log.
#[test]
fn frames_from_an_https_mjpeg_camera_reach_results_and_survive_a_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let (frame, label) = clear_photo_as_jpeg(tmp.path());
    let (cfg, ca_pem) = tls();
    let ca = tmp.path().join("camera-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let creds = write_private(
        &tmp.path().join("camera.credentials"),
        &format!("{USER}:{PASS}\n"),
    );
    let cam = Camera::start(cfg, frame);
    let url = format!("https://127.0.0.1:{}/stream.mjpg", cam.port);
    let config = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"http_mjpeg\"\nurl = \"{url}\"\ncredentials_file = \"{}\"\n\
         ca_file = \"{}\"\nretry_initial_ms = 100\nretry_max_ms = 500\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nruntime = \"auto\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n",
        creds.display(),
        ca.display(),
        testdata()
            .join(format!("models/classification/{MODEL}.tflite"))
            .display(),
        testdata()
            .join("labels/labels_mobilenet_quant_v1_224.txt")
            .display(),
    );
    let mut d = Daemon::start(tmp.path(), &config);
    let c = d.client();
    c.wait_for("/readyz", 120, |r| r.status == 200);
    let latest = c.wait_for("/api/v1/results/latest", 60, |r| r.status == 200);
    let r = latest.json();
    assert_eq!(
        r["source"].as_str().unwrap_or(""),
        format!("http_mjpeg:{url}"),
        "{r}"
    );
    assert_eq!(r["classes"][0]["label"], label.as_str(), "{r}");

    // The first connection was cut mid-frame after 9 frames: the source
    // reconnects and results keep coming, more than the first connection
    // could have produced.
    let all = c.wait_for("/api/v1/results?limit=1000", 90, |r| {
        r.status == 200
            && r.json()["results"]
                .as_array()
                .is_some_and(|a| a.len() >= 15)
    });
    assert!(cam.streams.load(Ordering::Relaxed) >= 2);
    for r in all.json()["results"].as_array().unwrap() {
        assert_eq!(r["classes"][0]["label"], label.as_str(), "{r}");
    }
    c.wait_for("/readyz", 30, |r| r.status == 200);
    let log = d.log();
    assert!(
        log.contains("source default lost"),
        "no loss logged for the cut:\n{log}"
    );
    assert!(!log.contains(PASS), "the log holds the camera password");
    assert!(d.terminate().0.success());
}
