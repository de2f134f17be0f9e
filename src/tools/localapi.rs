//! The CLI's client for the daemon running on this machine, over its own
//! HTTPS API. `spotter export` uses it when sled's directory lock shows the
//! daemon holds the store: it streams `GET /api/v1/backup` instead.
//!
//! It trusts exactly the certificate the daemon serves, read from the same
//! file the daemon loads (`[api] cert`, else the generated
//! `<state_dir>/tls/cert.pem`), so it needs neither a CA nor a matching host
//! name, and a different certificate on the port is refused. It connects to
//! `[api] listen` (loopback when that is a wildcard address) and sends an
//! admin key from, in order: `--key-file`, `$SPOTTER_API_KEY`, or
//! `<state_dir>/initial-admin-key`. The key is never printed.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::Settings;

/// The environment variable holding an API key for the CLI.
pub const KEY_ENV: &str = "SPOTTER_API_KEY";
/// Connecting and each read give up after this long.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub(crate) enum LocalApiError {
    #[error(
        "no API key for the running daemon: pass --key-file, set {KEY_ENV}, or run as a user \
         who can read {initial} (create an admin key with `spotter keys create --scope admin`)"
    )]
    NoKey { initial: PathBuf },
    #[error("reading the API key from {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the daemon's certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("TLS client setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot reach the daemon's API at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the daemon's API refused {url}: HTTP {status}: {detail}")]
    Refused {
        url: String,
        status: u16,
        detail: String,
    },
}

/// A client for the local daemon's API.
pub(crate) struct LocalApi {
    agent: ureq::Agent,
    base: String,
    key: String,
}

impl LocalApi {
    /// Set up from the daemon's settings and an optional key file.
    pub(crate) fn new(
        settings: &Settings,
        key_file: Option<&Path>,
    ) -> Result<LocalApi, LocalApiError> {
        let key = find_key(settings, key_file, std::env::var(KEY_ENV).ok())?;
        let cert_path = settings.api.cert.clone().unwrap_or_else(|| {
            settings
                .daemon
                .state_dir
                .join(crate::api::tls::TLS_DIR)
                .join(crate::api::tls::CERT_FILE)
        });
        let config = client_config(&cert_path)?;
        let agent = ureq::AgentBuilder::new()
            .tls_config(Arc::new(config))
            .timeout_connect(TIMEOUT)
            .timeout_read(TIMEOUT)
            .build();
        Ok(LocalApi {
            agent,
            base: format!("https://{}", connect_addr(settings.api.listen)),
            key,
        })
    }

    /// `GET path` with the key; the body as a reader (streamed).
    pub(crate) fn get(
        &self,
        path_and_query: &str,
    ) -> Result<Box<dyn Read + Send + Sync + 'static>, LocalApiError> {
        let url = format!("{}{}", self.base, path_and_query);
        match self
            .agent
            .get(&url)
            .set("Authorization", &format!("Bearer {}", self.key))
            .call()
        {
            Ok(r) => Ok(r.into_reader()),
            Err(ureq::Error::Status(status, r)) => {
                let body = r.into_string().unwrap_or_default();
                let detail = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|p| p["detail"].as_str().map(str::to_string))
                    .unwrap_or(body);
                Err(LocalApiError::Refused {
                    url,
                    status,
                    detail,
                })
            }
            Err(e) => Err(LocalApiError::Connect {
                url,
                reason: e.to_string(),
            }),
        }
    }
}

/// Where to connect for a listen address: a wildcard means loopback.
fn connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

fn find_key(
    settings: &Settings,
    key_file: Option<&Path>,
    env: Option<String>,
) -> Result<String, LocalApiError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .map_err(|source| LocalApiError::KeyFile {
                path: path.to_path_buf(),
                source,
            })
    };
    if let Some(path) = key_file {
        return read(path);
    }
    if let Some(k) = env.map(|k| k.trim().to_string()).filter(|k| !k.is_empty()) {
        return Ok(k);
    }
    let initial = settings
        .daemon
        .state_dir
        .join(crate::keys::INITIAL_ADMIN_KEY_FILE);
    match read(&initial) {
        Ok(k) if !k.is_empty() => Ok(k),
        _ => Err(LocalApiError::NoKey { initial }),
    }
}

