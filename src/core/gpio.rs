//! GPIO line types the configuration names and the GPIO layer drives: a
//! line's identity, edges, bias, active level, backend and trigger mode.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A GPIO line as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum LineId {
    /// A line by chip (a name under /dev such as `gpiochip0`, or a path) and offset.
    Offset { chip: String, offset: u32 },
    /// A line by its name (as `gpioinfo` shows it).
    Name(String),
}

impl LineId {
    /// Parse `chip:offset`, a bare offset (on `default_chip`) or a line name.
    pub fn parse(s: &str, default_chip: &str) -> Result<LineId, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty line name".into());
        }
        if let Ok(offset) = s.parse::<u32>() {
            return Ok(LineId::Offset {
                chip: default_chip.to_string(),
                offset,
            });
        }
        if let Some((chip, off)) = s.rsplit_once(':') {
            if let Ok(offset) = off.parse::<u32>() {
                if chip.is_empty() {
                    return Err(format!("`{s}`: no chip before the offset"));
                }
                return Ok(LineId::Offset {
                    chip: chip.to_string(),
                    offset,
                });
            }
        }
        if s.len() > 31 {
            // GPIO_MAX_NAME_SIZE in the uAPI is 32 bytes with the NUL.
            return Err(format!("`{s}`: line names are at most 31 bytes"));
        }
        Ok(LineId::Name(s.to_string()))
    }

    /// The chip's device path for an offset line (`gpiochip0` → `/dev/gpiochip0`).
    pub fn chip_path(chip: &str) -> PathBuf {
        if chip.starts_with('/') {
            PathBuf::from(chip)
        } else {
            PathBuf::from("/dev").join(chip)
        }
    }
}

impl fmt::Display for LineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineId::Offset { chip, offset } => write!(f, "{chip}:{offset}"),
            LineId::Name(n) => f.write_str(n),
        }
    }
}

impl From<LineId> for String {
    fn from(l: LineId) -> String {
        l.to_string()
    }
}

/// Which edges of the trigger input count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Edge {
    Rising,
    Falling,
    Both,
}

/// The trigger input's pull resistor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    PullUp,
    PullDown,
    Disabled,
}

/// Which GPIO implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// rppal on a Raspberry Pi (by /proc/device-tree/model), else gpiocdev.
    Auto,
    Gpiocdev,
    Rppal,
}

/// The electrical level that means "on" for an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    High,
    Low,
}

impl Level {
    /// The physical level (true = high) for a logical on/off.
    pub(crate) fn physical(self, on: bool) -> bool {
        match self {
            Level::High => on,
            Level::Low => !on,
        }
    }
}

/// What the trigger input does to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerMode {
    /// No trigger: every frame is inferred (the default).
    Continuous,
    /// After each accepted edge, infer the next `frames` frames captured
    /// after it (within `window`).
    OnTrigger,
    /// Infer only while the line is active (high).
    Gated,
}

impl TriggerMode {
    /// The name the configuration uses (`mode = "on_trigger"`), also shown
    /// in `/api/v1/status`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TriggerMode::Continuous => "continuous",
            TriggerMode::OnTrigger => "on_trigger",
            TriggerMode::Gated => "gated",
        }
    }
}
