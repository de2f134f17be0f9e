//! Tests of the `http_mjpeg` source: the multipart reader on byte streams
//! (fed in small pieces, so every buffer edge is crossed), and the source
//! against a local server in the test, over HTTP and HTTPS.

use super::*;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;

/// A small real JPEG, different per `seed`.
fn jpeg(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 24, |x, y| {
        image::Rgb([(x * 8) as u8, (y * 10) as u8, seed])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new(&mut out)
        .encode_image(&img)
        .unwrap();
    out
}

/// A reader handing out at most `n` bytes per read.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    n: usize,
}

impl Read for Trickle {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let k = self.n.min(out.len()).min(self.data.len() - self.at);
        out[..k].copy_from_slice(&self.data[self.at..self.at + k]);
        self.at += k;
        Ok(k)
    }
}

fn reader(data: Vec<u8>, boundary: &str, max: usize, n: usize) -> PartReader<Trickle> {
    PartReader::new(Trickle { data, at: 0, n }, boundary, max)
}

/// One part as a server writes it.
fn part(boundary_line: &str, eol: &str, body: &[u8], with_length: bool) -> Vec<u8> {
    let mut p = format!("{boundary_line}{eol}Content-Type: image/jpeg{eol}").into_bytes();
    if with_length {
        p.extend_from_slice(format!("Content-Length: {}{eol}", body.len()).as_bytes());
    }
    p.extend_from_slice(eol.as_bytes());
    p.extend_from_slice(body);
    p.extend_from_slice(eol.as_bytes());
    p
}

/// Catches: a boundary parameter kept with its quotes, or found in a
/// non-multipart type (a snapshot URL taken for a stream).
#[test]
fn boundary_from_content_type() {
    let b = |s| boundary_of(s);
    assert_eq!(
        b("multipart/x-mixed-replace; boundary=frame").as_deref(),
        Some("frame")
    );
    assert_eq!(
        b("multipart/x-mixed-replace;boundary=\"--my boundary\"").as_deref(),
        Some("--my boundary")
    );
    assert_eq!(
        b("Multipart/X-Mixed-Replace; charset=x; BOUNDARY=a;b=c").as_deref(),
        Some("a")
    );
    assert_eq!(b("image/jpeg"), None);
    assert_eq!(b("text/html; boundary=x"), None);
    assert_eq!(b("multipart/x-mixed-replace"), None);
}

/// Catches: bodies cut or extended at a boundary split across reads, CR left
/// on a body, parts without Content-Length read wrongly, garbage or a
/// preamble between parts taken for a part, a boundary line without its
/// leading `--` (ESP32-CAM style) or declared with it not recognised.
#[test]
fn parts_with_every_framing_variation() {
    let frames: Vec<Vec<u8>> = (0..6).map(jpeg).collect();
    for (declared, line) in [
        ("frame", "--frame"),
        ("--frame", "--frame"),
        ("frame", "frame"),
    ] {
        for eol in ["\r\n", "\n"] {
            let mut s = b"preamble text\r\n".to_vec();
            for (i, f) in frames.iter().enumerate() {
                if i == 3 {
                    s.extend_from_slice(b"\x00\x01 garbage between parts \xff\r\n\r\n");
                }
                s.extend(part(line, eol, f, i % 2 == 0));
            }
            s.extend_from_slice(format!("{line}--{eol}").as_bytes());
            for n in [1, 7, 4096, 1 << 20] {
                let mut r = reader(s.clone(), declared, 1 << 20, n);
                for (i, f) in frames.iter().enumerate() {
                    let p = r.next_part().unwrap_or_else(|e| {
                        panic!("{declared}/{line:?}/{eol:?}/{n}: part {i}: {e}")
                    });
                    assert_eq!(p, Part::Body(f.clone()), "{declared}/{eol:?}/{n}: part {i}");
                }
                assert!(matches!(r.next_part(), Err(PartError::Ended(_))));
            }
        }
    }
}

/// Catches: a part right after its boundary line with no headers at all
/// (some firmwares) having its first JPEG bytes eaten as a header line.
#[test]
fn part_without_headers() {
    let f = jpeg(9);
    let mut s = b"--b\r\n".to_vec();
    s.extend_from_slice(&f);
    s.extend_from_slice(b"\r\n--b\r\n\r\n");
    s.extend_from_slice(&f);
    s.extend_from_slice(b"\r\n--b--\r\n");
    let mut r = reader(s, "b", 1 << 20, 5);
    assert_eq!(r.next_part().unwrap(), Part::Body(f.clone()));
    assert_eq!(r.next_part().unwrap(), Part::Body(f));
    assert!(matches!(r.next_part(), Err(PartError::Ended(_))));
}

