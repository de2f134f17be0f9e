//! Shadow evaluation (A/B, issue 22): it owns [`Shadow`], the handle the
//! API and the fleet worker share (reached as
//! `InferenceControl::shadow`), the shadow thread, and [`ShadowReport`].
//!
//! A candidate (an installed, non-active model version) runs on its own
//! thread with its own interpreter (one thread, niced to 10) on a `share` of
//! the frames the active model has already inferred, each with the active
//! model's output. The inference thread hands a frame over with
//! [`Shadow::offer`]: a one-item slot taken with `try_lock`; when the shadow
//! thread is still busy with the previous frame (or the lock is held), the
//! frame is dropped and counted. So the active model never waits for the
//! candidate; what the shadow costs it is a frame clone on sampled frames.
//! The comparison maths live in `shadow_compare.rs`.
//!
//! The thread is registered with the shutdown token (when one is attached)
//! and joined by [`Shadow::stop`]; the inference thread stops the shadow when
//! it ends, so joining the inference thread joins the shadow thread too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;

use super::load_model;
use super::shadow_compare::{Comparison, Tally};
use crate::config::ModelSettings;
use crate::core::frame::Frame;
use crate::core::result::InferenceOutput;
use crate::core::shutdown::Shutdown;
use crate::modelstore::ModelStore;
use crate::state::AppState;

/// Why a shadow run could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("no installed model version {0}")]
    UnknownVersion(String),
    #[error("model version {0} is the active one: nothing to compare it with")]
    IsActive(String),
    #[error("share must be a number in (0, 1], got {0}")]
    InvalidShare(f64),
    #[error("the inference pipeline has not started (no model store or model)")]
    NotReady,
    #[error("model version {sha256} cannot run in shadow: {reason}")]
    Load { sha256: String, reason: String },
    #[error("model version {sha256} is a {candidate} model, the active one a {active} model")]
    KindMismatch {
        sha256: String,
        candidate: String,
        active: String,
    },
    #[error("model store: {0}")]
    Store(#[from] crate::modelstore::ModelStoreError),
    #[error("cannot start the shadow thread: {0}")]
    Spawn(std::io::Error),
}

/// The comparison of a shadow run so far (`GET /api/v1/model/shadow`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShadowReport {
    /// The candidate's SHA-256.
    pub candidate_sha256: String,
    /// The active model's SHA-256 on the last compared frame (None before one).
    pub active_sha256: Option<String>,
    /// "classification" or "detection".
    pub kind: String,
    /// The share of inferred frames offered to the candidate.
    pub share: f64,
    pub started_unix_s: u64,
    /// Frames sampled for the candidate (compared + dropped + failed + pending).
    pub frames_sampled: u64,
    /// Sampled frames dropped because the candidate was still busy.
    pub frames_dropped: u64,
    /// Frames the candidate failed to run.
    pub frames_failed: u64,
    /// The comparison (see `shadow_compare.rs` for each figure).
    #[serde(flatten)]
    pub comparison: Comparison,
}

impl ShadowReport {
    /// Overall agreement, 0–1 (0 before any frame was compared).
    pub fn agreement(&self) -> f64 {
        self.comparison.agreement
    }

    /// Frames both models ran on.
    pub fn frames_compared(&self) -> u64 {
        self.comparison.frames_compared
    }
}

/// A frame the active model inferred, with its output.
struct Item {
    frame: Frame,
    source: Arc<str>,
    active: InferenceOutput,
    active_sha256: String,
}

/// The one-item hand-off and the sampling state.
#[derive(Default)]
struct FeedState {
    item: Option<Item>,
    closed: bool,
    /// Sampling accumulator: a frame is sampled each time it reaches 1.
    acc: f64,
}

struct Feed {
    share: f64,
    state: Mutex<FeedState>,
    ready: Condvar,
}

/// The figures the shadow thread and the hot path update.
#[derive(Default)]
struct Progress {
    tally: Tally,
    active_sha256: Option<String>,
    sampled: u64,
    dropped: u64,
    failed: u64,
}

struct Running {
    sha256: String,
    kind: String,
    started_unix_s: u64,
    feed: Arc<Feed>,
    progress: Arc<Mutex<Progress>>,
    thread: JoinHandle<()>,
}

/// What the shadow needs of the pipeline, set by the inference thread.
#[derive(Clone)]
struct Env {
    models: Option<ModelStore>,
    settings: ModelSettings,
    state: Arc<AppState>,
}

