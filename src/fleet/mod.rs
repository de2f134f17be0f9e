//! Model rollout over the broker (issue 22): owns the rollout worker, the
//! thread that takes rollout commands the MQTT client received on
//! `spotter/<device_id>/cmd/model` and `spotter/group/<group>/cmd/model`
//! and carries each one through: received → downloaded → verified →
//! active → healthy, or refused / rolled_back with the reason. Every step
//! is queued in the store's outbox ([`OutboxKind::ModelStatus`]) and so
//! reaches `spotter/<device_id>/model_status` store-and-forward, like
//! results.
//!
//! The MQTT client (a sibling in layer 6, which this module never imports)
//! hands commands over as plain [`Incoming`] values through a bounded
//! channel the app creates ([`channel`]); a full channel drops the command
//! (it is retained on the broker and comes again on the next connect).
//! A rollout id handled once (applied, refused or rolled back) is
//! remembered in `<state_dir>/rollout/handled.json` and never acted on
//! again, so a retained command is applied once.
//!
//! The switch is the API's: the model store picks the active version and the
//! inference thread's reload flag makes it load it between two frames; the
//! worker waits until the state shows the new SHA-256. When the running
//! model is `[model] path` (no version active yet), it is first installed
//! as a version and made active, so a roll back has it to return to. The
//! bundle is
//! verified by the model store against `[signing] trusted_keys`; unsigned
//! models are never accepted over the broker. The health window is in
//! [`health`].

mod command;
mod download;
mod health;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::rollout::RolloutSettings;
use crate::config::signing::SigningSettings;
use crate::config::ModelSettings;
use crate::core::ids;
use crate::core::shutdown::Shutdown;
use crate::modelstore::{ModelStore, Trust, VersionMeta};
use crate::pipeline::{load_model, ChangeGuard, InferenceControl};
use crate::state::AppState;
use crate::store::{Outbox, OutboxKind};
use command::{Command, Handled};

/// Commands waiting for the worker; more are dropped (see the module doc).
pub(crate) const INBOX_DEPTH: usize = 8;
/// How long the worker waits for the inference thread to run a model it
/// switched to.
pub(crate) const SWITCH_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest baseline sampled from the previous model before activation.
pub(crate) const BASELINE_MAX: Duration = Duration::from_secs(5);

/// Errors of the rollout worker's own files; each names the path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FleetError {
    #[error("model rollout state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("model rollout: cannot start the worker thread: {0}")]
    Start(std::io::Error),
}

/// A command publish as the MQTT client received it: topic and payload
/// (plain types, so the client needs nothing of this module).
pub(crate) type Incoming = (String, Vec<u8>);

/// The bounded channel from the MQTT client to the worker.
pub(crate) fn channel() -> (SyncSender<Incoming>, Receiver<Incoming>) {
    std::sync::mpsc::sync_channel(INBOX_DEPTH)
}

/// The command topics a device subscribes to (QoS 1).
pub(crate) fn topics(device_id: &str, groups: &[String]) -> Vec<String> {
    let mut t = vec![format!("spotter/{device_id}/cmd/model")];
    t.extend(
        groups
            .iter()
            .map(|g| format!("spotter/group/{g}/cmd/model")),
    );
    t
}

/// What the worker needs from the daemon.
pub(crate) struct Fleet {
    pub settings: RolloutSettings,
    pub device_id: String,
    /// `<state_dir>/rollout`: handled ids, downloads in progress.
    pub dir: PathBuf,
    pub models: ModelStore,
    /// `[model]`, for validating a new model as the daemon would load it.
    pub model: ModelSettings,
    /// `[signing]`: the keys a bundle must be signed by (unsigned models
    /// are never accepted over the broker, whatever `allow_unsigned_local`).
    pub signing: SigningSettings,
    pub control: Arc<InferenceControl>,
    pub state: Arc<AppState>,
    pub outbox: Arc<Outbox>,
    pub shutdown: Shutdown,
}

