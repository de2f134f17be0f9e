//! Replay of a folder of images as a frame source.
//!
//! This module owns the `files` source: it replays the JPEG, PNG and BMP
//! images of a folder (recognised by their magic bytes, whatever their
//! extension; other files are skipped) in file-name order, at a fixed rate,
//! once or in a loop. Each frame carries the file's bytes undecoded
//! ([`PixelFormat::Encoded`]); decoding belongs to pre-processing.
//! Pacing is deadline based (each frame is due one period after the previous
//! one was due, not after it was delivered), so the rate does not drift.
//! The folder is scanned again each time a loop completes, so images added
//! while the daemon runs are picked up.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{CaptureError, Frame, FrameSource};

/// Largest image file the source reads; larger files are reported as errors.
pub(crate) const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Longest pause between frames: rates below 1 frame per hour are treated as 1 per hour.
const MAX_PERIOD: Duration = Duration::from_secs(3600);

/// Options for [`FilesSource::open`].
#[derive(Debug, Clone, PartialEq)]
pub struct FilesOptions {
    /// Folder holding the images.
    pub dir: PathBuf,
    /// Frames per second; must be finite and > 0.
    pub fps: f64,
    /// Start again from the first image after the last one (`false`: stop
    /// with [`CaptureError::Finished`]).
    pub looping: bool,
}

/// Replays a folder of images. See the module documentation.
pub struct FilesSource {
    opts: FilesOptions,
    /// Images of the current pass, in file-name order.
    files: Vec<PathBuf>,
    /// Index in `files` of the next image to deliver.
    next: usize,
    seq: u64,
    pacer: Pacer,
}

impl FilesSource {
    /// Scan `opts.dir` and prepare replay. Fails if the folder cannot be read,
    /// holds no image, or `fps` is not a finite number > 0.
    pub(crate) fn open(opts: FilesOptions) -> Result<FilesSource, CaptureError> {
        if !(opts.fps.is_finite() && opts.fps > 0.0) {
            return Err(CaptureError::Folder {
                path: opts.dir.display().to_string(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("fps must be a finite number > 0, got {}", opts.fps),
                ),
            });
        }
        let period = Duration::try_from_secs_f64(1.0 / opts.fps)
            .unwrap_or(MAX_PERIOD)
            .min(MAX_PERIOD);
        let files = scan(&opts.dir)?;
        log::info!(dir = opts.dir.display().to_string(), images = files.len(), fps = opts.fps;
            "replaying image folder");
        Ok(FilesSource {
            opts,
            files,
            next: 0,
            seq: 0,
            pacer: Pacer::new(period),
        })
    }

    /// Number of images in the current pass.
    pub(crate) fn image_count(&self) -> usize {
        self.files.len()
    }

    fn read_frame(&self, path: &Path) -> Result<Vec<u8>, CaptureError> {
        let file_err = |source: io::Error| CaptureError::File {
            path: path.display().to_string(),
            source,
        };
        let file = fs::File::open(path).map_err(file_err)?;
        let len = file.metadata().map_err(file_err)?.len();
        if len > MAX_FILE_BYTES {
            return Err(file_err(too_large(len)));
        }
        let mut data = Vec::with_capacity(len as usize);
        // Read at most one byte past the limit, in case the file grew since `metadata`.
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(file_err)?;
        if data.len() as u64 > MAX_FILE_BYTES {
            return Err(file_err(too_large(data.len() as u64)));
        }
        if !is_image(&data) {
            return Err(file_err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no longer a JPEG, PNG or BMP image (file replaced since the folder was scanned?)",
            )));
        }
        Ok(data)
    }
}

impl FrameSource for FilesSource {
    fn describe(&self) -> String {
        format!(
            "files:{} {} images @{}{}",
            self.opts.dir.display(),
            self.files.len(),
            self.opts.fps,
            if self.opts.looping { " loop" } else { "" }
        )
    }

