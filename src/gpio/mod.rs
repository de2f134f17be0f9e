//! GPIO in the loop: a trigger input that decides which frames are inferred,
//! and outputs driven by rules on stored results (plus a status LED).
//!
//! Hardware access goes through the small [`Gpio`] trait with three
//! backends: [`cdev`] (the Linux GPIO character device v2 uAPI, via the
//! `gpiocdev` crate; any board, and gpio-sim in tests), [`pi`] (the `rppal`
//! crate, Raspberry Pi boards by BCM number) and [`fake`] (in-process, for
//! tests: they drive input edges and read the output history). The logic on
//! top ([`trigger::TriggerGate`], [`outputs::Outputs`]) takes times as
//! arguments, so tests drive it with their own clock.
//!
//! Lines are named `chip:offset` (`gpiochip0:17`), a bare offset on the
//! configured default chip (`17`), or a line name from the device tree
//! (`GPIO17`).

pub(crate) mod cdev;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod outputs;
pub(crate) mod pi;
pub(crate) mod runner;
pub(crate) mod trigger;

use std::time::{Duration, Instant};

pub use crate::core::gpio::{BackendKind, Bias, Edge, Level, LineId};

/// How an input line is requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InputConfig {
    pub line: LineId,
    pub edge: Edge,
    pub bias: Bias,
    /// Asked of the hardware where it can debounce (gpiocdev, rppal); the
    /// trigger gate also filters in software, so every backend behaves alike.
    pub debounce: Duration,
}

/// One edge seen on an input line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EdgeEvent {
    /// true: inactive → active (high, for a line that is not active-low).
    pub rising: bool,
    /// When the daemon read it (the monotonic clock the latency figures use).
    pub at: Instant,
}

/// A requested input line.
pub(crate) trait InputLine: Send {
    /// Wait up to `timeout` for the next edge (None: none came).
    fn wait_edge(&mut self, timeout: Duration) -> Result<Option<EdgeEvent>, GpioError>;
    /// The line's current level (true = high).
    fn is_high(&mut self) -> Result<bool, GpioError>;
}

/// A requested output line.
pub(crate) trait OutputLine: Send {
    /// Drive the line high (true) or low.
    fn set_high(&mut self, high: bool) -> Result<(), GpioError>;
}

/// A GPIO implementation: requests lines.
pub(crate) trait Gpio: Send {
    /// The backend's name, for logs and status (`gpiocdev`, `rppal`, `fake`).
    fn name(&self) -> &'static str;
    fn input(&mut self, cfg: &InputConfig) -> Result<Box<dyn InputLine>, GpioError>;
    /// Request an output line driven to `initial_high` from the first moment.
    fn output(
        &mut self,
        line: &LineId,
        initial_high: bool,
    ) -> Result<Box<dyn OutputLine>, GpioError>;
}

const PERMISSION_HINT: &str = "the chip device must belong to group `gpio` with mode 0660: where no udev rule does that, add /etc/udev/rules.d/60-gpio.rules with SUBSYSTEM==\"gpio\", KERNEL==\"gpiochip*\", GROUP=\"gpio\", MODE=\"0660\" and run `udevadm trigger`; the unit already adds group gpio (SupplementaryGroups) and allows the device (DeviceAllow); outside systemd, add the user to group gpio";
const MISSING_HINT: &str =
    "check the chip name with `gpiodetect`/`gpioinfo`; a simulated chip needs the gpio-sim module";

/// Errors from requesting or using a GPIO line. Each names the line.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GpioError {
    #[error("GPIO line {line}: permission denied opening {device}: {hint}")]
    PermissionDenied {
        line: String,
        device: String,
        hint: &'static str,
    },
    #[error("GPIO line {line}: {device} does not exist: {hint}")]
    MissingDevice {
        line: String,
        device: String,
        hint: &'static str,
    },
    #[error("GPIO line {line}: no line has this name on any chip: {hint}")]
    NoSuchLine { line: String, hint: &'static str },
    #[error("GPIO line {line}: busy (requested by another program or by this config twice)")]
    Busy { line: String },
    #[error("GPIO line {line}: {message}")]
    Unsupported { line: String, message: String },
    #[error("GPIO line {line}: {message}")]
    Io { line: String, message: String },
}

