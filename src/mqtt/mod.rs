//! MQTT publishing with store-and-forward: owns the connection to the broker
//! and the draining of the store's outbox ([`crate::store::Outbox`]).
//!
//! The publisher runs on its own thread with a single-threaded async runtime
//! (so the outbox's sled reads and deletes never block the API's runtime).
//! Two tasks share it: one polls the rumqttc event loop and reconnects with
//! backoff; the other ([`Publisher`]) decides what to send. Every result goes
//! out as QoS 1 and leaves the outbox only on its PUBACK. After each
//! (re)connect the outbox is read again from its oldest entry: entries queued
//! before the connection (the backlog) go out in order at most
//! `drain_rate_per_s`, entries queued after it (live results) at once, so a
//! long backlog never delays new results. Results that reached the broker but
//! whose PUBACK was lost are sent again (at-least-once; the result id tells
//! duplicates apart).
//!
//! Sightings (issue 18) travel the same outbox and path: their started and
//! ended entries ([`OutboxKind::Sighting`]) go to `mqtt.sighting_topic`, in
//! the outbox's order among the results, with the same acknowledgement,
//! backlog and redelivery rules. With Home Assistant on, each sent sighting
//! entry also updates its label's retained ON/OFF state (`ha_state`), which
//! the binary sensors read.
//!
//! Besides results: a retained status (`online`; `offline` on shutdown and as
//! the last will), events (source lost/recovered, model activated, outbox
//! overflow; best effort, not persisted, see `events`, which learns of
//! state changes from the daemon's event bus) and, optionally, Home Assistant
//! discovery.
//!
//! Model rollout (issue 22): with `[rollout]` enabled the client also
//! subscribes (QoS 1, again after every connect: the session is clean) to
//! the command topics it is given and hands each publish received there,
//! as topic and payload, to a bounded channel (full: dropped with a
//! warning; the command is retained and comes again). The rollout's step
//! reports ([`OutboxKind::ModelStatus`]) go out with the results to
//! `spotter/<device_id>/model_status`.
//!
//! Over 600 lines because the `Publisher` is one state machine (window,
//! backlog and live cursors, acknowledgements, reconnects, shutdown) whose
//! parts share its fields; splitting it would scatter that bookkeeping.

mod client;
mod discovery;
mod events;
mod ha_state;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::config::MqttSettings;
use crate::core::ids;
use crate::state::{AppState, Event};
use crate::store::{Outbox, OutboxKind};
use client::{Client, Ev, Failure, Loop};
use events::Events;

/// How long shutdown waits for outstanding acknowledgements and the
/// `offline` status.
pub(crate) const STOP_GRACE: Duration = Duration::from_millis(1000);

#[derive(Debug, thiserror::Error)]
pub(crate) enum MqttError {
    #[error("MQTT: cannot read the {what} {path}: {source}")]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("MQTT: the {what} {path} is not usable: {reason}")]
    BadPem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("MQTT: TLS configuration: {0}")]
    Tls(rustls::Error),
    #[error("MQTT: no trusted root certificates found on this system; set mqtt.ca_file")]
    NoRoots,
    #[error("MQTT: cannot start the publisher: {0}")]
    Start(std::io::Error),
}

/// Settings with the device id and topics worked out.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub settings: MqttSettings,
    pub device_id: String,
    pub client_id: String,
    pub result_topic: String,
    pub status_topic: String,
    pub event_topic: String,
    /// Sightings started/ended (issue 18).
    pub sighting_topic: String,
    /// Model rollout steps (issue 22).
    pub model_status_topic: String,
    /// Topics subscribed for rollout commands (issue 22; empty: none).
    pub command_topics: Vec<String>,
}

/// This machine's host name, reduced to the device id alphabet.
fn host_device_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() {
        "spotter".into()
    } else {
        id
    }
}

impl Resolved {
    /// `host_id` stands in for the host name when `device_id` is empty (tests).
    pub(crate) fn new(settings: MqttSettings, host_id: Option<String>) -> Resolved {
        let device_id = if settings.device_id.is_empty() {
            host_id.unwrap_or_else(host_device_id)
        } else {
            settings.device_id.clone()
        };
        let client_id = if settings.client_id.is_empty() {
            format!("spotter-{device_id}")
        } else {
            settings.client_id.clone()
        };
        let topic = |t: &str| t.replace("{device_id}", &device_id);
        Resolved {
            result_topic: topic(&settings.result_topic),
            status_topic: topic(&settings.status_topic),
            event_topic: topic(&settings.event_topic),
            sighting_topic: topic(&settings.sighting_topic),
            model_status_topic: format!("spotter/{device_id}/model_status"),
            command_topics: Vec::new(),
            device_id,
            client_id,
            settings,
        }
    }
}

