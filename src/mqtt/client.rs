//! One MQTT connection over rumqttc, for MQTT 3.1.1 or 5: building the
//! client options (TLS through rustls with the configured CA and optional
//! client certificate, credentials, last will), and turning either protocol's
//! events and errors into the few the publisher acts on.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5;
use rumqttc::{QoS, TlsConfiguration, Transport};

use super::{MqttError, Resolved};
use crate::config::MqttProtocol;

/// What the publisher needs to know about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ev {
    /// CONNACK with success.
    Connected,
    /// A publish left with this packet id (in request order).
    Sent(u16),
    /// A publish was parked because its packet id is still in flight; it is
    /// sent (a later `Sent` with this id) once that id is acknowledged.
    AwaitAck(u16),
    /// PUBACK; `refused` holds the MQTT 5 error reason, if any.
    Acked {
        pkid: u16,
        refused: Option<String>,
    },
    /// A publish on a subscribed topic (the rollout commands, issue 22).
    Message {
        topic: String,
        payload: Vec<u8>,
    },
    Other,
}

/// Why a connection attempt failed or a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// The broker refused the credentials or the client.
    Auth(String),
    /// TLS: certificate not trusted, wrong name, handshake failure.
    Tls(String),
    /// Anything else: refused, reset, timeout, broker unavailable.
    Network(String),
    /// The client handle is gone (shutdown).
    Closed,
}

pub(super) enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

pub(super) enum Loop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

impl Client {
    /// Queue a QoS 1 publish; fails only when the request channel is full
    /// or closed.
    pub(super) fn try_publish(
        &self,
        topic: &str,
        retain: bool,
        payload: Vec<u8>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_publish(topic, v5::mqttbytes::QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// Queue a QoS 1 subscription; fails only when the request channel is
    /// full or closed.
    pub(super) fn try_subscribe(&self, topic: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe(topic, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(topic, v5::mqttbytes::QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    pub(super) fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl Loop {
    pub(super) async fn poll(&mut self) -> Result<Ev, Failure> {
        match self {
            Loop::V4(l) => match l.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => Ok(Ev::Connected),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(a))) => Ok(Ev::Acked {
                    pkid: a.pkid,
                    refused: None,
                }),
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => Ok(Ev::Message {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                }),
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(p))) => Ok(Ev::Sent(p)),
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::AwaitAck(p))) => Ok(Ev::AwaitAck(p)),
                Ok(_) => Ok(Ev::Other),
                Err(e) => Err(classify_v4(e)),
            },
            Loop::V5(l) => match l.poll().await {
                Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::ConnAck(_))) => Ok(Ev::Connected),
                Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::PubAck(a))) => {
                    use v5::mqttbytes::v5::PubAckReason as R;
                    let refused = match a.reason {
                        R::Success | R::NoMatchingSubscribers => None,
                        other => Some(format!("{other:?}")),
                    };
                    Ok(Ev::Acked {
                        pkid: a.pkid,
                        refused,
                    })
                }
                Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::Publish(p))) => Ok(Ev::Message {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                }),
                Ok(v5::Event::Outgoing(rumqttc::Outgoing::Publish(p))) => Ok(Ev::Sent(p)),
                Ok(v5::Event::Outgoing(rumqttc::Outgoing::AwaitAck(p))) => Ok(Ev::AwaitAck(p)),
                Ok(_) => Ok(Ev::Other),
                Err(e) => Err(classify_v5(e)),
            },
        }
    }

    /// Forget every request not yet acknowledged, including any queued
    /// after the connection failed: the outbox, not rumqttc, decides what is
    /// sent after a reconnect, so nothing may be replayed behind its back.
    pub(super) fn discard_pending(&mut self) {
        match self {
            Loop::V4(l) => {
                l.clean();
                l.pending.clear();
            }
            Loop::V5(l) => {
                l.clean();
                l.pending.clear();
            }
        }
    }
}

/// The rustls error inside an I/O error chain, if there is one.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    return Some(r.to_string());
                }
            }
        }
        cur = err.source();
    }
    None
}

fn classify_v4(e: rumqttc::ConnectionError) -> Failure {
    use rumqttc::ConnectReturnCode as C;
    use rumqttc::ConnectionError as E;
    match e {
        E::ConnectionRefused(
            code @ (C::BadUserNamePassword | C::NotAuthorized | C::BadClientId),
        ) => Failure::Auth(format!(
            "the broker refused the connection: {}",
            refused_text(&format!("{code:?}"))
        )),
        E::RequestsDone => Failure::Closed,
        E::Tls(t) => Failure::Tls(tls_cause(&t).unwrap_or_else(|| t.to_string())),
        other => match tls_cause(&other) {
            Some(t) => Failure::Tls(t),
            None => Failure::Network(other.to_string()),
        },
    }
}

fn classify_v5(e: v5::ConnectionError) -> Failure {
    use v5::mqttbytes::v5::ConnectReturnCode as C;
    use v5::ConnectionError as E;
    match e {
        E::ConnectionRefused(
            code @ (C::BadUserNamePassword
            | C::NotAuthorized
            | C::BadClientId
            | C::ClientIdentifierNotValid
            | C::Banned
            | C::BadAuthenticationMethod),
        ) => Failure::Auth(format!(
            "the broker refused the connection: {}",
            refused_text(&format!("{code:?}"))
        )),
        E::RequestsDone => Failure::Closed,
        E::Tls(t) => Failure::Tls(tls_cause(&t).unwrap_or_else(|| t.to_string())),
        other => match tls_cause(&other) {
            Some(t) => Failure::Tls(t),
            None => Failure::Network(other.to_string()),
        },
    }
}

