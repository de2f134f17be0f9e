//! `spotter classify`: run a model over image files (or raw camera frames,
//! `--raw`) and print the top-k of each, as text or one JSON line per image.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::ValueEnum;

use super::{fail, Failure, EXIT_CONFIG, EXIT_FAILURE};
use crate::config::{DetectionRules, JpegScaling, ModelSettings, RuntimeSetting};
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
    /// Bytes per row: packed formats without padding.
    fn stride(&self) -> u32 {
        match self.format {
            PixelFormat::Yuyv => self.width * 2,
            _ => self.width * 3,
        }
    }

    /// The frame in `data`, or why the file cannot be one.
    fn frame(&self, data: Vec<u8>, seq: u64, origin: String) -> anyhow::Result<Frame> {
        let want = self.stride() as usize * self.height as usize;
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
        other => return Err(format!("unknown raw format '{other}' (yuyv or rgb24)")),
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

#[allow(clippy::too_many_arguments)]
pub(super) fn classify(
    model: PathBuf,
    labels: Option<PathBuf>,
    json: bool,
    runtime: RuntimeSetting,
    threads: usize,
    top_k: usize,
    litert_lib: Option<PathBuf>,
    raw: Option<RawSpec>,
    images: Vec<PathBuf>,
) -> Result<(), Failure> {
    let _ = logging::init(log::LevelFilter::Warn);
    if threads == 0 || top_k == 0 {
        return Err(Failure {
            error: anyhow::anyhow!("--threads and --top-k must be at least 1"),
            code: EXIT_CONFIG,
        });
    }
    let settings = ModelSettings {
        path: model,
        labels,
        runtime,
        litert_lib,
        threads,
        top_k,
        min_score: None,
        fit: None,
        pad_value: None,
        rules: DetectionRules::default(),
        max_pixels: 100_000_000,
        jpeg_scaling: JpegScaling::Auto,
        input_mean: None,
        input_std: None,
        retry_ms: 1000,
    };
    let mut loaded = load_model(&settings)
        .with_context(|| format!("loading model {}", settings.path.display()))
        .map_err(fail(EXIT_FAILURE))?;
    let mut failed = 0usize;
    let mut out = std::io::stdout().lock();
    for (seq, path) in images.iter().enumerate() {
        let result = std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .and_then(|data| {
                let origin = path.display().to_string();
                let frame = match raw {
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
                if json {
                    let v = serde_json::json!({
                        "path": path.display().to_string(),
                        "model_sha256": loaded.status.sha256,
                        "runtime": loaded.status.runtime,
                        "results": o.classes,
                        "detections": o.detections,
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
            error: anyhow::anyhow!("{failed} of {} images failed", images.len()),
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
            "nv12:640x480",
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
    }
}
