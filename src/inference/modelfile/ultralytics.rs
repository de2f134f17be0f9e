//! The metadata Ultralytics appends to its TFLite exports.
//!
//! This module owns recognising and reading it. An export is the flatbuffer
//! followed by a zip archive (the same place TFLite metadata keeps its
//! associated files) holding one of:
//! - `metadata.json` (newer versions): `json.dumps` of the metadata dict, so
//!   `names` has string keys (`{"0": "person", ...}`);
//! - `temp_meta.txt` (older versions, which also name it as the output's
//!   `TENSOR_AXIS_LABELS` file in the TFLite metadata): the Python `str()` of
//!   the same dict, read by [`super::pyliteral`].
//!
//! Of the dict, Spotter uses `names` (class index → name; the keys must be
//! exactly `0..n-1`), `task`, `imgsz` (`[height, width]`) and `version`.

use serde_json::Value;

use super::pyliteral;

/// The archive members Ultralytics writes, newest format first.
pub(crate) const MEMBERS: [&str; 2] = ["metadata.json", "temp_meta.txt"];

/// Most class names accepted.
const MAX_NAMES: usize = 100_000;
/// Longest class name accepted (bytes).
const MAX_NAME_BYTES: usize = 1_000;

/// What an Ultralytics export says about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UltralyticsMeta {
    /// Class names in class-index order; empty when the file has none or
    /// they were unusable (see [`Read::names_problem`]).
    pub names: Vec<String>,
    /// `detect`, `segment`, `classify`, `pose`, `obb`.
    pub task: Option<String>,
    /// The export's input size, `[height, width]` as Ultralytics writes it.
    pub imgsz: Option<[u32; 2]>,
    /// The Ultralytics version that exported the model.
    pub version: Option<String>,
}

/// Why a metadata member could not be read at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UltralyticsError {
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Python(#[from] pyliteral::PyLiteralError),
    #[error("not a dict")]
    NotADict,
}

/// A member read: the metadata, and why its `names` were dropped if they
/// were.
#[derive(Debug)]
pub(crate) struct Read {
    pub meta: UltralyticsMeta,
    pub names_problem: Option<String>,
}

/// True when a member's text should be read as Ultralytics metadata: any
/// `metadata.json`, and a `temp_meta.txt` holding a dict (rather than, say,
/// a list of labels).
pub(crate) fn looks_like_metadata(member: &str, text: &str) -> bool {
    member == "metadata.json" || text.trim_start().starts_with('{')
}

