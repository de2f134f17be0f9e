//! Uploads and model management over HTTPS against the real daemon: real
//! models, real TLS, the files source running beside the uploads.

use crate::common;

use std::path::{Path, PathBuf};

use common::{reference_clear_top1, testdata, Client, Daemon};

const MODEL: &str = "mobilenet_v2_1.0_224_quant";

fn model(name: &str) -> PathBuf {
    testdata().join(format!("models/classification/{name}.tflite"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A daemon replaying one photo slowly, on mobilenet_v2 with its labels,
/// with a small upload pixel budget so a bomb is cheap to build.
fn start(dir: &Path) -> (Daemon, Client) {
    start_with(dir, "")
}

/// [`start`] with `extra` appended to the config.
fn start_with(dir: &Path, extra: &str) -> (Daemon, Client) {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(testdata().join("images/cat.bmp"), photos.join("cat.bmp")).unwrap();
    let cfg = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\n\n\
         [source]\nkind = \"files\"\ndir = \"{}\"\nfps = 2.0\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nthreads = 1\nretry_ms = 500\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\nmax_upload_pixels = 4000000\n{extra}",
        photos.display(),
        model(MODEL).display(),
        testdata()
            .join("labels/labels_mobilenet_quant_v1_224.txt")
            .display()
    );
    let d = Daemon::start(dir, &cfg);
    let c = d.client();
    c.wait_for("/readyz", 120, |r| r.status == 200);
    (d, c)
}

/// CRC-32 (IEEE) for hand-built PNG chunks.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PNG signature and a valid IHDR for `w`x`h` RGB, and nothing else.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = b"IHDR".to_vec();
    chunk.extend_from_slice(&w.to_be_bytes());
    chunk.extend_from_slice(&h.to_be_bytes());
    chunk.extend_from_slice(&[8, 2, 0, 0, 0]);
    out.extend_from_slice(&13u32.to_be_bytes());
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    out
}

/// A BMP header claiming `w`x`h` at 24 bits, with no pixel data.
fn bmp_header(w: i32, h: i32) -> Vec<u8> {
    let mut out = b"BM".to_vec();
    out.extend_from_slice(&54u32.to_le_bytes()); // file size (a lie, as a bomb's would be)
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&[0; 24]);
    out
}

/// A real, highly compressible PNG: 2000x2000 black (4 Mpx, a few KB).
fn png_bomb() -> Vec<u8> {
    let mut out = Vec::new();
    image::GrayImage::new(2000, 2001)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn problem_code(r: &common::Reply) -> String {
    r.json()["code"].as_str().unwrap_or_default().to_string()
}

// Catches: uploads classified differently from the camera path, the result
// stored without store=true (or not stored with it), and any bad upload
// (empty, truncated, bomb, wrong magic, text renamed .jpg, huge header)
// reaching the decoder, giving a 2xx/5xx, storing a result or taking the daemon down.
#[test]
fn classify_uploads_and_refuse_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, c) = start(tmp.path());
    let model_sha = sha256_hex(&std::fs::read(model(MODEL)).unwrap());

    let mut checked = 0;
    for name in ["grace_hopper.bmp", "hot_dog.jpg", "chelsea.png", "pets.jpg"] {
        let bytes = std::fs::read(testdata().join("images").join(name)).unwrap();
        let r = c.send("POST", "/api/v1/classify", &bytes).unwrap();
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        let v = r.json();
        assert_eq!(v["stored"], false);
        assert!(
            v["result"].get("id").is_none(),
            "{name}: unstored results have no id"
        );
        assert_eq!(v["result"]["model_sha256"], model_sha.as_str());
        assert_eq!(v["result"]["source"], "upload");
        assert!(
            v["result"]["classes"]
                .as_array()
                .is_some_and(|c| !c.is_empty()),
            "{name}"
        );
        if let Some(label) = reference_clear_top1(MODEL, name) {
            assert_eq!(v["result"]["classes"][0]["label"], label.as_str(), "{name}");
            checked += 1;
        }
    }
    assert!(checked >= 1, "no clear reference case among the uploads");

    // store=true: stored, retrievable by id, marked as an upload.
    let bytes = std::fs::read(testdata().join("images/grace_hopper.bmp")).unwrap();
    let r = c
        .send("POST", "/api/v1/classify?store=true", &bytes)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["stored"], true);
    let id = v["result"]["id"].as_str().unwrap().to_string();
    let got = c.get(&format!("/api/v1/results/{id}")).unwrap();
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.json()["classes"], v["result"]["classes"]);
    assert_eq!(got.json()["source"], "upload");

    let jpeg = std::fs::read(testdata().join("images/hot_dog.jpg")).unwrap();
    let bad: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("zero bytes", vec![], 400, "empty_upload"),
        (
            "truncated JPEG",
            jpeg[..jpeg.len() / 2].to_vec(),
            422,
            "undecodable_image",
        ),
        ("PNG decompression bomb", png_bomb(), 413, "image_too_large"),
        (
            "GIF magic",
            b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "text renamed .jpg",
            b"just some text, named photo.jpg\n".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "20000x20000 PNG header",
            png_header(20000, 20000),
            413,
            "image_too_large",
        ),
        (
            "20000x20000 BMP header",
            bmp_header(20000, 20000),
            413,
            "image_too_large",
        ),
    ];
    for (what, body, status, code) in bad {
        // Content-Type claims JPEG; it must not matter.
        let r = c
            .send("POST", "/api/v1/classify?store=true", &body)
            .unwrap();
        assert_eq!(
            (r.status, problem_code(&r).as_str()),
            (status, code),
            "{what}: {}",
            r.body
        );
        assert_eq!(c.get("/healthz").unwrap().status, 200, "after {what}");
    }
    let all = c.get("/api/v1/results?limit=1000").unwrap().json();
    let uploads: Vec<_> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["source"] == "upload")
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(
        uploads,
        vec![serde_json::Value::from(id)],
        "only the store=true upload is stored"
    );
    d.assert_running();
}

