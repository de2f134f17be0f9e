//! Fuzz target: the configuration loader. An input is a main file and up
//! to two drop-ins (split at NUL bytes), mutated from the documented
//! example, the packaged file and a fully uncommented example, with TOML
//! values of every type and edge swapped in. Loading must give settings or
//! an error naming the file (and the key, for a bad or missing value).

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::Rng;

use super::{mutate_bytes, mutate_text, Fuzz, Verdict};
use crate::config::{from_sources, ConfigError};

const MAIN: &str = "/etc/spotter/spotter.toml";

/// Values and syntax swapped in for words of the seeds.
const DICT: &[&str] = &[
    "true",
    "false",
    "0",
    "-1",
    "1",
    "255",
    "256",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1e309",
    "-0.0",
    "nan",
    "inf",
    "-inf",
    "0.5",
    "1e-9",
    "0x10",
    "0o7",
    "0b1",
    "1_000",
    "\"\"",
    "\"a\"",
    "\"/\"",
    "\"..\"",
    "\"/dev/null\"",
    "\"\\u0000\"",
    "\"0.0.0.0:0\"",
    "\"[::1]:443\"",
    "\"localhost\"",
    "\"127.0.0.1:99999\"",
    "\"files\"",
    "\"v4l2\"",
    "\"mjpeg\"",
    "\"yuyv\"",
    "\"auto\"",
    "\"litert\"",
    "\"builtin\"",
    "\"letterbox\"",
    "\"crop\"",
    "\"debug\"",
    "\"required\"",
    "\"optional\"",
    "\"mqtts\"",
    "\"#\"",
    "\"a/+/b\"",
    "[]",
    "[1, \"a\"]",
    "[\"a\", \"b\"]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
    "07:32:00",
    "'''",
    "\"\"\"",
    "[daemon]",
    "[source]",
    "[model]",
    "[store]",
    "[api]",
    "[mqtt]",
    "[gpio]",
    "[[gpio.rules]]",
    "[api.tls]",
    "[x]",
    "[[x]]",
    "a.b.c = 1",
    "\n",
    "=",
    "#",
    "\\",
    "\u{feff}",
    "é",
];

fn seeds() -> Vec<Vec<u8>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("docs/spotter.example.toml"))
        .expect("docs/spotter.example.toml");
    let packaged = std::fs::read_to_string(root.join("packaging/spotter.toml"))
        .expect("packaging/spotter.toml");
    // Every commented-out `# key = value` line made live.
    let uncommented: String = example
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if rest.contains(" = ") && !rest.contains(':') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let minimal =
        "[source]\nkind = \"files\"\ndir = \"/srv/demo\"\n\0[api]\nlisten = \"0.0.0.0:8443\"\n";
    vec![
        example.into_bytes(),
        packaged.into_bytes(),
        uncommented.into_bytes(),
        minimal.as_bytes().to_vec(),
    ]
}

fn generate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..=6) {
        if rng.gen_range(0..4) == 0 {
            mutate_bytes(rng, &mut data, seeds);
        } else {
            mutate_text(rng, &mut data, DICT);
        }
    }
    // Sometimes a drop-in: part of another seed after a NUL.
    if rng.gen_range(0..4) == 0 {
        let other = &seeds[rng.gen_range(0..seeds.len())];
        let from = rng.gen_range(0..other.len());
        let to = rng.gen_range(from..=other.len());
        data.push(0);
        data.extend_from_slice(&other[from..to]);
    }
    data
}

fn sources(bytes: &[u8]) -> Vec<(PathBuf, String)> {
    bytes
        .split(|&b| b == 0)
        .take(3)
        .enumerate()
        .map(|(i, text)| {
            let path = match i {
                0 => PathBuf::from(MAIN),
                n => PathBuf::from(format!("/etc/spotter/spotter.d/{n}0-fuzz.toml")),
            };
            (path, String::from_utf8_lossy(text).into_owned())
        })
        .collect()
}

fn check(bytes: &[u8]) -> Verdict {
    let sources = sources(bytes);
    let paths: Vec<String> = sources
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect();
    match from_sources(sources) {
        Ok(settings) => {
            let text = settings.to_toml();
            if text.starts_with("# could not render") {
                return Err(format!("accepted settings do not render: {text}"));
            }
            Ok(true)
        }
        Err(e) => {
            let shown = e.to_string();
            if !paths.iter().any(|p| shown.starts_with(p.as_str())) {
                return Err(format!("error names no file: {shown}"));
            }
            match &e {
                ConfigError::Invalid { key, line, .. } if key.is_empty() || *line == 0 => {
                    Err(format!("invalid value without key or line: {shown}"))
                }
                ConfigError::Missing { key, .. } if key.is_empty() => {
                    Err(format!("missing value without key: {shown}"))
                }
                ConfigError::Read { .. } => Err(format!("no file was read: {shown}")),
                _ => Ok(false),
            }
        }
    }
}

/// Catches the config loader panicking on malformed TOML, wrongly typed
/// or out-of-range values and odd drop-ins, or reporting an error without
/// the file or the key it is about.
#[test]
fn config() {
    let seeds = seeds();
    // The documented example and the packaged file load (the others may not).
    for (i, s) in seeds[..2].iter().enumerate() {
        assert_eq!(check(s), Ok(true), "seed {i} refused");
    }
    let f = Fuzz::new("config", 64 << 20);
    f.run(|rng| generate(rng, &seeds), check);
}
