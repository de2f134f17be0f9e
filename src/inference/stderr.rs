//! The inference runtimes' own log lines, through Spotter's logging.
//!
//! `libLiteRt.so` 2.3 writes its log (`INFO: Created TensorFlow Lite XNNPACK
//! delegate for CPU.`, `WARNING: ... accelerator ... not found`) straight to
//! file descriptor 2 and exports no hook to redirect it or set its
//! severity: no `LiteRtSetMinLoggerSeverity` or logger callback among its
//! dynamic symbols, and no environment variable it reads for that. TF Lite
//! 1.15 (the fallback runtime, linked statically by the `tflite` crate)
//! reports why it refuses a model the same way (`ERROR: quantized_dimension
//! must be in range [0, 1). Was 3.`), through a default error reporter the
//! crate does not let us replace. Under systemd those lines reached the
//! journal unstructured, at the stream's default priority, where a
//! technician filtering by priority read the accelerator warnings as
//! problems.
//!
//! So the calls that log (loading LiteRT and creating its environment,
//! loading and compiling a model on either runtime) run inside
//! [`relog_stderr`]: file descriptor 2 is pointed at a pipe for their
//! duration, one at a time, and a reader thread turns each line with a
//! runtime's prefix into a log record whose target names the runtime, at a
//! level parsed from the prefix ([`level_of`]). The `ERROR:`/`FATAL:` lines
//! are also handed back to the caller, so a refusal can name the op or
//! tensor in its own error. Any other line (another thread's output during
//! the window) is written through to the real stderr unchanged.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;

/// The level a runtime's log line is re-logged at, from its prefix; `None`
/// for a line that is not a runtime's.
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

/// The runtime whose lines a capture re-logs: its log target and name.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RuntimeLog {
    LiteRt,
    TfLite,
}

impl RuntimeLog {
    fn target(self) -> &'static str {
        match self {
            RuntimeLog::LiteRt => "litert",
            RuntimeLog::TfLite => "tflite",
        }
    }

    fn name(self) -> &'static str {
        match self {
            RuntimeLog::LiteRt => "LiteRT",
            RuntimeLog::TfLite => "TF Lite",
        }
    }
}

/// The runtime's `ERROR:`/`FATAL:` lines kept for the caller: at most this
/// many, each cut to [`MAX_ERROR_CHARS`].
const MAX_ERRORS: usize = 8;
const MAX_ERROR_CHARS: usize = 300;

/// Run `f` with file descriptor 2 captured and `runtime`'s lines re-logged
/// (see the module documentation); returns `f`'s value and the runtime's
/// error lines printed meanwhile. If the redirection cannot be set up, `f`
/// runs with stderr as it is (and no lines come back).
pub(crate) fn relog_stderr<T>(runtime: RuntimeLog, f: impl FnOnce() -> T) -> (T, Vec<String>) {
    // One capture at a time: fd 2 is process-wide.
    static ONE: Mutex<()> = Mutex::new(());
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let capture = match Capture::start(runtime) {
        Ok(c) => c,
        Err(e) => {
            log::debug!("{}'s stderr is not captured: {e}", runtime.name());
            return (f(), Vec::new());
        }
    };
    let out = f();
    (out, capture.finish())
}

struct Capture {
    /// The real stderr, put back by `finish`.
    saved: OwnedFd,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl Capture {
    fn start(runtime: RuntimeLog) -> std::io::Result<Capture> {
        let saved = std::io::stderr().as_fd().try_clone_to_owned()?;
        let passthrough = saved.try_clone()?;
        let (read, write) = nix::unistd::pipe()?;
        let read = std::fs::File::from(read);
        let reader = std::thread::Builder::new()
            .name(format!("{}-log", runtime.target()))
            .spawn(move || relay(runtime, BufReader::new(read), passthrough))?;
        // From here fd 2 is the pipe's write end; `write` is closed on return,
        // so the reader sees the end of the pipe when fd 2 is restored.
        if let Err(e) = nix::unistd::dup2(write.as_raw_fd(), 2) {
            drop(write);
            let _ = reader.join();
            return Err(e.into());
        }
        Ok(Capture { saved, reader })
    }

    fn finish(self) -> Vec<String> {
        // fd 2 back to the real stderr; this closes the pipe's last write end.
        if let Err(e) = nix::unistd::dup2(self.saved.as_raw_fd(), 2) {
            log::warn!("could not restore stderr after loading a model: {e}");
            return Vec::new();
        }
        self.reader.join().unwrap_or_default()
    }
}

/// Re-log each of `runtime`'s lines; write any other line through to
/// `passthrough`. Returns the error lines (bounded).
fn relay(runtime: RuntimeLog, read: impl BufRead, passthrough: OwnedFd) -> Vec<String> {
    let mut out = std::fs::File::from(passthrough);
    let mut errors = Vec::new();
    for line in read.split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        match level_of(text) {
            Some((level, message)) => {
                let (target, name) = (runtime.target(), runtime.name());
                log::log!(target: target, level, spotter_component = target; "{name}: {message}");
                let message: String = message.chars().take(MAX_ERROR_CHARS).collect();
                // TF Lite repeats a reason once per tensor: keep each once.
                if level <= log::Level::Warn
                    && errors.len() < MAX_ERRORS
                    && !errors.contains(&message)
                {
                    errors.push(message);
                }
            }
            None if text.is_empty() => {}
            None => {
                let _ = out.write_all(&line);
                let _ = out.write_all(b"\n");
            }
        }
    }
    errors
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
