//! Class labels: loading label files and matching them to a model's outputs.
//!
//! This module owns the label list of a model and the rule that maps an output
//! index (classifier) or a class id (detector) to a label. Two file formats are
//! accepted: one label per line (index = line number), and the numbered
//! `N label` format (e.g. Coral's `coco_labels.txt` variants), recognised only
//! when *every* non-empty line starts with a distinct number. CRLF line endings,
//! a UTF-8 BOM and trailing blank lines are tolerated.
//!
//! Matching is explicit, never a silent shift: a classifier with as many outputs
//! as labels maps directly; one extra output means index 0 is a background class
//! (logged); any other combination is an error naming both counts.

use std::path::Path;

use super::InferenceError;

/// An ordered label list and where it came from (a path, or "embedded").
#[derive(Debug, Clone, PartialEq)]
pub struct Labels {
    names: Vec<String>,
    source: String,
}

impl Labels {
    /// Read and parse a labels file.
    pub(crate) fn load(path: &Path) -> Result<Labels, InferenceError> {
        let source = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| InferenceError::Labels {
            path: source.clone(),
            reason: format!("cannot read: {e}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| InferenceError::Labels {
            path: source.clone(),
            reason: format!("not UTF-8: {e}"),
        })?;
        Labels::parse(&text, &source)
    }

