//! The web interface (issue 20) in a real headless browser: Debian's
//! `chromium` driven over WebDriver (`webdriver`) against the daemon on the
//! `files` source. Screenshots of each page go to `.cache/screenshots/`.

use std::path::Path;

use crate::common::{testdata, Daemon};
use crate::webdriver::{available, screenshot_dir, Browser};

/// A small classifier (fast on two shared cores) on a folder of one photo,
/// replayed in a loop: every result carries that photo's label.
fn start_daemon(dir: &Path) -> Daemon {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let photo = testdata().join("images/grace_hopper.bmp");
    std::fs::copy(&photo, photos.join("grace_hopper.bmp")).unwrap();
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    let config = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 5.0\nloop = true\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nruntime = \"builtin\"\nthreads = 1\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n",
        photos.display(),
        model.display(),
        labels.display()
    );
    Daemon::start(dir, &config)
}

// Would catch: the browser harness itself broken (driver not started, the
// daemon's self-signed certificate refused, navigation or page text not
// read), which would make every other browser test fail for the wrong reason.
#[test]
fn browser_loads_a_page_over_https() {
    if !available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = start_daemon(tmp.path());
    d.client().wait_for("/healthz", 60, |r| r.status == 200);
    let b = Browser::start(1280, 900);
    b.goto(&format!("https://127.0.0.1:{}/healthz", d.port));
    let text = b.wait(10, "the healthz body", |b| {
        let t = b.page_text();
        t.contains("ok").then_some(t)
    });
    assert!(text.contains("\"status\""), "{text}");
    let shot = screenshot_dir().join("harness-healthz.png");
    b.screenshot(&shot);
    assert!(std::fs::metadata(&shot).unwrap().len() > 100);
}
