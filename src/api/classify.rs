//! `POST /api/v1/classify`: owns the admission of an upload before its body
//! is read ([`admit`]: the bound on uploads in flight and on uploads waiting
//! for a slot, 503 with `Retry-After` beyond both), the checks on an
//! uploaded image (type from the magic bytes, never the Content-Type; the
//! pixel budget from the header before any pixel is decoded), handing the
//! image to the inference thread as a
//! [`ClassifyJob`] (the already-loaded model runs it between two camera
//! frames, off the async runtime; the pipeline's result sink stores the
//! result with `?store=true`), and the response.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::{json_response, ApiError, Ctx, Resp};
use crate::config::ModelSettings;
use crate::core::frame::Frame;
use crate::inference::preprocess::{sniff, ImageKind};
use crate::modelstore::ModelStore;
use crate::pipeline::{ClassifyError, ClassifyJob, FrameSlot, InferenceControl};

/// How long an upload waits for the inference thread's answer.
pub(crate) const CLASSIFY_TIMEOUT: Duration = Duration::from_secs(60);
/// `Retry-After` for a busy upload slot or a missing model.
pub(crate) const BUSY_RETRY_AFTER_S: u64 = 1;
/// How long a queued upload waits for a slot before it gets 503.
pub(crate) const UPLOAD_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// `source` of upload results.
pub(crate) const UPLOAD_SOURCE: &str = "upload";

/// What the API needs of the running pipeline: the inference thread's slot
/// (uploads are queued there), its control (model reloads), the model
/// versions and the configured model settings (to validate new models).
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    pub slot: Arc<FrameSlot>,
    pub control: Arc<InferenceControl>,
    pub models: ModelStore,
    pub model: ModelSettings,
}

/// The bound on uploads in flight, on uploads waiting for a slot, and the
/// decode budget.
#[derive(Debug)]
pub(super) struct Uploads {
    pub permits: Arc<Semaphore>,
    pub max_in_flight: usize,
    /// Uploads allowed to wait for a permit.
    pub max_waiting: usize,
    waiting: AtomicUsize,
    pub max_pixels: u64,
    seq: AtomicU64,
}

/// Decrements the waiting count however the wait ends (permit, timeout, or
/// the request dropped by a closed connection).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Uploads {
    pub(super) fn new(max_in_flight: usize, max_waiting: usize, max_pixels: u64) -> Uploads {
        Uploads {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_waiting,
            waiting: AtomicUsize::new(0),
            max_pixels,
            seq: AtomicU64::new(0),
        }
    }

    /// A slot for one upload: at once if one is free; otherwise wait up to
    /// `wait` if fewer than `max_waiting` uploads already wait; otherwise,
    /// or when the wait runs out, `Busy` (503 with Retry-After). Waiting in
    /// turn is what a few concurrent clients need (refusing them makes them
    /// retry in a tight loop that burns the CPU the inference needs); the
    /// bound keeps a flood from piling up.
    pub(super) async fn admit(&self, wait: Duration) -> Result<OwnedSemaphorePermit, ApiError> {
        let busy = ApiError::Busy {
            retry_after_s: BUSY_RETRY_AFTER_S,
        };
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_waiting).then_some(n + 1)
            });
        if queued.is_err() {
            return Err(busy);
        }
        let _waiting = Waiting(&self.waiting);
        match tokio::time::timeout(wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            // Closed semaphore (never closed today) or the wait ran out.
            _ => Err(busy),
        }
    }
}

/// `?store=true|false` (default false); anything else is refused.
fn parse_store(query: Option<&str>) -> Result<bool, ApiError> {
    let mut store = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*k {
            "store" if store.is_some() => {
                return Err(super::invalid("store", "given more than once"))
            }
            "store" => {
                store = Some(match &*v {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(super::invalid("store", "expected true or false")),
                })
            }
            other => return Err(super::invalid(other, "unknown parameter (expected store)")),
        }
    }
    Ok(store.unwrap_or(false))
}