/// A rustls client configuration that accepts exactly the leaf certificate
/// in `cert_path` (its signatures still verified).
fn client_config(cert_path: &Path) -> Result<rustls::ClientConfig, LocalApiError> {
    let cert_err = |reason: String| LocalApiError::Cert {
        path: cert_path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(cert_path).map_err(|e| cert_err(e.to_string()))?;
    let leaf = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .ok_or_else(|| cert_err("no certificate in the file".into()))?
        .map_err(|e| cert_err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        leaf,
        path: cert_path.to_path_buf(),
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Accepts one certificate, byte for byte.
#[derive(Debug)]
struct Pinned {
    leaf: CertificateDer<'static>,
    path: PathBuf,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate is not the one in {} (another service on this port, or a certificate changed without a reload?)",
                self.path.display()
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(state_dir: &Path) -> Settings {
        crate::config::from_sources(vec![(
            PathBuf::from("/etc/spotter/spotter.toml"),
            format!(
                "[daemon]\nstate_dir = \"{}\"\n[api]\nlisten = \"0.0.0.0:9443\"\n",
                state_dir.display()
            ),
        )])
        .unwrap()
    }

    // Would catch the key sources taken in the wrong order (the initial key
    // overriding one the operator chose), a blank variable counting as a
    // key, or a missing key reported without saying where to get one.
    #[test]
    fn key_comes_from_the_file_then_the_environment_then_the_initial_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let initial = dir.path().join(crate::keys::INITIAL_ADMIN_KEY_FILE);
        let err = find_key(&s, None, Some("  ".into())).unwrap_err();
        assert!(
            err.to_string().contains(&initial.display().to_string())
                && err.to_string().contains("--key-file"),
            "{err}"
        );
        std::fs::write(&initial, "spk_initial\n").unwrap();
        assert_eq!(find_key(&s, None, None).unwrap(), "spk_initial");
        assert_eq!(
            find_key(&s, None, Some("spk_env".into())).unwrap(),
            "spk_env"
        );
        let chosen = dir.path().join("k");
        std::fs::write(&chosen, "spk_file\n").unwrap();
        assert_eq!(
            find_key(&s, Some(&chosen), Some("spk_env".into())).unwrap(),
            "spk_file"
        );
        let missing = dir.path().join("missing");
        assert!(matches!(
            find_key(&s, Some(&missing), None),
            Err(LocalApiError::KeyFile { .. })
        ));
    }

    // Would catch a wildcard listen address used as the destination (0.0.0.0
    // is not where to connect) or a specific address replaced by loopback.
    #[test]
    fn wildcard_listen_addresses_connect_to_loopback() {
        let a = |s: &str| connect_addr(s.parse().unwrap()).to_string();
        assert_eq!(a("0.0.0.0:8443"), "127.0.0.1:8443");
        assert_eq!(a("[::]:443"), "[::1]:443");
        assert_eq!(a("192.168.1.5:8443"), "192.168.1.5:8443");
    }

    // Would catch the pin accepting any certificate (the point of pinning)
    // or rejecting the daemon's own.
    #[test]
    fn the_pin_accepts_only_the_certificate_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ours = crate::api::tls::load_or_generate(None, None, dir.path()).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other = crate::api::tls::load_or_generate(None, None, other_dir.path()).unwrap();
        let der = |p: &Path| {
            rustls_pemfile::certs(&mut &std::fs::read(p).unwrap()[..])
                .next()
                .unwrap()
                .unwrap()
        };
        let provider = rustls::crypto::ring::default_provider();
        let pinned = Pinned {
            leaf: der(&ours.cert_path),
            path: ours.cert_path.clone(),
            algorithms: provider.signature_verification_algorithms,
        };
        let name = ServerName::try_from("localhost").unwrap();
        let now = UnixTime::now();
        assert!(pinned
            .verify_server_cert(&der(&ours.cert_path), &[], &name, &[], now)
            .is_ok());
        let e = pinned
            .verify_server_cert(&der(&other.cert_path), &[], &name, &[], now)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains(&ours.cert_path.display().to_string()),
            "{e}"
        );
        assert!(client_config(&ours.cert_path).is_ok());
        assert!(matches!(
            client_config(&dir.path().join("nope.pem")),
            Err(LocalApiError::Cert { .. })
        ));
    }
}
