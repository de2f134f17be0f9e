//! `spotter classify`: run a model over image files (or raw camera frames,
//! `--raw`) and print the top-k of each, or a detector's detections, as text
//! or one JSON line per image. With `--config` the model is loaded from that
//! file's `[model]` section exactly as the daemon loads it (detection rules,
//! fit, letterbox pad, thresholds), the command's flags taking precedence.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;

use super::{fail, Failure, EXIT_CONFIG, EXIT_FAILURE};
use crate::config::{ModelSettings, RuntimeSetting};
use crate::core::frame::{Frame, PixelFormat};
use crate::logging;
use crate::pipeline::load_model;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RuntimeArg {
    Auto,
    Litert,
    Builtin,
}

impl From<RuntimeArg> for RuntimeSetting {
    fn from(r: RuntimeArg) -> Self {
        match r {
            RuntimeArg::Auto => RuntimeSetting::Auto,
            RuntimeArg::Litert => RuntimeSetting::Litert,
            RuntimeArg::Builtin => RuntimeSetting::Builtin,
        }
    }
}

/// `--raw`: the pixel format and size of raw frame files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSpec {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
}

impl RawSpec {
    /// Bytes per (luma) row: no padding.
    fn stride(&self) -> u32 {
        match self.format {
            PixelFormat::Yuyv => self.width * 2,
            PixelFormat::I420 | PixelFormat::Nv12 => self.width,
            _ => self.width * 3,
        }
    }

    /// The frame in `data`, or why the file cannot be one.
    fn frame(&self, data: Vec<u8>, seq: u64, origin: String) -> anyhow::Result<Frame> {
        let want = self
            .format
            .raw_len(self.stride(), self.height)
            .unwrap_or_default();
        if data.len() != want {
            anyhow::bail!(
                "{} bytes, but a {}x{} {:?} frame has {want}",
                data.len(),
                self.width,
                self.height,
                self.format
            );
        }
        let mut frame = Frame::encoded(data, seq, origin);
        frame.format = self.format;
        (frame.width, frame.height, frame.stride) = (self.width, self.height, self.stride());
        Ok(frame)
    }
}

pub(super) fn parse_raw_spec(s: &str) -> Result<RawSpec, String> {
    let (fmt, size) = s
        .split_once(':')
        .ok_or("expected FORMAT:WxH, e.g. yuyv:640x480")?;
    let format = match fmt.to_ascii_lowercase().as_str() {
        "yuyv" | "yuy2" => PixelFormat::Yuyv,
        "rgb" | "rgb24" | "rgb8" => PixelFormat::Rgb8,
        "yuv420" | "i420" | "yuv420p" => PixelFormat::I420,
        "nv12" => PixelFormat::Nv12,
        other => {
            return Err(format!(
                "unknown raw format '{other}' (yuyv, yuv420, nv12 or rgb24)"
            ))
        }
    };
    let (w, h) = size
        .split_once(['x', 'X'])
        .ok_or("size must be WxH, e.g. 640x480")?;
    let dim = |v: &str| v.parse::<u32>().ok().filter(|n| (1..=16_384).contains(n));
    let (Some(width), Some(height)) = (dim(w), dim(h)) else {
        return Err(format!(
            "size '{size}': width and height must be 1 to 16384"
        ));
    };
    if format == PixelFormat::Yuyv && width % 2 == 1 {
        return Err(format!(
            "yuyv width {width} must be even (two pixels share U and V)"
        ));
    }
    Ok(RawSpec {
        format,
        width,
        height,
    })
}

