//! A small WebDriver (W3C) client for the browser tests in `web`: it starts
//! Debian's `chromedriver` on a free loopback port, opens one headless
//! `chromium` session that accepts the daemon's self-signed certificate,
//! and offers the few commands the tests use (navigate, find, click, type,
//! run a script, cookies, window size, screenshots, the browser's console
//! log). Plain HTTP with ureq and serde_json: no WebDriver crate's tree.
// Not every test uses every command.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{free_port, in_ci};

/// Where Debian's packages put the driver and the browser
/// (`scripts/setup.sh` installs `chromium` and `chromium-driver`).
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// The W3C element reference key.
pub const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// `chromedriver` and one browser session; both ended on drop.
pub struct Browser {
    driver: Child,
    agent: ureq::Agent,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    _profile: tempfile::TempDir,
}

/// Whether the browser tests can run here; outside CI a missing browser
/// skips them (with a note), in CI it fails them.
pub fn available() -> bool {
    let ok = Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists();
    if !ok {
        assert!(
            !in_ci(),
            "{CHROMEDRIVER} or {CHROMIUM} missing: scripts/setup.sh installs chromium and chromium-driver"
        );
        eprintln!("skipped: {CHROMEDRIVER} or {CHROMIUM} not installed (scripts/setup.sh)");
    }
    ok
}

impl Browser {
    /// Start the driver and a headless session with a `width` x `height` window.
    pub fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = agent.get(&format!("{base}/status")).call() {
                let v: Value = r.into_json().unwrap_or_default();
                if v["value"]["ready"] == json!(true) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-extensions", "--disable-background-networking",
                    format!("--user-data-dir={}", profile.path().display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let mut b = Browser {
            driver,
            agent,
            session: String::new(),
            _profile: profile,
        };
        let v = b
            .call("POST", &format!("{base}/session"), Some(caps))
            .expect("new WebDriver session");
        let id = v["sessionId"].as_str().expect("session id").to_string();
        b.session = format!("{base}/session/{id}");
        b.set_size(width, height);
        b
    }

    /// One WebDriver command: the `value` of its answer, or the error's message.
    fn call(&self, method: &str, url: &str, body: Option<Value>) -> Result<Value, String> {
        let req = self.agent.request(method, url);
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let r = match r {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => return Err(e.to_string()),
        };
        let ok = r.status() < 300;
        let v: Value = r.into_json().map_err(|e| e.to_string())?;
        if ok {
            Ok(v["value"].clone())
        } else {
            Err(format!(
                "{}: {}",
                v["value"]["error"].as_str().unwrap_or("error"),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
            ))
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.call(method, &format!("{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn set_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .expect("set the window size");
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<String> {
        self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| v[ELEMENT].as_str().map(str::to_string))
    }

    /// Every element matching `css`.
    pub fn find_all(&self, css: &str) -> Vec<String> {
        self.cmd(
            "POST",
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .ok()
        .and_then(|v| {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default()
    }

    /// The element matching `css`; panics when there is none.
    pub fn must_find(&self, css: &str) -> String {
        self.find(css)
            .unwrap_or_else(|| panic!("no element {css} on {}", self.url()))
    }

    pub fn click(&self, el: &str) {
        self.cmd("POST", &format!("/element/{el}/click"), Some(json!({})))
            .unwrap_or_else(|e| panic!("click: {e}"));
    }

    pub fn clear(&self, el: &str) {
        let _ = self.cmd("POST", &format!("/element/{el}/clear"), Some(json!({})));
    }

    pub fn type_into(&self, el: &str, text: &str) {
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|e| panic!("type: {e}"));
    }

    pub fn text(&self, el: &str) -> String {
        self.cmd("GET", &format!("/element/{el}/text"), None)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// Run `script` (a function body; `arguments` holds `args`) in the page.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Run `script` asynchronously: it ends by calling
    /// `arguments[arguments.length - 1]` with its answer.
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .unwrap_or_else(|e| panic!("async script failed: {e}"))
    }

    /// Accept the open `confirm`/`alert` dialog, if any.
    pub fn accept_alert(&self) -> bool {
        self.cmd("POST", "/alert/accept", Some(json!({}))).is_ok()
    }

    /// An element as a script argument.
    pub fn arg(el: &str) -> Value {
        let mut m = serde_json::Map::new();
        m.insert(ELEMENT.to_string(), Value::String(el.to_string()));
        Value::Object(m)
    }

    /// The value of the cookie `name`, if the browser holds it.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The text of the whole page.
    pub fn page_text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : '';",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Poll `check` until it returns `Some`, or panic with `what` after `secs`.
    pub fn wait<T>(
        &self,
        secs: u64,
        what: &str,
        mut check: impl FnMut(&Browser) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(t) = check(self) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what} on {}; page text:\n{}",
                self.url(),
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The browser's cookies as (name, value) pairs (HttpOnly ones included).
    pub fn cookies(&self) -> Vec<(String, String)> {
        self.cmd("GET", "/cookie", None)
            .ok()
            .and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .map(|c| {
                            (
                                c["name"].as_str().unwrap_or("").to_string(),
                                c["value"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    pub fn delete_cookies(&self) {
        let _ = self.cmd("DELETE", "/cookie", None);
    }

    /// Save a PNG screenshot of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine as _;
        let v = self
            .cmd("GET", "/screenshot", None)
            .expect("take a screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// The console entries logged since the last call (chromedriver's
    /// `se/log`; CSP violations and uncaught errors come as `SEVERE`).
    pub fn console(&self) -> Vec<(String, String)> {
        self.cmd("POST", "/se/log", Some(json!({"type": "browser"})))
            .ok()
            .and_then(|v| {
                v.as_array().map(|a| {
                    a.iter()
                        .map(|e| {
                            (
                                e["level"].as_str().unwrap_or("").to_string(),
                                e["message"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect()
                })
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &self.session.clone(), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `.cache/screenshots/` of the checkout (the README takes one from there).
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.cache/screenshots"))
}