/// Start the worker; it ends when shutdown starts (registered with the
/// token as worker `rollout`) and the caller joins it.
pub(crate) fn spawn(f: Fleet, rx: Receiver<Incoming>) -> Result<JoinHandle<()>, FleetError> {
    std::fs::create_dir_all(&f.dir).map_err(|e| FleetError::State {
        path: f.dir.clone(),
        reason: e.to_string(),
    })?;
    let handled = Handled::open(&f.dir)?;
    let worker = f.shutdown.worker("rollout");
    std::thread::Builder::new()
        .name("rollout".into())
        .spawn(move || {
            let _worker = worker;
            let mut w = Worker { f, handled };
            w.run(rx);
        })
        .map_err(FleetError::Start)
}

struct Worker {
    f: Fleet,
    handled: Handled,
}

/// How one rollout ended.
enum Outcome {
    Refused(String),
    Healthy(String),
    RolledBack(String),
    /// Shutdown interrupted it before anything changed; not remembered, so
    /// the retained command is taken up again at the next start.
    Interrupted,
}

impl Worker {
    fn stopping(&self) -> bool {
        self.f.shutdown.is_triggered()
    }

    fn run(&mut self, rx: Receiver<Incoming>) {
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(msg) => self.on_message(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.stopping() {
                return;
            }
        }
    }