/// Arguments of `spotter classify`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifyArgs {
    /// The .tflite model; default: `model.path` of `--config`.
    #[arg(long, required_unless_present = "config")]
    pub model: Option<PathBuf>,
    /// Labels file; optional when the model embeds its labels.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// A config file (with its drop-ins) whose `[model]` section applies as
    /// in the daemon: min_score, the per-label rules (label_filter,
    /// label_deny, min_box_area, max_detections, iou_threshold,
    /// [model.min_score_by_label]), fit, pad_value and the rest. Flags given
    /// here take precedence over the file's keys.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// One JSON object per image, one per line.
    #[arg(long)]
    pub json: bool,
    /// Default: `auto`, or the config's `model.runtime`.
    #[arg(long, value_enum)]
    pub runtime: Option<RuntimeArg>,
    /// CPU threads (default: 2, or the config's `model.threads`).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Classes reported per image (default: 5, or the config's `model.top_k`).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Lowest score reported (default: the config's `model.min_score`, else
    /// the model family's: 0.25 for YOLO, 0 otherwise).
    #[arg(long)]
    pub min_score: Option<f32>,
    /// Path of libLiteRt.so.
    #[arg(long, env = "SPOTTER_LITERT_LIB")]
    pub litert_lib: Option<PathBuf>,
    /// The files are raw frames as a camera delivers them, without row
    /// padding: `yuyv:640x480` (as written by `v4l2-ctl --stream-to`),
    /// `yuv420:WxH` or `nv12:WxH` (one frame of `rpicam-vid --codec yuv420`
    /// or `ffmpeg -pix_fmt yuv420p|nv12 -f rawvideo`), `rgb24:WxH`; without
    /// it they are JPEG, PNG or BMP.
    #[arg(long, value_parser = parse_raw_spec, value_name = "FORMAT:WxH")]
    pub raw: Option<RawSpec>,
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// Largest decoded image without `--config` (offline files may be larger
/// than camera frames; the daemon's default is `model.max_pixels`).
const CLI_MAX_PIXELS: u64 = 100_000_000;

/// The model settings `classify` loads: `base` (the `[model]` section of
/// `--config`, or the defaults) with every flag the user gave on top.
fn effective_settings(mut base: ModelSettings, args: &ClassifyArgs) -> ModelSettings {
    if let Some(m) = &args.model {
        base.path = m.clone();
    }
    if let Some(l) = &args.labels {
        base.labels = Some(l.clone());
    }
    if let Some(r) = args.runtime {
        base.runtime = r.into();
    }
    if let Some(t) = args.threads {
        base.threads = t;
    }
    if let Some(k) = args.top_k {
        base.top_k = k;
    }
    if let Some(s) = args.min_score {
        base.min_score = Some(s);
    }
    if let Some(l) = &args.litert_lib {
        base.litert_lib = Some(l.clone());
    }
    base
}

/// The `[model]` settings of `--config` (with the model the daemon would
/// load: its active managed version, when one is, overrides `model.path`
/// and `model.labels`), or the defaults for the command line (every key
/// unset, larger images allowed).
fn base_settings(config: Option<&std::path::Path>) -> Result<ModelSettings, Failure> {
    match config {
        Some(path) => {
            let s = super::load_settings(path)?;
            let models = crate::modelstore::ModelStore::new(&s.daemon.state_dir);
            Ok(crate::pipeline::effective_model(&s.model, Some(&models)))
        }
        None => {
            let mut m = crate::config::from_sources(vec![])
                .map_err(|e| anyhow::Error::new(e).context("built-in defaults"))
                .map_err(fail(EXIT_FAILURE))?
                .model;
            m.max_pixels = CLI_MAX_PIXELS;
            Ok(m)
        }
    }
}