/// Read member `member` (one of [`MEMBERS`]). `Ok(None)`: a dict, but not
/// Ultralytics' (none of `names`, `imgsz`, `task`, `stride`).
pub(crate) fn read(member: &str, text: &str) -> Result<Option<Read>, UltralyticsError> {
    let value = if member == "metadata.json" {
        serde_json::from_str(text)?
    } else {
        pyliteral::parse(text)?
    };
    let Value::Object(map) = value else {
        return Err(UltralyticsError::NotADict);
    };
    if !["names", "imgsz", "task", "stride"]
        .iter()
        .any(|k| map.contains_key(*k))
    {
        return Ok(None);
    }
    let text_of = |v: Option<&Value>| match v {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let (names, names_problem) = match map.get("names").map(names) {
        Some(Ok(n)) => (n, None),
        Some(Err(why)) => (Vec::new(), Some(why)),
        None => (Vec::new(), Some("no `names`".to_string())),
    };
    Ok(Some(Read {
        meta: UltralyticsMeta {
            names,
            task: text_of(map.get("task")),
            imgsz: map.get("imgsz").and_then(imgsz),
            version: text_of(map.get("version")),
        },
        names_problem,
    }))
}

/// `names`: a dict keyed `0..n-1` (integers written as strings), or a list.
fn names(v: &Value) -> Result<Vec<String>, String> {
    let name = |i: &str, v: &Value| match v {
        Value::String(s) if s.trim().is_empty() => Err(format!("name {i} is empty")),
        Value::String(s) if s.len() > MAX_NAME_BYTES || s.contains(['\n', '\r']) => Err(format!(
            "name {i} is longer than {MAX_NAME_BYTES} bytes or spans lines"
        )),
        Value::String(s) => Ok(s.trim().to_string()),
        _ => Err(format!("name {i} is not a string")),
    };
    let names: Vec<String> = match v {
        Value::Array(list) => list
            .iter()
            .enumerate()
            .map(|(i, v)| name(&i.to_string(), v))
            .collect::<Result<_, _>>()?,
        Value::Object(map) => {
            if map.len() > MAX_NAMES {
                return Err(format!("more than {MAX_NAMES} names"));
            }
            let mut indexed = Vec::with_capacity(map.len());
            for (k, v) in map {
                let i: usize = k
                    .trim()
                    .parse()
                    .map_err(|_| format!("key {k:?} is not a class index"))?;
                indexed.push((i, name(k, v)?));
            }
            indexed.sort_by_key(|(i, _)| *i);
            if let Some(pos) = indexed
                .iter()
                .enumerate()
                .position(|(pos, (i, _))| pos != *i)
            {
                return Err(format!(
                    "the keys are not 0..{}: class {pos} is missing or repeated",
                    map.len().saturating_sub(1)
                ));
            }
            indexed.into_iter().map(|(_, n)| n).collect()
        }
        _ => return Err("`names` is neither a dict nor a list".into()),
    };
    if names.is_empty() {
        return Err("`names` is empty".into());
    }
    if names.len() > MAX_NAMES {
        return Err(format!("more than {MAX_NAMES} names"));
    }
    Ok(names)
}

/// `imgsz`: `[h, w]`, or one number for a square input.
fn imgsz(v: &Value) -> Option<[u32; 2]> {
    let side = |v: &Value| {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0)
    };
    match v {
        Value::Array(a) if a.len() == 2 => Some([side(&a[0])?, side(&a[1])?]),
        Value::Number(_) => side(v).map(|n| [n, n]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch the two formats read differently (string keys from JSON,
    // integer keys from Python), names out of index order, or the other
    // fields lost.
    #[test]
    fn reads_both_formats_alike() {
        let py = read(
            "temp_meta.txt",
            "{'version': '8.1.42', 'task': 'detect', 'imgsz': [384, 640], 'names': {1: 'bicycle', 0: 'person', 2: \"person's bag\"}}",
        )
        .unwrap()
        .unwrap();
        let js = read(
            "metadata.json",
            r#"{"version": "8.3.0", "task": "detect", "imgsz": [384, 640], "names": {"0": "person", "2": "person's bag", "1": "bicycle"}}"#,
        )
        .unwrap()
        .unwrap();
        for r in [&py, &js] {
            assert_eq!(r.meta.names, ["person", "bicycle", "person's bag"]);
            assert_eq!(r.meta.task.as_deref(), Some("detect"));
            assert_eq!(r.meta.imgsz, Some([384, 640]));
            assert!(r.names_problem.is_none());
        }
        assert_eq!(py.meta.version.as_deref(), Some("8.1.42"));
        assert_eq!(js.meta.version.as_deref(), Some("8.3.0"));
        let list = read("metadata.json", r#"{"names": ["a", "b"], "imgsz": 320}"#)
            .unwrap()
            .unwrap();
        assert_eq!(list.meta.names, ["a", "b"]);
        assert_eq!(list.meta.imgsz, Some([320, 320]));
    }

    // Would catch names with a gap or a bad key silently shifting every
    // later label onto the wrong class.
    #[test]
    fn names_not_keyed_0_to_n_are_dropped_with_the_reason() {
        for (names, why) in [
            ("{0: 'a', 2: 'c'}", "class 1 is missing"),
            ("{1: 'a', 2: 'b'}", "class 0 is missing"),
            ("{'x': 'a'}", "not a class index"),
            ("{0: 'a', 1: 3}", "not a string"),
            ("{0: ' '}", "empty"),
            ("{}", "empty"),
            ("'abc'", "neither"),
        ] {
            let r = read(
                "temp_meta.txt",
                &format!("{{'task': 'detect', 'names': {names}}}"),
            )
            .unwrap()
            .unwrap();
            assert!(r.meta.names.is_empty(), "{names}");
            let p = r.names_problem.unwrap_or_default();
            assert!(p.contains(why), "{names}: {p}");
            assert_eq!(r.meta.task.as_deref(), Some("detect"));
        }
        // Keys "0" and " 0" are one class twice.
        let r = read("metadata.json", r#"{"names": {"0": "a", " 0": "b"}}"#)
            .unwrap()
            .unwrap();
        assert!(r.names_problem.unwrap().contains("repeated"));
    }

    // Would catch a non-Ultralytics dict taken for Ultralytics metadata, or
    // unreadable text accepted.
    #[test]
    fn other_dicts_and_garbage() {
        assert!(read("metadata.json", r#"{"author": "someone"}"#)
            .unwrap()
            .is_none());
        assert!(read("metadata.json", "[1]").is_err());
        assert!(read("metadata.json", "{'names': {}}").is_err());
        assert!(read("temp_meta.txt", "{'names': {0: 'a'").is_err());
        assert!(looks_like_metadata("temp_meta.txt", "  {'a': 1}"));
        assert!(!looks_like_metadata("temp_meta.txt", "person\ncar\n"));
        assert!(looks_like_metadata("metadata.json", "garbage"));
    }
}
