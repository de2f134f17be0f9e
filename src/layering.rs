//! The layering rule of `lib.rs`, enforced: every `crate::` path in `src/`
//! (outside comments) must name a module of a strictly lower layer, or the
//! file's own module. A new top-level module must be given a layer here.

use std::collections::BTreeSet;
use std::path::Path;

/// Each top-level module and its layer (see the table in `lib.rs`).
const LAYERS: &[(&str, u8)] = &[
    ("core", 0),
    ("config", 1),
    ("metrics", 2),
    ("image", 2),
    ("logging", 2),
    ("systemd", 2),
    ("power", 2),
    ("state", 3),
    ("capture", 4),
    ("inference", 4),
    ("store", 4),
    ("gpio", 4),
    ("keys", 4),
    ("modelstore", 4),
    ("sightings", 4),
    ("pipeline", 5),
    ("support", 5),
    ("mqtt", 6),
    ("api", 6),
    ("fleet", 6),
    ("app", 7),
    ("tools", 7),
    ("cli", 8),
    // Tests only: fuzz targets reach any parser.
    ("fuzz", 9),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level modules a line of Rust names through `crate::`, including
/// those inside a `crate::{a::b, c}` group.
fn named_modules(line: &str) -> Vec<String> {
    let code = match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    };
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `$crate::` and identifiers ending in `crate` are not paths to us.
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The first identifier of each item at the group's own depth.
            let (mut depth, mut expect_name, mut name) = (0usize, true, String::new());
            for c in group.chars() {
                if c.is_alphanumeric() || c == '_' {
                    if depth == 0 && expect_name {
                        name.push(c);
                    }
                    continue;
                }
                if !name.is_empty() {
                    out.push(std::mem::take(&mut name));
                    expect_name = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expect_name = true,
                    _ => {}
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/ entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every (from, to, file:line) edge between top-level modules in `src/`.
fn edges() -> Vec<(String, String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut edges = Vec::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src/");
        let first = rel
            .components()
            .next()
            .expect("a path")
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if matches!(first.as_str(), "lib" | "main" | "layering") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read source");
        for (n, line) in text.lines().enumerate() {
            for to in named_modules(line) {
                if to != first {
                    edges.push((first.clone(), to, format!("{}:{}", rel.display(), n + 1)));
                }
            }
        }
    }
    edges
}

// Would catch a module importing from a higher (or its own) layer, which is
// how the import cycles this rule removed came about, and a new module added
// without a place in the table.
#[test]
fn no_module_imports_upward() {
    let edges = edges();
    assert!(edges.len() > 50, "parsed too few edges: {}", edges.len());
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    for (from, to, at) in &edges {
        match (layer(from), layer(to)) {
            (Some(f), Some(t)) if t < f => {
                seen.insert((from.clone(), to.clone()));
            }
            (Some(f), Some(t)) => bad.push(format!("{at}: {from} (layer {f}) -> {to} (layer {t})")),
            (None, _) => bad.push(format!("{at}: module `{from}` has no layer in LAYERS")),
            (_, None) => bad.push(format!("{at}: `crate::{to}` has no layer in LAYERS")),
        }
    }
    for (from, to) in &seen {
        println!("{from} -> {to}");
    }
    println!(
        "{} module edges, {} upward or sideways",
        seen.len(),
        bad.len()
    );
    assert!(
        bad.is_empty(),
        "edges against the layering:\n{}",
        bad.join("\n")
    );
}

// Would catch the parser missing grouped imports or mistaking `$crate::` and
// comments for paths, which would let an upward edge through unseen.
#[test]
fn parses_grouped_paths_and_skips_comments() {
    assert_eq!(
        named_modules("use crate::{api::x, state::{A, B}};"),
        ["api", "state"]
    );
    assert_eq!(
        named_modules("let x = crate::store::open(); // crate::cli"),
        ["store"]
    );
    assert_eq!(named_modules("$crate::core::x"), Vec::<String>::new());
    assert_eq!(
        named_modules("//! see [`crate::api`]"),
        Vec::<String>::new()
    );
}