/// A return code name as words: `BadUserNamePassword` → "bad user name or password".
fn refused_text(code: &str) -> String {
    match code {
        "BadUserNamePassword" => "bad user name or password".into(),
        "NotAuthorized" => "not authorized".into(),
        "BadClientId" | "ClientIdentifierNotValid" => "client id not accepted".into(),
        "Banned" => "banned".into(),
        other => other.into(),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, MqttError> {
    std::fs::read(path).map_err(|source| MqttError::ReadFile {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The rustls client configuration: roots from `ca_file` (or the system's),
/// and the client certificate when configured.
pub(super) fn tls_config(r: &Resolved) -> Result<rustls::ClientConfig, MqttError> {
    let s = &r.settings;
    let mut roots = rustls::RootCertStore::empty();
    match &s.ca_file {
        Some(path) => {
            let pem = read("CA file", path)?;
            for cert in rustls_pemfile::certs(&mut BufReader::new(&pem[..])) {
                let cert = cert.map_err(|source| MqttError::ReadFile {
                    what: "CA file",
                    path: path.clone(),
                    source,
                })?;
                roots.add(cert).map_err(|e| MqttError::BadPem {
                    what: "CA file",
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            if roots.is_empty() {
                return Err(MqttError::BadPem {
                    what: "CA file",
                    path: path.clone(),
                    reason: "no certificate in it".into(),
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(MqttError::NoRoots);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(MqttError::Tls)?
    .with_root_certificates(roots);
    match (&s.client_cert, &s.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let pem = read("client certificate", cert_path)?;
            let certs = rustls_pemfile::certs(&mut BufReader::new(&pem[..]))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| MqttError::ReadFile {
                    what: "client certificate",
                    path: cert_path.clone(),
                    source,
                })?;
            if certs.is_empty() {
                return Err(MqttError::BadPem {
                    what: "client certificate",
                    path: cert_path.clone(),
                    reason: "no certificate in it".into(),
                });
            }
            let pem = read("client key", key_path)?;
            let key = rustls_pemfile::private_key(&mut BufReader::new(&pem[..]))
                .map_err(|source| MqttError::ReadFile {
                    what: "client key",
                    path: key_path.clone(),
                    source,
                })?
                .ok_or_else(|| MqttError::BadPem {
                    what: "client key",
                    path: key_path.clone(),
                    reason: "no private key in it".into(),
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(MqttError::Tls)
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// The password: the first line of `password_file`.
fn password(r: &Resolved) -> Result<String, MqttError> {
    match &r.settings.password_file {
        None => Ok(String::new()),
        Some(path) => {
            let text =
                String::from_utf8(read("password file", path)?).map_err(|_| MqttError::BadPem {
                    what: "password file",
                    path: path.clone(),
                    reason: "not UTF-8 text".into(),
                })?;
            Ok(text.lines().next().unwrap_or("").to_string())
        }
    }
}

/// Build the client and its event loop (nothing connects until polled).
pub(super) fn connect(r: &Resolved) -> Result<(Client, Loop), MqttError> {
    let s = &r.settings;
    let transport = if s.tls {
        Some(Transport::Tls(TlsConfiguration::Rustls(Arc::new(
            tls_config(r)?,
        ))))
    } else {
        None
    };
    let password = password(r)?;
    // Room for the publisher's whole window plus the keep-alive ping.
    let cap = usize::from(s.max_inflight) + 8;
    let keep_alive = Duration::from_secs(s.keep_alive_s);
    match s.protocol {
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&r.client_id, &s.host, s.port);
            o.set_keep_alive(keep_alive)
                .set_clean_session(true)
                .set_inflight(s.max_inflight)
                .set_request_channel_capacity(cap)
                .set_max_packet_size(64 * 1024, 1 << 20)
                .set_last_will(rumqttc::LastWill::new(
                    &r.status_topic,
                    "offline",
                    QoS::AtLeastOnce,
                    true,
                ));
            if let Some(user) = &s.username {
                o.set_credentials(user, &password);
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (c, l) = rumqttc::AsyncClient::new(o, cap);
            Ok((Client::V4(c), Loop::V4(Box::new(l))))
        }
        MqttProtocol::V5 => {
            let mut o = v5::MqttOptions::new(&r.client_id, &s.host, s.port);
            o.set_keep_alive(keep_alive)
                .set_clean_start(true)
                .set_outgoing_inflight_upper_limit(s.max_inflight)
                .set_request_channel_capacity(cap)
                .set_max_packet_size(Some(64 * 1024))
                .set_last_will(v5::mqttbytes::v5::LastWill::new(
                    &r.status_topic,
                    "offline",
                    v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ));
            if let Some(user) = &s.username {
                o.set_credentials(user, &password);
            }
            if let Some(t) = transport {
                o.set_transport(t);
            }
            let (c, l) = v5::AsyncClient::new(o, cap);
            Ok((Client::V5(c), Loop::V5(Box::new(l))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch a broker's credential refusal being reported as a network
    // problem (the technician would chase the network instead of the password).
    #[test]
    fn refusals_are_classified() {
        let f = classify_v4(rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::NotAuthorized,
        ));
        assert_eq!(
            f,
            Failure::Auth("the broker refused the connection: not authorized".into())
        );
        let f = classify_v5(v5::ConnectionError::ConnectionRefused(
            v5::mqttbytes::v5::ConnectReturnCode::BadUserNamePassword,
        ));
        assert_eq!(
            f,
            Failure::Auth("the broker refused the connection: bad user name or password".into())
        );
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert!(matches!(
            classify_v4(rumqttc::ConnectionError::Io(io)),
            Failure::Network(_)
        ));
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        match classify_v4(rumqttc::ConnectionError::Io(tls)) {
            Failure::Tls(m) => assert!(m.contains("UnknownIssuer"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
