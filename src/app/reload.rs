//! SIGHUP and `POST /api/v1/reload`: apply a re-read configuration to the
//! running daemon. Reloaded in
//! place: the model (through the inference thread's control), the log level,
//! the API's TLS certificate, key and client CA (new handshakes only;
//! established connections keep theirs), and the retention limits (the
//! pruner's policy). API keys need no signal (the key file is watched).
//! Every other changed setting is named in one warning as needing a restart;
//! the running values of those stay in force. [`reload_config`] re-reads
//! the configuration files for either trigger.

use std::sync::atomic::Ordering;

use serde_json::Value;

pub use crate::api::reload::{Outcome, Request};
use crate::api::{TlsReloader, TlsSettings};
use crate::config::{self, Settings};
use crate::pipeline::InferenceControl;
use crate::store::{Pruner, Retention};

/// Settings (`section.key`) applied by [`apply`] without a restart.
const RELOADABLE: &[&str] = &[
    "daemon.log_level",
    "store.max_age_s",
    "store.max_records",
    "store.max_bytes",
    "store.snapshot_max_count",
    "store.snapshot_max_bytes",
    "api.cert",
    "api.key",
    "api.client_ca",
    "api.client_auth",
    // Issue 18 (store): the sightings' retention.
    "sightings.max_age_s",
    "sightings.max_records",
];

/// What a reload acts on.
pub struct Handles<'a> {
    pub tls: &'a TlsReloader,
    pub pruner: &'a Pruner,
    pub control: &'a InferenceControl,
}

/// Re-read the configuration files (if the daemon was started with some)
/// and apply them; without files only the model is reloaded. `cause` names
/// the trigger in the log. Err: why the files were refused (nothing changed).
pub(super) async fn reload_config(
    config_path: Option<&std::path::Path>,
    running: &mut Settings,
    handles: &Handles<'_>,
    cause: &str,
) -> Result<Outcome, String> {
    log::info!("{cause}: reloading the configuration");
    match config_path.map(config::load) {
        Some(Ok(new)) => Ok(apply(running, &new, handles).await),
        Some(Err(e)) => {
            log::error!(
                "{cause}: configuration not reloaded, the running settings stay in force: {e}"
            );
            Err(e.to_string())
        }
        None => {
            handles.control.reload.store(true, Ordering::Relaxed);
            log::info!("{cause}: no configuration file; reloading the model");
            Ok(Outcome::default())
        }
    }
}

fn tls_settings(s: &Settings) -> TlsSettings {
    TlsSettings {
        cert: s.api.cert.clone(),
        key: s.api.key.clone(),
        client_ca: s.api.client_ca.clone(),
        client_auth: s.api.client_auth,
    }
}

/// The settings that differ between `old` and `new`, as `section.key`,
/// sorted, leaving out those in [`RELOADABLE`] and the whole `[model]`
/// section (the model reloads).
pub(crate) fn restart_needed(old: &Settings, new: &Settings) -> Vec<String> {
    let as_map = |s: &Settings| match serde_json::to_value(s) {
        Ok(Value::Object(m)) => m,
        // Settings is a struct of structs: always an object.
        _ => serde_json::Map::new(),
    };
    let (old, new) = (as_map(old), as_map(new));
    let mut changed = Vec::new();
    for (section, ov) in &old {
        if section == "model" {
            continue;
        }
        let nv = new.get(section);
        match (ov, nv) {
            (Value::Object(o), Some(Value::Object(n))) => {
                for (k, v) in o {
                    let name = format!("{section}.{k}");
                    if n.get(k) != Some(v) && !RELOADABLE.contains(&name.as_str()) {
                        changed.push(name);
                    }
                }
            }
            (o, n) if Some(o) != n => changed.push(section.clone()),
            _ => {}
        }
    }
    changed.sort();
    changed
}

/// Apply `new` (a freshly loaded configuration) to the running daemon whose
/// effective settings are `running`, log what happened, and update
/// `running` to what is now in force. The TLS material is re-read even when
/// its paths did not change (a renewed certificate in place); if it cannot
/// be used, the old certificate keeps being served and the error is logged
/// with [`crate::core::ids::TLS_RELOAD_FAILED`].
pub async fn apply(running: &mut Settings, new: &Settings, h: &Handles<'_>) -> Outcome {
    crate::logging::set_level(crate::logging::parse_level(&new.daemon.log_level));
    running.daemon.log_level = new.daemon.log_level.clone();

    *h.control.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(new.model.clone());
    h.control.reload.store(true, Ordering::Relaxed);
    running.model = new.model.clone();

    let policy = Retention::from_settings(&new.store).with_sightings(&new.sightings);
    if policy != h.pruner.policy() {
        log::info!("reload: retention now {policy:?}");
        h.pruner.set_policy(policy);
    }
    let s = &mut running.store;
    (s.max_age_s, s.max_records, s.max_bytes) = (
        new.store.max_age_s,
        new.store.max_records,
        new.store.max_bytes,
    );
    (s.snapshot_max_count, s.snapshot_max_bytes) =
        (new.store.snapshot_max_count, new.store.snapshot_max_bytes);
    // Issue 18 (store): the sightings' retention.
    let t = &mut running.sightings;
    (t.max_age_s, t.max_records) = (new.sightings.max_age_s, new.sightings.max_records);

    let (tls, wanted) = (h.tls.clone(), tls_settings(new));
    let reloaded = match tokio::task::spawn_blocking(move || tls.reload(&wanted)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("TLS reload task failed: {e}")),
    };
    match &reloaded {
        Ok(fp) => {
            log::info!(sha256 = fp.as_str(); "reload: new TLS handshakes use the certificate with SHA-256 {fp}");
            let a = &mut running.api;
            (a.cert, a.key, a.client_ca, a.client_auth) = (
                new.api.cert.clone(),
                new.api.key.clone(),
                new.api.client_ca.clone(),
                new.api.client_auth,
            );
        }
        Err(e) => log::error!(
            message_id = crate::core::ids::TLS_RELOAD_FAILED, spotter_error_kind = "tls_reload";
            "reload: {e}; still serving the previous certificate (SHA-256 {})", h.tls.fingerprint()
        ),
    }

    let restart_needed = restart_needed(running, new);
    if restart_needed.is_empty() {
        log::info!("reload: reloaded model, log level, retention and TLS material");
    } else {
        log::warn!(
            "reload: reloaded model, log level, retention and TLS material; these changed settings need a restart: {}",
            restart_needed.join(", ")
        );
    }
    Outcome {
        restart_needed,
        tls: Some(reloaded),
    }
}
