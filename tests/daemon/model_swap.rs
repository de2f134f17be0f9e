//! Model swaps while frames flow: the inference thread switches between two
//! real models 100 times; every stored result must come from exactly one
//! whole model.

use crate::common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::testdata;
use spotter::config::{DetectionRules, JpegScaling, ModelSettings, RuntimeSetting};
use spotter::core::frame::Frame;
use spotter::modelstore::ModelStore;
use spotter::pipeline::{inference_loop, load_model, FrameSlot, InferenceControl};
use spotter::state::AppState;
use spotter::store::Store;

fn settings(path: &Path) -> ModelSettings {
    ModelSettings {
        roi: None,
        path: path.to_path_buf(),
        labels: Some(testdata().join("labels/labels_mobilenet_quant_v1_224.txt")),
        runtime: RuntimeSetting::Builtin,
        litert_lib: None,
        threads: 1,
        top_k: 3,
        min_score: None,
        fit: None,
        pad_value: None,
        rules: DetectionRules::default(),
        max_pixels: 40_000_000,
        jpeg_scaling: JpegScaling::Auto,
        input_mean: None,
        input_std: None,
        retry_ms: 100,
    }
}

fn frame(data: &[u8], origin: &str, seq: u64) -> Frame {
    Frame::encoded(data.to_vec(), seq, origin.to_string())
}

// Would catch a frame seeing a half-swapped model (result tagged with one
// model but computed by the other, or by a mix), a swap that never lands, or
// a swap that stalls the pipeline.
#[test]
fn hundred_swaps_under_load_every_result_from_exactly_one_model() {
    let tmp = tempfile::tempdir().unwrap();
    let models: Vec<PathBuf> = ["mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant"]
        .iter()
        .map(|m| testdata().join(format!("models/classification/{m}.tflite")))
        .collect();
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");

    // Install both versions; remember each model's answer for each photo.
    let ms = ModelStore::new(tmp.path());
    let mut shas = Vec::new();
    let photos: Vec<(String, Vec<u8>)> = [
        "grace_hopper.bmp",
        "cat.bmp",
        "hot_dog.jpg",
        "sunflower.bmp",
    ]
    .iter()
    .map(|n| {
        (
            n.to_string(),
            std::fs::read(testdata().join("images").join(n)).unwrap(),
        )
    })
    .collect();
    let mut expected: HashMap<(String, String), (usize, f32)> = HashMap::new();
    for m in &models {
        let meta = ms
            .install(m, Some(&labels), |p, _| {
                load_model(&settings(p))
                    .map(|l| l.status.kind)
                    .map_err(|e| e.to_string())
            })
            .unwrap();
        let mut loaded = load_model(&settings(m)).unwrap();
        for (name, bytes) in &photos {
            let out = loaded.engine.run(&frame(bytes, name, 0)).unwrap();
            expected.insert(
                (meta.sha256.clone(), name.clone()),
                (out.classes[0].index, out.classes[0].score),
            );
        }
        shas.push(meta.sha256);
    }
    // The two models must disagree somewhere, or the check below proves nothing.
    assert!(photos
        .iter()
        .any(|(n, _)| expected[&(shas[0].clone(), n.clone())]
            != expected[&(shas[1].clone(), n.clone())]));
    ms.activate(&shas[0]).unwrap();

    let store = Arc::new(Store::open_with(&tmp.path().join("results"), 1000).unwrap());
    let state = Arc::new(AppState::new());
    let slot = Arc::new(FrameSlot::new());
    let control = Arc::new(InferenceControl::default());
    let stop = Arc::new(AtomicBool::new(false));

    let inference = {
        let (slot, store, state, control) =
            (slot.clone(), store.clone(), state.clone(), control.clone());
        let (s, ms) = (settings(&models[0]), Some(ModelStore::new(tmp.path())));
        std::thread::spawn(move || inference_loop(s, ms, slot, store, state, control))
    };
    let producer = {
        let (slot, stop, photos) = (slot.clone(), stop.clone(), photos.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (name, bytes) = &photos[(seq as usize) % photos.len()];
                slot.put(frame(bytes, name, seq));
                seq += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    let wait_active = |sha: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while state.model().map(|m| m.sha256) != Some(sha.to_string()) {
            assert!(Instant::now() < deadline, "swap to {sha} never landed");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_active(&shas[0]);
    for i in 1..=100 {
        let target = &shas[i % 2];
        ms.activate(target).unwrap();
        control.reload.store(true, Ordering::Relaxed);
        wait_active(target);
        // Let a few frames through on this model.
        let n = store.len();
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.len() < n + 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    slot.close();
    inference.join().unwrap();

    let all = store.range(None, None, 1_000_000).unwrap();
    assert!(
        all.len() >= 200,
        "too few results under load: {}",
        all.len()
    );
    let mut per_model = [0usize; 2];
    for r in &all {
        let which = shas
            .iter()
            .position(|s| s == &r.model_sha256)
            .unwrap_or_else(|| panic!("unknown model {}", r.model_sha256));
        per_model[which] += 1;
        let (index, score) = expected[&(r.model_sha256.clone(), r.origin.clone())];
        assert_eq!(
            r.classes[0].index, index,
            "result {} tagged {} but computed otherwise",
            r.id, r.model_sha256
        );
        assert!(
            (r.classes[0].score - score).abs() < 1e-6,
            "result {} score differs from its model's",
            r.id
        );
    }
    assert!(
        per_model[0] > 50 && per_model[1] > 50,
        "both models produced results: {per_model:?}"
    );
}
