//! The latest frame of a running daemon's source (issue 20): frames the
//! pipeline handles reach `GET /api/v1/sources/{name}/frame` as JPEGs, and
//! the focus figure reaches status.

use crate::common;

use std::collections::HashSet;

use common::{photo_dir, testdata, Daemon};

// Would catch: the pipeline never handing its frames to viewers (the route
// answering `no_frame` forever while results flow), a replayed PNG/BMP
// served with an image/jpeg type without being encoded, a frame that is not
// one of the replayed images (a stale, torn or mis-sized buffer), the frame
// never changing as the folder replays, or the focus figure missing from
// status after a fetch.
#[test]
fn a_replayed_folder_shows_its_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, names) = photo_dir(tmp.path());
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    let config = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [[source]]\nname = \"cam\"\nkind = \"files\"\ndir = \"{}\"\nfps = 4.0\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nthreads = 1\nretry_ms = 500\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\nframe_max_fps = 30.0\n",
        photos.display(),
        model.display(),
        labels.display()
    );
    let mut d = Daemon::start(tmp.path(), &config);
    let c = d.client();
    c.wait_for("/readyz", 120, |r| r.status == 200);
    // The sizes of the replayed images.
    let sizes: HashSet<(u32, u32)> = names
        .iter()
        .map(|n| image::image_dimensions(photos.join(n)).unwrap())
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = HashSet::new();
    while std::time::Instant::now() < deadline
        && (seen.len() < 2 || seen.len() < sizes.len().min(2))
    {
        let (status, ctype, body) = c.get_bytes("/api/v1/sources/cam/frame").unwrap();
        if status == 200 {
            assert_eq!(ctype, "image/jpeg");
            assert!(body.starts_with(&[0xFF, 0xD8, 0xFF]), "not a JPEG");
            let img = image::load_from_memory(&body).expect("a decodable JPEG");
            let size = (img.width(), img.height());
            assert!(sizes.contains(&size), "{size:?} is none of {sizes:?}");
            seen.insert(body.len());
        } else {
            assert!(status == 404 || status == 429, "{status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(seen.len() >= 2, "the frame never changed: {seen:?}");
    assert_eq!(c.get("/api/v1/sources/nosuch/frame").unwrap().status, 404);
    let status = c.get("/api/v1/status").unwrap().json();
    let focus = &status["focus"]["sources"][0];
    assert_eq!(focus["source"], "cam", "{status}");
    assert!(
        focus["focus"].as_f64().is_some_and(|f| f >= 0.0),
        "{status}"
    );
    d.terminate();
}