/// Catches: an oversized part buffered whole before being refused (memory
/// on a 1 GB board), or the stream losing its place after skipping one, with
/// and without Content-Length.
#[test]
fn oversized_part_is_skipped_without_buffering_it() {
    let max = 100_000;
    let small = jpeg(1);
    let mut big = jpeg(2);
    // Past what the buffers may hold (checked below), within the 4 × max
    // a part without Content-Length may run before the stream is dropped.
    big.resize(390_000, 0x55);
    for with_length in [true, false] {
        let mut s = part("--b", "\r\n", &big, with_length);
        s.extend(part("--b", "\r\n", &small, with_length));
        s.extend_from_slice(b"--b--\r\n");
        let mut r = reader(s, "b", max, 4096);
        let p = r.next_part().unwrap();
        assert!(
            matches!(p, Part::Oversized(n) if n >= big.len() as u64),
            "with_length {with_length}: {p:?}"
        );
        assert!(
            r.buf.capacity() <= max + 3 * READ_CHUNK,
            "with_length {with_length}: buffer grew to {}",
            r.buf.capacity()
        );
        assert_eq!(r.next_part().unwrap(), Part::Body(small.clone()));
    }
}

/// Catches: a stream cut inside a part returned as a short frame instead
/// of an error; endless part headers or a stream without boundaries read
/// without bound.
#[test]
fn truncated_and_malformed_streams_are_errors() {
    let f = jpeg(3);
    let mut s = part("--b", "\r\n", &f, true);
    s.truncate(s.len() - f.len() / 2);
    let mut r = reader(s, "b", 1 << 20, 100);
    assert!(matches!(r.next_part(), Err(PartError::Ended(_))));

    let mut s = part("--b", "\n", &f, false);
    s.truncate(s.len() - 10);
    let mut r = reader(s, "b", 1 << 20, 100);
    assert!(matches!(r.next_part(), Err(PartError::Ended(_))));

    let mut s = b"--b\r\n".to_vec();
    s.extend(std::iter::repeat_n(b"X-Pad: y\r\n".to_vec(), 5000).flatten());
    let mut r = reader(s, "b", 1 << 20, 4096);
    assert!(matches!(r.next_part(), Err(PartError::Protocol(_))));

    let s = vec![b'z'; 200_000];
    let mut r = reader(s, "b", 50_000, 4096);
    assert!(matches!(r.next_part(), Err(PartError::Protocol(_))));
}

// --- The source against a local server ---

const USER: &str = "cam-user";
const PASS: &str = "pa:ss-W0rd";

/// What one connection of the test server does after reading the request.
type Script = Box<dyn Fn(usize, &str, &mut dyn Write) -> io::Result<()> + Send>;

/// Serve connections on a loopback port (TLS when `tls` is set), one at a
/// time, each with `script(connection index, request head, stream)`. (The
/// thread stays blocked in `accept` until the test process exits.)
fn serve(tls: Option<Arc<rustls::ServerConfig>>, script: Script) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for i in 0.. {
            let Ok((tcp, _)) = l.accept() else { return };
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let res = match &tls {
                Some(cfg) => {
                    let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                    let mut s = rustls::StreamOwned::new(conn, tcp);
                    handle(i, &mut s, &script)
                }
                None => {
                    let mut s: TcpStream = tcp;
                    handle(i, &mut s, &script)
                }
            };
            drop(res);
        }
    });
    port
}

fn handle<S: Read + Write>(i: usize, s: &mut S, script: &Script) -> io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    script(i, &String::from_utf8_lossy(&head), s)?;
    s.flush()
}

fn authorized(head: &str) -> bool {
    use base64::Engine as _;
    let want = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"));
    head.lines()
        .any(|l| l.eq_ignore_ascii_case(&format!("authorization: basic {want}")))
}

/// A stream of `frames` behind Basic auth; `cut` truncates the last part.
fn stream_script(frames: Vec<Vec<u8>>, cut: bool) -> Script {
    Box::new(move |_, head, w| {
        if !authorized(head) {
            w.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\nContent-Length: 0\r\n\r\n",
            )?;
            return Ok(());
        }
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=\"spotterframe\"\r\nConnection: close\r\n\r\n")?;
        for (i, f) in frames.iter().enumerate() {
            let mut p = part("--spotterframe", "\r\n", f, i % 2 == 0);
            if cut && i == frames.len() - 1 {
                p.truncate(p.len() - f.len() / 2);
            }
            w.write_all(&p)?;
            w.flush()?;
        }
        if !cut {
            w.write_all(b"--spotterframe--\r\n")?;
        }
        Ok(())
    })
}

