//! The `command` source: a program whose standard output is the video.
//!
//! This module owns the supervision of that program (`rpicam-vid` for a Pi
//! camera module, `ffmpeg` for an RTSP camera, …): it starts the configured
//! argv (no shell) in a process group of its own with stdin from /dev/null,
//! reads frames from its stdout (split by [`super::stream`]), turns its
//! stderr into rate-limited log events, and reports an exit or a stall as an
//! error from `next_frame`, so the capture loop restarts it with its backoff.
//! Dropping the source (shutdown, reload, restart after an error) ends the
//! whole process group, SIGTERM then SIGKILL after a short grace, and reaps
//! the program: nothing is left behind.
//!
//! Reading is single-threaded: `next_frame` polls stdout and stderr with a
//! deadline (the stall timeout), so it never blocks longer than that, and
//! no thread outlives the source.
//!
//! Just over 600 lines: starting, reading and ending the program are one
//! life cycle read together; the frame splitters are in `stream.rs` and the
//! tests in `command/tests.rs`.

use std::io::{self, Read};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::stream::{MjpegSplitter, RawSplitter, Split};
use super::{CaptureError, Frame, FrameSource};
use crate::core::frame::PixelFormat;
use crate::core::ids;
use crate::core::shutdown::Shutdown;

/// Longest stderr line logged; the rest of a longer line is cut.
const MAX_STDERR_LINE: usize = 512;
/// Stderr lines logged per [`STDERR_WINDOW`]; the others are counted.
const STDERR_LINES_PER_WINDOW: u32 = 10;
const STDERR_WINDOW: Duration = Duration::from_secs(10);
/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 64 * 1024;
/// How long to wait for the exit status after the program closed its output.
const EXIT_WAIT: Duration = Duration::from_secs(1);
/// How long to wait for the program to be reaped after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Longest single wait for output, so shutdown is noticed this soon.
const POLL_SLICE: Duration = Duration::from_millis(250);

/// How the program's output is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandFormat {
    /// JPEG images back to back.
    Mjpeg,
    /// Raw frames of `format` (`I420`, `Nv12` or `Yuyv`), `width` × `height`.
    Raw {
        format: PixelFormat,
        width: u32,
        height: u32,
    },
}

impl CommandFormat {
    /// Bytes per row of a raw frame (the luma row for YUV 4:2:0).
    fn stride(self) -> u32 {
        match self {
            CommandFormat::Raw {
                format: PixelFormat::Yuyv,
                width,
                ..
            } => width * 2,
            CommandFormat::Raw { width, .. } => width,
            CommandFormat::Mjpeg => 0,
        }
    }

    fn name(self) -> String {
        match self {
            CommandFormat::Mjpeg => "mjpeg".into(),
            CommandFormat::Raw {
                format,
                width,
                height,
            } => {
                let f = match format {
                    PixelFormat::I420 => "yuv420",
                    PixelFormat::Nv12 => "nv12",
                    PixelFormat::Yuyv => "yuyv",
                    _ => "raw",
                };
                format!("{f} {width}x{height}")
            }
        }
    }
}

/// Options for [`CommandSource::open`].
#[derive(Clone)]
pub struct CommandOptions {
    /// The program and its arguments; `argv[0]` is looked up in `PATH`.
    pub argv: Vec<String>,
    pub format: CommandFormat,
    /// Frames larger than this are dropped (MJPEG) or refused at open (raw).
    pub max_frame_bytes: usize,
    /// No frame for this long (after the first): the program is stalled.
    pub stall_timeout: Duration,
    /// How long the first frame may take (camera start-up, an RTSP connect).
    pub first_frame_timeout: Duration,
    /// Between SIGTERM and SIGKILL when the source is dropped.
    pub grace: Duration,
    /// The daemon's shutdown token: once triggered, `next_frame` returns
    /// [`CaptureError::CommandStopped`] within [`POLL_SLICE`] instead of
    /// waiting out the stall timeout, so the source is dropped (and the
    /// program stopped) before shutdown gives up on the capture thread.
    pub stop: Option<Shutdown>,
}

impl std::fmt::Debug for CommandOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandOptions")
            .field("argv", &self.argv)
            .field("format", &self.format)
            .field("max_frame_bytes", &self.max_frame_bytes)
            .field("stall_timeout", &self.stall_timeout)
            .field("first_frame_timeout", &self.first_frame_timeout)
            .field("grace", &self.grace)
            .field("stop", &self.stop.is_some())
            .finish()
    }
}