    fn next_frame(&mut self) -> Result<Frame, CaptureError> {
        if self.next >= self.files.len() {
            if !self.opts.looping {
                return Err(CaptureError::Finished);
            }
            // Wait for this slot before rescanning so a caller that retries
            // after an error (e.g. the folder became empty) is paced too.
            self.pacer.wait();
            self.files = scan(&self.opts.dir)?;
            self.next = 0;
        } else {
            self.pacer.wait();
        }
        let path = self.files[self.next].clone();
        // Move on even if this file fails, so one bad file cannot stall replay.
        self.next += 1;
        let data = self.read_frame(&path)?;
        let frame =
            Frame::encoded(data, self.seq, path.display().to_string()).with_source(self.describe());
        self.seq += 1;
        Ok(frame)
    }
}

fn too_large(len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "file is {len} bytes, larger than the {} MiB limit for an image",
            MAX_FILE_BYTES >> 20
        ),
    )
}

/// True if `header` starts with the magic bytes of a JPEG, PNG or BMP image.
fn is_image(header: &[u8]) -> bool {
    matches!(
        image::guess_format(header),
        Ok(image::ImageFormat::Jpeg | image::ImageFormat::Png | image::ImageFormat::Bmp)
    )
}

/// The images in `dir`, sorted by file name. Unreadable entries are skipped
/// with a warning; an unreadable folder or one without images is an error.
fn scan(dir: &Path) -> Result<Vec<PathBuf>, CaptureError> {
    let folder_err = |source: io::Error| CaptureError::Folder {
        path: dir.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(folder_err)? {
        let entry = entry.map_err(folder_err)?;
        let path = entry.path();
        // `fs::metadata` follows symlinks, so a link to an image counts.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => continue,
            Err(e) => {
                log::warn!(path = path.display().to_string(), error = e.to_string(); "skipping unreadable entry");
                continue;
            }
        }
        let mut header = [0u8; 16];
        let read = fs::File::open(&path)
            .and_then(|mut f| crate::core::fsutil::read_up_to(&mut f, &mut header));
        match read {
            Ok(n) if is_image(&header[..n]) => files.push(path),
            Ok(_) => log::debug!(path = path.display().to_string(); "skipping non-image file"),
            Err(e) => {
                log::warn!(path = path.display().to_string(), error = e.to_string(); "skipping unreadable file")
            }
        }
    }
    if files.is_empty() {
        return Err(CaptureError::EmptyFolder {
            path: dir.display().to_string(),
        });
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Deadline-based pacing: frame k is due at `start + k * period`. If the
/// consumer falls more than one period behind, the schedule restarts from now
/// instead of delivering a burst of late frames.
#[derive(Debug)]
struct Pacer {
    period: Duration,
    next_due: Option<Instant>,
}

impl Pacer {
    fn new(period: Duration) -> Pacer {
        Pacer {
            period,
            next_due: None,
        }
    }

    /// How long to sleep at `now` before the next frame, advancing the schedule.
    fn schedule(&mut self, now: Instant) -> Duration {
        let due = match self.next_due {
            Some(due) if now <= due + self.period => due,
            // First frame, or more than a period late: restart the schedule.
            _ => now,
        };
        self.next_due = Some(due + self.period);
        due.saturating_duration_since(now)
    }

    fn wait(&mut self) {
        let sleep = self.schedule(Instant::now());
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::PixelFormat;
    use std::io::Write;

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30]));
        let mut out = io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 20, 30]));
        let mut out = io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    fn bmp_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([1, 2, 3]));
        let mut out = io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Bmp).unwrap();
        out.into_inner()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::File::create(&p).unwrap().write_all(bytes).unwrap();
        p
    }

    fn opts(dir: &Path, looping: bool) -> FilesOptions {
        // Fast rate so tests do not wait; no test asserts on timing.
        FilesOptions {
            dir: dir.to_path_buf(),
            fps: 1000.0,
            looping,
        }
    }

    // Catches extension-based detection, wrong ordering, wrong frame fields or a
    // source that never finishes when not looping.
    #[test]
    fn replays_images_by_magic_in_name_order_then_finishes() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let b = write(d, "b.png", &png_bytes(4, 3));
        let a = write(d, "a.jpg", &jpeg_bytes(8, 8));
        write(d, "c.txt", b"not an image at all");
        let png_as_jpg = write(d, "d.jpg", &png_bytes(2, 2)); // misnamed, still an image
        write(d, "e.png", b"\x89PNX garbage"); // image extension, wrong magic
        let bmp = write(d, "f.dat", &bmp_bytes(3, 3)); // BMP with an unrelated extension
        fs::create_dir(d.join("g.jpg")).unwrap(); // a directory is not an image

        let mut src = FilesSource::open(opts(d, false)).unwrap();
        assert_eq!(src.image_count(), 4);
        let expected = [a, b, png_as_jpg, bmp];
        for (i, path) in expected.iter().enumerate() {
            let f = src.next_frame().unwrap();
            assert_eq!(f.origin, path.display().to_string());
            assert_eq!(f.data, fs::read(path).unwrap());
            assert_eq!(f.format, PixelFormat::Encoded);
            assert_eq!((f.width, f.height, f.stride), (0, 0, 0));
            assert_eq!(f.seq, i as u64);
        }
        assert!(matches!(src.next_frame(), Err(CaptureError::Finished)));
        assert!(matches!(src.next_frame(), Err(CaptureError::Finished)));
    }

    // Catches a loop that does not restart, does not rescan, or resets seq.
    #[test]
    fn looping_rescans_and_keeps_seq_increasing() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "1.png", &png_bytes(2, 2));
        write(d, "3.png", &png_bytes(2, 2));
        let mut src = FilesSource::open(opts(d, true)).unwrap();
        let names = |f: &Frame| {
            Path::new(&f.origin)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        assert_eq!(names(&src.next_frame().unwrap()), "1.png");
        // Added mid-pass: not part of this pass, picked up on the next one.
        write(d, "2.bmp", &bmp_bytes(2, 2));
        assert_eq!(names(&src.next_frame().unwrap()), "3.png");
        let mut seen = Vec::new();
        for _ in 0..3 {
            let f = src.next_frame().unwrap();
            seen.push((names(&f), f.seq));
        }
        assert_eq!(
            seen,
            vec![
                ("1.png".into(), 2),
                ("2.bmp".into(), 3),
                ("3.png".into(), 4)
            ]
        );
    }

    // Catches a vanished file stalling replay or being reported under the wrong error.
    #[test]
    fn vanished_file_is_a_file_error_then_moves_on() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "a.png", &png_bytes(2, 2));
        let b = write(d, "b.png", &png_bytes(2, 2));
        write(d, "c.png", &png_bytes(2, 2));
        let mut src = FilesSource::open(opts(d, false)).unwrap();
        fs::remove_file(&b).unwrap();
        assert!(src.next_frame().unwrap().origin.ends_with("a.png"));
        match src.next_frame() {
            Err(CaptureError::File { path, source }) => {
                assert!(path.ends_with("b.png"), "{path}");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected File error, got {other:?}"),
        }
        let c = src.next_frame().unwrap();
        assert!(c.origin.ends_with("c.png"));
        assert_eq!(c.seq, 1, "seq counts delivered frames");
        assert!(matches!(src.next_frame(), Err(CaptureError::Finished)));
    }

    // Catches reading a huge file into memory instead of refusing it.
    #[test]
    fn oversized_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let big = write(d, "big.jpg", &jpeg_bytes(2, 2));
        // Sparse: grows the file past the cap without writing 64 MiB.
        fs::OpenOptions::new()
            .write(true)
            .open(&big)
            .unwrap()
            .set_len(MAX_FILE_BYTES + 1)
            .unwrap();
        write(d, "small.png", &png_bytes(2, 2));
        let mut src = FilesSource::open(opts(d, false)).unwrap();
        let err = src.next_frame().unwrap_err();
        assert!(matches!(err, CaptureError::File { .. }), "{err:?}");
        assert!(err.to_string().contains("64 MiB limit"), "{err}");
        assert!(src.next_frame().unwrap().origin.ends_with("small.png"));
    }

    // Catches a missing folder, an image-less folder or a bad rate being accepted.
    #[test]
    fn open_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert!(matches!(
            FilesSource::open(opts(&missing, true)),
            Err(CaptureError::Folder { source, .. }) if source.kind() == io::ErrorKind::NotFound
        ));
        write(tmp.path(), "readme.txt", b"hello");
        assert!(matches!(
            FilesSource::open(opts(tmp.path(), true)),
            Err(CaptureError::EmptyFolder { .. })
        ));
        write(tmp.path(), "x.png", &png_bytes(1, 1));
        for fps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let o = FilesOptions {
                fps,
                ..opts(tmp.path(), true)
            };
            assert!(
                matches!(FilesSource::open(o), Err(CaptureError::Folder { .. })),
                "fps {fps}"
            );
        }
    }

    // Catches a looping source that keeps going (or panics) after its folder empties.
    #[test]
    fn looping_folder_emptied_reports_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let p = write(tmp.path(), "x.png", &png_bytes(1, 1));
        let mut src = FilesSource::open(opts(tmp.path(), true)).unwrap();
        src.next_frame().unwrap();
        fs::remove_file(p).unwrap();
        assert!(matches!(
            src.next_frame(),
            Err(CaptureError::EmptyFolder { .. })
        ));
        write(tmp.path(), "y.png", &png_bytes(1, 1));
        assert!(src.next_frame().unwrap().origin.ends_with("y.png"));
    }

    // Catches drift (scheduling from delivery time) and burst catch-up after a stall,
    // using synthetic instants rather than real sleeps.
    #[test]
    fn pacer_is_deadline_based() {
        let period = Duration::from_millis(100);
        let mut p = Pacer::new(period);
        let t0 = Instant::now();
        assert_eq!(p.schedule(t0), Duration::ZERO);
        // Frame 1 is due at t0 + 100 ms.
        assert_eq!(
            p.schedule(t0 + Duration::from_millis(30)),
            Duration::from_millis(70)
        );
        // Frame 1 went out 7 ms late: frame 2 is still due at t0 + 200 ms, not 207.
        assert_eq!(
            p.schedule(t0 + Duration::from_millis(107)),
            Duration::from_millis(93)
        );
        // Frame 3 (due t0 + 300) asked for 20 ms late: no sleep, schedule kept.
        assert_eq!(p.schedule(t0 + Duration::from_millis(320)), Duration::ZERO);
        assert_eq!(
            p.schedule(t0 + Duration::from_millis(330)),
            Duration::from_millis(70)
        );
        // A long stall: the schedule restarts instead of bursting.
        assert_eq!(p.schedule(t0 + Duration::from_secs(10)), Duration::ZERO);
        assert_eq!(p.schedule(t0 + Duration::from_secs(10)), period);
    }

    // Catches failure on real photos: the shared test images replay and decode.
    #[test]
    fn replays_shared_test_images() {
        let dir = std::env::var_os("SPOTTER_TESTDATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
            })
            .join("images");
        let mut src = FilesSource::open(FilesOptions {
            dir: dir.clone(),
            fps: 1000.0,
            looping: false,
        })
        .unwrap();
        let mut names = Vec::new();
        loop {
            match src.next_frame() {
                Ok(f) => {
                    let img = image::load_from_memory(&f.data).unwrap();
                    assert!(img.width() > 0 && img.height() > 0);
                    names.push(
                        Path::new(&f.origin)
                            .file_name()
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    );
                }
                Err(CaptureError::Finished) => break,
                Err(e) => panic!("{e}"),
            }
        }
        // Every JPEG/PNG/BMP there is replayed, in name order; the COPYRIGHT text is not.
        let mut expected: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| [".jpg", ".png", ".bmp"].iter().any(|ext| n.ends_with(ext)))
            .collect();
        expected.sort();
        assert!(!expected.is_empty());
        assert_eq!(names, expected);
    }
}
