//! The binary's code layout (issue 21, peak RSS): cross/link.py, the linker
//! cargo runs, places the functions listed in cross/hot-functions.txt first
//! in `.text`, so the code that runs shares pages.

use std::path::Path;
use std::process::Command;

// Catches: the spotter binary linked without the function order (the
// wrapper bypassed, lld not used, the name mapping failing, or a list so
// stale that little of it matches), which leaves the functions that run
// scattered over the whole of `.text` and costs the board several MiB of
// resident code.
#[test]
fn the_listed_functions_come_first_in_the_binary() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(repo.join("cross/link.py"))
        .arg("--check")
        .arg(env!("CARGO_BIN_EXE_spotter"))
        .output()
        .expect("python3 runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("listed functions in"), "{said}");
}
