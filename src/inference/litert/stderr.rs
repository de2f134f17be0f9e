//! LiteRT's own log lines, through Spotter's logging.
//!
//! `libLiteRt.so` 2.3 writes its log (`INFO: Created TensorFlow Lite XNNPACK
//! delegate for CPU.`, `WARNING: ... accelerator ... not found`) straight to
//! file descriptor 2 and exports no hook to redirect it or set its
//! severity: no `LiteRtSetMinLoggerSeverity` or logger callback among its
//! dynamic symbols, and no environment variable it reads for that. Under
//! systemd those lines reached the journal unstructured, at the stream's
//! default priority, where a technician filtering by priority read the
//! accelerator warnings as problems.
//!
//! So the calls that log (loading the library and creating its environment,
//! loading and compiling a model) run inside [`relog_stderr`]: file
//! descriptor 2 is pointed at a pipe for their duration, one at a time, and
//! a reader thread turns each line with a LiteRT prefix into a log record of
//! target `litert` at a level parsed from the prefix ([`level_of`]). Any other
//! line (another thread's output during the window) is written through to
//! the real stderr unchanged.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;

/// The level a LiteRT log line is re-logged at, from its prefix; `None` for
/// a line that is not LiteRT's.
///
/// LiteRT's INFO lines narrate normal set-up (delegates created); its
/// WARNINGs at load are about optional accelerators (NPU, GPU) that a
/// Raspberry-Pi-class board does not have, so both are debug detail. Its
/// ERRORs are warnings here: when they matter, the load or invoke fails and
/// Spotter reports that failure as an error itself.
fn level_of(line: &str) -> Option<(log::Level, &str)> {
    let (level, rest) = if let Some(r) = line.strip_prefix("INFO: ") {
        (log::Level::Debug, r)
    } else if let Some(r) = line.strip_prefix("WARNING: ") {
        (log::Level::Debug, r)
    } else if let Some(r) = line.strip_prefix("ERROR: ") {
        (log::Level::Warn, r)
    } else if let Some(r) = line.strip_prefix("FATAL: ") {
        (log::Level::Error, r)
    } else if let Some(r) = line.strip_prefix("VERBOSE: ") {
        (log::Level::Trace, r)
    } else {
        return None;
    };
    Some((level, rest))
}

/// Run `f` with file descriptor 2 captured and LiteRT's lines re-logged
/// (see the module documentation). If the redirection cannot be set up,
/// `f` runs with stderr as it is.
pub(super) fn relog_stderr<T>(f: impl FnOnce() -> T) -> T {
    // One capture at a time: fd 2 is process-wide.
    static ONE: Mutex<()> = Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let capture = match Capture::start() {
        Ok(c) => c,
        Err(e) => {
            log::debug!("LiteRT's stderr is not captured: {e}");
            return f();
        }
    };
    let out = f();
    capture.finish();
    out
}

struct Capture {
    /// The real stderr, put back by `finish`.
    saved: OwnedFd,
    reader: std::thread::JoinHandle<()>,
}

impl Capture {
    fn start() -> std::io::Result<Capture> {
        let saved = std::io::stderr().as_fd().try_clone_to_owned()?;
        let passthrough = saved.try_clone()?;
        let (read, write) = nix::unistd::pipe()?;
        let read = std::fs::File::from(read);
        let reader = std::thread::Builder::new()
            .name("litert-log".into())
            .spawn(move || relay(BufReader::new(read), passthrough))?;
        // From here fd 2 is the pipe's write end; `write` is closed on return,
        // so the reader sees the end of the pipe when fd 2 is restored.
        if let Err(e) = nix::unistd::dup2(write.as_raw_fd(), 2) {
            drop(write);
            let _ = reader.join();
            return Err(e.into());
        }
        Ok(Capture { saved, reader })
    }

    fn finish(self) {
        // fd 2 back to the real stderr; this closes the pipe's last write end.
        if let Err(e) = nix::unistd::dup2(self.saved.as_raw_fd(), 2) {
            log::warn!("could not restore stderr after loading LiteRT: {e}");
            return;
        }
        let _ = self.reader.join();
    }
}

/// Re-log each LiteRT line; write any other line through to `passthrough`.
fn relay(read: impl BufRead, passthrough: OwnedFd) {
    let mut out = std::fs::File::from(passthrough);
    for line in read.split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        match level_of(text) {
            Some((level, message)) => {
                log::log!(target: "litert", level, spotter_component = "litert"; "LiteRT: {message}")
            }
            None if text.is_empty() => {}
            None => {
                let _ = out.write_all(&line);
                let _ = out.write_all(b"\n");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch LiteRT's accelerator warnings being re-logged at warning
    // level (what the journal showed before), or another program's line
    // being taken for LiteRT's.
    #[test]
    fn levels_from_prefixes() {
        assert_eq!(
            level_of("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."),
            Some((
                log::Level::Debug,
                "Created TensorFlow Lite XNNPACK delegate for CPU."
            ))
        );
        assert_eq!(
            level_of("WARNING: NPU accelerator not found").map(|l| l.0),
            Some(log::Level::Debug)
        );
        assert_eq!(
            level_of("ERROR: failed").map(|l| l.0),
            Some(log::Level::Warn)
        );
        assert_eq!(level_of("2026-01-01 INFO spotter: x"), None);
        assert_eq!(level_of("INFO:x"), None);
    }
}