// Catches: a refused model replacing the running one, uploads not switching
// the model the pipeline and uploads use, rollback not restoring the previous
// version, activation by SHA-256 not running the named version (or not
// keeping the replaced one for a roll back, or accepting a prefix or an
// unknown version), and model management open to read keys.
#[test]
fn model_upload_refusal_and_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let (d, admin) = start(tmp.path());
    let first = sha256_hex(&std::fs::read(model(MODEL)).unwrap());
    let r = admin.get("/api/v1/model").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["running"]["sha256"], first.as_str());
    assert_eq!(r.json()["versions"], serde_json::json!([]));

    // Nothing installed yet through the API: nothing to roll back to.
    let r = admin.send("POST", "/api/v1/model/rollback", b"").unwrap();
    assert_eq!(
        (r.status, problem_code(&r).as_str()),
        (409, "no_previous_model"),
        "{}",
        r.body
    );

    // A read key may not manage models.
    let (_, key) = spotter::keys::KeyStore::new(&d.dir.join("state"))
        .create("viewer", spotter::keys::Scope::Read)
        .unwrap();
    let key = key.expose().to_string();
    let reader = Client::new(&d.cert(), d.port).with_key(Some(key));
    let eff = std::fs::read(model("efficientnet_lite0_int8_2")).unwrap();
    // (A small body: the server refuses before reading it, and a client still
    // writing megabytes would see the connection close under it.)
    assert_eq!(
        reader
            .send("PUT", "/api/v1/model", b"not read")
            .unwrap()
            .status,
        403
    );
    assert_eq!(reader.get("/api/v1/model").unwrap().status, 403);

    // Good upload: validated, installed, running.
    let eff_sha = sha256_hex(&eff);
    let r = admin
        .send("PUT", "/api/v1/model?name=efficientnet.tflite", &eff)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["running"]["sha256"], eff_sha.as_str());
    assert_eq!(r.json()["version"]["original_name"], "efficientnet.tflite");
    let photo = std::fs::read(testdata().join("images/grace_hopper.bmp")).unwrap();
    let r = admin.send("POST", "/api/v1/classify", &photo).unwrap();
    assert_eq!(
        r.json()["result"]["model_sha256"],
        eff_sha.as_str(),
        "{}",
        r.body
    );

    // Bad uploads: refused with the reason, the running model unchanged.
    let tflm =
        std::fs::read(testdata().join("models/invalid/person_detect_tflm_only.tflite")).unwrap();
    let truncated = eff[..eff.len() / 3].to_vec();
    for (what, body) in [
        ("TFLM-only model", tflm),
        ("truncated model", truncated),
        ("not a model", b"hello".to_vec()),
    ] {
        let r = admin.send("PUT", "/api/v1/model", &body).unwrap();
        assert_eq!(
            (r.status, problem_code(&r).as_str()),
            (422, "model_refused"),
            "{what}: {}",
            r.body
        );
        assert!(
            !r.body.contains(&tmp.path().display().to_string()),
            "{what}: paths leak: {}",
            r.body
        );
        let running = admin.get("/api/v1/model").unwrap().json();
        assert_eq!(running["running"]["sha256"], eff_sha.as_str(), "{what}");
    }
    let r = admin.send("POST", "/api/v1/classify", &photo).unwrap();
    assert_eq!(
        r.json()["result"]["model_sha256"],
        eff_sha.as_str(),
        "{}",
        r.body
    );

    // A second version, then roll back to the first.
    let small = std::fs::read(model("mobilenet_v1_0.25_128_quant")).unwrap();
    let r = admin.send("PUT", "/api/v1/model", &small).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["running"]["sha256"], sha256_hex(&small).as_str());
    let r = admin.send("POST", "/api/v1/model/rollback", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["running"]["sha256"], eff_sha.as_str());
    let versions = admin.get("/api/v1/model").unwrap().json()["versions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(versions.len(), 2);
    let active: Vec<_> = versions
        .iter()
        .filter(|v| v["active"] == true)
        .map(|v| v["version"]["sha256"].clone())
        .collect();
    assert_eq!(active, vec![serde_json::Value::from(eff_sha.clone())]);

    // Activate a listed version by its SHA-256 (the Device page's control):
    // it runs, and a roll back returns to the one it replaced.
    let small_sha = sha256_hex(&small);
    let activate = format!("/api/v1/model/versions/{small_sha}/activate");
    assert_eq!(reader.send("POST", &activate, b"").unwrap().status, 403);
    let r = admin.send("POST", &activate, b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["running"]["sha256"], small_sha.as_str());
    let r = admin.send("POST", "/api/v1/model/rollback", b"").unwrap();
    assert_eq!(
        r.json()["running"]["sha256"],
        eff_sha.as_str(),
        "{}",
        r.body
    );
    for (path, status, code) in [
        (
            format!("/api/v1/model/versions/{}/activate", "0".repeat(64)),
            404,
            "model_version_not_found",
        ),
        (
            format!("/api/v1/model/versions/{}/activate", &small_sha[..12]),
            400,
            "invalid_parameter",
        ),
    ] {
        let r = admin.send("POST", &path, b"").unwrap();
        assert_eq!(
            (r.status, problem_code(&r).as_str()),
            (status, code),
            "{path}: {}",
            r.body
        );
    }
    let running = admin.get("/api/v1/model").unwrap().json();
    assert_eq!(running["running"]["sha256"], eff_sha.as_str());
    d.assert_running();
}

