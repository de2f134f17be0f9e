//! TLS of the HTTPS API: certificate reload while connections are open (what
//! SIGHUP does), and client certificates (mTLS) against a configured CA.

use crate::api_harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use api_harness::{raw_exchange, relaxed_access, start, start_with, Harness};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spotter::api::{ClientAuth, TlsSettings};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A self-signed server certificate for localhost: (cert path, key path).
fn server_pair(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (
        write(dir, &format!("{stem}.crt"), &cert.pem()),
        write(dir, &format!("{stem}.key"), &key.serialize_pem()),
    )
}

/// A client configuration trusting exactly the certificates in `roots`.
fn trusting(
    roots: &[&Path],
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for path in roots {
        let mut r = std::io::BufReader::new(std::fs::File::open(path).unwrap());
        for c in rustls_pemfile::certs(&mut r) {
            store.add(c.unwrap()).unwrap();
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store);
    Arc::new(match client {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
        None => b.with_no_client_auth(),
    })
}

fn fingerprint_of(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    let der = &tls
        .get_ref()
        .1
        .peer_certificates()
        .expect("server sent no certificate")[0];
    spotter::api::tls::fingerprint(der.as_ref())
}

fn get(path: &str, key: Option<&str>) -> String {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n")
}

// Catches: a reload that drops established connections, one that new
// handshakes do not see (the acceptor captured once at bind), or a bad new
// pair replacing a working one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_serves_new_cert_to_new_connections_and_keeps_old_ones() {
    let h = start().await;
    let files = tempfile::tempdir().unwrap();
    let old_cert = h.state_dir.join("tls/cert.pem");
    let (new_cert, new_key) = server_pair(files.path(), "new");
    let both = trusting(&[&old_cert, &new_cert], None);

    let mut old_conn = h.tls_with(both.clone()).await.unwrap();
    assert_eq!(fingerprint_of(&old_conn), h.fingerprint);
    assert_eq!(
        raw_exchange(&mut old_conn, &get("/healthz", None)).await.0,
        200
    );

    let settings = TlsSettings {
        cert: Some(new_cert.clone()),
        key: Some(new_key.clone()),
        ..TlsSettings::default()
    };
    let tls = h.tls.clone();
    let new_fp = tokio::task::spawn_blocking(move || tls.reload(&settings))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new_fp, h.fingerprint);
    assert_eq!(h.tls.fingerprint(), new_fp);

    let mut new_conn = h.tls_with(both.clone()).await.unwrap();
    assert_eq!(fingerprint_of(&new_conn), new_fp);
    assert_eq!(
        raw_exchange(&mut new_conn, &get("/healthz", None)).await.0,
        200
    );
    // The connection made before the reload still serves requests.
    assert_eq!(
        raw_exchange(&mut old_conn, &get("/api/v1/status", Some(&h.read_key)))
            .await
            .0,
        200
    );

    // A certificate with another pair's key is refused; the new cert stays.
    let (other_cert, _) = server_pair(files.path(), "other");
    let bad = TlsSettings {
        cert: Some(other_cert),
        key: Some(new_key.clone()),
        ..TlsSettings::default()
    };
    let tls = h.tls.clone();
    let err = tokio::task::spawn_blocking(move || tls.reload(&bad))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.to_string().contains("other.crt"),
        "the error names the file: {err}"
    );
    // So is a missing file, named in the error.
    let gone = TlsSettings {
        cert: Some(files.path().join("gone.crt")),
        key: Some(new_key),
        ..TlsSettings::default()
    };
    let tls = h.tls.clone();
    let err = tokio::task::spawn_blocking(move || tls.reload(&gone))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("gone.crt"), "{err}");
    assert_eq!(h.tls.fingerprint(), new_fp);
    let mut after = h.tls_with(both).await.unwrap();
    assert_eq!(fingerprint_of(&after), new_fp);
    assert_eq!(
        raw_exchange(&mut after, &get("/healthz", None)).await.0,
        200
    );
    h.stop().await;
}

// Catches: a reload back to the generated pair (cert and key unset)
// regenerating it (clients' pinned fingerprint would change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_without_configured_pair_reuses_the_generated_one() {
    let h = start().await;
    let tls = h.tls.clone();
    let fp = tokio::task::spawn_blocking(move || tls.reload(&TlsSettings::default()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fp, h.fingerprint);
    std::fs::remove_file(h.state_dir.join("tls/cert.pem")).unwrap();
    let tls = h.tls.clone();
    assert!(
        tokio::task::spawn_blocking(move || tls.reload(&TlsSettings::default()))
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        !h.state_dir.join("tls/cert.pem").exists(),
        "a reload must not generate a certificate"
    );
    assert_eq!(h.tls.fingerprint(), h.fingerprint);
    h.stop().await;
}

