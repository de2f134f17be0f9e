//! The pipeline: capture → infer → store.
//!
//! Capture, pre-processing and inference each run on their own OS thread
//! (ioctls, decoding and model invocations block); each source has its own
//! capture thread. The capture threads and the prepare thread are joined by
//! a [`FrameSlot`]: a one-frame-per-source, latest-wins hand-off, served
//! round robin (a fast camera cannot starve a slow one).
//! A frame that arrives while the next one is being prepared replaces the
//! waiting one and the replaced frame is counted as dropped, so a slow model
//! never builds a queue. The prepare thread decodes, resizes and quantizes
//! the next frame while the inference thread invokes the current one, and
//! hands it over through a second one-frame, latest-wins slot
//! (`prepare_loop.rs` says how it stays in step with model reloads). The
//! inference thread hands each result to the result sink (`ResultSink`), which stores it in sled and publishes it to the
//! shared [`AppState`](crate::state::AppState), the metrics and the GPIO
//! rules; `sink.rs` says what it does for each kind of result.
//!
//! The same slot carries [`ClassifyJob`]s (images uploaded to the API): the
//! inference thread runs them on its active model between two frames, before
//! the next frame, delivers the result to the same sink, and replies on the
//! job's channel. So an upload never runs on the async runtime, never needs
//! a second copy of the model, and never sees a half-swapped model: swaps
//! happen on the same thread, between items. `spotter bench` uses the sink
//! too, on a throw-away store.
//!
//! | file | owns |
//! |---|---|
//! | `slot.rs` | [`FrameSlot`] (one lane per source, served round robin), [`Taken`], [`SourceTag`], the upload hand-off ([`ClassifyJob`], [`ClassifyError`]) |
//! | `capture_loop.rs` | the capture thread ([`capture_loop()`]), [`Backoff`], its sleeps, the source readiness check ([`SourceReadiness`]) |
//! | `motion_gate.rs` | motion gating: which camera frames are inferred at all, decided on the prepare thread before pre-processing (issue 18) |
//! | `prepare_loop.rs` | the prepare thread: frames pre-processed while the previous one is invoked, and its hand-off to the inference thread (`PreparedSlot`) |
//! | `inference_loop.rs` | the inference thread, [`InferenceControl`], [`spawn_inference`] (both threads) |
//! | `model.rs` | model loading ([`load_model`], [`effective_model`], [`LoadedModel`]) |
//! | `sink.rs` | the result sink (`ResultSink`): store → state → metrics → GPIO, on its writer thread off the inference thread (issue 21) |
//! | `privacy.rs` | the picture of a frame that may be stored, privacy masks filled and label boxes obscured (issue 23) |
//! | `shadow.rs` | shadow evaluation of a candidate model ([`Shadow`], [`ShadowReport`]) on its own thread, fed sampled frames the active model inferred (issue 22) |
//! | `shadow_compare.rs` | the comparison maths: IoU, detection matching, top-1 agreement, per label ([`Comparison`]) |
//! | `sightings.rs` | the sightings stage ([`SightingPolicy`]): tracker hits from results, `keep_frames`, sightings stored, published and closed |
//!
//! [`unix_ns`] lives in [`crate::core::clock`]; it is re-exported here for
//! the callers that know it by this path.

mod capture_loop;
mod inference_loop;
mod model;
mod motion_gate;
mod prepare_loop;
mod privacy;
mod shadow;
mod shadow_compare;
mod sightings;
mod sink;
mod slot;

pub use crate::core::clock::unix_ns;
pub use capture_loop::{capture_loop, Backoff, SourceOpener, SourceReadiness};
pub(crate) use inference_loop::spawn_inference;
pub use inference_loop::{
    inference_loop, ChangeGuard, InferenceControl, InferenceSetup, ModelChange,
};
pub use model::{effective_model, load_model, LoadedModel};
pub use shadow::{Shadow, ShadowError, ShadowReport};
pub use shadow_compare::{Comparison, LabelComparison};
pub use sightings::SightingPolicy;
pub use sink::{Keep, ResultSink};
pub use slot::{ClassifyError, ClassifyJob, FrameSlot, SourceTag, Taken};

/// The tag of a frame of a single `default` source, for the tests.
#[cfg(test)]
fn test_tag() -> SourceTag {
    SourceTag {
        lane: 0,
        name: crate::config::DEFAULT_SOURCE_NAME.into(),
    }
}

/// A one-pixel RGB frame with sequence number `seq`, for the tests.
#[cfg(test)]
fn test_frame(seq: u64) -> crate::core::frame::Frame {
    crate::core::frame::Frame {
        data: vec![],
        format: crate::core::frame::PixelFormat::Rgb8,
        width: 1,
        height: 1,
        stride: 3,
        seq,
        captured_at: std::time::SystemTime::now(),
        origin: "test".into(),
        source: "test".into(),
    }
}
