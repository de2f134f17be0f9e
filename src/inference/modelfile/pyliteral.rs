//! A reader for the Python literals older Ultralytics exports embed: the
//! `str()` of a dict (`{'names': {0: 'person', ...}, 'imgsz': [640, 640]}`).
//!
//! This module owns turning such text into a [`serde_json::Value`], so the
//! metadata is then read the same way as the newer exports' JSON. It reads
//! what `repr` writes for plain data: strings in either quote style with
//! their escapes, integers, floats (also `inf` and `nan`, read as null),
//! `True`/`False`/`None`, lists, tuples (as lists) and dicts with string or
//! integer keys (integer keys become their decimal strings, as
//! `json.dumps` writes them). A call such as `PosixPath('/x')` is read as
//! null. Nothing is evaluated. Input is bounded by the caller; nesting is
//! bounded here ([`MAX_DEPTH`]).

use serde_json::{Map, Number, Value};

/// Deepest nesting of lists, tuples, dicts and calls accepted.
const MAX_DEPTH: usize = 64;

/// Why a text is not a Python literal this reader accepts; `at` is a byte
/// offset.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("Python literal, byte {at}: {what}")]
pub(crate) struct PyLiteralError {
    pub at: usize,
    pub what: String,
}

/// Parse `text`, which must hold exactly one literal (surrounding white
/// space allowed).
pub(crate) fn parse(text: &str) -> Result<Value, PyLiteralError> {
    let mut p = Parser { text, pos: 0 };
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != text.len() {
        return Err(p.err("text after the literal"));
    }
    Ok(v)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn err(&self, what: impl Into<String>) -> PyLiteralError {
        PyLiteralError {
            at: self.pos,
            what: what.into(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, PyLiteralError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH}")));
        }
        self.skip_ws();
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => self.string(q).map(Value::String),
            Some(b'[') => self.sequence(b']', depth).map(Value::Array),
            Some(b'(') => self.sequence(b')', depth).map(Value::Array),
            Some(b'{') => self.dict(depth),
            Some(b'-' | b'+' | b'0'..=b'9' | b'.') => self.number(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.word(depth),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end")),
        }
    }

    /// Items up to `close`, the opening bracket at `pos`.
    fn sequence(&mut self, close: u8, depth: usize) -> Result<Vec<Value>, PyLiteralError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(items);
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {}
                _ => return Err(self.err(format!("expected , or {}", close as char))),
            }
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Value, PyLiteralError> {
        self.pos += 1;
        let mut map = Map::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(Value::Object(map));
            }
            let key_at = self.pos;
            let key = match self.value(depth + 1)? {
                Value::String(s) => s,
                Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
                Value::Bool(b) => if b { "True" } else { "False" }.to_string(),
                _ => {
                    return Err(PyLiteralError {
                        at: key_at,
                        what: "a dict key must be a string, an integer or a bool".into(),
                    })
                }
            };
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected :"));
            }
            self.pos += 1;
            let v = self.value(depth + 1)?;
            // Python keeps the last value of a repeated key; so does this.
            map.insert(key, v);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.err("expected , or }")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, PyLiteralError> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        let mut end = self.pos;
        if matches!(bytes.get(end), Some(b'-' | b'+')) {
            end += 1;
        }
        // `-inf` and `+inf` (`repr(float('-inf'))`).
        if self.text[end..].starts_with("inf") {
            self.pos = end + 3;
            return Ok(Value::Null);
        }
        let mut is_float = false;
        while let Some(&c) = bytes.get(end) {
            match c {
                b'0'..=b'9' | b'_' => {}
                b'.' => is_float = true,
                b'e' | b'E' => {
                    is_float = true;
                    if matches!(bytes.get(end + 1), Some(b'-' | b'+')) {
                        end += 1;
                    }
                }
                _ => break,
            }
            end += 1;
        }
        let lit: String = self.text[start..end]
            .chars()
            .filter(|&c| c != '_')
            .collect();
        self.pos = end;
        let bad = || PyLiteralError {
            at: start,
            what: format!("not a number: {:?}", &self.text[start..end]),
        };
        if !is_float {
            if let Ok(i) = lit.parse::<i64>() {
                return Ok(Value::Number(i.into()));
            }
        }
        // Also integers beyond i64, as Python has them.
        let f: f64 = lit.parse().map_err(|_| bad())?;
        Ok(Number::from_f64(f).map_or(Value::Null, Value::Number))
    }

    /// `True`, `False`, `None`, `inf`, `nan`, or a call `Name(...)` (null).
    fn word(&mut self, depth: usize) -> Result<Value, PyLiteralError> {
        let start = self.pos;
        let bytes = self.text.as_bytes();
        while bytes
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.'))
        {
            self.pos += 1;
        }
        match &self.text[start..self.pos] {
            "True" => return Ok(Value::Bool(true)),
            "False" => return Ok(Value::Bool(false)),
            "None" | "inf" | "nan" => return Ok(Value::Null),
            _ => {}
        }
        self.skip_ws();
        if self.peek() != Some(b'(') {
            self.pos = start;
            return Err(self.err("unknown name"));
        }
        // The arguments are read (keyword arguments are not) and dropped.
        self.sequence(b')', depth)?;
        Ok(Value::Null)
    }

    /// A string literal quoted with `q` (at `pos`), escapes decoded.
    fn string(&mut self, q: u8) -> Result<String, PyLiteralError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            // Copy up to the next quote, backslash or line end in one go.
            let run = rest.find([q as char, '\\', '\n']).ok_or(PyLiteralError {
                at: open,
                what: "unterminated string".into(),
            })?;
            out.push_str(&rest[..run]);
            self.pos += run;
            match self.peek() {
                Some(b'\\') => self.escape(&mut out)?,
                Some(b'\n') => {
                    return Err(PyLiteralError {
                        at: open,
                        what: "unterminated string".into(),
                    })
                }
                _ => {
                    self.pos += 1;
                    return Ok(out);
                }
            }
        }
    }

    /// The escape sequence at `pos` (a backslash), appended to `out`.
    fn escape(&mut self, out: &mut String) -> Result<(), PyLiteralError> {
        let at = self.pos;
        self.pos += 1;
        let Some(c) = self.text[self.pos..].chars().next() else {
            return Err(self.err("unterminated string"));
        };
        self.pos += c.len_utf8();
        let simple = match c {
            '\\' => Some('\\'),
            '\'' => Some('\''),
            '"' => Some('"'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'v' => Some('\x0b'),
            '\n' => return Ok(()), // a line continuation
            _ => None,
        };
        if let Some(s) = simple {
            out.push(s);
            return Ok(());
        }
        let hex = |p: &mut Self, n: usize| -> Result<u32, PyLiteralError> {
            let digits = p.text.get(p.pos..p.pos + n).unwrap_or("");
            let v = (digits.len() == n && digits.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(digits, 16).ok())
                .flatten()
                .ok_or(PyLiteralError {
                    at,
                    what: format!("bad \\{c} escape"),
                })?;
            p.pos += n;
            Ok(v)
        };
        let code = match c {
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '0'..='7' => {
                // Up to three octal digits, the first already read.
                let mut v = c as u32 - '0' as u32;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                v
            }
            other => {
                // Python keeps an unknown escape as written.
                out.push('\\');
                out.push(other);
                return Ok(());
            }
        };
        // A lone surrogate (which Python strings may hold) has no UTF-8 form.
        out.push(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Would catch the reader failing on what Ultralytics 8.1 writes (int
    // keys, nested dicts, lists, a date string) or mangling any of it.
    #[test]
    fn reads_an_ultralytics_dict() {
        let text = "{'description': 'Ultralytics YOLOv8n model', 'stride': 32, 'task': 'detect', 'batch': 1, 'imgsz': [640, 640], 'names': {0: 'person', 1: 'traffic light'}, 'args': {'int8': True, 'nms': False, 'conf': None, 'iou': 0.45}}";
        assert_eq!(
            parse(text).unwrap(),
            json!({
                "description": "Ultralytics YOLOv8n model", "stride": 32, "task": "detect",
                "batch": 1, "imgsz": [640, 640], "names": {"0": "person", "1": "traffic light"},
                "args": {"int8": true, "nms": false, "conf": null, "iou": 0.45}
            })
        );
    }

    // Would catch repr's quoting rules misread: a name with an apostrophe is
    // double-quoted, one with both quotes is single-quoted with \' escapes,
    // and non-ASCII text is either raw or escaped.
    #[test]
    fn strings_in_both_quote_styles_with_escapes() {
        for (text, want) in [
            (r#""person's bag""#, "person's bag"),
            (r#"'say "hi"'"#, "say \"hi\""),
            (r#"'it\'s "x"'"#, "it's \"x\""),
            (r"'a\\b\n\t'", "a\\b\n\t"),
            (r"'\xe9t\u00e9 \U0001F600'", "été 😀"),
            ("'été 😀'", "été 😀"),
            (r"'\101\0'", "A\0"),
            (r"'\d'", "\\d"),
            ("''", ""),
        ] {
            assert_eq!(parse(text), Ok(Value::String(want.into())), "{text}");
        }
    }

    // Would catch numbers and the other constants misread, including
    // Python-only forms (tuples, inf, a trailing comma, a call).
    #[test]
    fn numbers_constants_tuples_and_calls() {
        assert_eq!(
            parse("[-3, +4, 1_000, 2.5, 1e-05, -inf, nan, (1, 2,), PosixPath('/x'), 99999999999999999999]")
                .unwrap(),
            json!([-3, 4, 1000, 2.5, 1e-05, null, null, [1, 2], null, 1e20])
        );
        assert_eq!(parse(" {} \n").unwrap(), json!({}));
        assert_eq!(
            parse("{1: 'a', True: 'b',}").unwrap(),
            json!({"1": "a", "True": "b"})
        );
    }

    // Would catch malformed text accepted (a truncated export, a stray
    // token) or a deeply nested file exhausting the stack.
    #[test]
    fn refuses_malformed_and_too_deep_input() {
        for bad in [
            "",
            "{'names': {0: 'person'",
            "{'a' 1}",
            "{'a': 1} x",
            "'unterminated",
            "'line\nbreak'",
            "[1 2]",
            "{(1, 2): 'a'}",
            "__import__",
            r"'\x4'",
            "1.2.3",
            "-",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(&deep).unwrap_err();
        assert!(e.what.contains("deeper"), "{e}");
        assert!(parse(&format!("{}{}", "[".repeat(60), "]".repeat(60))).is_ok());
    }

    // Would catch a panic on damaged metadata (a slice inside a multi-byte
    // character, an index past the end) instead of an error: every
    // truncation of a dict with escapes and non-ASCII text, and every byte
    // replaced by each of the characters the reader branches on.
    #[test]
    fn damaged_text_never_panics() {
        let text =
            r#"{'a': "it's", 'b': 'été\n\x41\u00e9', 3: [1.5e-3, -2, (True, None)], 'c': P('x')}"#;
        assert!(parse(text).is_ok());
        for (i, _) in text.char_indices() {
            let _ = parse(&text[..i]);
            for c in [
                '\'', '"', '\\', '{', '[', '(', ':', ',', '-', 'e', '.', 'x', 'é',
            ] {
                let mut t = text[..i].to_string();
                t.push(c);
                t.push_str(&text[i..]);
                let _ = parse(&t);
            }
        }
    }
}