/// A CA (its PEM file in `dir`) and a client certificate it signed.
struct Ca {
    path: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    Ca {
        path: write(dir, &format!("{name}.pem"), &cert.pem()),
        cert,
        key,
    }
}

fn client_identity(ca: &Ca) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "client");
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// The status of `GET path`, or `None` when the handshake or the exchange
/// fails (with TLS 1.3 a refused client certificate shows as a closed
/// connection after the client's side of the handshake completed).
async fn status_with(
    h: &Harness,
    config: Arc<rustls::ClientConfig>,
    path: &str,
    key: Option<&str>,
) -> Option<u16> {
    let mut tls = h.tls_with(config).await.ok()?;
    use tokio::io::AsyncWriteExt;
    tls.write_all(get(path, key).as_bytes()).await.ok()?;
    tls.flush().await.ok()?;
    let (status, _) = api_harness::read_response(&mut tls).await;
    (status != 0).then_some(status)
}

// Catches: client_ca configured but not enforced (handshakes without a
// certificate, or with one from another CA, accepted), or mTLS replacing the
// API key instead of adding to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_client_certificate_is_enforced_in_addition_to_the_key() {
    let files = tempfile::tempdir().unwrap();
    let ca_ok = ca(files.path(), "client-ca");
    let ca_other = ca(files.path(), "other-ca");
    let ca_path = ca_ok.path.clone();
    let h = start_with(move |o| o.client_ca = Some(ca_path), relaxed_access()).await;
    let server_cert = h.state_dir.join("tls/cert.pem");

    let none = trusting(&[&server_cert], None);
    assert_eq!(
        status_with(&h, none, "/healthz", None).await,
        None,
        "no client certificate must fail"
    );
    let foreign = trusting(&[&server_cert], Some(client_identity(&ca_other)));
    assert_eq!(
        status_with(&h, foreign, "/healthz", None).await,
        None,
        "a certificate from another CA must fail"
    );

    let mine = trusting(&[&server_cert], Some(client_identity(&ca_ok)));
    assert_eq!(
        status_with(&h, mine.clone(), "/api/v1/status", Some(&h.read_key)).await,
        Some(200)
    );
    // The bearer key is still required.
    assert_eq!(
        status_with(&h, mine, "/api/v1/status", None).await,
        Some(401)
    );
    h.stop().await;
}

// Catches: `client_auth = "optional"` refusing clients without a certificate,
// or accepting a certificate that does not verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_client_certificate_must_still_verify_when_sent() {
    let files = tempfile::tempdir().unwrap();
    let ca_ok = ca(files.path(), "client-ca");
    let ca_other = ca(files.path(), "other-ca");
    let ca_path = ca_ok.path.clone();
    let h = start_with(
        move |o| {
            o.client_ca = Some(ca_path);
            o.client_auth = ClientAuth::Optional;
        },
        relaxed_access(),
    )
    .await;
    let server_cert = h.state_dir.join("tls/cert.pem");
    let none = trusting(&[&server_cert], None);
    assert_eq!(
        status_with(&h, none, "/api/v1/status", Some(&h.read_key)).await,
        Some(200)
    );
    let mine = trusting(&[&server_cert], Some(client_identity(&ca_ok)));
    assert_eq!(
        status_with(&h, mine, "/api/v1/status", Some(&h.read_key)).await,
        Some(200)
    );
    let foreign = trusting(&[&server_cert], Some(client_identity(&ca_other)));
    assert_eq!(status_with(&h, foreign, "/healthz", None).await, None);
    h.stop().await;
}

// Catches: an unusable client CA file accepted at start (serving without
// the mTLS the operator asked for), or an error that does not name the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_ca_is_refused_naming_the_file() {
    let files = tempfile::tempdir().unwrap();
    let not_pem = write(files.path(), "not-a-ca.pem", "hello\n");
    let state = Arc::new(spotter::state::AppState::new());
    let store = Arc::new(spotter::store::Store::open(&files.path().join("store")).unwrap());
    for ca in [not_pem, files.path().join("missing-ca.pem")] {
        let mut o = spotter::api::ApiOptions::new(
            "127.0.0.1:0".parse().unwrap(),
            files.path().join("state"),
        );
        o.client_ca = Some(ca.clone());
        let err = spotter::api::Server::bind(o, state.clone(), store.clone())
            .await
            .unwrap_err()
            .to_string();
        let name = ca.file_name().unwrap().to_str().unwrap();
        assert!(err.contains(name), "{err}");
    }
}
