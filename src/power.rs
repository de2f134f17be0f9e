//! Power and heat (issue 22): reading the SoC temperature and the
//! firmware's throttling and under-voltage flags from sysfs, which Pi boards
//! otherwise change silently (a throttled board infers at a fraction of its
//! rate; an under-powered one corrupts SD cards).
//!
//! Owns only the reading and its interpretation: [`Sensors`] is the trait the
//! monitor polls, [`Sysfs`] reads a sysfs tree (`/sys`, or a fake tree in
//! tests), and [`Reading`] is what one poll saw. Where the values go
//! (status, metrics, the journal) is the state's and the monitor's.
//! [`Governor`] turns temperatures into "slow down" / "back to full rate"
//! for `[power] hot_above_c`.
//!
//! Sources, each optional (a board without one reports `None`):
//! - temperature: `class/thermal/thermal_zone*/temp` (millidegrees Celsius);
//!   the zone whose `type` names the CPU or SoC (`cpu-thermal` on a Pi),
//!   else the first readable one;
//! - throttling: the Raspberry Pi firmware's `get_throttled` bit mask,
//!   `devices/platform/soc/soc:firmware/get_throttled` (hexadecimal, as the
//!   kernel prints it; `throttled=0x50005`, what `vcgencmd get_throttled`
//!   prints, is read too);
//! - under-voltage without that file: the `rpi_volt` hwmon device's
//!   `in0_lcrit_alarm` (newer kernels).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use crate::config::power::HeatLimit;

/// The firmware's `get_throttled` bits. The low four are "now", the same
/// four shifted by 16 are "since boot".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Throttle {
    pub under_voltage: bool,
    pub freq_capped: bool,
    pub throttled: bool,
    pub soft_temp_limit: bool,
}

impl Throttle {
    /// The four flags of `mask` starting at bit `shift` (0: now, 16: since boot).
    pub fn from_mask(mask: u32, shift: u32) -> Throttle {
        let bit = |n: u32| mask & (1 << (n + shift)) != 0;
        Throttle {
            under_voltage: bit(0),
            freq_capped: bit(1),
            throttled: bit(2),
            soft_temp_limit: bit(3),
        }
    }

    /// Any flag set.
    pub fn any(&self) -> bool {
        self.under_voltage || self.freq_capped || self.throttled || self.soft_temp_limit
    }

    /// The names of the flags set, for a log line.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.under_voltage, "under-voltage"),
            (self.freq_capped, "frequency capped"),
            (self.throttled, "throttled"),
            (self.soft_temp_limit, "soft temperature limit"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// What one poll saw.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Reading {
    /// SoC temperature in degrees Celsius.
    pub temp_c: Option<f64>,
    /// The thermal zone it came from (`cpu-thermal`).
    pub temp_zone: Option<String>,
    /// Flags that hold now; `None` when the board reports none.
    pub now: Option<Throttle>,
    /// Flags that held at some time since boot (the firmware's sticky bits).
    pub since_boot: Option<Throttle>,
    /// The raw `get_throttled` mask, when read.
    pub mask: Option<u32>,
}

/// Something that reads the power and heat figures (sysfs, or a fake).
pub trait Sensors: Send {
    fn read(&self) -> Reading;
}

/// The sensors of a sysfs tree rooted at `root` (`/sys` on a device).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Sysfs {
    pub fn new(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    fn temperature(&self) -> Option<(f64, String)> {
        let dir = self.root.join("class/thermal");
        let mut zones: Vec<PathBuf> = std::fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("thermal_zone"))
            })
            .collect();
        zones.sort();
        let mut first = None;
        for z in zones {
            let Some(temp) = read_trimmed(&z.join("temp")).and_then(|t| parse_millidegrees(&t))
            else {
                continue;
            };
            let kind = read_trimmed(&z.join("type")).unwrap_or_default();
            let lower = kind.to_ascii_lowercase();
            if lower.contains("cpu") || lower.contains("soc") {
                return Some((temp, kind));
            }
            if first.is_none() {
                first = Some((temp, kind));
            }
        }
        first
    }

    fn throttle_mask(&self) -> Option<u32> {
        let file = self
            .root
            .join("devices/platform/soc/soc:firmware/get_throttled");
        parse_throttled(&read_trimmed(&file)?)
    }

    /// `in0_lcrit_alarm` of the `rpi_volt` hwmon device: 1 while the supply
    /// is below the firmware's limit.
    fn under_voltage_alarm(&self) -> Option<bool> {
        let dir = self.root.join("class/hwmon");
        for e in std::fs::read_dir(dir).ok()?.flatten() {
            let p = e.path();
            if read_trimmed(&p.join("name")).as_deref() == Some("rpi_volt") {
                return read_trimmed(&p.join("in0_lcrit_alarm")).map(|v| v == "1");
            }
        }
        None
    }
}