impl CommandOptions {
    /// Options with the default timeouts around `stall_timeout`: the first
    /// frame may take at least 10 s, the program gets 1 s to end on SIGTERM.
    pub fn new(
        argv: Vec<String>,
        format: CommandFormat,
        max_frame_bytes: usize,
        stall_timeout: Duration,
    ) -> CommandOptions {
        CommandOptions {
            argv,
            format,
            max_frame_bytes,
            stall_timeout,
            first_frame_timeout: stall_timeout.max(Duration::from_secs(10)),
            grace: Duration::from_secs(1),
            stop: None,
        }
    }

    fn program(&self) -> String {
        self.argv.first().cloned().unwrap_or_default()
    }
}

enum Splitter {
    Mjpeg(MjpegSplitter),
    Raw(RawSplitter),
}

/// A running program read as a frame source. See the module documentation.
pub struct CommandSource {
    opts: CommandOptions,
    program: String,
    child: Child,
    stdout: ChildStdout,
    /// `None` once stderr reached end of file.
    stderr: Option<ChildStderr>,
    stderr_log: StderrLog,
    splitter: Splitter,
    stdout_eof: bool,
    /// Set once the program was reaped (its exit status).
    reaped: Option<ExitStatus>,
    seq: u64,
    oversized: u64,
    last_oversized_log: Option<Instant>,
    scratch: Vec<u8>,
}