/// Check an upload before it is decoded: not empty, a JPEG, PNG or BMP by
/// its magic bytes, and a header whose size fits the pixel budget.
pub(crate) fn check_upload(bytes: &[u8], max_pixels: u64) -> Result<ImageKind, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::EmptyUpload);
    }
    let kind = sniff(bytes).ok_or(ApiError::UnsupportedMediaType)?;
    let format = match kind {
        ImageKind::Jpeg => image::ImageFormat::Jpeg,
        ImageKind::Png => image::ImageFormat::Png,
        ImageKind::Bmp => image::ImageFormat::Bmp,
    };
    // PNG: the size is in the fixed-position IHDR chunk, read directly so
    // that a huge image is refused as too large even when the rest is cut
    // off (the PNG decoder wants every chunk up to the first IDAT).
    let png_ihdr =
        (kind == ImageKind::Png && bytes.len() >= 24 && &bytes[12..16] == b"IHDR").then(|| {
            let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            (be(&bytes[16..20]), be(&bytes[20..24]))
        });
    let (width, height) = match png_ihdr {
        Some(dims) => dims,
        None => image::ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| ApiError::UndecodableImage(format!("{kind:?} header: {e}")))?,
    };
    if width == 0 || height == 0 {
        return Err(ApiError::UndecodableImage(format!(
            "{kind:?} header gives an empty {width}x{height} image"
        )));
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ApiError::ImageTooLarge {
            width,
            height,
            max_pixels,
        });
    }
    // A JPEG must end with its end-of-image marker (trailing padding aside):
    // lenient decoders fill a truncated scan with grey and would classify it.
    if kind == ImageKind::Jpeg {
        let end = bytes
            .iter()
            .rposition(|&b| b != 0 && b != b'\n' && b != b'\r')
            .unwrap_or(0);
        if end < 1 || bytes[end - 1..=end] != [0xFF, 0xD9] {
            return Err(ApiError::UndecodableImage(
                "JPEG is truncated (no end-of-image marker)".into(),
            ));
        }
    }
    Ok(kind)
}

/// An upload let in before its body is read: its `?store=` and its slot.
#[derive(Debug)]
pub(super) struct Admitted {
    store: bool,
    _permit: OwnedSemaphorePermit,
}

/// Decide on an upload before its body is read (so a refusal costs neither
/// the transfer nor the memory): the query, a pipeline to run it, and a slot
/// ([`Uploads::admit`]: at once, or after waiting in the bounded queue).
pub(super) async fn admit(ctx: &Ctx, query: Option<&str>) -> Result<Admitted, ApiError> {
    let store = parse_store(query)?;
    if ctx.pipeline.is_none() {
        return Err(ApiError::ModelUnavailable);
    }
    let permit = ctx.uploads.admit(UPLOAD_QUEUE_WAIT).await?;
    Ok(Admitted {
        store,
        _permit: permit,
    })
}