impl Sensors for Sysfs {
    fn read(&self) -> Reading {
        let (temp_c, temp_zone) = match self.temperature() {
            Some((t, z)) => (Some(t), Some(z)),
            None => (None, None),
        };
        let mask = self.throttle_mask();
        let (now, since_boot) = match mask {
            Some(m) => (
                Some(Throttle::from_mask(m, 0)),
                Some(Throttle::from_mask(m, 16)),
            ),
            None => match self.under_voltage_alarm() {
                Some(uv) => (
                    Some(Throttle {
                        under_voltage: uv,
                        ..Throttle::default()
                    }),
                    None,
                ),
                None => (None, None),
            },
        };
        Reading {
            temp_c,
            temp_zone,
            now,
            since_boot,
            mask,
        }
    }
}

/// A change of the "now" flags between two readings.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A flag holds where none did (the flags that hold now).
    Started(Throttle),
    /// No flag holds any more.
    Ended,
}

/// Polls [`Sensors`] every `every` and says when throttling starts or ends,
/// so the journal gets one line per episode, not one per poll.
pub struct Watch {
    sensors: Box<dyn Sensors>,
    every: Duration,
    last: Option<Instant>,
    throttling: bool,
}

impl Watch {
    pub fn new(sensors: Box<dyn Sensors>, every: Duration) -> Watch {
        Watch {
            sensors,
            every,
            last: None,
            throttling: false,
        }
    }

    /// The reading, when one is due at `now` (the first call always reads),
    /// and the change it shows, if any.
    pub fn poll(&mut self, now: Instant) -> Option<(Reading, Option<Change>)> {
        if self
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < self.every)
        {
            return None;
        }
        self.last = Some(now);
        let r = self.sensors.read();
        let flags = r.now.unwrap_or_default();
        let change = match (self.throttling, flags.any()) {
            (false, true) => Some(Change::Started(flags)),
            (true, false) => Some(Change::Ended),
            _ => None,
        };
        self.throttling = flags.any();
        Some((r, change))
    }
}

/// Decides, reading by reading, whether inference should run slower for
/// heat ([`HeatLimit`]): on at `above_c`, off only below `resume_below_c`.
#[derive(Debug)]
pub struct Governor {
    limit: HeatLimit,
    hot: bool,
}

impl Governor {
    pub fn new(limit: HeatLimit) -> Governor {
        Governor { limit, hot: false }
    }

    /// The new state (`true`: slow down) when this temperature changes it.
    /// An unknown temperature changes nothing: a sensor that fails once
    /// neither starts nor ends a slowdown.
    pub fn update(&mut self, temp_c: Option<f64>) -> Option<bool> {
        let t = temp_c?;
        let hot = match self.hot {
            false => t >= self.limit.above_c,
            true => t >= self.limit.resume_below_c,
        };
        (hot != self.hot).then(|| {
            self.hot = hot;
            hot
        })
    }

