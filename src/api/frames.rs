//! `GET /api/v1/sources/{name}/frame` (read, issue 20): the source's latest
//! frame as a JPEG, for the live page, with its focus figure in
//! `X-Spotter-Focus` (see [`crate::image::focus`]) and its sequence number
//! in `X-Spotter-Frame-Seq`.
//!
//! Watching must never starve inference on a Pi, so:
//! - **viewers are bounded**: a viewer (a key, or a session's key, from one
//!   client address) counts while it fetched a frame within the last
//!   [`VIEWER_WINDOW`]; beyond `api.max_frame_viewers` others get 503
//!   `too_many_viewers` with `Retry-After`;
//! - **each viewer's rate is bounded**: `api.frame_max_fps` frames per
//!   second (429 `rate_limited` with `Retry-After` beyond);
//! - **one encode per frame, one at a time**: the JPEG (and focus figure) of
//!   the latest frame is made once, on the blocking pool, and shared by
//!   every viewer until a newer frame arrives; encodes never run in
//!   parallel. A frame the source delivered as JPEG is served as is; other
//!   frames (YUYV, I420, NV12, RGB, PNG, BMP) are encoded.
//!
//! - **privacy masks** (issue 23): a source with `[[privacy_mask]]`s has
//!   every frame decoded, masked and re-encoded (once per frame, as above)
//!   before any viewer gets it; a frame that cannot be masked is a 500,
//!   never served unmasked.
//!
//! The frames come from the inference thread's hand-off
//! ([`crate::state::frames`]): nothing is copied while nobody watches.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::auth::Caller;
use super::limit::{client_key, retry_after_secs, RateLimiter};
use super::{ApiError, Ctx, Resp};
use crate::core::frame::{Frame, PixelFormat};
use crate::image::decode::{decode_rgb, sniff, ImageKind};
use crate::image::mask::Privacy;

/// A viewer counts toward `api.max_frame_viewers` for this long after its
/// last frame request.
pub(super) const VIEWER_WINDOW: Duration = Duration::from_secs(5);
/// Header of the focus figure.
pub const FOCUS_HEADER: &str = "x-spotter-focus";
/// Header of the frame's sequence number.
pub const SEQ_HEADER: &str = "x-spotter-frame-seq";

/// Who watches: the key's id and the client address.
type Viewer = (String, IpAddr);

/// A frame encoded for viewers.
#[derive(Debug, Clone)]
struct Encoded {
    seq: u64,
    captured_at: SystemTime,
    jpeg: Bytes,
    focus: Option<f64>,
}

/// The viewers, their rates, and the encoded latest frame of each source.
pub(super) struct FrameViewers {
    max_viewers: usize,
    viewers: Mutex<HashMap<Viewer, Instant>>,
    rates: Mutex<RateLimiter<Viewer>>,
    /// Held while encoding: one encode at a time, shared by all viewers.
    encoded: tokio::sync::Mutex<HashMap<String, Encoded>>,
    max_pixels: u64,
}

impl FrameViewers {
    /// `max_viewers` ≥ 1, `fps` > 0 (checked by the options).
    pub(super) fn new(max_viewers: usize, fps: f64, max_pixels: u64) -> Self {
        let burst = (fps.ceil() as u32).max(2);
        FrameViewers {
            max_viewers: max_viewers.max(1),
            viewers: Mutex::new(HashMap::new()),
            rates: Mutex::new(RateLimiter::new(fps, burst, max_viewers.max(1) * 4)),
            encoded: tokio::sync::Mutex::new(HashMap::new()),
            max_pixels,
        }
    }

