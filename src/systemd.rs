//! systemd integration. The notify protocol (`sd_notify`): `READY=1`,
//! `STATUS=…`, `STOPPING=1`, `WATCHDOG=1`, sent as datagrams to
//! `$NOTIFY_SOCKET`; without that variable (not under systemd) every call is
//! a no-op. And the unit generator (`spotter systemd-generator`, run by
//! systemd at boot and on `daemon-reload`): it grants `CAP_NET_BIND_SERVICE`
//! through a drop-in only when the configured API port is below 1024, so the
//! shipped unit keeps an empty capability bounding set otherwise.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Errors talking to the notify socket.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotifyError {
    #[error("notify socket {path}: {source}")]
    Socket {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A connection to systemd's notify socket, if there is one.
#[derive(Debug)]
pub(crate) struct Notifier {
    target: Option<(UnixDatagram, SocketAddr, String)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`. A path starting with `@` is an abstract socket.
    pub(crate) fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(p) => Self::connect(&p.to_string_lossy()),
            None => Ok(Notifier::disabled()),
        }
    }

    /// A notifier that sends nothing.
    pub(crate) fn disabled() -> Notifier {
        Notifier { target: None }
    }

    pub(crate) fn connect(path: &str) -> Result<Notifier, NotifyError> {
        let err = |source| NotifyError::Socket {
            path: path.to_string(),
            source,
        };
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(err)?
        } else {
            SocketAddr::from_pathname(path).map_err(err)?
        };
        let sock = UnixDatagram::unbound().map_err(err)?;
        Ok(Notifier {
            target: Some((sock, addr, path.to_string())),
        })
    }

    /// Send one notify message (newline-separated assignments).
    pub(crate) fn notify(&self, msg: &str) -> Result<(), NotifyError> {
        if let Some((sock, addr, path)) = &self.target {
            sock.send_to_addr(msg.as_bytes(), addr)
                .map_err(|source| NotifyError::Socket {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Send, logging (not failing) on error: losing a status line must not
    /// take the daemon down.
    pub(crate) fn send(&self, msg: &str) {
        if let Err(e) = self.notify(msg) {
            log::warn!("sd_notify failed: {e}");
        }
    }

    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub(crate) fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// The watchdog interval systemd expects pings within, when it is
    /// watching this process (`WATCHDOG_USEC`, and `WATCHDOG_PID` if set
    /// names this process).
    pub(crate) fn watchdog_interval() -> Option<std::time::Duration> {
        if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
            if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| std::time::Duration::from_micros(usec))
    }

    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// STATUS= must be one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The drop-in the generator writes beside the unit.
pub(crate) const LOW_PORT_DROPIN: &str = "spotter.service.d/50-low-port.conf";

/// The drop-in that lets the service bind `listen`, or `None` when the port
/// needs no privilege (1024 and above).
pub(crate) fn low_port_dropin(listen: std::net::SocketAddr) -> Option<String> {
    (listen.port() < 1024).then(|| {
        format!(
            "# Written by spotter-generator: api.listen = {listen} is a privileged port.\n\
             # Change the port in /etc/spotter/spotter.toml and run `systemctl daemon-reload`\n\
             # to drop this again.\n\
             [Service]\n\
             # Binding a port below 1024 needs this one capability, nothing else.\n\
             CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n\
             AmbientCapabilities=CAP_NET_BIND_SERVICE\n"
        )
    })
}

/// Errors of the unit generator.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GeneratorError {
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The generator's work: write [`LOW_PORT_DROPIN`] under `out_dir` (the
/// generator's "normal" directory) when `listen` is a privileged port.
/// Returns the path written, if any. A configuration that cannot be read is
/// the caller's to report: the generator then writes nothing, and the daemon
/// itself names the problem when it starts.
pub(crate) fn generate(
    listen: std::net::SocketAddr,
    out_dir: &std::path::Path,
) -> Result<Option<std::path::PathBuf>, GeneratorError> {
    let Some(text) = low_port_dropin(listen) else {
        return Ok(None);
    };
    let path = out_dir.join(LOW_PORT_DROPIN);
    let err = |source| GeneratorError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    std::fs::write(&path, text).map_err(err)?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch messages going to the wrong socket or being malformed.
    #[test]
    fn sends_datagrams_to_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        n.ready("ok\nsecond line");
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..len]).unwrap(),
            "READY=1\nSTATUS=ok second line"
        );
    }

    // Would catch the abstract-namespace form (@name) being treated as a path.
    #[test]
    fn sends_to_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("spotter-test-{}", std::process::id());
        let server =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.stopping();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..len])
            .unwrap()
            .starts_with("STOPPING=1"));
    }

    // Would catch the capability granted for an unprivileged port (the unit's
    // empty bounding set would be widened for nothing) or missing for a
    // privileged one (the daemon could not bind and would crash-loop).
    #[test]
    fn generator_grants_net_bind_service_only_below_port_1024() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            generate("0.0.0.0:8443".parse().unwrap(), dir.path()).unwrap(),
            None
        );
        assert_eq!(
            generate("[::]:1024".parse().unwrap(), dir.path()).unwrap(),
            None
        );
        assert!(!dir.path().join("spotter.service.d").exists());
        let written = generate("0.0.0.0:443".parse().unwrap(), dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(written, dir.path().join(LOW_PORT_DROPIN));
        let text = std::fs::read_to_string(written).unwrap();
        let directives: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            directives,
            [
                "[Service]",
                "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                "AmbientCapabilities=CAP_NET_BIND_SERVICE"
            ]
        );
    }
}
