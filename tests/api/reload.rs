//! SIGHUP reload (`spotter::app::reload::apply`): what is applied in place (model,
//! retention, TLS material) and which changed settings are named as needing
//! a restart.

use crate::api_harness;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spotter::api::TlsReloader;
use spotter::app::reload::{apply, Handles};
use spotter::config::{from_sources, Settings};
use spotter::pipeline::InferenceControl;
use spotter::store::{Pruner, Retention, Store};

fn settings(text: &str) -> Settings {
    from_sources(vec![(
        PathBuf::from("/etc/spotter/spotter.toml"),
        text.to_string(),
    )])
    .unwrap()
}

// Catches: retention limits or the certificate ignored by SIGHUP, the pruner
// not woken by a new policy (it would wait out its interval), a bad
// certificate replacing the served one, and a "needs a restart" warning that
// lists reloaded settings or misses changed ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_retention_and_tls_and_names_what_needs_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let generated = spotter::api::tls::load_or_generate(None, None, &state_dir).unwrap();
    let tls = TlsReloader::new(&generated, &state_dir);
    let store = Arc::new(Store::open(&dir.path().join("store")).unwrap());
    // Recent records, so the default age limit keeps them: only the count limit prunes.
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for i in 0..20u64 {
        store
            .insert(&mut api_harness::record(now_ns - i * 1_000_000))
            .unwrap();
    }
    let base = format!("[daemon]\nstate_dir = \"{}\"\n", state_dir.display());
    let mut running = settings(&base);
    // An interval far beyond the test: only set_policy can trigger the pass.
    let pruner = Pruner::spawn(
        store.clone(),
        Retention::unlimited(),
        Duration::from_secs(3600),
    )
    .unwrap();
    let control = InferenceControl::default();
    let handles = Handles {
        tls: &tls,
        pruner: &pruner,
        control: &control,
    };

    // A new pair, tighter retention, and two settings that need a restart.
    let other = tempfile::tempdir().unwrap();
    let fresh = spotter::api::tls::load_or_generate(None, None, other.path()).unwrap();
    let new = settings(&format!(
        "{base}[store]\nmax_records = 5\n[api]\nlisten = \"127.0.0.1:9443\"\ncert = \"{}\"\nkey = \"{}\"\n[source]\nfps = 3.0\n",
        fresh.cert_path.display(),
        fresh.key_path.display()
    ));
    let out = apply(&mut running, &new, &handles).await;
    assert_eq!(out.tls, Some(Ok(fresh.fingerprint.clone())));
    assert_eq!(tls.fingerprint(), fresh.fingerprint);
    // The stall timeout, unset, follows the frame rate (issue 19).
    assert_eq!(
        out.restart_needed,
        ["api.listen", "source.fps", "source.stall_timeout_ms"]
    );
    assert_eq!(pruner.policy().max_records, Some(5));
    assert!(
        control.reload.load(Ordering::Relaxed),
        "the model reload is requested"
    );
    // The running settings keep what was not applied.
    assert_eq!(
        (running.store.max_records, running.api.listen.port()),
        (5, 8443)
    );
    assert_eq!(running.api.cert.as_ref(), Some(&fresh.cert_path));
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.len() != 5 {
        assert!(
            Instant::now() < deadline,
            "the pruner did not apply the new policy: {} records",
            store.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken certificate path: refused, the served certificate stays, and
    // it is reported as a failure, not as "needs a restart".
    let broken = settings(&format!(
        "{base}[store]\nmax_records = 5\n[api]\nlisten = \"127.0.0.1:9443\"\ncert = \"{0}/missing.pem\"\nkey = \"{0}/missing.key\"\n[source]\nfps = 3.0\n",
        other.path().display()
    ));
    let out = apply(&mut running, &broken, &handles).await;
    let err = out.tls.unwrap().unwrap_err();
    assert!(err.contains("missing.pem"), "{err}");
    assert_eq!(tls.fingerprint(), fresh.fingerprint);
    assert_eq!(running.api.cert.as_ref(), Some(&fresh.cert_path));
    // The stall timeout, unset, follows the frame rate (issue 19).
    assert_eq!(
        out.restart_needed,
        ["api.listen", "source.fps", "source.stall_timeout_ms"]
    );

    // Back to the running values: nothing needs a restart.
    let same = running.clone();
    assert!(apply(&mut running, &same, &handles)
        .await
        .restart_needed
        .is_empty());
    pruner.stop();
}
