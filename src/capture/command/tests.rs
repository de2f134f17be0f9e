//! The `command` source against real programs: Debian's `ffmpeg` (installed
//! by scripts/setup.sh) and `sh`. Without ffmpeg these tests fail under CI
//! and skip with a printed reason elsewhere.

use super::*;
use nix::errno::Errno;

/// Whether `program` can be run; panics under CI when it cannot.
pub(crate) fn have(program: &str) -> bool {
    let found = find_program(program).is_some();
    if !found {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "{program} is not installed: scripts/setup.sh installs it (Debian package ffmpeg)"
        );
        eprintln!("skipping: {program} is not installed (scripts/setup.sh installs it)");
    }
    found
}

/// ffmpeg's test pattern, `size` at 25 fps, written to stdout as `out`.
fn ffmpeg(input: &str, out: &[&str]) -> String {
    let mut s = format!("ffmpeg -nostdin -hide_banner -loglevel error -f lavfi -i {input}");
    for a in out {
        s.push(' ');
        s.push_str(a);
    }
    s
}

fn sh(script: &str, format: CommandFormat, stall_ms: u64) -> CommandOptions {
    let mut o = CommandOptions::new(
        vec!["sh".into(), "-c".into(), script.into()],
        format,
        1 << 20,
        Duration::from_millis(stall_ms),
    );
    o.first_frame_timeout = Duration::from_secs(20);
    o.grace = Duration::from_millis(300);
    o
}

/// Whether any process of group `pgid` exists.
fn group_alive(pgid: i32) -> bool {
    match nix::sys::signal::killpg(Pid::from_raw(pgid), None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => panic!("kill(-{pgid}, 0): {e}"),
    }
}

const MJPEG: &[&str] = &["-f", "mjpeg", "-q:v", "5", "-"];

// Would catch frames cut at the wrong place (they would not decode), a
// frame lost between reads, or a frame carrying the wrong format.
#[test]
fn mjpeg_from_ffmpeg_comes_out_as_whole_jpeg_frames() {
    if !have("ffmpeg") {
        return;
    }
    let cmd = ffmpeg("testsrc=size=320x240:rate=25", MJPEG);
    let mut src = CommandSource::open(sh(&cmd, CommandFormat::Mjpeg, 5000)).unwrap();
    assert_eq!(src.describe(), "command:sh mjpeg");
    for i in 0..5 {
        let f = src.next_frame().unwrap();
        assert_eq!((f.seq, f.format), (i, PixelFormat::Encoded));
        let img = image::load_from_memory(&f.data).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!((img.width(), img.height()), (320, 240));
    }
}

/// Read three raw frames of a solid red picture from ffmpeg in `pix_fmt`.
fn red_frames(pix_fmt: &str, format: PixelFormat, w: u32, h: u32) -> Vec<Frame> {
    let cmd = ffmpeg(
        // Made at an even size and scaled: lavfi's color source rounds odd
        // sizes down for yuv420p.
        &format!(
            "color=c=red:size={}x{}:rate=25,format=rgb24,scale={w}:{h}",
            w + w % 2,
            h + h % 2
        ),
        &["-pix_fmt", pix_fmt, "-f", "rawvideo", "-"],
    );
    let fmt = CommandFormat::Raw {
        format,
        width: w,
        height: h,
    };
    let mut src = CommandSource::open(sh(&cmd, fmt, 5000)).unwrap();
    (0..3).map(|_| src.next_frame().unwrap()).collect()
}

fn near(got: u8, want: u8) -> bool {
    got.abs_diff(want) <= 4
}

// Would catch raw frames of the wrong length (each later frame would start
// in the middle of another: its planes would hold the wrong values) and the
// wrong chroma layout or size for odd dimensions.
#[test]
fn raw_i420_frames_have_the_expected_size_and_planes() {
    if !have("ffmpeg") {
        return;
    }
    // Odd sizes: the chroma planes round up.
    let (w, h) = (161, 121);
    for f in red_frames("yuv420p", PixelFormat::I420, w, h) {
        let luma = (w * h) as usize;
        let chroma = (w.div_ceil(2) * h.div_ceil(2)) as usize;
        assert_eq!(f.data.len(), luma + 2 * chroma);
        assert_eq!(
            (f.format, f.width, f.height, f.stride),
            (PixelFormat::I420, w, h, w)
        );
        // BT.601 red: Y 81, U 90, V 240, at each plane's start and the
        // middle, and the luma's end (the scaler blurs chroma at the edges).
        for (at, want) in [
            (0, 81),
            (luma - 1, 81),
            (luma, 90),
            (luma + chroma / 2, 90),
            (luma + chroma, 240),
            (luma + chroma + chroma / 2, 240),
        ] {
            assert!(
                near(f.data[at], want),
                "byte {at}: {} not ~{want}",
                f.data[at]
            );
        }
    }
}

