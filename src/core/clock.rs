//! Time integrity: is the system clock synchronized?
//!
//! Boards without a battery-backed RTC boot in 1970 or with a stale time;
//! records stamped before the clock is synchronized carry wrong wall-clock
//! times, so the pipeline marks them and age-based retention is suspended.
//!
//! The kernel's answer comes from `adjtimex(2)` with `modes = 0` (read only):
//! the clock is unsynchronized when the call returns `TIME_ERROR` or the
//! status has `STA_UNSYNC`. A unit with `ProtectClock=yes` denies that call
//! (EPERM, systemd issue #26413), so the fallback is systemd-timesyncd's flag
//! file `/run/systemd/timesync/synchronized`, which exists once timesyncd has
//! synchronized the clock at least once since boot.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// systemd-timesyncd creates this file once it has synchronized the clock.
pub(crate) const TIMESYNC_FLAG: &str = "/run/systemd/timesync/synchronized";

/// Where an answer of [`clock_synchronized_from`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClockSource {
    /// `adjtimex(2)` answered.
    Kernel,
    /// `adjtimex(2)` was refused; the timesyncd flag file decided.
    TimesyncFlag,
}

/// The kernel's NTP state from a read-only `adjtimex(2)`: `(return value,
/// status bits)`, or the errno if the call was refused.
fn kernel_state() -> Result<(i32, i32), nix::errno::Errno> {
    // SAFETY: an all-zero `timex` is a valid argument (modes = 0 asks for a
    // read without changes); the kernel only writes into the struct we own.
    let mut tx: nix::libc::timex = unsafe { std::mem::zeroed() };
    let rc = unsafe { nix::libc::adjtimex(&mut tx) };
    if rc == -1 {
        Err(nix::errno::Errno::last())
    } else {
        Ok((rc, tx.status))
    }
}

/// Decide from a kernel answer (see [`kernel_state`]) and the timesyncd flag
/// file. Split out of [`clock_synchronized`] so every branch is testable.
pub(crate) fn clock_synchronized_from(
    kernel: Result<(i32, i32), nix::errno::Errno>,
    timesync_flag: &Path,
) -> (bool, ClockSource) {
    match kernel {
        Ok((state, status)) => {
            let synced = state != nix::libc::TIME_ERROR && status & nix::libc::STA_UNSYNC == 0;
            (synced, ClockSource::Kernel)
        }
        Err(_) => (timesync_flag.exists(), ClockSource::TimesyncFlag),
    }
}

/// Whether the system clock is synchronized (NTP or similar). Cheap (one
/// system call, or one `stat` under `ProtectClock=yes`): call it per frame or
/// cache it for a second.
pub(crate) fn clock_synchronized() -> bool {
    clock_synchronized_from(kernel_state(), Path::new(TIMESYNC_FLAG)).0
}

/// Nanoseconds since the Unix epoch (0 for times before it).
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Nanoseconds since boot, counting suspend (`CLOCK_BOOTTIME`): stored
/// beside the wall-clock time so results stamped before the clock was set
/// can still be ordered and spaced within one boot. 0 if unavailable.
pub fn boottime_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
        Ok(t) => {
            u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
                + u64::try_from(t.tv_nsec()).unwrap_or(0)
        }
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::libc::{STA_PLL, STA_UNSYNC, TIME_ERROR, TIME_OK};

    // Catches: STA_UNSYNC or TIME_ERROR ignored, i.e. a 1970 clock reported as synchronized.
    #[test]
    fn kernel_flags_decide_when_adjtimex_answers() {
        let absent = Path::new("/nonexistent/spotter-test-flag");
        assert_eq!(
            clock_synchronized_from(Ok((TIME_OK, STA_PLL)), absent),
            (true, ClockSource::Kernel)
        );
        assert_eq!(
            clock_synchronized_from(Ok((TIME_OK, STA_UNSYNC | STA_PLL)), absent),
            (false, ClockSource::Kernel)
        );
        assert_eq!(
            clock_synchronized_from(Ok((TIME_ERROR, 0)), absent),
            (false, ClockSource::Kernel)
        );
    }

    // Catches: EPERM under ProtectClock=yes treated as "unsynchronized" forever.
    #[test]
    fn refused_adjtimex_falls_back_to_the_timesyncd_flag() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("synchronized");
        let eperm = Err(nix::errno::Errno::EPERM);
        assert_eq!(
            clock_synchronized_from(eperm, &flag),
            (false, ClockSource::TimesyncFlag)
        );
        std::fs::write(&flag, b"").unwrap();
        assert_eq!(
            clock_synchronized_from(eperm, &flag),
            (true, ClockSource::TimesyncFlag)
        );
    }

    // Catches: the real system call wired wrongly (e.g. a non-zero mode that needs CAP_SYS_TIME).
    #[test]
    fn read_only_adjtimex_is_permitted_here() {
        // Tests run outside any seccomp filter, so the read must succeed and
        // return one of the kernel's clock states (TIME_OK..=TIME_ERROR).
        let (state, _) = kernel_state().unwrap();
        assert!((TIME_OK..=TIME_ERROR).contains(&state), "state {state}");
    }

    // Catches: a wrong clock id (e.g. realtime, which jumps) or unit (ms instead of ns).
    #[test]
    fn boottime_is_nanoseconds_since_boot_and_never_goes_back() {
        let a = boottime_ns();
        let b = boottime_ns();
        assert!(a > 0 && b >= a, "{a} then {b}");
        let uptime_s: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // /proc/uptime is CLOCK_BOOTTIME in seconds: same order of magnitude.
        let ours_s = a as f64 / 1e9;
        assert!(
            (ours_s - uptime_s).abs() < 60.0,
            "boottime {ours_s} s, uptime {uptime_s} s"
        );
    }
}