/// Where `program` would be executed from: the path itself when it names
/// one (it contains a `/`), else the first match in `PATH`; `None` when that
/// is not an executable regular file.
pub(crate) fn find_program(program: impl AsRef<std::path::Path>) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let program = program.as_ref();
    let candidates: Vec<std::path::PathBuf> = if program.as_os_str().as_bytes().contains(&b'/') {
        vec![program.into()]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    candidates.into_iter().find(|p| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

impl CommandSource {
    /// Start the program. Fails if the argv is empty, a raw frame would
    /// exceed the bound, or the program cannot be started (not found, not
    /// executable).
    pub fn open(opts: CommandOptions) -> Result<CommandSource, CaptureError> {
        let program = opts.program();
        let Some((prog, args)) = opts.argv.split_first() else {
            return Err(CaptureError::CommandStart {
                program,
                source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
            });
        };
        let splitter = match opts.format {
            CommandFormat::Mjpeg => Splitter::Mjpeg(MjpegSplitter::new(opts.max_frame_bytes)),
            CommandFormat::Raw { format, height, .. } => {
                let len = format.raw_len(opts.format.stride(), height).unwrap_or(0);
                if len == 0 || len > opts.max_frame_bytes {
                    return Err(CaptureError::CommandStart {
                        program,
                        source: io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "a {} frame is {len} bytes; the bound is {} (source.max_frame_bytes)",
                                opts.format.name(),
                                opts.max_frame_bytes
                            ),
                        ),
                    });
                }
                Splitter::Raw(RawSplitter::new(len))
            }
        };
        // Looked up first rather than left to the spawn: where the spawn
        // cannot report a failed exec (qemu-user's emulated vfork), a missing
        // program would otherwise look like one that started and exited.
        if find_program(prog).is_none() {
            return Err(CaptureError::CommandStart {
                program,
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "not found in PATH, or not an executable file",
                ),
            });
        }
        let mut child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so the whole group can be ended on drop.
            .process_group(0)
            .spawn()
            .map_err(|source| CaptureError::CommandStart {
                program: program.clone(),
                source,
            })?;
        // Both were set to piped just above.
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            unreachable!("stdout and stderr are piped")
        };
        log::info!(spotter_program = program.as_str(), spotter_child_pid = child.id(), spotter_format = opts.format.name();
            "started the source command");
        Ok(CommandSource {
            stderr_log: StderrLog::new(program.clone()),
            program,
            child,
            stdout,
            stderr: Some(stderr),
            splitter,
            stdout_eof: false,
            reaped: None,
            seq: 0,
            oversized: 0,
            last_oversized_log: None,
            scratch: vec![0; READ_CHUNK],
            opts,
        })
    }

    /// The process group id (the program's pid: it leads its own group).
    pub fn pgid(&self) -> i32 {
        // Pids fit in i32 on Linux (pid_max is at most 2^22).
        self.child.id() as i32
    }

    /// The next frame already in the splitter, counting dropped oversized ones.
    fn take_frame(&mut self) -> Option<Vec<u8>> {
        match &mut self.splitter {
            Splitter::Raw(r) => r.next(),
            Splitter::Mjpeg(m) => loop {
                match m.next()? {
                    Split::Frame(f) => return Some(f),
                    Split::Oversized(n) => {
                        self.oversized += 1;
                        let quiet = self
                            .last_oversized_log
                            .is_some_and(|t| t.elapsed() < STDERR_WINDOW);
                        if !quiet {
                            self.last_oversized_log = Some(Instant::now());
                            log::warn!(message_id = ids::SOURCE_FRAME_OVERSIZED,
                                spotter_program = self.program.as_str(), spotter_bytes = n,
                                spotter_max = self.opts.max_frame_bytes, spotter_dropped_total = self.oversized;
                                "dropped a frame over source.max_frame_bytes ({} dropped so far)", self.oversized);
                        }
                    }
                }
            },
        }
    }

    fn frame(&mut self, data: Vec<u8>) -> Frame {
        let seq = self.seq;
        self.seq += 1;
        let source = self.describe();
        match self.opts.format {
            CommandFormat::Mjpeg => {
                Frame::encoded(data, seq, self.program.clone()).with_source(source)
            }
            CommandFormat::Raw {
                format,
                width,
                height,
            } => Frame {
                data,
                format,
                width,
                height,
                stride: self.opts.format.stride(),
                seq,
                captured_at: SystemTime::now(),
                origin: self.program.clone(),
                source,
            },
        }
    }

    /// Wait up to `timeout` for output, and read what is there.
    fn read_some(&mut self, timeout: Duration) -> Result<(), CaptureError> {
        // At most POLL_SLICE (250 ms): fits in u16.
        let ms = timeout.min(POLL_SLICE).as_millis().max(1) as u16;
        let ready = |f: Option<PollFlags>| {
            f.is_some_and(|r| {
                r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            })
        };
        let (out_ready, err_ready) = {
            let mut fds = vec![PollFd::new(self.stdout.as_fd(), PollFlags::POLLIN)];
            if let Some(e) = &self.stderr {
                fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(()),
                Err(e) => return Err(self.read_error(io::Error::from(e))),
            }
            (
                ready(fds[0].revents()),
                fds.get(1).is_some_and(|f| ready(f.revents())),
            )
        };
        if err_ready {
            self.read_stderr();
        }
        if out_ready {
            let n = match self.stdout.read(&mut self.scratch) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
                Err(e) => return Err(self.read_error(e)),
            };
            if n == 0 {
                self.stdout_eof = true;
            }
            match &mut self.splitter {
                Splitter::Mjpeg(m) => m.push(&self.scratch[..n]),
                Splitter::Raw(r) => r.push(&self.scratch[..n]),
            }
        }
        Ok(())
    }

    /// Read what stderr has (once); log complete lines.
    fn read_stderr(&mut self) {
        let Some(e) = &mut self.stderr else { return };
        let mut buf = [0u8; 4096];
        match e.read(&mut buf) {
            Ok(0) | Err(_) => {
                self.stderr_log.finish();
                self.stderr = None;
            }
            Ok(n) => self.stderr_log.feed(&buf[..n]),
        }
    }

    fn read_error(&self, source: io::Error) -> CaptureError {
        CaptureError::CommandRead {
            program: self.program.clone(),
            source,
        }
    }

    /// The program closed its output: collect its last stderr lines and its
    /// exit status (reaping it), and say so.
    fn exited(&mut self) -> CaptureError {
        let deadline = Instant::now() + EXIT_WAIT;
        while self.stderr.is_some() && Instant::now() < deadline {
            if self.read_some(Duration::from_millis(50)).is_err() {
                break;
            }
        }
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => break None,
            }
        };
        self.reaped = status;
        let status = match status {
            Some(s) => s.to_string(),
            None => "closed its output but is still running".into(),
        };
        let stderr = self.stderr_log.last_line();
        log::warn!(message_id = ids::SOURCE_COMMAND_EXITED, spotter_program = self.program.as_str(),
            spotter_status = status.as_str(), spotter_stderr = stderr.as_str(), spotter_frames = self.seq;
            "source command {} ended: {status}", self.program);
        CaptureError::CommandExited {
            program: self.program.clone(),
            status,
            stderr,
        }
    }

    fn stalled(&mut self, waited: Duration) -> CaptureError {
        let stderr = self.stderr_log.last_line();
        let waited_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        log::warn!(message_id = ids::SOURCE_COMMAND_STALLED, spotter_program = self.program.as_str(),
            spotter_waited_ms = waited_ms, spotter_frames = self.seq, spotter_stderr = stderr.as_str();
            "source command {} stalled: no frame for {waited_ms} ms; stopping it", self.program);
        CaptureError::CommandStalled {
            program: self.program.clone(),
            waited_ms,
            stderr,
        }
    }

    /// End the process group: SIGTERM, up to `grace` for the program to
    /// exit, then SIGKILL for whatever of the group remains; reap the program.
    fn stop(&mut self) {
        let pgid = Pid::from_raw(self.pgid());
        if self.reaped.is_none() {
            // ESRCH (the group is gone already) is fine.
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = Instant::now() + self.opts.grace;
            while self.reaped.is_none() && Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(s)) => self.reaped = Some(s),
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(_) => break,
                }
            }
        }
        // Members of the group that ignore SIGTERM, or outlived the program.
        let _ = killpg(pgid, Signal::SIGKILL);
        let deadline = Instant::now() + KILL_WAIT;
        while self.reaped.is_none() {
            match self.child.try_wait() {
                Ok(Some(s)) => self.reaped = Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                // Stuck in the kernel (uninterruptible sleep in a driver):
                // don't hang shutdown on it.
                _ => {
                    log::error!(spotter_program = self.program.as_str(), spotter_child_pid = self.child.id();
                        "the source command did not end after SIGKILL; leaving it");
                    return;
                }
            }
        }
        log::debug!(spotter_program = self.program.as_str(); "source command stopped");
    }
}