/// A bundle of `model` (with the mobilenet labels) signed by `key`.
fn bundle_of(
    model: &[u8],
    version: &str,
    settings: spotter::modelstore::BundleSettings,
    min_spotter_version: Option<&str>,
    key: &ed25519_dalek::SigningKey,
) -> Vec<u8> {
    use spotter::modelstore::bundle::{write_bundle, BundleSpec};
    let labels =
        std::fs::read(testdata().join("labels/labels_mobilenet_quant_v1_224.txt")).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    write_bundle(
        &mut out,
        &BundleSpec {
            name: "small",
            version,
            model,
            labels: Some(&labels),
            settings,
            min_spotter_version: min_spotter_version.map(str::to_string),
        },
        Some(key),
    )
    .unwrap();
    out.into_inner()
}

/// The (label, score) list the daemon reports for an uploaded photo, and
/// the model that produced it.
fn classes(c: &Client, photo: &[u8]) -> (String, Vec<(String, f64)>) {
    let r = c.send("POST", "/api/v1/classify", photo).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let list = v["result"]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["label"].as_str().unwrap_or_default().to_string(),
                c["score"].as_f64().unwrap(),
            )
        })
        .collect();
    (
        v["result"]["model_sha256"].as_str().unwrap().to_string(),
        list,
    )
}

