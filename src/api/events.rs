//! `GET /api/v1/events`: owns the Server-Sent Events stream of new results,
//! state changes (readiness, model) and sightings starting and ending
//! (`sighting_started` / `sighting_ended`, issue 18; data: the sighting)
//! from [`AppState::events`]. Every event on the bus is streamed under its
//! own name; none is filtered out. Each
//! subscriber gets a small bounded buffer; one that falls behind (its buffer
//! full for [`SLOW_SUBSCRIBER_GRACE`], or the shared bus overtook it) is dropped and counted, and its
//! connection closed, rather than buffered for. Subscribers are capped,
//! comments keep idle streams alive through proxies, and the stream ends
//! cleanly when the server shuts down.
//!
//! [`AppState::events`]: crate::state::AppState::events

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::sync::{broadcast, mpsc, Notify, OwnedSemaphorePermit, Semaphore};

use super::{ApiError, Ctx};

/// Messages buffered per subscriber before it counts as too slow.
pub(crate) const SUBSCRIBER_BUFFER: usize = 64;
/// How long a subscriber's full buffer may stay full before it counts as
/// too slow (a burst larger than the buffer is fine for a client that reads).
pub(crate) const SLOW_SUBSCRIBER_GRACE: Duration = Duration::from_secs(2);
/// `Retry-After` when all subscriber slots are taken.
pub(crate) const FULL_RETRY_AFTER_S: u64 = 5;

/// The subscriber cap and the heartbeat interval.
#[derive(Debug)]
pub(super) struct Subscribers {
    pub permits: Arc<Semaphore>,
    pub heartbeat: Duration,
}

/// The body of an event stream: what the feeder task sends.
#[derive(Debug)]
pub(crate) struct EventBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for EventBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// One SSE message.
fn message(name: &str, data: &str) -> Bytes {
    // Event data is JSON on one line (serde_json never emits raw newlines).
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Start a stream for one subscriber. `kill` closes the subscriber's
/// connection (used when it is too slow to take even a bounded buffer).
pub(super) fn subscribe(
    ctx: &Arc<Ctx>,
    kill: Arc<Notify>,
    head_only: bool,
) -> Result<Response<EventBody>, ApiError> {
    let permit = ctx
        .subscribers
        .permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::TooManySubscribers {
            retry_after_s: FULL_RETRY_AFTER_S,
        })?;
    let (tx, rx) = mpsc::channel(SUBSCRIBER_BUFFER);
    if !head_only {
        let events = ctx.state.events.subscribe();
        tokio::spawn(feed(ctx.clone(), events, tx, kill, permit));
    }
    let mut r = Response::new(EventBody { rx });
    *r.status_mut() = StatusCode::OK;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Ok(r)
}

async fn feed(
    ctx: Arc<Ctx>,
    mut events: broadcast::Receiver<crate::state::Event>,
    tx: mpsc::Sender<Bytes>,
    kill: Arc<Notify>,
    _permit: OwnedSemaphorePermit,
) {
    let mut stop = ctx.stop.clone();
    let mut heartbeat = tokio::time::interval(ctx.subscribers.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The stream opens with a comment so clients see the response at once.
    let mut slow = tx
        .try_send(Bytes::from_static(b": spotter events\n\n"))
        .is_err();
    while !slow {
        if *stop.borrow_and_update() {
            // Best effort: a full buffer just means the client misses the note.
            let _ = tx.try_send(Bytes::from_static(b": server shutting down\n\n"));
            break;
        }
        let msg = tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            _ = tx.closed() => break,
            _ = heartbeat.tick() => Bytes::from_static(b": heartbeat\n\n"),
            ev = events.recv() => match ev {
                Ok(ev) => message(ev.name, &ev.data),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    slow = true;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        slow = match tokio::time::timeout(SLOW_SUBSCRIBER_GRACE, tx.send(msg)).await {
            Ok(Ok(())) => false,
            Ok(Err(_)) => break,
            Err(_) => true,
        };
    }
    if slow {
        ctx.state.metrics.count_event_subscriber_dropped();
        log::info!("event subscriber too slow (more than {SUBSCRIBER_BUFFER} messages behind); closing its connection");
        kill.notify_one();
    }
}