/// The running publisher; [`PublisherHandle::stop`] ends it.
pub(crate) struct PublisherHandle {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PublisherHandle {
    /// Publish `offline`, wait up to [`STOP_GRACE`] for outstanding
    /// acknowledgements, disconnect and join the thread. Blocks.
    pub(crate) fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("the MQTT publisher thread panicked");
            }
        }
    }
}

impl Drop for PublisherHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Start publishing the outbox of `outbox` per `r`. Fails only on local
/// problems (unreadable CA, key or password file); connection failures are
/// retried, logged and shown in `state.mqtt`.
pub(crate) fn spawn(
    r: Resolved,
    outbox: Arc<Outbox>,
    state: Arc<AppState>,
    commands: Option<Commands>,
) -> Result<PublisherHandle, MqttError> {
    state.mqtt.enabled.store(true, Ordering::Relaxed);
    *state.mqtt.broker.write().unwrap_or_else(|e| e.into_inner()) =
        format!("{}:{}", r.settings.host, r.settings.port);
    let _ = state.mqtt.outbox.set(outbox.clone());
    let (client, lp) = client::connect(&r)?;
    // Subscribed before the publisher first reads the state, so no change
    // falls between the two.
    let bus = state.events.subscribe();
    let (stop_tx, stop_rx) = watch::channel(false);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MqttError::Start)?;
    let thread = std::thread::Builder::new()
        .name("mqtt".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let (tx, rx) = mpsc::channel(64);
                let backoff = (
                    Duration::from_millis(r.settings.reconnect_initial_ms),
                    Duration::from_millis(r.settings.reconnect_max_ms),
                );
                let driver = tokio::task::spawn_local(drive(lp, tx, backoff));
                let mut p = Publisher::new(r, client, outbox, state);
                p.commands = commands;
                p.run(rx, bus, stop_rx).await;
                driver.abort();
            });
        })
        .map_err(MqttError::Start)?;
    Ok(PublisherHandle {
        stop: stop_tx,
        thread: Some(thread),
    })
}

/// Where publishes received on `Resolved::command_topics` go: topic and
/// payload, bounded (issue 22).
pub(crate) type Commands = std::sync::mpsc::SyncSender<(String, Vec<u8>)>;

/// What the event-loop task tells the publisher.
enum Signal {
    Event(Ev),
    /// The connection failed or ended; the sender waits for the publisher's
    /// acknowledgement before discarding rumqttc's queue and reconnecting.
    Down(Failure, oneshot::Sender<()>),
}

/// Poll the event loop forever, reconnecting with exponential backoff.
async fn drive(mut lp: Loop, tx: mpsc::Sender<Signal>, (initial, max): (Duration, Duration)) {
    let mut delay = initial;
    loop {
        match lp.poll().await {
            Ok(ev) => {
                if ev == Ev::Connected {
                    delay = initial;
                }
                if tx.send(Signal::Event(ev)).await.is_err() {
                    return;
                }
            }
            Err(Failure::Closed) => return,
            Err(f) => {
                let (ack_tx, ack_rx) = oneshot::channel();
                if tx.send(Signal::Down(f, ack_tx)).await.is_err() {
                    return;
                }
                // The publisher has stopped sending and forgotten what was in
                // flight; whatever it queued meanwhile must not be replayed.
                let _ = ack_rx.await;
                lp.discard_pending();
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max);
            }
        }
    }
}

/// What a publish in flight was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    /// An outbox entry (a result, or a sighting's change): its sequence
    /// number.
    Result(u64),
    /// Status, event, discovery or a Home Assistant sensor state.
    Control,
}

struct Publisher {
    r: Resolved,
    client: Client,
    outbox: Arc<Outbox>,
    state: Arc<AppState>,
    connected: bool,
    ever_connected: bool,
    /// Publishes handed to rumqttc that have no packet id yet, in order.
    queued: VecDeque<Tag>,
    /// Publishes sent and not yet acknowledged, by packet id.
    inflight: HashMap<u16, Tag>,
    /// A publish rumqttc parked on a packet-id collision.
    parked: Option<Tag>,
    /// Last backlog entry sent, and the last entry that belongs to the
    /// backlog (the newest one when the connection came up).
    backlog_cursor: Option<u64>,
    backlog_end: Option<u64>,
    backlog_done: bool,
    /// Last live entry sent.
    live_cursor: Option<u64>,
    tokens: f64,
    refilled: Instant,
    events: Events,
    /// The Home Assistant binary sensors' states (issue 18).
    label_states: ha_state::LabelStates,
    /// The last connection failure logged, so a retry loop logs it once.
    last_failure: Option<Failure>,
    /// The rollout worker's inbox (issue 22).
    commands: Option<Commands>,
}