// Catches: a signed bundle not installing over the API, its manifest's
// settings (top_k, min_score) not taking effect when it is active, a settings-
// only change (same model) answered before the reload ran, the manifest
// (name, version, signer) missing from GET /api/v1/model, and an unsigned,
// wrongly signed, too-new or truncated bundle installing anything or
// replacing the running model, or refused without a 4xx problem and reason.
#[test]
fn signed_bundles_over_the_api() {
    use ed25519_dalek::pkcs8::EncodePublicKey;
    use spotter::modelstore::bundle::fingerprint;
    use spotter::modelstore::BundleSettings;
    let tmp = tempfile::tempdir().unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
    let pub_path = tmp.path().join("signing.pub.pem");
    std::fs::write(
        &pub_path,
        key.verifying_key()
            .to_public_key_pem(Default::default())
            .unwrap(),
    )
    .unwrap();
    let (d, admin) = start_with(
        tmp.path(),
        &format!(
            "\n[signing]\ntrusted_keys = [\"{}\"]\nallow_unsigned_local = false\n",
            pub_path.display()
        ),
    );
    let first = sha256_hex(&std::fs::read(model(MODEL)).unwrap());
    let photo = std::fs::read(testdata().join("images/grace_hopper.bmp")).unwrap();
    let small = std::fs::read(model("mobilenet_v1_0.25_128_quant")).unwrap();
    let small_sha = sha256_hex(&small);

    let refuse = |what: &str, body: &[u8], why: &str, running: &str, installed: usize| {
        let r = admin
            .send("PUT", "/api/v1/model?name=b.spotter", body)
            .unwrap();
        assert_eq!(
            (r.status, problem_code(&r).as_str()),
            (422, "model_refused"),
            "{what}: {}",
            r.body
        );
        assert!(
            r.body.contains(why),
            "{what}: reason lacks `{why}`: {}",
            r.body
        );
        let m = admin.get("/api/v1/model").unwrap().json();
        assert_eq!(m["running"]["sha256"], running, "{what}");
        assert_eq!(m["versions"].as_array().unwrap().len(), installed, "{what}");
    };
    let top2 = BundleSettings {
        top_k: Some(2),
        ..Default::default()
    };
    refuse(
        "bare model, unsigned not allowed",
        &small,
        "unsigned",
        &first,
        0,
    );
    refuse(
        "signed by another key",
        &bundle_of(&small, "1", top2.clone(), None, &other),
        "bad signature",
        &first,
        0,
    );
    refuse(
        "for a newer Spotter",
        &bundle_of(&small, "1", top2.clone(), Some("999.0.0"), &key),
        "999.0.0",
        &first,
        0,
    );
    let good = bundle_of(&small, "1", top2.clone(), None, &key);
    refuse("truncated", &good[..good.len() / 2], "malformed", &first, 0);

    // A good bundle: installed, running, its top_k applied.
    let r = admin
        .send("PUT", "/api/v1/model?name=small.spotter", &good)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["running"]["sha256"], small_sha.as_str());
    let (sha, got) = classes(&admin, &photo);
    assert_eq!(sha, small_sha);
    assert_eq!(got.len(), 2, "the bundle's top_k = 2: {got:?}");
    assert!(
        got.iter()
            .all(|(l, _)| !l.is_empty() && l.parse::<u32>().is_err()),
        "the bundle's labels: {got:?}"
    );
    let versions = admin.get("/api/v1/model").unwrap().json()["versions"].clone();
    let b = &versions[0]["version"]["bundle"];
    assert_eq!(
        (b["name"].as_str(), b["version"].as_str()),
        (Some("small"), Some("1")),
        "{versions}"
    );
    assert_eq!(b["signer"], fingerprint(&key.verifying_key()).as_str());

    // The same model with another min_score: only the settings change, and
    // they apply once the PUT answers.
    let (s0, s1) = (got[0].1, got[1].1);
    let t = (s0 + s1) / 2.0;
    let strict = BundleSettings {
        top_k: Some(5),
        min_score: Some(t as f32),
        ..Default::default()
    };
    let r = admin
        .send(
            "PUT",
            "/api/v1/model?name=small-2.spotter",
            &bundle_of(&small, "2", strict, None, &key),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let (_, got2) = classes(&admin, &photo);
    assert!(
        !got2.is_empty() && got2.iter().all(|(_, s)| *s >= t - 1e-6),
        "min_score {t}: {got2:?}"
    );
    if s0 > s1 {
        assert_eq!(
            got2.len(),
            1,
            "min_score {t} between {s0} and {s1}: {got2:?}"
        );
    }

    // A bad bundle now: refused, the signed model and its settings keep running.
    refuse(
        "signed by another key, after an install",
        &bundle_of(
            &std::fs::read(model(MODEL)).unwrap(),
            "3",
            top2,
            None,
            &other,
        ),
        "bad signature",
        &small_sha,
        1,
    );
    assert_eq!(classes(&admin, &photo).1, got2);
    d.assert_running();
}