    /// Queue one step report for `spotter/<device_id>/model_status`.
    fn report(&self, id: Option<&str>, sha256: Option<&str>, step: &str, extra: serde_json::Value) {
        let mut v = serde_json::json!({
            "device_id": self.f.device_id,
            "rollout_id": id,
            "step": step,
            "sha256": sha256,
            "ts_ns": crate::core::clock::unix_ns(std::time::SystemTime::now()),
        });
        if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
            o.extend(e);
        }
        // A JSON value serializes infallibly.
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        if let Err(e) = self.f.outbox.push(OutboxKind::ModelStatus, &bytes) {
            log::error!("model rollout status not queued: {e}");
        }
    }

    fn remember(&mut self, id: &str) {
        if let Err(e) = self.handled.add(id) {
            log::error!("{e}; the rollout {id} may be taken up again after a restart");
        }
    }

    fn on_message(&mut self, (topic, payload): Incoming) {
        let cmd = match Command::parse(&payload) {
            Ok(c) => c,
            Err((id, reason)) => {
                if id.as_deref().is_some_and(|id| self.handled.contains(id)) {
                    return;
                }
                self.refused(id.as_deref(), None, &format!("{reason} (on {})", topic));
                if let Some(id) = id {
                    self.remember(&id);
                }
                return;
            }
        };
        if self.handled.contains(&cmd.id) {
            log::debug!("rollout {} already handled; ignored", cmd.id);
            return;
        }
        if !cmd.selects(&self.f.device_id) {
            log::debug!("rollout {} is not for this device's stage", cmd.id);
            return;
        }
        log::info!(spotter_rollout_id = cmd.id.as_str(); "model rollout {} received on {}: {}", cmd.id, topic, cmd.url);
        self.report(
            Some(&cmd.id),
            Some(&cmd.sha256),
            "received",
            serde_json::json!({ "url": cmd.url, "topic": topic }),
        );
        match self.apply(&cmd) {
            Outcome::Refused(reason) => {
                self.refused(Some(&cmd.id), Some(&cmd.sha256), &reason);
                self.remember(&cmd.id);
            }
            Outcome::Healthy(how) => {
                log::info!(spotter_rollout_id = cmd.id.as_str(); "model rollout {}: health window passed ({how})", cmd.id);
                self.report(
                    Some(&cmd.id),
                    Some(&cmd.sha256),
                    "healthy",
                    serde_json::json!({ "reason": how }),
                );
                self.remember(&cmd.id);
            }
            Outcome::RolledBack(reason) => {
                log::warn!(
                    message_id = ids::ROLLOUT_ROLLED_BACK, spotter_rollout_id = cmd.id.as_str(), spotter_reason = reason.as_str();
                    "model rollout {} rolled back: {reason}", cmd.id
                );
                self.report(
                    Some(&cmd.id),
                    Some(&cmd.sha256),
                    "rolled_back",
                    serde_json::json!({ "reason": reason }),
                );
                self.remember(&cmd.id);
            }
            Outcome::Interrupted => {}
        }
    }

    fn refused(&self, id: Option<&str>, sha256: Option<&str>, reason: &str) {
        log::warn!(
            message_id = ids::ROLLOUT_REFUSED, spotter_rollout_id = id.unwrap_or(""), spotter_reason = reason;
            "model rollout {} refused, nothing changed: {reason}", id.unwrap_or("(no id)")
        );
        self.report(
            id,
            sha256,
            "refused",
            serde_json::json!({ "reason": reason }),
        );
    }

    /// Download, verify, install, activate and watch one rollout.
    fn apply(&mut self, cmd: &Command) -> Outcome {
        let s = self.f.settings.clone();
        let file = self.f.dir.join(format!("{}.bundle", cmd.sha256));
        let fetch = download::Fetch {
            ca_file: s.ca_file.clone(),
            max_bytes: s.max_bundle_bytes,
            timeout: Duration::from_secs(s.download_timeout_s),
        };
        let shutdown = self.f.shutdown.clone();
        if let Err(reason) = download::fetch(&fetch, &cmd.url, &cmd.sha256, &file, &|| {
            shutdown.is_triggered()
        }) {
            if self.stopping() {
                return Outcome::Interrupted;
            }
            return Outcome::Refused(reason);
        }
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        self.report(
            Some(&cmd.id),
            Some(&cmd.sha256),
            "downloaded",
            serde_json::json!({ "bytes": size }),
        );
        let installed = self.install(&file);
        let _ = std::fs::remove_file(&file);
        let meta = match installed {
            Ok(m) => m,
            Err(reason) => return Outcome::Refused(reason),
        };
        self.report(
            Some(&cmd.id),
            Some(&cmd.sha256),
            "verified",
            serde_json::json!({ "model_sha256": meta.sha256, "kind": meta.kind }),
        );
        // From here to the end of the health window no other model change
        // (an API upload, activation or roll back) may interleave.
        let Some(_change) = self.begin_change() else {
            return Outcome::Interrupted;
        };
        let previous = self.f.state.model().map(|m| m.sha256);
        if previous.as_deref() != Some(meta.sha256.as_str()) {
            if let Some(secs) = cmd.shadow_s {
                match self.shadow(cmd, &meta.sha256, secs) {
                    Some(Ok(())) => {}
                    Some(Err(reason)) => return Outcome::Refused(reason),
                    None => return Outcome::Interrupted,
                }
            }
        }
        if previous.as_deref() == Some(meta.sha256.as_str()) {
            self.report(
                Some(&cmd.id),
                Some(&cmd.sha256),
                "active",
                serde_json::json!({ "model_sha256": meta.sha256, "reason": "already the active model" }),
            );
            return Outcome::Healthy("the model was already active".into());
        }
        // The previous model's baseline on this scene.
        let baseline = s.health_window_s.min(BASELINE_MAX.as_secs());
        let Some(before) = self.sample(previous.as_deref(), Duration::from_secs(baseline), false)
        else {
            return Outcome::Interrupted;
        };
        if let Err(e) = self.adopt_configured() {
            return Outcome::Refused(format!(
                "keeping the configured model {} for a roll back: {e}",
                self.f.model.path.display()
            ));
        }
        if let Err(e) = self.f.models.activate(&meta.sha256) {
            return Outcome::Refused(format!("activating {}: {e}", meta.sha256));
        }
        self.f.control.reload.store(true, Ordering::Relaxed);
        if !self.await_running(&meta.sha256) {
            let why = format!(
                "the inference thread did not run {} within {SWITCH_TIMEOUT:?}",
                meta.sha256
            );
            return self.roll_back(why);
        }
        log::info!(spotter_rollout_id = cmd.id.as_str(), spotter_model_sha256 = meta.sha256.as_str(); "model rollout {}: model {} active; health window {} s", cmd.id, meta.sha256, s.health_window_s);
        self.report(
            Some(&cmd.id),
            Some(&cmd.sha256),
            "active",
            serde_json::json!({ "model_sha256": meta.sha256, "previous_sha256": previous, "health_window_s": s.health_window_s }),
        );
        // Remembered now: a restart in the window must not switch again.
        self.remember(&cmd.id);
        let errors0 = self
            .f
            .state
            .counters
            .inference_errors
            .load(Ordering::Relaxed);
        let window = Duration::from_secs(s.health_window_s);
        let bounds = health::Bounds {
            max_inference_errors: s.max_inference_errors,
            max_score_drift: s.max_score_drift,
        };
        let Some(after) = self.sample(Some(&meta.sha256), window, true) else {
            return Outcome::Interrupted;
        };
        let errors = self
            .f
            .state
            .counters
            .inference_errors
            .load(Ordering::Relaxed)
            .saturating_sub(errors0);
        match health::judge(bounds, errors, after.1.as_deref(), before.0, after.0) {
            Ok(how) => Outcome::Healthy(how),
            Err(why) => self.roll_back(why),
        }
    }

    /// The command's shadow period: run the installed (not yet active)
    /// model `sha256` in shadow for `secs`, report what it measured (step
    /// `shadow`), and say whether it may be activated (Err: why not; the
    /// version stays installed, the active model unchanged). None: shutdown.
    fn shadow(&self, cmd: &Command, sha256: &str, secs: u64) -> Option<Result<(), String>> {
        let share = cmd.shadow_share.unwrap_or(command::DEFAULT_SHADOW_SHARE);
        let shadow = &self.f.control.shadow;
        if let Err(e) = shadow.start(sha256, share) {
            return Some(Err(format!("shadow evaluation could not start: {e}")));
        }
        log::info!(spotter_rollout_id = cmd.id.as_str(), spotter_model_sha256 = sha256; "model rollout {}: {sha256} in shadow for {secs} s on {share} of the frames", cmd.id);
        let interrupted = self.f.shutdown.sleep(Duration::from_secs(secs));
        let report = shadow.stop();
        if interrupted {
            return None;
        }
        let Some(report) = report else {
            return Some(Err(
                "the shadow evaluation stopped before reporting (another shadow run replaced it?)"
                    .into(),
            ));
        };
        let (agreement, frames) = (report.agreement(), report.frames_compared());
        self.report(
            Some(&cmd.id),
            Some(&cmd.sha256),
            "shadow",
            serde_json::json!({ "model_sha256": sha256, "shadow_s": secs, "report": report }),
        );
        let min = cmd.min_agreement.unwrap_or(0.0);
        if frames == 0 && min > 0.0 {
            return Some(Err(format!(
                "no frame compared in {secs} s of shadow evaluation; min_agreement {min} not shown"
            )));
        }
        if agreement < min {
            return Some(Err(format!(
                "shadow agreement {agreement:.3} over {frames} frames is below min_agreement {min}; installed, not activated"
            )));
        }
        Some(Ok(()))
    }

    /// Wait for the right to change the model (a change through the API may
    /// be running); None: shutdown.
    fn begin_change(&self) -> Option<ChangeGuard> {
        loop {
            if let Some(g) = self.f.control.change.try_begin() {
                return Some(g);
            }
            if self.f.shutdown.sleep(Duration::from_millis(200)) {
                return None;
            }
        }
    }

    /// Roll back to the previous version and wait until it runs.
    fn roll_back(&mut self, why: String) -> Outcome {
        match self.f.models.rollback() {
            Ok(prev) => {
                self.f.control.reload.store(true, Ordering::Relaxed);
                if self.await_running(&prev.sha256) {
                    Outcome::RolledBack(format!("{why}; back on {}", prev.sha256))
                } else {
                    Outcome::RolledBack(format!(
                        "{why}; rolled back to {} but it is not running yet",
                        prev.sha256
                    ))
                }
            }
            Err(e) => Outcome::RolledBack(format!("{why}; roll back failed: {e}")),
        }
    }

    /// Install the downloaded bundle as a version: signature, sha256 of its
    /// members and minimum Spotter version checked by the model store
    /// (never unsigned), then the canary.
    fn install(&self, file: &std::path::Path) -> Result<VersionMeta, String> {
        let trust = Trust::from_settings(&self.f.signing, false)
            .map_err(|e| format!("[signing] trusted_keys: {e}"))?;
        let model = self.f.model.clone();
        let validate = move |path: &std::path::Path, labels: Option<&std::path::Path>| {
            let mut m = model.clone();
            m.path = path.to_path_buf();
            m.labels = labels.map(std::path::Path::to_path_buf);
            load_model(&m)
                .map(|l| l.status.kind)
                .map_err(|e| e.to_string())
        };
        self.f
            .models
            .install_bundle(file, &trust, validate)
            .map_err(|e| e.to_string())
    }

    /// When the running model is `[model] path` itself (no version active
    /// in the store), install it as a version and make it the active one,
    /// so the activation that follows keeps it in the history and a roll
    /// back returns to it. The running model is not reloaded: it is the
    /// same file.
    fn adopt_configured(&self) -> Result<(), String> {
        if self.f.models.active().map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        let Some(kind) = self.f.state.model().map(|m| m.kind) else {
            return Ok(());
        };
        let meta = self
            .f
            .models
            .install(
                &self.f.model.path,
                self.f.model.labels.as_deref(),
                |_, _| Ok(kind),
            )
            .map_err(|e| e.to_string())?;
        self.f
            .models
            .activate(&meta.sha256)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Wait until the state shows `sha256` running (false: timeout or
    /// shutdown).
    fn await_running(&self, sha256: &str) -> bool {
        let deadline = Instant::now() + SWITCH_TIMEOUT;
        while Instant::now() < deadline {
            if self.f.state.model().is_some_and(|m| m.sha256 == sha256) {
                return true;
            }
            if self.f.shutdown.sleep(Duration::from_millis(50)) {
                return false;
            }
        }
        false
    }

    /// Sample new results of model `sha256` for `d`: their mean top score,
    /// and (when `watch_source`) why the source went not-ready, which ends
    /// the sampling early. None: shutdown.
    fn sample(
        &self,
        sha256: Option<&str>,
        d: Duration,
        watch_source: bool,
    ) -> Option<(health::Mean, Option<String>)> {
        let mut mean = health::Mean::default();
        let mut seen = self
            .f
            .state
            .last_result
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.id.clone());
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.f.shutdown.sleep(health::SAMPLE_EVERY) {
                return None;
            }
            let last = self
                .f
                .state
                .last_result
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            if let Some(r) = last {
                if seen.as_deref() != Some(r.id.as_str()) {
                    seen = Some(r.id.clone());
                    if sha256 == Some(r.model_sha256.as_str()) {
                        mean.add(health::top_score(&r));
                    }
                }
            }
            if watch_source {
                let src = self.f.state.readiness().source;
                if !src.ok {
                    return Some((mean, Some(src.detail)));
                }
            }
        }
        Some((mean, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch the device subscribing to a topic other than the contract's
    // (commands published by the operator would never arrive).
    #[test]
    fn topics_follow_the_contract() {
        assert_eq!(
            topics("cam-1", &["north".into(), "all".into()]),
            vec![
                "spotter/cam-1/cmd/model",
                "spotter/group/north/cmd/model",
                "spotter/group/all/cmd/model"
            ]
        );
    }
}