impl Publisher {
    fn new(r: Resolved, client: Client, outbox: Arc<Outbox>, state: Arc<AppState>) -> Publisher {
        Publisher {
            events: Events::new(r.device_id.clone(), outbox.dropped()),
            label_states: ha_state::LabelStates::new(
                r.sighting_topic.clone(),
                if r.settings.homeassistant {
                    &r.settings.homeassistant_labels
                } else {
                    &[]
                },
            ),
            r,
            client,
            outbox,
            state,
            connected: false,
            ever_connected: false,
            queued: VecDeque::new(),
            inflight: HashMap::new(),
            parked: None,
            backlog_cursor: None,
            backlog_end: None,
            backlog_done: true,
            live_cursor: None,
            tokens: 0.0,
            refilled: Instant::now(),
            last_failure: None,
            commands: None,
        }
    }

    fn outstanding(&self) -> usize {
        self.queued.len() + self.inflight.len() + usize::from(self.parked.is_some())
    }

    fn window(&self) -> usize {
        usize::from(self.r.settings.max_inflight)
    }

    fn burst(&self) -> f64 {
        (self.r.settings.drain_rate_per_s / 10.0).clamp(1.0, self.window() as f64)
    }

    /// Publish until `stop`; `bus` is the daemon's event bus, subscribed
    /// before this first reads the state.
    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Signal>,
        mut bus: broadcast::Receiver<Event>,
        mut stop: watch::Receiver<bool>,
    ) {
        let outbox = self.outbox.clone();
        let mut bus_open = true;
        self.events.sample(&self.state);
        loop {
            // The store counts overflow drops before it wakes `added`; wait
            // for those the overflow events' rate holds back.
            let overflow_wait = self
                .events
                .note_overflow(self.outbox.dropped(), Instant::now())
                .map(|due| due.saturating_duration_since(Instant::now()));
            self.fill();
            // While the backlog waits only for tokens, wake when one is due.
            let wait_tokens =
                self.connected && !self.backlog_done && self.outstanding() < self.window();
            let token_due = Duration::from_secs_f64(
                ((1.0 - self.tokens).max(0.0)) / self.r.settings.drain_rate_per_s,
            )
            .max(Duration::from_millis(1));
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                sig = rx.recv() => match sig {
                    Some(sig) => self.handle(sig),
                    None => break,
                },
                _ = outbox.added() => {}
                _ = tokio::time::sleep(token_due), if wait_tokens => {}
                _ = tokio::time::sleep(overflow_wait.unwrap_or_default()), if overflow_wait.is_some() => {}
                received = bus.recv(), if bus_open => {
                    bus_open = self.events.on_bus(received, &self.state);
                }
            }
        }
        self.shutdown(&mut rx).await;
    }

    /// Publish `offline`, wait for outstanding acknowledgements (bounded),
    /// disconnect. Unacknowledged results stay in the outbox.
    async fn shutdown(&mut self, rx: &mut mpsc::Receiver<Signal>) {
        if self.connected {
            let topic = self.r.status_topic.clone();
            self.send(&topic, true, b"offline".to_vec(), Tag::Control);
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            while self.connected && self.outstanding() > 0 {
                tokio::select! {
                    sig = rx.recv() => match sig {
                        Some(sig) => self.handle(sig),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.client.try_disconnect();
            // Let the event loop write the DISCONNECT.
            let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
            loop {
                tokio::select! {
                    sig = rx.recv() => match sig {
                        Some(Signal::Event(_)) => continue,
                        Some(Signal::Down(_, ack)) => { let _ = ack.send(()); break }
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        self.state.mqtt.connected.store(false, Ordering::Relaxed);
        log::info!(
            "MQTT publisher stopped; {} results left in the outbox for the next start",
            self.outbox.len()
        );
    }

    /// Queue one publish with rumqttc; false if its channel is full.
    fn send(&mut self, topic: &str, retain: bool, payload: Vec<u8>, tag: Tag) -> bool {
        match self.client.try_publish(topic, retain, payload) {
            Ok(()) => {
                self.queued.push_back(tag);
                true
            }
            Err(e) => {
                log::debug!("MQTT publish not queued: {e}");
                false
            }
        }
    }

    /// Send what the window, the drain rate and the outbox allow: events
    /// first, then live results, then the backlog.
    fn fill(&mut self) {
        if !self.connected {
            return;
        }
        while self.outstanding() < self.window() {
            let Some(ev) = self.events.pop() else {
                break;
            };
            let topic = self.r.event_topic.clone();
            if !self.send(&topic, false, ev.clone(), Tag::Control) {
                self.events.unpop(ev);
                return;
            }
        }
        if !self.send_label_states() {
            return;
        }
        // Live results: everything after the backlog.
        while self.outstanding() < self.window() {
            let n = self.window() - self.outstanding();
            let batch = match self.outbox.read(self.live_cursor, None, n) {
                Ok(b) => b,
                Err(e) => {
                    log::error!("{e}");
                    return;
                }
            };
            if batch.is_empty() {
                break;
            }
            for e in batch {
                if !self.send_entry(e.kind, e.payload, e.seq) {
                    return;
                }
                self.live_cursor = Some(e.seq);
            }
        }
        // The backlog, oldest first, at the drain rate.
        let elapsed = self.refilled.elapsed().as_secs_f64();
        self.refilled = Instant::now();
        self.tokens = (self.tokens + elapsed * self.r.settings.drain_rate_per_s).min(self.burst());
        while !self.backlog_done && self.outstanding() < self.window() && self.tokens >= 1.0 {
            let n = (self.window() - self.outstanding()).min(self.tokens as usize);
            let batch = match self.outbox.read(self.backlog_cursor, self.backlog_end, n) {
                Ok(b) => b,
                Err(e) => {
                    log::error!("{e}");
                    return;
                }
            };
            if batch.is_empty() {
                self.backlog_done = true;
                break;
            }
            for e in batch {
                if !self.send_entry(e.kind, e.payload, e.seq) {
                    return;
                }
                self.backlog_cursor = Some(e.seq);
                self.tokens -= 1.0;
            }
        }
        // States the entries just sent changed.
        self.send_label_states();
    }

    /// The topic of an outbox entry of `kind`.
    fn entry_topic(&self, kind: OutboxKind) -> &str {
        match kind {
            OutboxKind::Result => &self.r.result_topic,
            OutboxKind::Sighting => &self.r.sighting_topic,
            OutboxKind::ModelStatus => &self.r.model_status_topic,
        }
    }

    /// Send one outbox entry to its kind's topic; false if rumqttc's
    /// channel is full. A sighting entry updates its label's sensor state.
    fn send_entry(&mut self, kind: OutboxKind, payload: Vec<u8>, seq: u64) -> bool {
        let topic = self.entry_topic(kind).to_owned();
        if kind == OutboxKind::Sighting {
            self.label_states.on_sent(&payload);
        }
        self.send(&topic, false, payload, Tag::Result(seq))
    }

    /// Publish (retained) the Home Assistant sensor states that changed;
    /// false if rumqttc's channel filled up.
    fn send_label_states(&mut self) -> bool {
        while let Some((topic, label, payload)) = self.label_states.pop() {
            if !self.send(&topic, true, payload, Tag::Control) {
                self.label_states.unpop(label);
                return false;
            }
        }
        true
    }

    fn handle(&mut self, sig: Signal) {
        match sig {
            Signal::Event(Ev::Connected) => self.on_connected(),
            Signal::Event(Ev::Sent(pkid)) => {
                let tag = match self.parked.take() {
                    Some(t) => Some(t),
                    None => self.queued.pop_front(),
                };
                if let Some(tag) = tag {
                    if matches!(tag, Tag::Result(_)) {
                        self.state.mqtt.published.fetch_add(1, Ordering::Relaxed);
                    }
                    self.inflight.insert(pkid, tag);
                }
            }
            Signal::Event(Ev::AwaitAck(_)) => self.parked = self.queued.pop_front(),
            Signal::Event(Ev::Acked { pkid, refused }) => {
                if let Some(Tag::Result(seq)) = self.inflight.remove(&pkid) {
                    if let Some(reason) = refused {
                        self.state.mqtt.rejected.fetch_add(1, Ordering::Relaxed);
                        log::error!(
                            message_id = ids::MQTT_PUBLISH_REJECTED, spotter_error_kind = "mqtt_publish_rejected";
                            "the MQTT broker refused a result or sighting on {} or {} ({reason}); it is dropped from the outbox",
                            self.r.result_topic, self.r.sighting_topic
                        );
                    } else {
                        self.state.mqtt.acked.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Err(e) = self.outbox.remove(seq) {
                        log::error!("{e}");
                    }
                }
            }
            Signal::Event(Ev::Message { topic, payload }) => self.on_message(topic, payload),
            Signal::Event(Ev::Other) => {}
            Signal::Down(f, ack) => {
                self.on_down(f);
                let _ = ack.send(());
            }
        }
    }

    fn on_connected(&mut self) {
        let backlog = self.outbox.len();
        self.connected = true;
        self.state.mqtt.connected.store(true, Ordering::Relaxed);
        self.state.mqtt.set_error(None);
        if self.ever_connected {
            self.state.mqtt.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.ever_connected = true;
        self.last_failure = None;
        log::info!(
            message_id = ids::MQTT_CONNECTED;
            "MQTT connected to {}:{} as {}; {backlog} results queued, publishing to {}",
            self.r.settings.host, self.r.settings.port, self.r.client_id, self.r.result_topic
        );
        self.queued.clear();
        self.inflight.clear();
        self.parked = None;
        self.backlog_end = match self.outbox.last_seq() {
            Ok(s) => s,
            Err(e) => {
                log::error!("{e}");
                None
            }
        };
        self.backlog_cursor = None;
        self.backlog_done = self.backlog_end.is_none();
        self.live_cursor = self.backlog_end;
        self.tokens = 1.0;
        self.refilled = Instant::now();
        let status = self.r.status_topic.clone();
        self.send(&status, true, b"online".to_vec(), Tag::Control);
        // Rollout commands (issue 22): retained ones arrive right after.
        if self.commands.is_some() {
            for topic in self.r.command_topics.clone() {
                if let Err(e) = self.client.try_subscribe(&topic) {
                    log::warn!("MQTT: cannot subscribe to {topic}: {e}");
                }
            }
        }
        if self.r.settings.homeassistant {
            for (topic, payload) in discovery::messages(&self.r, self.state.version) {
                self.send(&topic, true, payload, Tag::Control);
            }
            // The sensors' states as this run knows them; the backlog's
            // sighting entries update them as they go out.
            self.label_states.mark_all();
        }
    }

    /// A publish on a subscribed topic: a rollout command for the worker.
    fn on_message(&mut self, topic: String, payload: Vec<u8>) {
        let Some(tx) = &self.commands else {
            return;
        };
        if !self.r.command_topics.contains(&topic) {
            return;
        }
        match tx.try_send((topic, payload)) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full((topic, _))) => log::warn!(
                "a model rollout command on {topic} was dropped: the rollout worker is busy (a retained command comes again on the next connect)"
            ),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {}
        }
    }

    fn on_down(&mut self, f: Failure) {
        let was = self.connected;
        self.connected = false;
        self.state.mqtt.connected.store(false, Ordering::Relaxed);
        self.queued.clear();
        self.inflight.clear();
        self.parked = None;
        let broker = format!("{}:{}", self.r.settings.host, self.r.settings.port);
        let text = match &f {
            Failure::Auth(m) => format!("MQTT broker {broker} refused the login: {m}; check mqtt.username and mqtt.password_file"),
            Failure::Tls(m) => format!("MQTT broker {broker}: TLS failed: {m}; check mqtt.ca_file, mqtt.host and the client certificate"),
            Failure::Network(m) if was => format!("MQTT connection to {broker} lost: {m}; results queue in the outbox"),
            Failure::Network(m) => format!("MQTT broker {broker} unreachable: {m}; results queue in the outbox"),
            Failure::Closed => return,
        };
        self.state.mqtt.set_error(Some(text.clone()));
        // Log a failure once until it changes or a connection succeeds.
        if !was && self.last_failure.as_ref() == Some(&f) {
            return;
        }
        match &f {
            Failure::Auth(_) => {
                log::error!(message_id = ids::MQTT_AUTH_FAILED, spotter_error_kind = "mqtt_auth"; "{text}")
            }
            Failure::Tls(_) => {
                log::error!(message_id = ids::MQTT_TLS_FAILED, spotter_error_kind = "mqtt_tls"; "{text}")
            }
            _ => {
                log::warn!(message_id = ids::MQTT_DISCONNECTED, spotter_error_kind = "mqtt_disconnected"; "{text}")
            }
        }
        self.last_failure = Some(f);
    }
}