fn creds_file(dir: &Path, mode: u32) -> PathBuf {
    let p = dir.join("camera.credentials");
    std::fs::write(&p, format!("{USER}:{PASS}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn opts(url: String, creds: Option<PathBuf>, ca: Option<PathBuf>) -> HttpMjpegOptions {
    HttpMjpegOptions {
        url,
        credentials_file: creds,
        ca_file: ca,
        max_frame_bytes: 64 * 1024,
        timeout: Duration::from_secs(5),
    }
}

/// Catches: frames altered or reordered on the way, Basic credentials not
/// sent (or sent wrongly: the password holds a `:`), a cut connection
/// returned as a frame rather than an error, or a reopen that does not
/// stream again.
#[test]
fn streams_frames_over_http_with_basic_auth_and_reconnects_after_a_cut() {
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path(), 0o600);
    let frames: Vec<Vec<u8>> = (0..4).map(jpeg).collect();
    let port = serve(None, stream_script(frames.clone(), true));
    let o = opts(format!("http://127.0.0.1:{port}/stream"), Some(creds), None);
    for _ in 0..2 {
        let mut src = HttpMjpegSource::open(o.clone()).unwrap();
        for (i, f) in frames[..3].iter().enumerate() {
            let got = src.next_frame().unwrap();
            assert_eq!(&got.data, f, "frame {i}");
            assert_eq!(got.seq, i as u64);
        }
        let e = src.next_frame().unwrap_err();
        assert!(
            matches!(e, CaptureError::Http { .. }),
            "cut part must be an error: {e}"
        );
    }
}

/// Catches: a wrong password looping silently or yielding frames, an error
/// that does not name the URL or that leaks the password.
#[test]
fn wrong_password_is_a_clear_error_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("wrong");
    std::fs::write(&creds, "cam-user:not-the-password\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = serve(None, stream_script(vec![jpeg(0)], false));
    let url = format!("http://127.0.0.1:{port}/stream");
    let Err(e) = HttpMjpegSource::open(opts(url.clone(), Some(creds), None)) else {
        panic!("a wrong password must not open the stream")
    };
    let msg = e.to_string();
    assert!(
        matches!(e, CaptureError::HttpAuth { status: 401, .. }),
        "{msg}"
    );
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains("source.credentials_file"), "{msg}");
    assert!(!msg.contains("not-the-password"), "{msg}");
    // Without credentials the error says to configure them.
    let Err(e) = HttpMjpegSource::open(opts(url, None, None)) else {
        panic!("no credentials must not open the stream")
    };
    assert!(e.to_string().contains("set source.credentials_file"), "{e}");
}

/// Catches: a credentials file other users can read being used anyway
/// (the existing rule for secrets), or its error naming no key or path.
#[test]
fn credentials_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path(), 0o644);
    let e = read_credentials(&creds).unwrap_err().to_string();
    assert!(e.contains("source.credentials_file"), "{e}");
    assert!(e.contains(&creds.display().to_string()), "{e}");
    assert!(e.contains("644"), "{e}");
    assert!(!e.contains(PASS), "{e}");
    let creds = creds_file(dir.path(), 0o600);
    let c = read_credentials(&creds).unwrap();
    assert_eq!((c.user.as_str(), c.password.as_str()), (USER, PASS));
}

/// Catches: an oversized frame ending the stream (or being delivered), and
/// non-image parts delivered as frames.
#[test]
fn oversized_and_non_image_parts_are_dropped_and_streaming_goes_on() {
    let mut big = jpeg(5);
    big.resize(200 * 1024, 0);
    let frames = vec![big, b"<html>not an image</html>".to_vec(), jpeg(6), jpeg(7)];
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path(), 0o600);
    let port = serve(None, stream_script(frames.clone(), false));
    let mut src =
        HttpMjpegSource::open(opts(format!("http://127.0.0.1:{port}/"), Some(creds), None))
            .unwrap();
    assert_eq!(src.next_frame().unwrap().data, frames[2]);
    assert_eq!(src.next_frame().unwrap().data, frames[3]);
    assert_eq!((src.oversized, src.not_image), (1, 1));
}

/// Catches: a snapshot or HTML URL accepted as a stream (it would reconnect
/// for every single picture), without saying what the URL serves.
#[test]
fn non_multipart_response_is_refused_saying_what_it_is() {
    let script: Script = Box::new(|_, _, w| {
        w.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\r\n\xff\xd8\xff\xd9")
    });
    let port = serve(None, script);
    let Err(e) = HttpMjpegSource::open(opts(
        format!("http://127.0.0.1:{port}/snap.jpg"),
        None,
        None,
    )) else {
        panic!("a snapshot URL must be refused")
    };
    let msg = e.to_string();
    assert!(
        msg.contains("image/jpeg") && msg.contains("multipart"),
        "{msg}"
    );
}

/// A self-signed CA and a server certificate for 127.0.0.1 signed by it;
/// returns the server config and the CA's PEM.
pub(crate) fn test_tls() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "camera CA");
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