/// Classify the body of an upload [`admit`] let in.
pub(super) async fn classify(
    ctx: &Arc<Ctx>,
    admitted: Admitted,
    body: Bytes,
    peer: SocketAddr,
    key_name: &str,
) -> Result<Resp, ApiError> {
    let store = admitted.store;
    let max_pixels = ctx.uploads.max_pixels;
    let checked = body.clone();
    // Header parsing is cheap but still CPU work on untrusted bytes: off the workers.
    tokio::task::spawn_blocking(move || check_upload(&checked, max_pixels))
        .await
        .map_err(|e| ApiError::Internal(format!("upload check task failed: {e}")))??;
    let pipeline = ctx.pipeline.as_ref().ok_or(ApiError::ModelUnavailable)?;
    let seq = ctx.uploads.seq.fetch_add(1, Ordering::Relaxed);
    let origin = format!("api:{}:{key_name}", peer.ip());
    let frame = Frame::encoded(Vec::from(body), seq, origin).with_source(UPLOAD_SOURCE);
    let (tx, rx) = oneshot::channel();
    let job = ClassifyJob {
        frame,
        store,
        reply: tx,
    };
    pipeline
        .slot
        .submit(job, ctx.uploads.max_in_flight)
        .map_err(|_| ApiError::ShuttingDown)?;
    let done = match tokio::time::timeout(CLASSIFY_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => return Err(ApiError::ShuttingDown),
        Err(_) => {
            return Err(ApiError::Busy {
                retry_after_s: BUSY_RETRY_AFTER_S,
            })
        }
    };
    let rec = match done {
        Ok(rec) => rec,
        Err(ClassifyError::NoModel) => return Err(ApiError::ModelUnavailable),
        Err(ClassifyError::Inference(crate::inference::InferenceError::Image(m))) => {
            return Err(ApiError::UndecodableImage(m))
        }
        Err(ClassifyError::Inference(e)) => {
            return Err(ApiError::Internal(format!("classify: {e}")))
        }
        Err(ClassifyError::Store(e)) => return Err(e.into()),
    };
    drop(admitted);
    let mut v = serde_json::to_value(&rec)
        .map_err(|e| ApiError::Internal(format!("encoding a result: {e}")))?;
    if !store {
        if let Some(o) = v.as_object_mut() {
            o.remove("id");
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "stored": store, "result": v }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let img = image::RgbImage::new(w, h);
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    // Catches: the type taken from anything but the content, the pixel budget
    // checked after decoding (or not at all), empty or truncated uploads passed on.
    #[test]
    fn upload_checks() {
        assert!(matches!(check_upload(b"", 100), Err(ApiError::EmptyUpload)));
        assert!(matches!(
            check_upload(b"hello, I am a text file.jpg", 100),
            Err(ApiError::UnsupportedMediaType)
        ));
        assert!(matches!(
            check_upload(b"GIF89a....", 100),
            Err(ApiError::UnsupportedMediaType)
        ));
        assert_eq!(check_upload(&png(10, 10), 100).unwrap(), ImageKind::Png);
        assert!(matches!(
            check_upload(&png(10, 11), 100),
            Err(ApiError::ImageTooLarge {
                width: 10,
                height: 11,
                max_pixels: 100
            })
        ));
        // A PNG signature with a cut-off header.
        assert!(matches!(
            check_upload(&png(4, 4)[..12], 100),
            Err(ApiError::UndecodableImage(_))
        ));
        let mut jpeg = Vec::new();
        image::RgbImage::new(8, 8)
            .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        assert_eq!(check_upload(&jpeg, 100).unwrap(), ImageKind::Jpeg);
        assert!(matches!(
            check_upload(&jpeg[..jpeg.len() - 20], 100),
            Err(ApiError::UndecodableImage(_))
        ));
    }

    // Catches: a busy upload slot refusing at once when the queue has room
    // (a few concurrent clients would get 503s instead of their turn), the
    // queue growing past its bound, a waiting upload never giving its queue
    // place back after a timeout, and a queued upload not getting the slot
    // when it is released.
    #[tokio::test]
    async fn uploads_wait_in_a_bounded_queue() {
        let u = Arc::new(Uploads::new(1, 1, 100));
        let held = u.admit(Duration::from_secs(1)).await.unwrap();
        // One waiter fits; it times out with Busy and frees its place.
        assert!(matches!(
            u.admit(Duration::from_millis(50)).await,
            Err(ApiError::Busy { .. })
        ));
        assert_eq!(u.waiting.load(Ordering::Acquire), 0);
        // One waits; a second one is refused at once (queue full).
        let waiter = tokio::spawn({
            let u = u.clone();
            async move { u.admit(Duration::from_secs(5)).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert_eq!(u.waiting.load(Ordering::Acquire), 1);
        assert!(matches!(
            u.admit(Duration::from_secs(5)).await,
            Err(ApiError::Busy { .. })
        ));
        drop(held);
        assert!(
            waiter.await.unwrap(),
            "the queued upload did not get the released slot"
        );
        assert_eq!(u.waiting.load(Ordering::Acquire), 0);
        // No queue: refused at once while busy.
        let none = Uploads::new(1, 0, 100);
        let _p = none.admit(Duration::from_secs(1)).await.unwrap();
        assert!(matches!(
            none.admit(Duration::from_secs(1)).await,
            Err(ApiError::Busy { .. })
        ));
    }

    // Catches: unknown or repeated parameters ignored, store on by default.
    #[test]
    fn store_parameter() {
        assert!(!parse_store(None).unwrap());
        assert!(parse_store(Some("store=true")).unwrap());
        assert!(!parse_store(Some("store=false")).unwrap());
        for bad in ["store=yes", "stor=true", "store=true&store=false"] {
            assert!(parse_store(Some(bad)).is_err(), "{bad}");
        }
    }
}
