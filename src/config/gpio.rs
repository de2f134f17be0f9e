//! The `[gpio]` section: raw keys and their validation into
//! [`GpioSettings`]. Lines are checked for syntax here and for conflicts (an
//! output that is also the trigger input, one line driven with two active
//! levels); whether they exist is only known when they are requested.

use serde::Deserialize;
use toml::Spanned;

use super::raw::{Layers, Origin};
use super::{in_range, invalid, val, ConfigError};
use serde::Serialize;

use crate::core::gpio::{BackendKind, Bias, Edge, Level, LineId, TriggerMode};

/// `[gpio.trigger]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TriggerSettings {
    pub mode: TriggerMode,
    /// Required unless mode = continuous.
    pub line: Option<LineId>,
    pub edge: Edge,
    pub bias: Bias,
    pub debounce_ms: u64,
    pub frames: u32,
    pub window_ms: u64,
}

/// `[gpio]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpioSettings {
    pub backend: BackendKind,
    /// The chip for lines given as a bare offset.
    pub chip: String,
    pub trigger: TriggerSettings,
    #[serde(rename = "rule")]
    pub rules: Vec<RuleSpec>,
    pub status_led: Option<LedSpec>,
}

impl GpioSettings {
    /// Whether any GPIO is configured (otherwise nothing is opened).
    pub(crate) fn enabled(&self) -> bool {
        self.trigger.mode != TriggerMode::Continuous
            || !self.rules.is_empty()
            || self.status_led.is_some()
    }
}

/// One configured rule.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleSpec {
    pub label: String,
    pub min_score: f32,
    pub hold_ms: u64,
    pub line: LineId,
    /// The level that means "on"; the safe state is the other one.
    pub active: Level,
    /// What fires the rule (issue 18): each stored frame, or the start of
    /// a sighting of its label.
    pub on: RuleOn,
}

/// `[[gpio.rule]] on` (issue 18).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleOn {
    /// Every stored result with the label at or above `min_score`.
    #[default]
    Frame,
    /// A sighting of the label starting with a peak score at or above
    /// `min_score`; per-frame results are ignored.
    SightingStarted,
}

/// The optional status LED.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LedSpec {
    pub line: LineId,
    pub active: Level,
}