impl FrameSource for CommandSource {
    fn describe(&self) -> String {
        format!("command:{} {}", self.program, self.opts.format.name())
    }

    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        let limit = if self.seq == 0 {
            self.opts.first_frame_timeout
        } else {
            self.opts.stall_timeout
        };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(data) = self.take_frame() {
                return Ok(self.frame(data));
            }
            if self.stdout_eof {
                return Err(self.exited());
            }
            if self.opts.stop.as_ref().is_some_and(|s| s.is_triggered()) {
                return Err(CaptureError::CommandStopped {
                    program: self.program.clone(),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.stalled(limit));
            }
            self.read_some(left)?;
        }
    }
}

impl Drop for CommandSource {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Turns a program's stderr into log events: one per line, lines cut at
/// [`MAX_STDERR_LINE`], at most [`STDERR_LINES_PER_WINDOW`] per window (the
/// rest counted and reported when the window ends). Keeps the last
/// non-empty line for error messages.
struct StderrLog {
    program: String,
    partial: Vec<u8>,
    cut: bool,
    last: String,
    window_start: Instant,
    in_window: u32,
    suppressed: u64,
}

impl StderrLog {
    fn new(program: String) -> StderrLog {
        StderrLog {
            program,
            partial: Vec::new(),
            cut: false,
            last: String::new(),
            window_start: Instant::now(),
            in_window: 0,
            suppressed: 0,
        }
    }

    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' || b == b'\r' {
                self.end_line();
            } else if self.partial.len() < MAX_STDERR_LINE {
                self.partial.push(b);
            } else {
                self.cut = true;
            }
        }
    }

    fn finish(&mut self) {
        self.end_line();
    }

    fn end_line(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).trim().to_string();
        let cut = std::mem::take(&mut self.cut);
        self.partial.clear();
        if line.is_empty() {
            return;
        }
        self.last = if cut { format!("{line}…") } else { line };
        if self.window_start.elapsed() >= STDERR_WINDOW {
            if self.suppressed > 0 {
                log::info!(message_id = ids::SOURCE_COMMAND_STDERR, spotter_program = self.program.as_str(),
                    spotter_suppressed = self.suppressed;
                    "{}: {} more stderr lines not logged", self.program, self.suppressed);
            }
            self.window_start = Instant::now();
            self.in_window = 0;
            self.suppressed = 0;
        }
        if self.in_window < STDERR_LINES_PER_WINDOW {
            self.in_window += 1;
            log::info!(message_id = ids::SOURCE_COMMAND_STDERR, spotter_program = self.program.as_str();
                "{}: {}", self.program, self.last);
        } else {
            self.suppressed += 1;
        }
    }

    /// The last non-empty stderr line (one still being written counts), or "none".
    fn last_line(&self) -> String {
        let partial = String::from_utf8_lossy(&self.partial).trim().to_string();
        if !partial.is_empty() {
            partial
        } else if self.last.is_empty() {
            "none".into()
        } else {
            self.last.clone()
        }
    }
}

#[cfg(test)]
mod tests;
