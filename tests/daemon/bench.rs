//! `spotter bench` through the real binary: argument wiring and the JSON report's shape.

use std::path::PathBuf;
use std::process::Command;

fn testdata() -> PathBuf {
    std::env::var_os("SPOTTER_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
        })
}

const STAGES: [&str; 8] = [
    "decode", "resize", "quantize", "invoke", "post", "store", "e2e", "total",
];

// Catches the subcommand or its flags not being wired, --json printing
// anything but one JSON object, or a stage missing or not measured.
#[test]
fn bench_json_reports_every_stage_for_builtin() {
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    let out = Command::new(env!("CARGO_BIN_EXE_spotter"))
        .args([
            "bench",
            "--json",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--runtime",
            "builtin",
            "--threads",
            "1",
            "--model",
        ])
        .arg(&model)
        .env_remove("SPOTTER_LITERT_LIB")
        .output()
        .expect("run spotter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "spotter bench failed: {:?}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));

    assert_eq!(v["model"], model.display().to_string());
    assert!(
        v["image"].as_str().is_some_and(|s| s.contains("640x480")),
        "{v}"
    );
    assert_eq!(v["runs"], 3);
    assert_eq!(v["threads"], 1);
    let runtimes = v["runtimes"].as_object().expect("runtimes object");
    assert_eq!(runtimes.keys().collect::<Vec<_>>(), ["builtin"], "{v}");
    let b = &runtimes["builtin"];
    for stage in STAGES {
        for stat in ["median_ms", "p99_ms"] {
            let x = b["stages"][stage][stat]
                .as_f64()
                .unwrap_or_else(|| panic!("{stage}.{stat} missing: {b}"));
            assert!(x.is_finite() && x >= 0.0, "{stage}.{stat} = {x}");
        }
    }
    assert!(
        b["stages"]["invoke"]["median_ms"].as_f64().unwrap() > 0.0,
        "{b}"
    );
    let ratio = b["overhead_ratio"].as_f64().expect("overhead_ratio");
    assert!(ratio.is_finite() && ratio >= 0.0, "{ratio}");
    assert!(b["reason"].as_str().is_some_and(|s| !s.is_empty()), "{b}");
}

// Catches a bad model path being reported as success or without naming the file.
#[test]
fn bench_missing_model_fails_naming_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_spotter"))
        .args([
            "bench",
            "--json",
            "--runs",
            "1",
            "--runtime",
            "builtin",
            "--model",
            "/nonexistent/model.tflite",
        ])
        .output()
        .expect("run spotter");
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/model.tflite"), "{stderr}");
}
