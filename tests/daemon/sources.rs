//! Several sources in one daemon (issue 19): two `files` sources with their
//! names, results carrying and filtered by the name, and one source lost
//! while the other streams (the daemon stays ready and readiness names the
//! lost one).

use crate::common;

use std::path::Path;

use common::{photo_dir, testdata, Daemon};

fn config(yard: &Path, gate: &Path) -> String {
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [[source]]\nname = \"yard\"\nkind = \"files\"\ndir = \"{}\"\nfps = 8.0\n\n\
         [[source]]\nname = \"gate\"\nkind = \"files\"\ndir = \"{}\"\nfps = 4.0\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nthreads = 1\nretry_ms = 500\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\n",
        yard.display(),
        gate.display(),
        model.display(),
        labels.display()
    )
}

/// The `source_name`s and origins of `GET /api/v1/results?…`.
fn names_and_origins(v: &serde_json::Value) -> Vec<(String, String)> {
    v["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    (
                        r["source_name"].as_str().unwrap_or("").to_string(),
                        r["origin"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The check of source `name` in a `/readyz` body (with a key).
fn check(v: &serde_json::Value, name: &str) -> Option<(bool, String)> {
    v["checks"]["sources"].as_array()?.iter().find_map(|s| {
        (s["name"] == name).then(|| {
            (
                s["ok"].as_bool().unwrap_or(false),
                s["detail"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

// Would catch: a second source never started (one capture thread), results
// without their source's name or with the other's, `?source=` not
// filtering, readiness not listing each source, one lost source making the
// daemon not-ready while the other streams, or the other source stopping
// with it.
#[test]
fn two_sources_stream_with_their_names_and_one_lost_leaves_the_other_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let (yard, _) = photo_dir(&tmp.path().join("yard"));
    let (gate, _) = photo_dir(&tmp.path().join("gate"));
    let mut d = Daemon::start(tmp.path(), &config(&yard, &gate));
    let c = d.client();

    // Ready, with both sources up by name.
    let ready = c.wait_for("/readyz", 120, |r| {
        r.status == 200
            && check(&r.json(), "yard").is_some_and(|c| c.0)
            && check(&r.json(), "gate").is_some_and(|c| c.0)
    });
    assert_eq!(ready.json()["ready"], true, "{}", ready.body);

    // Both produce results, each with its own name and frames.
    for (name, dir) in [("yard", &yard), ("gate", &gate)] {
        let r = c.wait_for(
            &format!("/api/v1/results?source={name}&limit=50"),
            120,
            |r| r.status == 200 && !names_and_origins(&r.json()).is_empty(),
        );
        for (n, origin) in names_and_origins(&r.json()) {
            assert_eq!(n, name, "?source={name} returned another source's result");
            assert!(
                origin.starts_with(&dir.display().to_string()),
                "{name}: {origin} is not from {}",
                dir.display()
            );
        }
    }
    // Unfiltered, both names appear.
    let all = c.wait_for("/api/v1/results?limit=200", 60, |r| {
        let got = names_and_origins(&r.json());
        got.iter().any(|(n, _)| n == "yard") && got.iter().any(|(n, _)| n == "gate")
    });
    assert_eq!(all.status, 200);
    let none = c.get("/api/v1/results?source=nosuch").unwrap();
    assert_eq!(none.status, 200);
    assert!(names_and_origins(&none.json()).is_empty(), "{}", none.body);

    // Per-source metrics carry the name.
    let metrics = c.get("/metrics").unwrap();
    assert!(
        metrics
            .body
            .contains("spotter_source_frames_captured_total{source=\"gate\"}"),
        "{}",
        metrics.body
    );

    // The gate camera goes away: its folder disappears.
    std::fs::rename(&gate, tmp.path().join("gate-gone")).unwrap();
    let lost = c.wait_for("/readyz", 60, |r| {
        check(&r.json(), "gate").is_some_and(|c| !c.0)
    });
    // Still ready: the yard streams; readiness names the lost one.
    assert_eq!(lost.status, 200, "{}", lost.body);
    assert_eq!(lost.json()["ready"], true, "{}", lost.body);
    assert!(
        check(&lost.json(), "yard").is_some_and(|c| c.0),
        "{}",
        lost.body
    );
    let detail = lost.json()["checks"]["source"]["detail"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(detail.contains("gate lost"), "{detail}");

    // The yard keeps producing results after the loss.
    let newest = |r: &common::Reply| r.json()["results"][0]["ts_ns"].as_u64().unwrap_or(0);
    let before = newest(&c.get("/api/v1/results?source=yard&limit=1").unwrap());
    let after = c.wait_for("/api/v1/results?source=yard&limit=1", 60, |r| {
        newest(r) > before
    });
    assert!(newest(&after) > before);

    // And the status document lists each source.
    let status = c.get("/api/v1/status").unwrap().json();
    let sources = status["readiness"]["checks"]["sources"].as_array().unwrap();
    let names: Vec<&str> = sources.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["yard", "gate"]);

    let (code, _) = d.terminate();
    assert!(code.success(), "{}", d.log());
}