/// Catches: `source.ca_file` not used for the camera's self-signed
/// certificate, or a certificate from another CA accepted.
#[test]
fn streams_over_https_trusting_the_configured_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path(), 0o600);
    let (cfg, ca_pem) = test_tls();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let (_, other_pem) = test_tls();
    let other = dir.path().join("other.pem");
    std::fs::write(&other, other_pem).unwrap();
    let frames: Vec<Vec<u8>> = (10..13).map(jpeg).collect();
    let port = serve(Some(cfg), stream_script(frames.clone(), false));
    let url = format!("https://127.0.0.1:{port}/stream");

    let Err(e) = HttpMjpegSource::open(opts(url.clone(), Some(creds.clone()), Some(other))) else {
        panic!("a certificate from another CA must be refused")
    };
    assert!(e.to_string().contains("source.ca_file"), "{e}");
    assert!(!e.to_string().contains(PASS), "{e}");

    let mut src = HttpMjpegSource::open(opts(url, Some(creds), Some(ca))).unwrap();
    for f in &frames {
        assert_eq!(&src.next_frame().unwrap().data, f);
    }
}

/// A stream behind Digest (MD5, qop=auth) that checks the answer with its
/// own computation of RFC 7616's formula.
fn digest_script(frames: Vec<Vec<u8>>) -> Script {
    use sha2::Digest as _;
    let md5 = |s: String| hex::encode(md5::Md5::digest(s.as_bytes()));
    Box::new(move |_, head, w| {
        let line = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("authorization: digest "));
        let field = |l: &str, k: &str| {
            let at = l.find(&format!("{k}="))? + k.len() + 1;
            let v = &l[at..];
            Some(match v.strip_prefix('"') {
                Some(q) => q[..q.find('"')?].to_string(),
                None => v.split([',', ' ']).next()?.to_string(),
            })
        };
        let ok = line.is_some_and(|l| {
            let (Some(nc), Some(cnonce), Some(resp), Some(uri)) = (
                field(l, "nc"),
                field(l, "cnonce"),
                field(l, "response"),
                field(l, "uri"),
            ) else {
                return false;
            };
            let ha1 = md5(format!("{USER}:cam realm:{PASS}"));
            let ha2 = md5(format!("GET:{uri}"));
            uri == "/live?ch=1"
                && resp == md5(format!("{ha1}:n0nce-42:{nc}:{cnonce}:auth:{ha2}"))
                && field(l, "opaque").as_deref() == Some("op4que")
        });
        if !ok {
            w.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam realm\"\r\nWWW-Authenticate: Digest realm=\"cam realm\", qop=\"auth\", nonce=\"n0nce-42\", opaque=\"op4que\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n")?;
            return Ok(());
        }
        w.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=d\r\n\r\n",
        )?;
        for f in &frames {
            w.write_all(&part("--d", "\r\n", f, true))?;
        }
        w.write_all(b"--d--\r\n")
    })
}

/// Catches: a camera that requires Digest (common on IP cameras) refused,
/// a wrong Digest answer (wrong uri, nonce, opaque or formula), or Basic
/// (the password in clear) preferred when the camera offers Digest too.
#[test]
fn digest_camera_streams_with_the_right_answer() {
    let dir = tempfile::tempdir().unwrap();
    let creds = creds_file(dir.path(), 0o600);
    let frames: Vec<Vec<u8>> = (20..22).map(jpeg).collect();
    let port = serve(None, digest_script(frames.clone()));
    let mut src = HttpMjpegSource::open(opts(
        format!("http://127.0.0.1:{port}/live?ch=1"),
        Some(creds),
        None,
    ))
    .unwrap();
    for f in &frames {
        assert_eq!(&src.next_frame().unwrap().data, f);
    }
}

/// Catches: a camera login passed in the query (`?user=admin&pwd=…`, as
/// some cameras take it) shown in logs, errors, status and results.
#[test]
fn secrets_in_the_query_are_not_shown() {
    assert_eq!(
        shown_url("http://cam/videostream.cgi?user=admin&pwd=s3cret&rate=0"),
        "http://cam/videostream.cgi?user=admin&pwd=***&rate=0"
    );
    assert_eq!(
        shown_url("https://cam/s?access_token=abc&x#f"),
        "https://cam/s?access_token=***&x#f"
    );
    assert_eq!(shown_url("http://cam:81/stream"), "http://cam:81/stream");
    let script: Script =
        Box::new(|_, _, w| w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"));
    let port = serve(None, script);
    let Err(e) = HttpMjpegSource::open(opts(
        format!("http://127.0.0.1:{port}/v.cgi?user=a&pwd=s3cret"),
        None,
        None,
    )) else {
        panic!("a 404 must not open")
    };
    let msg = e.to_string();
    assert!(msg.contains("404") && msg.contains("pwd=***"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");
}