/// The shadow-evaluation handle: one per pipeline, in
/// `InferenceControl::shadow`.
#[derive(Default)]
pub struct Shadow {
    /// Whether a run is on (the inference thread's cheap check).
    on: AtomicBool,
    running: Mutex<Option<Running>>,
    env: Mutex<Option<Env>>,
    /// The daemon's shutdown token: the shadow thread registers with it.
    shutdown: OnceLock<Shutdown>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("on", &self.on.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shadow {
    /// Register future shadow threads with the daemon's shutdown token.
    pub(crate) fn attach_shutdown(&self, shutdown: Shutdown) {
        // Set once per daemon start; a second set keeps the first token.
        let _ = self.shutdown.set(shutdown);
    }

    /// Called by the inference thread with what a candidate is loaded from
    /// (the model store, the configured settings) each time it loads a model.
    pub(crate) fn bind(
        &self,
        models: Option<ModelStore>,
        settings: ModelSettings,
        state: Arc<AppState>,
    ) {
        *lock(&self.env) = Some(Env {
            models,
            settings,
            state,
        });
    }

    /// Start running installed version `sha256` (whole, or a unique prefix)
    /// in shadow on `share` (0 < share ≤ 1) of the inferred frames; a run
    /// already on is stopped first. Blocks while the candidate loads and
    /// passes its canary.
    pub fn start(&self, sha256: &str, share: f64) -> Result<ShadowReport, ShadowError> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(ShadowError::InvalidShare(share));
        }
        let env = lock(&self.env).clone().ok_or(ShadowError::NotReady)?;
        let models = env.models.clone().ok_or(ShadowError::NotReady)?;
        let want = sha256.to_ascii_lowercase();
        let found: Vec<_> = models
            .list()?
            .into_iter()
            .filter(|(m, _)| !want.is_empty() && m.sha256.starts_with(&want))
            .collect();
        let [(meta, active)] = found.as_slice() else {
            return Err(ShadowError::UnknownVersion(sha256.to_string()));
        };
        if *active {
            return Err(ShadowError::IsActive(meta.sha256.clone()));
        }
        self.stop();
        // The candidate's files, and its bundle's own settings over `[model]`.
        let version = models.version(&meta.sha256)?;
        let mut settings = env.settings.clone();
        settings.path = version.model;
        settings.labels = version.labels;
        if let Some(s) = &version.settings {
            s.apply(&mut settings);
        }
        // The candidate must not compete with the active model for cores.
        settings.threads = 1;
        let feed = Arc::new(Feed {
            share,
            state: Mutex::new(FeedState::default()),
            ready: Condvar::new(),
        });
        let progress = Arc::new(Mutex::new(Progress::default()));
        let worker = self.shutdown.get().map(|s| s.worker("shadow"));
        let (loaded_tx, loaded_rx) = mpsc::sync_channel(1);
        let thread = {
            let (feed, progress, state) = (feed.clone(), progress.clone(), env.state.clone());
            let sha = meta.sha256.clone();
            std::thread::Builder::new()
                .name("shadow".into())
                .spawn(move || {
                    let _worker = worker;
                    lower_priority();
                    let mut model = match load_model(&settings) {
                        Ok(m) => {
                            let _ = loaded_tx.send(Ok(m.status.kind.clone()));
                            m
                        }
                        Err(e) => {
                            let _ = loaded_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    log::info!(spotter_model_sha256 = sha.as_str(); "shadow: model {sha} runs on a share of {share} of the frames");
                    let detector = model.engine.is_detector();
                    while let Some(item) = feed.take() {
                        let masks = state.privacy();
                        let ran = model
                            .engine
                            .run_masked(&item.frame, masks.inference_masks(&item.source));
                        let mut p = lock(&progress);
                        match ran {
                            Ok(out) => {
                                p.tally.add(&item.active, &out, detector);
                                p.active_sha256 = Some(item.active_sha256);
                            }
                            Err(e) => {
                                p.failed += 1;
                                log::debug!("shadow: model {sha} failed on a frame: {e}");
                            }
                        }
                    }
                })
                .map_err(ShadowError::Spawn)?
        };
        let loaded = loaded_rx
            .recv()
            .unwrap_or_else(|_| Err("the shadow thread ended while loading".into()));
        let kind = match loaded {
            Ok(kind) => kind,
            Err(reason) => {
                let _ = thread.join();
                return Err(ShadowError::Load {
                    sha256: meta.sha256.clone(),
                    reason,
                });
            }
        };
        if let Some(active) = env.state.model().filter(|a| a.kind != kind) {
            feed.close();
            let _ = thread.join();
            return Err(ShadowError::KindMismatch {
                sha256: meta.sha256.clone(),
                candidate: kind,
                active: active.kind,
            });
        }
        let started_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let run = Running {
            sha256: meta.sha256.clone(),
            kind,
            started_unix_s,
            feed,
            progress,
            thread,
        };
        let report = report_of(&run);
        // A start that raced this one (API and fleet at once) is replaced:
        // its thread is stopped and joined, never left waiting.
        let replaced = lock(&self.running).replace(run);
        self.on.store(true, Ordering::Release);
        if let Some(old) = replaced {
            old.feed.close();
            let _ = old.thread.join();
        }
        Ok(report)
    }

    /// The comparison so far, or None when no shadow run is on.
    pub fn report(&self) -> Option<ShadowReport> {
        lock(&self.running).as_ref().map(report_of)
    }

    /// Stop the run (if any) and join its thread; returns its last report.
    pub fn stop(&self) -> Option<ShadowReport> {
        let taken = lock(&self.running).take();
        self.on.store(false, Ordering::Release);
        let r = taken?;
        r.feed.close();
        let report = report_of(&r);
        if r.thread.join().is_err() {
            log::error!("the shadow thread panicked");
        }
        Some(report)
    }

    /// The candidate's SHA-256, when a run is on.
    pub fn candidate(&self) -> Option<String> {
        lock(&self.running).as_ref().map(|r| r.sha256.clone())
    }

    /// Offer a frame the active model (`active_sha256`) inferred to the
    /// shadow run, if one is on: sampled by the run's share, handed over
    /// when the candidate is idle, else dropped and counted. Never waits.
    pub(crate) fn offer(
        &self,
        frame: &Frame,
        source: &Arc<str>,
        active: &InferenceOutput,
        active_sha256: &str,
    ) {
        if !self.on.load(Ordering::Acquire) {
            return;
        }
        // An API call holds this lock briefly; the frame is not worth a wait.
        let Ok(running) = self.running.try_lock() else {
            return;
        };
        let Some(r) = running.as_ref() else {
            return;
        };
        let Ok(mut feed) = r.feed.state.try_lock() else {
            // The shadow thread is taking the previous frame: busy.
            let mut p = lock(&r.progress);
            p.sampled += 1;
            p.dropped += 1;
            return;
        };
        feed.acc += r.feed.share;
        if feed.acc < 1.0 {
            return;
        }
        feed.acc -= 1.0;
        let dropped = feed.item.is_some() || feed.closed;
        if !dropped {
            feed.item = Some(Item {
                frame: frame.clone(),
                source: source.clone(),
                active: active.clone(),
                active_sha256: active_sha256.to_string(),
            });
            r.feed.ready.notify_one();
        }
        drop(feed);
        let mut p = lock(&r.progress);
        p.sampled += 1;
        if dropped {
            p.dropped += 1;
        }
    }
}

fn report_of(r: &Running) -> ShadowReport {
    let p = lock(&r.progress);
    ShadowReport {
        candidate_sha256: r.sha256.clone(),
        active_sha256: p.active_sha256.clone(),
        kind: r.kind.clone(),
        share: r.feed.share,
        started_unix_s: r.started_unix_s,
        frames_sampled: p.sampled,
        frames_dropped: p.dropped,
        frames_failed: p.failed,
        comparison: p.tally.summary(r.kind == "detection"),
    }
}

impl Feed {
    /// The next item, waiting for one; None once closed.
    fn take(&self) -> Option<Item> {
        let mut s = lock(&self.state);
        loop {
            if s.closed {
                return None;
            }
            if let Some(item) = s.item.take() {
                return Some(item);
            }
            s = self
                .ready
                .wait_timeout(s, Duration::from_secs(1))
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }
}

/// Nice the calling thread 10 steps below the daemon (at most 19; Linux:
/// the nice value is per thread), so the candidate only gets the cores the
/// active pipeline leaves idle, whatever nice value the daemon runs at.
fn lower_priority() {
    // SAFETY: gettid, getpriority and setpriority take plain integers and
    // only read or change this thread's scheduling; a failure is reported
    // through errno (getpriority may return -1 legitimately: then the nice
    // value set is 9, still below the daemon's).
    let rc = unsafe {
        let tid = nix::libc::gettid() as nix::libc::id_t;
        let now = nix::libc::getpriority(nix::libc::PRIO_PROCESS, tid);
        nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, (now + 10).min(19))
    };
    if rc != 0 {
        log::debug!(
            "shadow: cannot lower the thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}