// Would catch NV12 frames of the wrong length or read as planar.
#[test]
fn raw_nv12_frames_have_the_expected_size_and_interleaved_chroma() {
    if !have("ffmpeg") {
        return;
    }
    let (w, h) = (160, 120);
    for f in red_frames("nv12", PixelFormat::Nv12, w, h) {
        let luma = (w * h) as usize;
        assert_eq!(f.data.len(), luma + luma / 2);
        assert_eq!((f.format, f.stride), (PixelFormat::Nv12, w));
        assert!(near(f.data[luma - 1], 81));
        let uv = &f.data[luma..];
        assert!(near(uv[0], 90) && near(uv[1], 240), "{:?}", &uv[..4]);
        assert!(near(uv[uv.len() - 2], 90) && near(uv[uv.len() - 1], 240));
    }
}

// Would catch an exit going unnoticed (next_frame blocking until the stall
// timeout, or forever) or an error that hides the exit status and the
// program's own explanation.
#[test]
fn a_program_that_exits_is_an_error_with_its_status_and_last_stderr_line() {
    let script = "echo starting >&2; echo 'no camera found' >&2; exit 3";
    let mut src = CommandSource::open(sh(script, CommandFormat::Mjpeg, 60_000)).unwrap();
    let err = src.next_frame().unwrap_err();
    assert!(
        matches!(&err, CaptureError::CommandExited { status, stderr, .. }
            if status.contains('3') && stderr == "no camera found"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no camera found"), "{err}");
}

// Would catch a stall not detected (next_frame blocking for ever on a
// program that stopped writing) or the stalled program left running.
#[test]
fn a_program_that_stalls_is_detected_and_killed() {
    if !have("ffmpeg") {
        return;
    }
    let script = format!(
        "{} ; echo 'waiting for the camera' >&2; exec sleep 600",
        ffmpeg(
            "testsrc=size=160x120:rate=25",
            &["-frames:v", "2", "-f", "mjpeg", "-"]
        )
    );
    let mut src = CommandSource::open(sh(&script, CommandFormat::Mjpeg, 400)).unwrap();
    let pgid = src.pgid();
    src.next_frame().unwrap();
    src.next_frame().unwrap();
    let err = src.next_frame().unwrap_err();
    assert!(
        matches!(&err, CaptureError::CommandStalled { waited_ms: 400, stderr, .. }
            if stderr == "waiting for the camera"),
        "{err:?}"
    );
    assert!(group_alive(pgid), "the stalled program is still there");
    drop(src);
    assert!(!group_alive(pgid), "the stalled program was not killed");
}

// Would catch garbage between frames corrupting a frame (it would not
// decode) or frames lost around it.
#[test]
fn garbage_between_jpeg_frames_is_skipped() {
    if !have("ffmpeg") {
        return;
    }
    let one = ffmpeg(
        "testsrc=size=160x120:rate=25",
        &["-frames:v", "1", "-f", "mjpeg", "-q:v", "5", "-"],
    );
    let script = format!(
        "for i in 1 2 3; do printf 'garbage \\377\\330 \\377\\377 junk'; {one}; done; exec sleep 600"
    );
    let mut src = CommandSource::open(sh(&script, CommandFormat::Mjpeg, 5000)).unwrap();
    for i in 0..3 {
        let f = src.next_frame().unwrap();
        let img = image::load_from_memory(&f.data).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert_eq!((img.width(), img.height()), (160, 120));
    }
}

// Would catch a program that ignores SIGTERM (and its children) surviving
// the source: an orphan after every restart, reload or shutdown.
#[test]
fn a_program_ignoring_sigterm_is_killed_with_its_group_on_drop() {
    if !have("ffmpeg") {
        return;
    }
    let script = format!(
        "trap '' TERM; {}; exec sleep 600",
        ffmpeg("testsrc=size=160x120:rate=25", MJPEG)
    );
    let mut src = CommandSource::open(sh(&script, CommandFormat::Mjpeg, 5000)).unwrap();
    let pgid = src.pgid();
    src.next_frame().unwrap();
    drop(src);
    assert!(!group_alive(pgid), "a process of group {pgid} survived");
    // Reaped too: no zombie of ours is left.
    assert_eq!(
        nix::sys::wait::waitpid(
            Pid::from_raw(-pgid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG)
        ),
        Err(Errno::ECHILD)
    );
}

// Would catch frames over the bound being delivered (or buffered without
// limit) instead of dropped and counted.
#[test]
fn frames_over_the_bound_are_dropped_and_counted() {
    if !have("ffmpeg") {
        return;
    }
    let cmd = ffmpeg(
        "testsrc=size=320x240:rate=25",
        &["-f", "mjpeg", "-q:v", "2", "-"],
    );
    let mut o = sh(&cmd, CommandFormat::Mjpeg, 1000);
    o.max_frame_bytes = 1024;
    o.first_frame_timeout = Duration::from_secs(3);
    let mut src = CommandSource::open(o).unwrap();
    let err = src.next_frame().unwrap_err();
    assert!(
        matches!(err, CaptureError::CommandStalled { .. }),
        "{err:?}"
    );
    assert!(src.oversized > 0);
}

// Would catch a missing program reported without its name (the technician
// could not tell what to install).
#[test]
fn a_missing_program_is_named() {
    let o = CommandOptions::new(
        vec!["spotter-no-such-program".into()],
        CommandFormat::Mjpeg,
        1 << 20,
        Duration::from_secs(1),
    );
    let err = CommandSource::open(o).err().expect("cannot start");
    assert!(err.to_string().contains("spotter-no-such-program"), "{err}");
}

/// A helper process (server, publisher) killed and reaped when dropped.
struct Helper(std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn helper(argv: &[&str]) -> Helper {
    Helper(
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", argv[0])),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// RTSP end to end: Debian's rtsp-server-perl serves a stream that ffmpeg
// publishes (as a camera would), and the command source reads it through
// ffmpeg as the README tells users to. Would catch the documented RTSP
// argv not producing frames, or frames that do not decode. rtsp-server-perl
// relays RTP over UDP only, so the reader uses `-rtsp_transport udp` here
// (IP cameras take the README's `tcp`).
#[test]
fn rtsp_stream_through_ffmpeg_gives_decodable_frames() {
    if !have("ffmpeg") || !have("rtsp-server-perl") {
        return;
    }
    let (client, source) = (free_port(), free_port());
    let rtp = free_port().to_string();
    let _server = helper(&[
        "rtsp-server-perl",
        "--clientport",
        &client.to_string(),
        "--serverport",
        &source.to_string(),
        "--client_listen_address",
        "127.0.0.1",
        "--source_listen_address",
        "127.0.0.1",
        "--rtp_start_port",
        &rtp,
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", source)).is_err() {
        assert!(Instant::now() < deadline, "rtsp-server-perl did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let publish = format!("rtsp://127.0.0.1:{source}/cam");
    let _camera = helper(&[
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=10",
        "-c:v",
        "mpeg4",
        "-g",
        "10",
        "-f",
        "rtsp",
        "-rtsp_transport",
        "udp",
        &publish,
    ]);
    let url = format!("rtsp://127.0.0.1:{client}/cam");
    let argv: Vec<String> = [
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-rtsp_transport",
        "udp",
        "-i",
        &url,
        "-f",
        "mjpeg",
        "-q:v",
        "5",
        "-",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // As the capture loop does: start it again until the stream is there.
    let mut frames = 0;
    while frames < 3 {
        assert!(
            Instant::now() < deadline,
            "no frames from {url} within 20 s"
        );
        let mut o = CommandOptions::new(
            argv.clone(),
            CommandFormat::Mjpeg,
            1 << 20,
            Duration::from_secs(5),
        );
        o.first_frame_timeout = Duration::from_secs(8);
        let Ok(mut src) = CommandSource::open(o) else {
            continue;
        };
        while frames < 3 {
            match src.next_frame() {
                Ok(f) => {
                    let img = image::load_from_memory(&f.data).unwrap();
                    assert_eq!((img.width(), img.height()), (320, 240));
                    frames += 1;
                }
                Err(e) => {
                    eprintln!("retrying: {e}");
                    std::thread::sleep(Duration::from_millis(300));
                    break;
                }
            }
        }
    }
}

// Would catch shutdown waiting out the stall timeout (60 s here) on a
// program that writes nothing: the daemon would give up on the capture
// thread and exit with the program still running.
#[test]
fn shutdown_interrupts_the_wait_for_a_frame() {
    let stop = Shutdown::new();
    let mut o = sh("exec sleep 600", CommandFormat::Mjpeg, 60_000);
    o.first_frame_timeout = Duration::from_secs(60);
    o.stop = Some(stop.clone());
    let mut src = CommandSource::open(o).unwrap();
    let pgid = src.pgid();
    let trigger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        stop.trigger();
    });
    let err = src.next_frame().unwrap_err();
    assert!(
        matches!(err, CaptureError::CommandStopped { .. }),
        "{err:?}"
    );
    drop(src);
    assert!(!group_alive(pgid));
    trigger.join().unwrap();
}

// Would catch a chatty program flooding the journal (no rate limit), an
// endless line held without bound, or the error message losing the last
// line (ffmpeg ends progress lines with \r, not \n).
#[test]
fn stderr_lines_are_bounded_rate_limited_and_the_last_one_kept() {
    let mut log = StderrLog::new("prog".into());
    for i in 0..30 {
        log.feed(format!("line {i}\n").as_bytes());
    }
    assert_eq!((log.in_window, log.suppressed), (10, 20));
    log.feed(b"frame=  10 fps=5\rframe=  20 fps=5\r");
    assert_eq!(log.last_line(), "frame=  20 fps=5");
    log.feed(&vec![b'x'; 10_000]);
    assert!(log.partial.len() <= MAX_STDERR_LINE);
    log.feed(b"\n");
    assert!(log.last_line().starts_with("xxx") && log.last_line().ends_with('…'));
    assert!(log.last_line().len() <= MAX_STDERR_LINE + '…'.len_utf8());
    log.feed(b"no newline yet");
    assert_eq!(log.last_line(), "no newline yet");
}