    pub fn limit(&self) -> HeatLimit {
        self.limit
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// `51540` → 51.54 °C. Values outside −100..200 °C are a broken sensor.
fn parse_millidegrees(s: &str) -> Option<f64> {
    let t = s.parse::<i64>().ok()? as f64 / 1000.0;
    (-100.0..=200.0).contains(&t).then_some(t)
}

/// The `get_throttled` mask: `50005`, `0x50005` or `throttled=0x50005`
/// (hexadecimal in every form).
pub fn parse_throttled(s: &str) -> Option<u32> {
    let s = s.trim();
    let s = s.strip_prefix("throttled=").unwrap_or(s);
    let s = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if s.is_empty() {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    // Would catch: the mask read as decimal (0x50005 is a Pi that was
    // under-voltage and throttled; as decimal it names other bits), the
    // sticky bits taken for "now", or vcgencmd's form refused.
    #[test]
    fn throttled_masks_in_every_form() {
        for s in ["50005", "0x50005", "throttled=0x50005\n"] {
            assert_eq!(parse_throttled(s), Some(0x50005), "{s}");
        }
        assert_eq!(parse_throttled(""), None);
        assert_eq!(parse_throttled("throttled="), None);
        assert_eq!(parse_throttled("zz"), None);
        let now = Throttle::from_mask(0x50005, 0);
        assert_eq!(
            now,
            Throttle {
                under_voltage: true,
                freq_capped: false,
                throttled: true,
                soft_temp_limit: false,
            }
        );
        assert_eq!(now.names(), vec!["under-voltage", "throttled"]);
        let boot = Throttle::from_mask(0x50000, 16);
        assert!(boot.under_voltage && boot.throttled && !boot.freq_capped);
        assert!(!Throttle::from_mask(0x50000, 0).any());
    }

    // Would catch: the wrong thermal zone chosen (a GPU or battery zone
    // before the CPU's), millidegrees read as degrees, or a broken sensor's
    // value reported as a temperature.
    #[test]
    fn a_fake_tree_gives_the_cpu_zone_and_the_flags() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "class/thermal/thermal_zone0/type", "battery\n");
        write(root, "class/thermal/thermal_zone0/temp", "30000\n");
        write(root, "class/thermal/thermal_zone1/type", "cpu-thermal\n");
        write(root, "class/thermal/thermal_zone1/temp", "71250\n");
        write(root, "class/thermal/thermal_zone2/type", "broken\n");
        write(root, "class/thermal/thermal_zone2/temp", "-273000\n");
        write(
            root,
            "devices/platform/soc/soc:firmware/get_throttled",
            "80008\n",
        );
        let r = Sysfs::new(root).read();
        assert_eq!(r.temp_c, Some(71.25));
        assert_eq!(r.temp_zone.as_deref(), Some("cpu-thermal"));
        assert_eq!(r.mask, Some(0x80008));
        let now = r.now.unwrap();
        assert!(now.soft_temp_limit && !now.throttled && !now.under_voltage);
        assert!(r.since_boot.unwrap().soft_temp_limit);

        // Without a CPU zone, the first readable one.
        std::fs::remove_dir_all(root.join("class/thermal/thermal_zone1")).unwrap();
        assert_eq!(Sysfs::new(root).read().temp_c, Some(30.0));
    }

    /// Readings from a list, one per call (the last repeats).
    struct Script(std::sync::Mutex<Vec<Reading>>);
    impl Sensors for Script {
        fn read(&self) -> Reading {
            let mut v = self.0.lock().unwrap();
            if v.len() > 1 {
                v.remove(0)
            } else {
                v[0].clone()
            }
        }
    }

    // Would catch: a journal line per poll while a board stays throttled
    // (a flood a technician cannot read), no "ended" line, or polling on
    // every monitor tick instead of every `poll_s`.
    #[test]
    fn the_watch_reports_each_episode_once_at_its_interval() {
        let at = |mask: u32| Reading {
            now: Some(Throttle::from_mask(mask, 0)),
            ..Reading::default()
        };
        let script = Script(std::sync::Mutex::new(vec![
            at(0),
            at(0x4),
            at(0x5),
            at(0x0),
            at(0x0),
        ]));
        let mut w = Watch::new(Box::new(script), Duration::from_secs(5));
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(w.poll(t0).unwrap().1, None);
        assert!(w.poll(t0 + s(1)).is_none(), "read before poll_s passed");
        let (r, c) = w.poll(t0 + s(5)).unwrap();
        assert!(r.now.unwrap().throttled);
        assert_eq!(c, Some(Change::Started(Throttle::from_mask(0x4, 0))));
        assert_eq!(w.poll(t0 + s(10)).unwrap().1, None, "same episode");
        assert_eq!(w.poll(t0 + s(15)).unwrap().1, Some(Change::Ended));
        assert_eq!(w.poll(t0 + s(20)).unwrap().1, None);
    }

    // Would catch: a board without the firmware file reporting "not
    // throttled" (a claim it cannot make) instead of nothing, or the hwmon
    // alarm ignored on kernels that only have that.
    #[test]
    fn missing_sources_report_nothing_and_hwmon_gives_under_voltage() {
        let tmp = tempfile::tempdir().unwrap();
        let r = Sysfs::new(tmp.path()).read();
        assert_eq!(r, Reading::default());
        write(tmp.path(), "class/hwmon/hwmon0/name", "cpu_thermal\n");
        write(tmp.path(), "class/hwmon/hwmon1/name", "rpi_volt\n");
        write(tmp.path(), "class/hwmon/hwmon1/in0_lcrit_alarm", "1\n");
        let r = Sysfs::new(tmp.path()).read();
        assert!(r.now.unwrap().under_voltage);
        assert_eq!(r.since_boot, None);
        assert_eq!(r.mask, None);
    }

    // Would catch the slowdown flapping at the limit (no hysteresis), ending
    // on a failed reading, or never ending once the board has cooled.
    #[test]
    fn the_governor_slows_down_at_the_limit_and_resumes_below_the_hysteresis() {
        let mut g = Governor::new(HeatLimit {
            above_c: 80.0,
            resume_below_c: 75.0,
            max_fps: 1.0,
        });
        assert_eq!(g.update(Some(79.9)), None);
        assert_eq!(g.update(Some(80.0)), Some(true));
        assert_eq!(g.update(Some(85.0)), None);
        assert_eq!(g.update(None), None, "an unknown temperature ended it");
        assert_eq!(g.update(Some(78.0)), None, "ended above the resume point");
        assert_eq!(g.update(Some(75.0)), None);
        assert_eq!(g.update(Some(74.9)), Some(false));
        assert_eq!(g.update(Some(79.0)), None, "started below the limit");
        assert_eq!(g.update(None), None);
    }
}
