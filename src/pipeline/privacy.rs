//! The inference thread's privacy hook (issue 23): [`PrivateFrame`], the
//! one picture of a frame that may be stored, made at most once per frame
//! and only when something is stored (a result snapshot, a sighting's best
//! frame): the source's `[[privacy_mask]]` polygons filled and the boxes of
//! `privacy.blur_labels` obscured ([`crate::image::mask`]). A frame that
//! cannot be masked is stored without a picture, never unmasked.

use std::cell::OnceCell;
use std::sync::Arc;

use crate::core::frame::{Frame, PixelFormat};
use crate::core::result::ResultRecord;
use crate::image::mask::Privacy;
use crate::store::Snapshot;

/// A frame and what may be kept of it.
pub(crate) struct PrivateFrame<'a> {
    frame: &'a Frame,
    privacy: Arc<Privacy>,
    source: &'a str,
    /// Boxes to obscure, normalized `[x, y, width, height]`.
    boxes: Vec<[f64; 4]>,
    max_pixels: u64,
    picture: OnceCell<Option<Vec<u8>>>,
}

impl<'a> PrivateFrame<'a> {
    /// `frame` of the source `source`, whose result is `rec`.
    pub(crate) fn new(
        privacy: Arc<Privacy>,
        frame: &'a Frame,
        source: &'a str,
        rec: &ResultRecord,
        max_pixels: u64,
    ) -> PrivateFrame<'a> {
        let (iw, ih) = (f64::from(rec.image_width), f64::from(rec.image_height));
        let boxes = if iw > 0.0 && ih > 0.0 {
            rec.detections
                .iter()
                .filter(|d| privacy.obscures_label(&d.label))
                .map(|d| {
                    [
                        f64::from(d.x) / iw,
                        f64::from(d.y) / ih,
                        f64::from(d.width) / iw,
                        f64::from(d.height) / ih,
                    ]
                })
                .collect()
        } else {
            Vec::new()
        };
        PrivateFrame {
            frame,
            privacy,
            source,
            boxes,
            max_pixels,
            picture: OnceCell::new(),
        }
    }

    /// The frame's picture as it may be kept: the captured image as is when
    /// no mask or box applies (raw frames encoded as JPEG), else the masked
    /// JPEG; `None` when it cannot be made (logged).
    fn picture(&self) -> Option<Vec<u8>> {
        self.picture
            .get_or_init(|| {
                let made = match self.privacy.masked_jpeg(
                    self.source,
                    self.frame,
                    &self.boxes,
                    self.max_pixels,
                ) {
                    Ok(Some(masked)) => Ok(masked),
                    Ok(None) => {
                        crate::image::encode::frame_to_jpeg(self.frame).map_err(|e| e.to_string())
                    }
                    Err(e) => Err(e.to_string()),
                };
                made.map_err(|e| log::warn!(spotter_error_kind = "snapshot"; "snapshot: {e}"))
                    .ok()
            })
            .clone()
    }

    /// The result snapshot: only of frames the source delivered encoded
    /// (re-encoding raw ones would cost the inference thread a JPEG encode
    /// per snapshot; masking one costs a decode and an encode, a few per
    /// minute).
    pub(crate) fn result_snapshot(&self) -> Option<Snapshot> {
        if self.frame.format != PixelFormat::Encoded {
            return None;
        }
        self.picture().map(|bytes| Snapshot { bytes })
    }

    /// A sighting's snapshot (any frame format).
    pub(crate) fn sighting_snapshot(&self) -> Option<Snapshot> {
        self.picture().map(|bytes| Snapshot { bytes })
    }
}