    /// Parse label text. `source` names the origin in errors and logs.
    pub(crate) fn parse(text: &str, source: &str) -> Result<Labels, InferenceError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines: Vec<&str> = text
            .lines()
            .map(|l| l.trim_end_matches(['\r', ' ', '\t']))
            .collect();
        while lines.last().is_some_and(|l| l.is_empty()) {
            lines.pop();
        }
        if lines.is_empty() {
            return Err(InferenceError::Labels {
                path: source.to_string(),
                reason: "file has no labels".into(),
            });
        }
        let names = match parse_numbered(&lines) {
            Some(names) => names,
            None => lines.iter().map(|l| l.trim().to_string()).collect(),
        };
        Ok(Labels {
            names,
            source: source.to_string(),
        })
    }

    /// Wrap an already-split list (e.g. labels embedded in the model).
    pub(crate) fn from_names(names: Vec<String>, source: impl Into<String>) -> Labels {
        Labels {
            names,
            source: source.into(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Where the labels came from: a file path or `embedded:NAME`.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The label at `i`, or `None` when out of range or a gap in a numbered file.
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        self.names
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// Parse the `N label` format. Returns `None` unless every line is numbered
/// with a distinct non-negative integer followed by whitespace (or `:`) and a
/// non-empty label. Gaps between numbers become empty (missing) labels.
fn parse_numbered(lines: &[&str]) -> Option<Vec<String>> {
    let mut entries = Vec::with_capacity(lines.len());
    for line in lines.iter().filter(|l| !l.trim().is_empty()) {
        let line = line.trim_start();
        let digits = line.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 6 {
            return None;
        }
        let rest = &line[digits..];
        let label = rest.strip_prefix(':').unwrap_or(rest);
        if !label.starts_with([' ', '\t']) && rest.len() == label.len() {
            return None;
        }
        let label = label.trim();
        if label.is_empty() {
            return None;
        }
        let n: usize = line[..digits].parse().ok()?;
        entries.push((n, label.to_string()));
    }
    // Bounded: numbers have at most 6 digits, so this is at most 1e6 entries.
    let max = entries.iter().map(|(n, _)| *n).max()?;
    let mut names = vec![String::new(); max + 1];
    for (n, label) in entries {
        if !names[n].is_empty() {
            return None; // duplicate number: not the numbered format
        }
        names[n] = label;
    }
    Some(names)
}

/// How a classifier's output index maps onto the label list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifierLabelMap {
    /// `labels.len() == classes`: output `i` is `labels[i]`.
    Direct,
    /// `classes == labels.len() + 1`: output 0 is a background class and
    /// output `i` is `labels[i - 1]`.
    BackgroundFirst,
}

impl ClassifierLabelMap {
    /// Decide how `labels` maps onto `classes` outputs, or fail naming both counts.
    pub(crate) fn new(
        labels: &Labels,
        classes: usize,
        model: &str,
    ) -> Result<Self, InferenceError> {
        if labels.len() == classes {
            Ok(ClassifierLabelMap::Direct)
        } else if classes == labels.len() + 1 {
            log::info!(model = model, labels = labels.source(); "model has {classes} outputs and {} labels: treating output 0 as background", labels.len());
            Ok(ClassifierLabelMap::BackgroundFirst)
        } else {
            Err(InferenceError::Labels {
                path: labels.source().to_string(),
                reason: format!(
                    "{} labels do not match the {classes} outputs of model {model} (expected {classes}, or {} with an implicit background class)",
                    labels.len(),
                    classes.saturating_sub(1)
                ),
            })
        }
    }

    /// The label of output `index`.
    pub(crate) fn label(self, labels: &Labels, index: usize) -> String {
        let name = match self {
            ClassifierLabelMap::Direct => labels.get(index),
            ClassifierLabelMap::BackgroundFirst if index == 0 => Some("background"),
            ClassifierLabelMap::BackgroundFirst => labels.get(index - 1),
        };
        name.map_or_else(|| unlabelled(index), str::to_string)
    }
}

/// How a detector's class id maps onto the label list.
///
/// SSD label maps from the TensorFlow object-detection API start with a `???`
/// line for the background class that the post-process op never emits, so
/// class id `k` is line `k + 1`. Lists without that line (e.g. Coral's
/// `coco_labels.txt`) map class id `k` to line `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DetectorLabelMap {
    pub offset: usize,
}

impl DetectorLabelMap {
    pub(crate) fn new(labels: &Labels) -> Self {
        let offset = usize::from(labels.names().first().is_some_and(|l| l.trim() == "???"));
        DetectorLabelMap { offset }
    }

    /// The label of class id `class_id`.
    pub(crate) fn label(self, labels: &Labels, class_id: usize) -> String {
        labels
            .get(class_id + self.offset)
            .filter(|l| *l != "???")
            .map_or_else(|| unlabelled(class_id), str::to_string)
    }
}

/// The name used for an index that has no label.
pub(crate) fn unlabelled(index: usize) -> String {
    format!("#{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Labels {
        Labels::parse(text, "test").unwrap()
    }

    #[test]
    fn crlf_and_trailing_blank_lines() {
        // Catches a stray '\r' in labels or an extra empty label at the end.
        let l = parse("\u{feff}background\r\ntench\r\ngoldfish\r\n\r\n");
        assert_eq!(l.names(), ["background", "tench", "goldfish"]);
    }

    #[test]
    fn interior_blank_line_keeps_positions() {
        // Catches indices shifting when a blank line sits in the middle.
        let l = parse("a\n\nc\n");
        assert_eq!(l.len(), 3);
        assert_eq!(l.get(1), None);
        assert_eq!(l.get(2), Some("c"));
    }

    #[test]
    fn numbered_format_with_gaps() {
        // Catches numbered files being read by line position instead of number.
        let l = parse("0  person\n1  bicycle\n3  motorcycle\n");
        assert_eq!(l.len(), 4);
        assert_eq!(l.get(0), Some("person"));
        assert_eq!(l.get(2), None);
        assert_eq!(l.get(3), Some("motorcycle"));
    }

    #[test]
    fn numbers_in_some_labels_do_not_switch_format() {
        // Catches a plain file being misread as numbered because one label starts with a digit.
        let l = parse("7 up\ncola\n");
        assert_eq!(l.names(), ["7 up", "cola"]);
    }

    #[test]
    fn empty_file_is_an_error() {
        // Catches a model running with no labels when the file is empty.
        assert!(Labels::parse("\n\n", "x").is_err());
    }

    #[test]
    fn classifier_matching() {
        // Catches a silent off-by-one between outputs and labels.
        let l = parse("tench\ngoldfish\n");
        assert_eq!(
            ClassifierLabelMap::new(&l, 2, "m").unwrap(),
            ClassifierLabelMap::Direct
        );
        let bg = ClassifierLabelMap::new(&l, 3, "m").unwrap();
        assert_eq!(bg, ClassifierLabelMap::BackgroundFirst);
        assert_eq!(bg.label(&l, 0), "background");
        assert_eq!(bg.label(&l, 1), "tench");
        let err = ClassifierLabelMap::new(&l, 5, "m").unwrap_err().to_string();
        assert!(
            err.contains("2 labels") && err.contains("5 outputs"),
            "{err}"
        );
    }

    #[test]
    fn detector_offset_from_question_marks() {
        // Catches SSD labels shifted by one (class 0 must be "person", not "???").
        let tf = parse("???\nperson\nbicycle\n");
        let m = DetectorLabelMap::new(&tf);
        assert_eq!(m.label(&tf, 0), "person");
        let coral = parse("person\nbicycle\n");
        assert_eq!(DetectorLabelMap::new(&coral).label(&coral, 1), "bicycle");
        assert_eq!(DetectorLabelMap::new(&coral).label(&coral, 7), "#7");
    }
}
