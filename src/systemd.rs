//! The systemd notify protocol (`sd_notify`): `READY=1`, `STATUS=…`,
//! `STOPPING=1`, `WATCHDOG=1`, sent as datagrams to `$NOTIFY_SOCKET`.
//! Without that variable (not under systemd) every call is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Errors talking to the notify socket.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notify socket {path}: {source}")]
    Socket { path: String, #[source] source: std::io::Error },
}

/// A connection to systemd's notify socket, if there is one.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr, String)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`. A path starting with `@` is an abstract socket.
    pub fn from_env() -> Result<Notifier, NotifyError> {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(p) => Self::connect(&p.to_string_lossy()),
            None => Ok(Notifier::disabled()),
        }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    pub fn connect(path: &str) -> Result<Notifier, NotifyError> {
        let err = |source| NotifyError::Socket { path: path.to_string(), source };
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(err)?
        } else {
            SocketAddr::from_pathname(path).map_err(err)?
        };
        let sock = UnixDatagram::unbound().map_err(err)?;
        Ok(Notifier { target: Some((sock, addr, path.to_string())) })
    }

    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send one notify message (newline-separated assignments).
    pub fn notify(&self, msg: &str) -> Result<(), NotifyError> {
        if let Some((sock, addr, path)) = &self.target {
            sock.send_to_addr(msg.as_bytes(), addr)
                .map_err(|source| NotifyError::Socket { path: path.clone(), source })?;
        }
        Ok(())
    }

    /// Send, logging (not failing) on error: losing a status line must not
    /// take the daemon down.
    pub fn send(&self, msg: &str) {
        if let Err(e) = self.notify(msg) {
            log::warn!("sd_notify failed: {e}");
        }
    }

    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// The watchdog interval systemd expects pings within, when it is
    /// watching this process (`WATCHDOG_USEC`, and `WATCHDOG_PID` if set
    /// names this process).
    pub fn watchdog_interval() -> Option<std::time::Duration> {
        if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
            if pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (usec > 0).then(|| std::time::Duration::from_micros(usec))
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// STATUS= must be one line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
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
        assert_eq!(std::str::from_utf8(&buf[..len]).unwrap(), "READY=1\nSTATUS=ok second line");
    }

    // Would catch the abstract-namespace form (@name) being treated as a path.
    #[test]
    fn sends_to_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("spotter-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.stopping();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert!(std::str::from_utf8(&buf[..len]).unwrap().starts_with("STOPPING=1"));
    }
}