type Field<T> = Option<Spanned<T>>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGpio {
    pub backend: Field<BackendKind>,
    pub chip: Field<String>,
    pub trigger: Option<RawTrigger>,
    pub rule: Option<Vec<RawRule>>,
    pub status_led: Option<RawLed>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrigger {
    pub mode: Field<TriggerMode>,
    pub line: Field<String>,
    pub edge: Field<Edge>,
    pub bias: Field<Bias>,
    pub debounce_ms: Field<u64>,
    pub frames: Field<u32>,
    pub window_ms: Field<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub label: Field<String>,
    pub min_score: Field<f32>,
    pub hold_ms: Field<u64>,
    pub line: Field<String>,
    pub active: Field<Level>,
    /// Sightings (issue 18).
    pub on: Field<RuleOn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLed {
    pub line: Field<String>,
    pub active: Field<Level>,
}

/// At most this many rules (each may hold a line).
const MAX_RULES: usize = 32;

fn line(o: &Origin<String>, key: &str, chip: &str) -> Result<LineId, ConfigError> {
    LineId::parse(&o.value, chip).map_err(|m| {
        invalid(
            o,
            key,
            format!("not a GPIO line ({m}); use `chip:offset`, an offset or a line name"),
        )
    })
}

/// Two spellings of one line (`17` and `gpiochip0:17`, or chip paths) are
/// the same line.
fn same_line(a: &LineId, b: &LineId) -> bool {
    match (a, b) {
        (
            LineId::Offset {
                chip: ca,
                offset: oa,
            },
            LineId::Offset {
                chip: cb,
                offset: ob,
            },
        ) => oa == ob && LineId::chip_path(ca) == LineId::chip_path(cb),
        _ => a == b,
    }
}

pub(super) fn build_gpio(l: &Layers) -> Result<GpioSettings, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.gpio.as_ref()?.$f.as_ref())
        };
        ($t:ident . $f:ident) => {
            l.get(|r| r.gpio.as_ref()?.$t.as_ref()?.$f.as_ref())
        };
    }
    let (backend, chip) = (get!(backend), get!(chip));
    in_range(
        &chip,
        "gpio.chip",
        |c: &String| !c.is_empty() && !c.contains(char::is_whitespace),
        "must be a chip name such as \"gpiochip0\" or a /dev path",
    )?;
    let chip = val(&chip, "gpiochip0".to_string());
    let (mode, tline, edge, bias) = (
        get!(trigger.mode),
        get!(trigger.line),
        get!(trigger.edge),
        get!(trigger.bias),
    );
    let (debounce, frames, window) = (
        get!(trigger.debounce_ms),
        get!(trigger.frames),
        get!(trigger.window_ms),
    );
    in_range(
        &debounce,
        "gpio.trigger.debounce_ms",
        |v| *v <= 1000,
        "must be between 0 and 1000",
    )?;
    in_range(
        &frames,
        "gpio.trigger.frames",
        |v| (1..=100).contains(v),
        "must be between 1 and 100",
    )?;
    in_range(
        &window,
        "gpio.trigger.window_ms",
        |v| (100..=600_000).contains(v),
        "must be between 100 and 600000",
    )?;
    let mode_v = val(&mode, TriggerMode::Continuous);
    let trigger_line = match &tline {
        Some(o) => Some((line(o, "gpio.trigger.line", &chip)?, o.as_pos())),
        None => None,
    };
    if mode_v != TriggerMode::Continuous && trigger_line.is_none() {
        let path = mode
            .as_ref()
            .map(|o| o.path.display().to_string())
            .unwrap_or_default();
        return Err(ConfigError::Missing {
            path,
            key: "gpio.trigger.line".into(),
            message: "required unless gpio.trigger.mode = \"continuous\"".into(),
        });
    }
    if let (TriggerMode::Gated, Some(o)) = (mode_v, &edge) {
        if o.value != Edge::Both {
            return Err(invalid(
                o,
                "gpio.trigger.edge",
                "gated mode follows the line's level (both edges); remove `edge`",
            ));
        }
    }
    let trigger = TriggerSettings {
        mode: mode_v,
        line: trigger_line.as_ref().map(|(id, _)| id.clone()),
        edge: val(&edge, Edge::Rising),
        bias: val(&bias, Bias::Disabled),
        debounce_ms: val(&debounce, 10),
        frames: val(&frames, 3),
        window_ms: val(&window, 5_000),
    };

    let mut rules: Vec<(RuleSpec, Origin<()>, String)> = Vec::new();
    if let Some((raw, at)) = l.get_tables(|r| r.gpio.as_ref()?.rule.as_ref()) {
        for (i, r) in raw.iter().enumerate() {
            let key = |k: &str| format!("gpio.rule[{i}].{k}");
            let missing = |k: &str| ConfigError::Missing {
                path: at.path(),
                key: key(k),
                message: "required in every [[gpio.rule]]".into(),
            };
            let label = at.at(&r.label).ok_or_else(|| missing("label"))?;
            let lo = at.at(&r.line).ok_or_else(|| missing("line"))?;
            let (min, hold, active) = (at.at(&r.min_score), at.at(&r.hold_ms), at.at(&r.active));
            in_range(
                &Some(label.clone()),
                &key("label"),
                |s: &String| !s.is_empty() && s.len() <= 200,
                "must be a non-empty label",
            )?;
            in_range(
                &min,
                &key("min_score"),
                |v: &f32| (0.0..=1.0).contains(v),
                "must be between 0.0 and 1.0",
            )?;
            in_range(
                &hold,
                &key("hold_ms"),
                |v| (1..=86_400_000).contains(v),
                "must be between 1 and 86400000",
            )?;
            let spec = RuleSpec {
                label: label.value.clone(),
                min_score: val(&min, 0.5),
                hold_ms: val(&hold, 1_000),
                line: line(&lo, &key("line"), &chip)?,
                active: val(&active, Level::High),
                on: val(&at.at(&r.on), RuleOn::Frame),
            };
            if let Some((other, _, _)) = rules
                .iter()
                .find(|(o, _, _)| same_line(&o.line, &spec.line) && o.active != spec.active)
            {
                return Err(invalid(&lo, &key("active"), format!("line {} is driven active-{:?} by another rule; one line has one active level", other.line, other.active).to_lowercase()));
            }
            rules.push((spec, lo.as_pos(), key("line")));
        }
        if raw.len() > MAX_RULES {
            return Err(ConfigError::Missing {
                path: at.path(),
                key: "gpio.rule".into(),
                message: format!("at most {MAX_RULES} rules"),
            });
        }
    }

    let led = match get!(status_led.line) {
        Some(o) => Some((
            LedSpec {
                line: line(&o, "gpio.status_led.line", &chip)?,
                active: val(&get!(status_led.active), Level::High),
            },
            o.as_pos(),
            "gpio.status_led.line".to_string(),
        )),
        None => None,
    };

    // An output that is also the trigger input (or two outputs on one line).
    if let Some((tl, _)) = &trigger_line {
        for (out, at, key) in rules
            .iter()
            .map(|(r, at, k)| (&r.line, at, k))
            .chain(led.as_ref().map(|(l, at, k)| (&l.line, at, k)))
        {
            if same_line(out, tl) {
                return Err(invalid(
                    at,
                    key,
                    format!("line {out} is configured as an output and as the trigger input"),
                ));
            }
        }
    }
    if let Some((led_spec, at, _)) = &led {
        if rules
            .iter()
            .any(|(r, _, _)| same_line(&r.line, &led_spec.line))
        {
            return Err(invalid(
                at,
                "gpio.status_led.line",
                format!("line {} is also a rule output", led_spec.line),
            ));
        }
    }
    Ok(GpioSettings {
        backend: val(&backend, BackendKind::Auto),
        chip,
        trigger,
        rules: rules.into_iter().map(|(r, _, _)| r).collect(),
        status_led: led.map(|(l, _, _)| l),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::{from_sources, Settings};
    use super::*;

    fn one(text: &str) -> Result<Settings, ConfigError> {
        from_sources(vec![(
            PathBuf::from("/etc/spotter/spotter.toml"),
            text.to_string(),
        )])
    }

    const WIRING: &str = r#"
[gpio]
backend = "gpiocdev"
[gpio.trigger]
mode = "on_trigger"
line = "17"
edge = "rising"
bias = "pull-down"
debounce_ms = 20
[[gpio.rule]]
label = "person"
min_score = 0.6
hold_ms = 2000
line = "gpiochip0:27"
[gpio.status_led]
line = "GPIO22"
"#;

    // Would catch GPIO being opened (and failing) on a board without any
    // [gpio] section: the default must leave the pipeline as it was.
    #[test]
    fn default_is_continuous_and_disabled() {
        let g = one("").unwrap().gpio;
        assert_eq!(g.trigger.mode, TriggerMode::Continuous);
        assert!(!g.enabled());
        assert_eq!(
            (g.backend, g.chip.as_str()),
            (BackendKind::Auto, "gpiochip0")
        );
    }

    // Would catch the README's wiring example not parsing into what it says.
    #[test]
    fn wiring_example_parses() {
        let g = one(WIRING).unwrap().gpio;
        assert!(g.enabled());
        assert_eq!(
            g.trigger.line,
            Some(LineId::Offset {
                chip: "gpiochip0".into(),
                offset: 17
            })
        );
        assert_eq!(
            (
                g.trigger.edge,
                g.trigger.bias,
                g.trigger.debounce_ms,
                g.trigger.frames
            ),
            (Edge::Rising, Bias::PullDown, 20, 3)
        );
        assert_eq!(g.rules.len(), 1);
        assert_eq!(
            (
                g.rules[0].label.as_str(),
                g.rules[0].min_score,
                g.rules[0].hold_ms
            ),
            ("person", 0.6, 2000)
        );
        assert_eq!(
            g.status_led.map(|l| l.line),
            Some(LineId::Name("GPIO22".into()))
        );
    }

    // Would catch an output wired to the trigger input being accepted (the
    // daemon would drive its own trigger), in either spelling of the line.
    #[test]
    fn output_that_is_also_the_input_is_an_error() {
        let text = WIRING.replace("line = \"gpiochip0:27\"", "line = \"/dev/gpiochip0:17\"");
        let err = one(&text).unwrap_err().to_string();
        assert!(
            err.contains("/etc/spotter/spotter.toml:14:")
                && err.contains("`gpio.rule[0].line`")
                && err.contains("output and as the trigger input"),
            "{err}"
        );
        let text = WIRING.replace("line = \"GPIO22\"", "line = \"gpiochip0:17\"");
        let err = one(&text).unwrap_err().to_string();
        assert!(err.contains("trigger input"), "{err}");
    }

    // Would catch (issue 18) `on` not defaulting to per-frame rules (every
    // existing wiring would change behaviour), `sighting_started` not
    // parsed, or a misspelt value accepted without naming the key.
    #[test]
    fn rule_on_defaults_to_frame_and_takes_sighting_started() {
        let g = one(WIRING).unwrap().gpio;
        assert_eq!(g.rules[0].on, RuleOn::Frame);
        let text = WIRING.replace(
            "hold_ms = 2000\n",
            "hold_ms = 2000\non = \"sighting_started\"\n",
        );
        assert_eq!(
            one(&text).unwrap().gpio.rules[0].on,
            RuleOn::SightingStarted
        );
        let text = WIRING.replace("hold_ms = 2000\n", "hold_ms = 2000\non = \"sighting\"\n");
        let err = one(&text).unwrap_err().to_string();
        assert!(
            err.contains(":14:") && err.contains("sighting_started"),
            "{err}"
        );
    }

    // Would catch a trigger mode without a line, rules without a line,
    // contradicting active levels and unknown keys slipping through.
    #[test]
    fn invalid_sections_name_the_key() {
        let err = one("[gpio.trigger]\nmode = \"gated\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpio.trigger.line"), "{err}");
        let err = one("[[gpio.rule]]\nlabel = \"person\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpio.rule[0].line"), "{err}");
        let err = one("[[gpio.rule]]\nlabel = \"a\"\nline = \"5\"\n[[gpio.rule]]\nlabel = \"b\"\nline = \"gpiochip0:5\"\nactive = \"low\"\n").unwrap_err().to_string();
        assert!(
            err.contains(":6:") && err.contains("one active level"),
            "{err}"
        );
        let err = one("[gpio.trigger]\nmode = \"gated\"\nline = \"4\"\nedge = \"rising\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":4:") && err.contains("gpio.trigger.edge"),
            "{err}"
        );
        let err = one("[gpio.trigger]\nmode = \"on_trigger\"\nline = \"4\"\nfrmes = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":4:") && err.contains("frmes"), "{err}");
        let err = one("[[gpio.rule]]\nlabel = \"a\"\nline = \"5\"\nmin_score = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":4:") && err.contains("gpio.rule[0].min_score"),
            "{err}"
        );
    }
}
