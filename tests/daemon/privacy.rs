//! Privacy masks (issue 23) in a running daemon: a `files` source with a
//! `[[privacy_mask]]` beside a source without one, replaying the same
//! photo. Every picture of the masked source that leaves the pipeline (the
//! result snapshot, the sighting's snapshot, the page's latest frame) has
//! the mask's fill inside the polygon and the photo's pixels outside it;
//! the other source's pictures are the photo as captured.

use crate::common;

use std::time::{Duration, Instant};

use common::{testdata, Client, Daemon};
use image::RgbImage;

/// The mask: the top-left part of the frame, as a polygon with a slanted
/// edge (normalized x, y).
const MASK: [[f64; 2]; 4] = [[0.0, 0.0], [0.5, 0.0], [0.4, 0.6], [0.0, 0.6]];

/// Whether the pixel centre (nx, ny) is inside `MASK` by at least `m`
/// (normalized) on every side, or outside it by at least `m`: None when it
/// is near an edge (where JPEG blocks mix the fill and the photo).
fn side(nx: f64, ny: f64, m: f64) -> Option<bool> {
    // The slanted right edge: x = 0.5 - ny / 6 for ny in 0..0.6.
    let right = 0.5 - ny / 6.0;
    if nx < right - m && ny < 0.6 - m {
        Some(true)
    } else if nx > right + m || ny > 0.6 + m {
        Some(false)
    } else {
        None
    }
}

/// Check `got` against `photo`: inside the mask every pixel is `fill`
/// within JPEG tolerance; outside it the mean difference from the photo is
/// a re-encode's.
fn check_masked(got: &RgbImage, photo: &RgbImage, fill: [u8; 3], what: &str) {
    assert_eq!(got.dimensions(), photo.dimensions(), "{what}: size");
    let (w, h) = got.dimensions();
    let m = 24.0 / f64::from(w.min(h));
    let (mut inside, mut outside, mut diff) = (0u64, 0u64, 0u64);
    for (x, y, p) in got.enumerate_pixels() {
        let (nx, ny) = (
            (f64::from(x) + 0.5) / f64::from(w),
            (f64::from(y) + 0.5) / f64::from(h),
        );
        match side(nx, ny, m) {
            Some(true) => {
                inside += 1;
                for c in 0..3 {
                    assert!(
                        p[c].abs_diff(fill[c]) <= 16,
                        "{what}: pixel {x},{y} inside the mask is {p:?}, not the fill {fill:?}"
                    );
                }
            }
            Some(false) => {
                outside += 1;
                let q = photo.get_pixel(x, y);
                diff += (0..3).map(|c| u64::from(p[c].abs_diff(q[c]))).sum::<u64>();
            }
            None => {}
        }
    }
    assert!(
        inside > 1000 && outside > 1000,
        "{what}: {inside} / {outside}"
    );
    let mean = diff as f64 / (3 * outside) as f64;
    assert!(
        mean < 6.0,
        "{what}: outside the mask differs from the photo by {mean:.2} levels on average"
    );
}

/// The mean colour of the photo inside the mask.
fn mean_inside(photo: &RgbImage) -> [f64; 3] {
    let (w, h) = photo.dimensions();
    let (mut sum, mut n) = ([0f64; 3], 0f64);
    for (x, y, p) in photo.enumerate_pixels() {
        let (nx, ny) = (
            (f64::from(x) + 0.5) / f64::from(w),
            (f64::from(y) + 0.5) / f64::from(h),
        );
        if side(nx, ny, 0.0) == Some(true) {
            (0..3).for_each(|c| sum[c] += f64::from(p[c]));
            n += 1.0;
        }
    }
    sum.map(|s| s / n)
}