    /// Admit one frame request of `viewer` at `now`: a viewer slot (503
    /// beyond the bound), then a token of its rate (429 beyond it).
    fn admit(&self, viewer: &Viewer, now: Instant) -> Result<(), ApiError> {
        {
            let mut v = self.viewers.lock().unwrap_or_else(|p| p.into_inner());
            v.retain(|_, seen| now.saturating_duration_since(*seen) < VIEWER_WINDOW);
            if !v.contains_key(viewer) && v.len() >= self.max_viewers {
                let oldest = v.values().min().copied().unwrap_or(now);
                let wait = VIEWER_WINDOW.saturating_sub(now.saturating_duration_since(oldest));
                return Err(ApiError::TooManyViewers {
                    retry_after_s: retry_after_secs(wait),
                });
            }
            v.insert(viewer.clone(), now);
        }
        let taken = self
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .try_take(viewer, now);
        taken.map_err(|wait| ApiError::RateLimited {
            retry_after_s: retry_after_secs(wait),
        })
    }

    /// The encoded form of `frame` (the latest of `source`), made once.
    async fn encode(
        &self,
        source: &str,
        frame: Arc<Frame>,
        privacy: Arc<Privacy>,
    ) -> Result<Encoded, ApiError> {
        let mut cache = self.encoded.lock().await;
        if let Some(e) = cache.get(source) {
            if e.seq == frame.seq && e.captured_at == frame.captured_at {
                return Ok(e.clone());
            }
        }
        let max_pixels = self.max_pixels;
        let name = source.to_string();
        let made =
            tokio::task::spawn_blocking(move || encode_frame(&frame, max_pixels, &privacy, &name))
                .await
                .map_err(|e| ApiError::Internal(format!("frame encode task failed: {e}")))??;
        cache.insert(source.to_string(), made.clone());
        Ok(made)
    }
}

/// The frame as a JPEG, and its focus figure (None when its luma image
/// cannot be made). A frame of a `source` with privacy masks is decoded,
/// masked and re-encoded (issue 23).
fn encode_frame(
    frame: &Frame,
    max_pixels: u64,
    privacy: &Privacy,
    source: &str,
) -> Result<Encoded, ApiError> {
    let fail = |e: String| ApiError::Internal(format!("frame {}: {e}", frame.origin));
    let masked = privacy
        .masked_jpeg(source, frame, &[], max_pixels)
        .map_err(|e| fail(e.to_string()))?;
    let jpeg = match masked {
        Some(jpeg) => jpeg,
        None => match frame.format {
            PixelFormat::Encoded if sniff(&frame.data) == Some(ImageKind::Jpeg) => {
                frame.data.clone()
            }
            PixelFormat::Encoded => {
                // PNG or BMP (a replayed folder): decoded, then encoded as JPEG.
                let mut rgb = Vec::new();
                let (w, h) = decode_rgb(&frame.data, max_pixels, &mut rgb)
                    .map_err(|e| fail(e.to_string()))?;
                let raw = frame.rgb_like(rgb, w, h);
                crate::image::encode::frame_to_jpeg(&raw).map_err(|e| fail(e.to_string()))?
            }
            _ => crate::image::encode::frame_to_jpeg(frame).map_err(|e| fail(e.to_string()))?,
        },
    };
    let mut luma = Vec::new();
    let focus = crate::image::luma::LumaSampler::default()
        .sample(frame, max_pixels, &mut luma)
        .ok()
        .map(|(w, h)| crate::image::focus::laplacian_variance(&luma, w, h));
    Ok(Encoded {
        seq: frame.seq,
        captured_at: frame.captured_at,
        jpeg: Bytes::from(jpeg),
        focus,
    })
}