impl GpioError {
    /// Classify an OS error on opening or requesting `line` on `device`.
    pub(crate) fn from_os(line: &LineId, device: &str, errno: i32, message: String) -> GpioError {
        let line = line.to_string();
        let device = device.to_string();
        match errno {
            nix::libc::EACCES | nix::libc::EPERM => GpioError::PermissionDenied {
                line,
                device,
                hint: PERMISSION_HINT,
            },
            nix::libc::ENOENT | nix::libc::ENODEV => GpioError::MissingDevice {
                line,
                device,
                hint: MISSING_HINT,
            },
            nix::libc::EBUSY => GpioError::Busy { line },
            _ => GpioError::Io {
                line,
                message: format!("{device}: {message}"),
            },
        }
    }

    /// Missing line name.
    pub(crate) fn no_such_line(line: &LineId) -> GpioError {
        GpioError::NoSuchLine {
            line: line.to_string(),
            hint: MISSING_HINT,
        }
    }
}

/// Whether this board is a Raspberry Pi (by its device-tree model string).
pub(crate) fn is_raspberry_pi(model: &str) -> bool {
    model.starts_with("Raspberry Pi")
}

/// Open the configured backend; `auto` reads /proc/device-tree/model.
pub(crate) fn open_backend(kind: BackendKind) -> Result<Box<dyn Gpio>, GpioError> {
    let kind = match kind {
        BackendKind::Auto => {
            let model = std::fs::read_to_string("/proc/device-tree/model").unwrap_or_default();
            if is_raspberry_pi(model.trim_end_matches('\0')) {
                BackendKind::Rppal
            } else {
                BackendKind::Gpiocdev
            }
        }
        k => k,
    };
    match kind {
        BackendKind::Rppal => Ok(Box::new(pi::RppalGpio::new()?)),
        _ => Ok(Box::new(cdev::CdevGpio)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    // Would catch `17` or `gpiochip0:17` being taken as a line name (the
    // request would then look for a line called "17" and never find it).
    #[test]
    fn parses_offsets_chips_and_names() {
        assert_eq!(
            LineId::parse("17", "gpiochip0"),
            Ok(LineId::Offset {
                chip: "gpiochip0".into(),
                offset: 17
            })
        );
        assert_eq!(
            LineId::parse("gpiochip2:5", "gpiochip0"),
            Ok(LineId::Offset {
                chip: "gpiochip2".into(),
                offset: 5
            })
        );
        assert_eq!(
            LineId::parse("GPIO17", "gpiochip0"),
            Ok(LineId::Name("GPIO17".into()))
        );
        assert!(LineId::parse(":3", "gpiochip0").is_err());
        assert!(LineId::parse("", "gpiochip0").is_err());
        assert_eq!(
            LineId::chip_path("gpiochip1"),
            PathBuf::from("/dev/gpiochip1")
        );
        assert_eq!(
            LineId::chip_path("/dev/gpiochip1"),
            PathBuf::from("/dev/gpiochip1")
        );
    }

    // Would catch a permission problem being reported without the fix.
    #[test]
    fn permission_error_names_line_and_fix() {
        let l = LineId::parse("gpiochip0:17", "gpiochip0").unwrap();
        let e = GpioError::from_os(&l, "/dev/gpiochip0", nix::libc::EACCES, "denied".into())
            .to_string();
        assert!(
            e.contains("gpiochip0:17")
                && e.contains("group `gpio`")
                && e.contains("KERNEL==\"gpiochip*\"")
                && e.contains("DeviceAllow"),
            "{e}"
        );
        let e =
            GpioError::from_os(&l, "/dev/gpiochip0", nix::libc::ENOENT, "gone".into()).to_string();
        assert!(e.contains("does not exist"), "{e}");
    }

    // Would catch auto choosing rppal on a non-Pi board (rppal fails there).
    #[test]
    fn pi_detection_by_model_string() {
        assert!(is_raspberry_pi("Raspberry Pi 4 Model B Rev 1.4"));
        assert!(!is_raspberry_pi("Radxa ROCK 5B"));
        assert!(!is_raspberry_pi(""));
    }
}