pub(super) fn classify(args: ClassifyArgs) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    if args.threads == Some(0) || args.top_k == Some(0) {
        return Err(Failure {
            error: anyhow::anyhow!("--threads and --top-k must be at least 1"),
            code: EXIT_CONFIG,
        });
    }
    if args.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
        return Err(Failure {
            error: anyhow::anyhow!("--min-score must be between 0.0 and 1.0"),
            code: EXIT_CONFIG,
        });
    }
    let settings = effective_settings(base_settings(args.config.as_deref())?, &args);
    let mut loaded = load_model(&settings)
        .with_context(|| format!("loading model {}", settings.path.display()))
        .map_err(fail(EXIT_FAILURE))?;
    let detector = loaded.status.kind == "detection";
    let mut failed = 0usize;
    let mut out = std::io::stdout().lock();
    for (seq, path) in args.images.iter().enumerate() {
        let result = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|data| {
                let origin = path.display().to_string();
                let frame = match args.raw {
                    Some(spec) => spec
                        .frame(data, seq as u64, origin)
                        .with_context(|| format!("raw frame {}", path.display()))?,
                    None => Frame::encoded(data, seq as u64, origin),
                };
                loaded
                    .engine
                    .run(&frame)
                    .with_context(|| format!("classifying {}", path.display()))
            });
        match result {
            Ok(o) => {
                if args.json {
                    let v = serde_json::json!({
                        "path": path.display().to_string(),
                        "model_sha256": loaded.status.sha256,
                        "runtime": loaded.status.runtime,
                        "results": o.classes,
                        "detections": o.detections,
                        "image_width": o.image_width,
                        "image_height": o.image_height,
                        "latency": o.latency,
                    });
                    let _ = writeln!(out, "{v}");
                } else {
                    let _ = writeln!(out, "{}", path.display());
                    for (rank, c) in o.classes.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "  {}. {:<32} {:.4}  (index {}, raw {})",
                            rank + 1,
                            c.label,
                            c.score,
                            c.index,
                            c.raw
                        );
                    }
                    if detector && o.detections.is_empty() {
                        let _ = writeln!(out, "  (no detections)");
                    }
                    for d in &o.detections {
                        let _ = writeln!(
                            out,
                            "  {:<16} {:.3}  box x={:.0} y={:.0} w={:.0} h={:.0}",
                            d.label, d.score, d.x, d.y, d.width, d.height
                        );
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("spotter: {e:#}");
            }
        }
    }
    if failed > 0 {
        return Err(Failure {
            error: anyhow::anyhow!("{failed} of {} images failed", args.images.len()),
            code: EXIT_FAILURE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Would catch `--raw` accepting sizes or formats the frame code cannot
    // handle (odd YUYV widths, zero sizes) or mixing up width and height.
    #[test]
    fn raw_spec_parses_and_rejects() {
        assert_eq!(
            parse_raw_spec("yuyv:640x480"),
            Ok(RawSpec {
                format: PixelFormat::Yuyv,
                width: 640,
                height: 480
            })
        );
        assert_eq!(
            parse_raw_spec("RGB24:3X2").map(|s| (s.format, s.stride(), s.height)),
            Ok((PixelFormat::Rgb8, 9, 2))
        );
        for bad in [
            "yuyv",
            "yuyv:640",
            "yuyv:0x480",
            "yuyv:641x480",
            "nv21:640x480",
            "yuyv:99999x2",
        ] {
            assert!(parse_raw_spec(bad).is_err(), "{bad} accepted");
        }
        let spec = parse_raw_spec("yuyv:4x2").unwrap();
        assert!(spec.frame(vec![0; 15], 0, "f".into()).is_err());
        let f = spec.frame(vec![0; 16], 0, "f".into()).unwrap();
        assert_eq!(
            (f.format, f.width, f.height, f.stride),
            (PixelFormat::Yuyv, 4, 2, 8)
        );
        // YUV 4:2:0 files as rpicam-vid and ffmpeg write them: an odd size
        // has its chroma rounded up (3x3: 9 luma + 2 x 2x2 chroma bytes).
        let spec = parse_raw_spec("yuv420:3x3").unwrap();
        assert!(spec.frame(vec![0; 16], 0, "f".into()).is_err());
        let f = spec.frame(vec![0; 17], 0, "f".into()).unwrap();
        assert_eq!((f.format, f.stride), (PixelFormat::I420, 3));
        let spec = parse_raw_spec("NV12:4x2").unwrap();
        assert!(spec.frame(vec![0; 12], 0, "f".into()).is_ok());
    }

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ClassifyArgs,
    }

    fn parse(argv: &[&str]) -> Result<ClassifyArgs, clap::Error> {
        use clap::Parser;
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    // Would catch a flag the user did not give overriding the config's key
    // (the old fixed defaults: runtime auto, threads 2, top-k 5, min-score 0
    // would silently replace `[model]`), a given flag losing to the file, or
    // the detection rules, fit and pad being dropped on the way.
    #[test]
    fn flags_override_only_what_they_set() {
        let file = crate::config::from_sources(vec![(
            PathBuf::from("t.toml"),
            "[model]\npath = \"/m/from_config.tflite\"\nruntime = \"builtin\"\n\
             threads = 3\ntop_k = 4\nmin_score = 0.4\nfit = \"letterbox\"\n\
             label_filter = [\"Person\", \"cat\"]\n"
                .to_string(),
        )])
        .unwrap()
        .model;
        let untouched = effective_settings(
            file.clone(),
            &parse(&["classify", "--config", "t.toml", "a.jpg"]).unwrap(),
        );
        // `--litert-lib` also comes from SPOTTER_LITERT_LIB, which the
        // aarch64 test run sets: then it is given, and wins over the file.
        let mut expected = file.clone();
        if let Some(lib) = std::env::var_os("SPOTTER_LITERT_LIB") {
            expected.litert_lib = Some(lib.into());
        }
        assert_eq!(untouched, expected);
        assert_eq!(untouched.rules.allow, ["person", "cat"]);

        let args = parse(&[
            "classify",
            "--config",
            "t.toml",
            "--top-k",
            "7",
            "--min-score",
            "0.25",
            "--model",
            "/m/flag.tflite",
            "a.jpg",
        ])
        .unwrap();
        let s = effective_settings(file.clone(), &args);
        assert_eq!(s.path, PathBuf::from("/m/flag.tflite"));
        assert_eq!((s.top_k, s.min_score), (7, Some(0.25)));
        assert_eq!((s.threads, s.runtime), (3, RuntimeSetting::Builtin));
        assert_eq!(s.fit, Some(crate::config::Fit::Letterbox));
        assert_eq!(s.rules, file.rules);
    }

    // Would catch `classify --config` classifying with the configured
    // model while the daemon runs an installed, activated version (the
    // technician would compare against the wrong model).
    #[test]
    fn config_model_is_the_daemons_active_version() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let config = tmp.path().join("spotter.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nstate_dir = \"{}\"\n[model]\npath = \"/configured.tflite\"\n",
                state.display()
            ),
        )
        .unwrap();
        let configured = base_settings(Some(&config)).unwrap();
        assert_eq!(configured.path, PathBuf::from("/configured.tflite"));
        let model = tmp.path().join("new.tflite");
        std::fs::write(&model, b"model bytes").unwrap();
        let store = crate::modelstore::ModelStore::new(&state);
        let meta = store
            .install(&model, None, |_, _| Ok("classification".into()))
            .unwrap();
        store.activate(&meta.sha256).unwrap();
        let active = base_settings(Some(&config)).unwrap();
        assert_ne!(active.path, configured.path);
        assert_eq!(std::fs::read(&active.path).unwrap(), b"model bytes");
    }

    // Would catch `classify` running without a model (neither --model nor a
    // config to take `model.path` from) or without images.
    #[test]
    fn model_comes_from_a_flag_or_the_config() {
        assert!(parse(&["classify", "a.jpg"]).is_err());
        assert!(parse(&["classify", "--model", "m.tflite"]).is_err());
        assert!(parse(&["classify", "--config", "c.toml", "a.jpg"]).is_ok());
        let a = parse(&["classify", "--model", "m.tflite", "a.jpg", "b.jpg"]).unwrap();
        assert_eq!(a.images.len(), 2);
        assert_eq!((a.threads, a.top_k, a.min_score), (None, None, None));
    }
}