/// `GET /api/v1/sources/{name}/frame`.
pub(super) async fn frame(
    ctx: &Ctx,
    name: &str,
    caller: &Caller,
    peer: IpAddr,
) -> Result<Resp, ApiError> {
    let stats = ctx
        .state
        .source_stats()
        .into_iter()
        .find(|s| s.name == name)
        .ok_or(ApiError::SourceNotFound)?;
    let key = match caller {
        Caller::Key(k) => k.id.clone(),
        Caller::Anonymous => String::new(),
    };
    ctx.frames.admit(&(key, client_key(peer)), Instant::now())?;
    let latest = stats.latest.get().ok_or(ApiError::NoFrame)?;
    let enc = ctx.frames.encode(name, latest, ctx.state.privacy()).await?;
    if let Some(f) = enc.focus {
        stats.latest.set_focus(enc.seq, f);
    }
    let mut r = Response::new(Full::new(enc.jpeg));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(
        HeaderName::from_static(SEQ_HEADER),
        HeaderValue::from(enc.seq),
    );
    if let Some(f) = enc.focus {
        // A formatted number: always a valid header value.
        if let Ok(v) = HeaderValue::from_str(&format!("{f:.1}")) {
            h.insert(HeaderName::from_static(FOCUS_HEADER), v);
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn viewer(n: u8) -> Viewer {
        (format!("k{n}"), IpAddr::from([10, 0, 0, n]))
    }

    // Catches: more concurrent viewers admitted than the bound, a viewer
    // that left still holding its slot after the window, or the refusal
    // without a usable Retry-After.
    #[test]
    fn viewers_are_bounded_and_leave() {
        let v = FrameViewers::new(2, 100.0, 1 << 20);
        let t0 = Instant::now();
        assert!(v.admit(&viewer(1), t0).is_ok());
        assert!(v.admit(&viewer(2), t0).is_ok());
        match v.admit(&viewer(3), t0 + Duration::from_secs(1)) {
            Err(ApiError::TooManyViewers { retry_after_s }) => {
                assert!((1..=5).contains(&retry_after_s), "{retry_after_s}")
            }
            other => panic!("{other:?}"),
        }
        // Those admitted keep watching.
        assert!(v.admit(&viewer(1), t0 + Duration::from_secs(1)).is_ok());
        // Viewer 2 stopped: after the window its slot is free.
        let later = t0 + VIEWER_WINDOW + Duration::from_millis(10);
        assert!(v.admit(&viewer(1), later).is_ok());
        assert!(v.admit(&viewer(3), later).is_ok());
    }

    // Catches: a viewer fetching faster than frame_max_fps (a page in a
    // tight loop costing an encode per request), or one viewer's rate
    // spent by another.
    #[test]
    fn each_viewer_is_rate_limited() {
        let v = FrameViewers::new(4, 2.0, 1 << 20);
        let t0 = Instant::now();
        let mut ok = 0;
        for _ in 0..10 {
            if v.admit(&viewer(1), t0).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 2, "the burst");
        assert!(matches!(
            v.admit(&viewer(1), t0),
            Err(ApiError::RateLimited { retry_after_s: 1 })
        ));
        assert!(v.admit(&viewer(2), t0).is_ok());
        assert!(v.admit(&viewer(1), t0 + Duration::from_millis(600)).is_ok());
    }

    // Catches: a raw frame served unencoded (YUYV bytes as image/jpeg), a
    // PNG or BMP served with a JPEG type, or a sharp frame without a focus
    // figure.
    #[test]
    fn frames_become_jpegs_with_a_focus_figure() {
        let (w, h) = (64u32, 48u32);
        let yuyv: Vec<u8> = (0..h)
            .flat_map(|y| {
                (0..w).flat_map(move |x| {
                    let luma = if (x / 8 + y / 8) % 2 == 0 { 30 } else { 220 };
                    [luma, 128]
                })
            })
            .collect();
        let frame = Frame {
            data: yuyv,
            format: PixelFormat::Yuyv,
            width: w,
            height: h,
            stride: w * 2,
            seq: 3,
            captured_at: SystemTime::now(),
            origin: "test".into(),
            source: String::new(),
        };
        let e = encode_frame(&frame, 1 << 20, &Privacy::default(), "cam").unwrap();
        assert_eq!(sniff(&e.jpeg), Some(ImageKind::Jpeg));
        assert_eq!(e.seq, 3);
        assert!(e.focus.is_some_and(|f| f > 0.0), "{:?}", e.focus);
        let mut png = Vec::new();
        image::RgbImage::from_pixel(16, 16, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let e = encode_frame(
            &Frame::encoded(png, 4, "p.png".into()),
            1 << 20,
            &Privacy::default(),
            "cam",
        )
        .unwrap();
        assert_eq!(sniff(&e.jpeg), Some(ImageKind::Jpeg));
        assert_eq!(e.focus, Some(0.0), "a flat image");
    }
}