/// A result of `source` with a kept snapshot: the snapshot's bytes.
fn result_snapshot(c: &Client, source: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let page = c
            .get(&format!("/api/v1/results?source={source}&limit=20"))
            .unwrap()
            .json();
        for r in page["results"].as_array().into_iter().flatten() {
            let (status, ctype, body) = c
                .get_bytes(&format!(
                    "/api/v1/results/{}/image",
                    r["id"].as_str().unwrap()
                ))
                .unwrap();
            if status == 200 {
                assert_eq!(ctype, "image/jpeg");
                return body;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("no result of {source} kept a snapshot");
}

/// The snapshot of a sighting of `source`.
fn sighting_snapshot(c: &Client, source: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let page = c
            .get(&format!("/api/v1/sightings?source={source}"))
            .unwrap()
            .json();
        for s in page["sightings"].as_array().into_iter().flatten() {
            let (status, _, body) = c
                .get_bytes(&format!("/api/v1/sightings/{}/snapshot", s["id"]))
                .unwrap();
            if status == 200 {
                return body;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("no sighting of {source} kept a snapshot");
}

/// The latest frame of `source` on the page's endpoint.
fn page_frame(c: &Client, source: &str) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let (status, ctype, body) = c
            .get_bytes(&format!("/api/v1/sources/{source}/frame"))
            .unwrap();
        if status == 200 {
            assert_eq!(ctype, "image/jpeg");
            return body;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("no frame of {source}");
}

// Would catch: a mask not applied to one of the pictures that leave the
// pipeline (the result snapshot kept as captured, the sighting's best frame
// encoded from the unmasked frame, the page streaming the camera as is), a
// mask filling the wrong part of the frame (a flipped axis, pixel instead
// of normalized coordinates) or bleeding far outside its polygon, a mask
// of one source applied to another, or the config's fill colour not used.
#[test]
fn masked_pixels_never_leave_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    // One JPEG photo, whichever the test data has first.
    let mut jpegs: Vec<_> = std::fs::read_dir(testdata().join("images"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("jpg")))
        .collect();
    jpegs.sort();
    let src = jpegs.first().expect("a JPEG among the test images");
    let original = std::fs::read(src).unwrap();
    std::fs::write(photos.join("photo.jpg"), &original).unwrap();
    let photo = image::load_from_memory(&original).unwrap().to_rgb8();
    // The candidate fill farthest from what the photo shows there, so the
    // comparison cannot pass by accident.
    let mean = mean_inside(&photo);
    let fill = [[255u8, 0, 255], [0, 255, 0], [0, 0, 0], [255, 255, 255]]
        .into_iter()
        .max_by_key(|f| {
            (0..3)
                .map(|c| (f64::from(f[c]) - mean[c]).abs() as u64)
                .sum::<u64>()
        })
        .unwrap();
    let model = testdata().join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
    let labels = testdata().join("labels/labels_mobilenet_quant_v1_224.txt");
    let polygon = MASK
        .iter()
        .map(|[x, y]| format!("[{x}, {y}]"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "[daemon]\nstate_dir = \"@STATE@\"\nlog_level = \"info\"\n\n\
         [[source]]\nname = \"cam\"\nkind = \"files\"\ndir = \"{dir}\"\nfps = 2.0\n\n\
         [[source]]\nname = \"plain\"\nkind = \"files\"\ndir = \"{dir}\"\nfps = 2.0\n\n\
         [model]\npath = \"{}\"\nlabels = \"{}\"\nthreads = 1\nretry_ms = 500\n\n\
         [store]\nkeep_frames = \"all\"\nsnapshots = true\nsnapshot_min_score = 0.0\nsnapshot_max_per_minute = 120\n\n\
         [sightings]\nmin_score = 0.0\n\n[motion]\nenabled = false\n\n\
         [[privacy_mask]]\nsource = \"cam\"\npolygon = [{polygon}]\nfill = \"#{:02x}{:02x}{:02x}\"\n\n\
         [api]\nlisten = \"127.0.0.1:@PORT@\"\nframe_max_fps = 30.0\n",
        model.display(),
        labels.display(),
        fill[0],
        fill[1],
        fill[2],
        dir = photos.display(),
    );
    let mut d = Daemon::start(tmp.path(), &config);
    let c = d.client();
    c.wait_for("/readyz", 120, |r| r.status == 200);
    let decode = |b: &[u8]| image::load_from_memory(b).unwrap().to_rgb8();

    // The masked source: every picture is masked.
    check_masked(
        &decode(&result_snapshot(&c, "cam")),
        &photo,
        fill,
        "result snapshot",
    );
    check_masked(
        &decode(&sighting_snapshot(&c, "cam")),
        &photo,
        fill,
        "sighting snapshot",
    );
    check_masked(&decode(&page_frame(&c, "cam")), &photo, fill, "page frame");

    // The other source: the photo as captured.
    assert_eq!(
        result_snapshot(&c, "plain"),
        original,
        "plain result snapshot"
    );
    assert_eq!(page_frame(&c, "plain"), original, "plain page frame");
    let plain = decode(&sighting_snapshot(&c, "plain"));
    let (w, h) = plain.dimensions();
    let mut fill_like = 0u64;
    for (x, y, p) in plain.enumerate_pixels() {
        let centre = (
            (f64::from(x) + 0.5) / f64::from(w),
            (f64::from(y) + 0.5) / f64::from(h),
        );
        if side(centre.0, centre.1, 0.0) == Some(true)
            && (0..3).all(|c| p[c].abs_diff(fill[c]) <= 16)
        {
            fill_like += 1;
        }
    }
    assert!(
        fill_like < u64::from(w) * u64::from(h) / 10,
        "the unmasked source's sighting snapshot looks masked ({fill_like} fill pixels)"
    );
    d.terminate();
}
