//! Stable journald `MESSAGE_ID`s for the events a technician looks for.
//!
//! These never change once released: `docs/field-guide.md` and technicians'
//! saved `journalctl MESSAGE_ID=…` queries depend on them. Pass them as the
//! `message_id` key of a log record; the journal logger turns it into the
//! `MESSAGE_ID` field.

/// The daemon started (configuration loaded).
pub const STARTED: &str = "5e5100a56e644a9d9273547877394e52";
/// Readiness reached: frames flow, the model passed its canary, the API listens.
pub const READY: &str = "bcf4a6d37383474db329172822e1341e";
/// The source could not be opened (camera missing, empty folder); retrying.
pub const SOURCE_UNAVAILABLE: &str = "8b672ab23c834c8f89b8c8b7970e486c";
/// A streaming source failed (camera unplugged, driver error).
pub const SOURCE_LOST: &str = "33b06fa759e24f109bba540963c91b8e";
/// The source delivers frames again after a failure.
pub const SOURCE_RECOVERED: &str = "2bd3035a978d4730900015bc5dd75d60";
/// A model passed its canary and became active.
pub const MODEL_ACTIVATED: &str = "7af392a7635f4f9982ecc3f8d9104386";
/// A model was refused (unreadable, corrupt, unsupported, canary failed).
pub const MODEL_REJECTED: &str = "9fc02b21aee44e96999caeb9b8313602";
/// The active model was rolled back to the previous version (API or CLI);
/// it serves once it passes its canary (then MODEL_ACTIVATED follows).
pub const MODEL_ROLLED_BACK: &str = "f341ab31aeb040429923a7f14fce25c3";
/// A model bundle was refused (unsigned, wrongly signed, SHA-256 mismatch,
/// for a newer Spotter, malformed); nothing was installed or changed.
pub const MODEL_BUNDLE_REFUSED: &str = "0839db4d764e40689fa45e6c5b931d3b";
/// A self-signed TLS certificate was generated.
pub const CERT_GENERATED: &str = "7b019bd920df409aa3e08af98629d5b9";
/// SIGHUP could not load the new TLS certificate, key or client CA; the
/// previous certificate is still served.
pub const TLS_RELOAD_FAILED: &str = "19a1e89f7d4b420aa637290732ce27e6";
/// Shutdown began.
pub const STOPPING: &str = "d7c2473de0ad413eb097c6bc2d6a1566";
/// A pipeline thread stopped making progress; systemd's watchdog will restart
/// the service.
pub const WATCHDOG_STALL: &str = "22a9e86d6f004d7c8459820cbebd7fd3";
/// Repeated failed API authentication from one client (IP and count logged,
/// never key material); logged once per burst window.
pub const AUTH_FAILURE_BURST: &str = "eb41b17635aecbbdac4421a6fffd24c7";
/// No API key existed, so an admin key was created and its secret written to
/// `<state_dir>/initial-admin-key`.
pub const INITIAL_ADMIN_KEY_CREATED: &str = "c7d07a21c256414e75032ee95059cde2";
/// The system clock is not synchronized (no RTC, no NTP yet): result
/// timestamps may be wrong and are marked so.
pub const CLOCK_UNSYNCHRONIZED: &str = "c6d8221c3bb44eb09618d0dc6ba54be5";
/// Free space on the state filesystem fell below the snapshot floor
/// (`2 × store.min_free_bytes`): snapshots are paused, results still stored.
pub const DISK_LOW: &str = "a5a2d849abf444508ee185719bc8c28c";
/// Free space fell below `store.min_free_bytes`, or the disk returned ENOSPC:
/// results are not stored (counted) until space returns; reads still work.
pub const DISK_FULL: &str = "dac920dcdab54aa09351ed2ec7961f14";
/// Under disk pressure the pruner deletes the oldest results beyond the
/// retention limits (at most a quarter of them per episode) to make room.
pub const DISK_PRESSURE_PRUNE: &str = "42bca113adb94207a9fa7bf8314d78b2";
/// Free space is back above the floors: results and snapshots are stored again.
pub const DISK_SPACE_RECOVERED: &str = "27c3d88e9cbc4d27b2634b1e7d67cff5";
/// Connected to the MQTT broker (also after a reconnect); the outbox drains.
pub const MQTT_CONNECTED: &str = "10c8b985d7184e188f421551cd476b25";
/// The MQTT broker is unreachable or the connection was lost (network,
/// broker down); results queue in the outbox and the publisher retries.
pub const MQTT_DISCONNECTED: &str = "2a5f1fd19ddb47b2a1d9e5acd4dada12";
/// The MQTT broker refused the credentials (bad user name or password, not
/// authorized, client id refused). Retried with backoff; fix the config.
pub const MQTT_AUTH_FAILED: &str = "3601c07609bf46cf9341c25b13ddcfce";
/// The TLS connection to the MQTT broker failed: its certificate is not
/// trusted by the configured CA, names another host, or the handshake failed.
pub const MQTT_TLS_FAILED: &str = "958d182b0ce249a681cba4ce68b0c3eb";
/// The MQTT publisher could not start: unreadable CA, client certificate, key
/// or password file. Results still queue in the outbox.
pub const MQTT_CONFIG_FAILED: &str = "9abe7232c55641268aafc9c5b74f3c15";
/// The MQTT outbox was full and its oldest results were dropped (logged once
/// until the outbox drains; a counter tracks them all).
pub const MQTT_OUTBOX_OVERFLOW: &str = "659a9257f9b947059bec4052f50bc881";
/// The broker refused a published result (MQTT 5 PUBACK with an error reason
/// code, e.g. not authorized for the topic); it is removed from the outbox.
pub const MQTT_PUBLISH_REJECTED: &str = "fc272f0a21ed41dd89492da72f505def";
/// A GPIO line could not be requested or driven (permissions, missing
/// chip, line busy); the message names the line and the likely fix.
pub const GPIO_FAILED: &str = "3b6131e5ec1d43698bbe8b428992fae1";
/// The state directory or the result store was accessible to other users
/// (created under a permissive umask, e.g. by an older Spotter run outside
/// systemd): tightened if it is Spotter's, otherwise left with a warning.
pub const STATE_DIR_PERMISSIONS: &str = "a490c9f15b5240ee9bedc59299972677";
/// An `http_mjpeg` source dropped stream parts: over `source.max_frame_bytes`
/// or not an image (logged at most once a minute with running counts).
pub const SOURCE_PARTS_DROPPED: &str = "2d58a2bd4efb497692462331691d6fc4";
/// A `command` source's program ended (exit status and its last stderr line
/// in the message); the capture loop starts it again with backoff.
pub const SOURCE_COMMAND_EXITED: &str = "b941afde8ba14d51ae74c455686bf128";
/// A `command` source's program wrote no frame within the stall timeout; it
/// is stopped (its process group killed) and started again with backoff.
pub const SOURCE_COMMAND_STALLED: &str = "010b02e012ae4120800a83e1106b76cb";
/// A line a `command` source's program wrote on stderr (rate-limited: at most
/// 10 per 10 s, the rest counted).
pub const SOURCE_COMMAND_STDERR: &str = "89c2abae4f6e40099a6bb4c2a879b9b3";
/// A frame larger than `source.max_frame_bytes` was dropped (logged at most
/// once per 10 s with the count so far); the stream resynchronises.
pub const SOURCE_FRAME_OVERSIZED: &str = "d7a301de69e242e5a43367f1d81b83b6";
// --- Sightings (issue 18, motion) ---
/// `model.roi` is set but the model is a detector: the ROI is ignored (a
/// detector sees the whole frame; zones place its detections).
pub const ROI_IGNORED: &str = "1dd72c3f3e50494a8d6ecb48d304be19";
// --- Several sources per daemon (issue 19) ---
/// A source delivered frames and then none for its stall timeout (a
/// multiple of its frame interval): its readiness check fails; other
/// sources keep streaming. `SPOTTER_SOURCE_NAME` says which.
pub const SOURCE_STALLED: &str = "5ffdde4c35954599a1f1cc942744ac8a";
// --- Power and heat (issue 22) ---
/// The firmware reports under-voltage, a capped frequency, throttling or the
/// soft temperature limit (`SPOTTER_THROTTLE_FLAGS` names them,
/// `SPOTTER_TEMP_C` the SoC temperature): inference slows or the SD card is
/// at risk. Logged when the first flag appears, not per poll.
pub const THROTTLING_STARTED: &str = "1fb0ff45f31d484ea8682f164a412b14";
/// No throttling flag holds any more (the firmware's "since boot" bits stay
/// set until reboot and are in status).
pub const THROTTLING_ENDED: &str = "081e646ca3e14274b5d4b730c2a089f7";
/// The SoC reached `power.hot_above_c`: inference runs at most
/// `power.hot_max_fps` frames per second (`SPOTTER_TEMP_C`,
/// `SPOTTER_MAX_FPS`) until it cools below `power.hot_resume_below_c`.
pub const HEAT_SLOWDOWN_STARTED: &str = "f6a6993c2ca2406f955c700a13cf0519";
/// The SoC cooled below `power.hot_resume_below_c`: full rate again.
pub const HEAT_SLOWDOWN_ENDED: &str = "b7f0cfbc89a94f3fb68e3dfdd5545739";
// --- Model rollout over the broker (issue 22) ---
/// A rollout command from the broker was refused: malformed, not for this
/// device's stage, download failed or over `rollout.max_bundle_bytes`,
/// wrong sha256, bad or missing signature, for a newer Spotter, or the
/// canary failed. `SPOTTER_ROLLOUT_ID` names the rollout, `SPOTTER_REASON`
/// says why; nothing changed on the device.
pub const ROLLOUT_REFUSED: &str = "2edf1b60a0c5479d9bbb3f18e44fae62";
/// A model activated by a rollout failed its health window and the device
/// rolled back to the previous model by itself; `SPOTTER_REASON` says why.
pub const ROLLOUT_ROLLED_BACK: &str = "08f83ffcf64e4b80985a58f754074bbb";
// --- Data protection (issue 23) ---
/// An administrative action (key created or revoked, model installed,
/// activated or rolled back, configuration reloaded, backup exported,
/// sign-in or sign-out on the page): the action, the acting key's id (never
/// a secret), the client address and the outcome. Also kept in the store's
/// audit trail (`GET /api/v1/audit`).
pub const ADMIN_ACTION: &str = "e1c5118c1caf43749fe9fa00dffa158c";
/// A secret file (API key store, TLS private key, password file) is
/// readable by group or others: start-up is refused; the message names the
/// file and the `chmod` that fixes it.
pub const SECRET_FILE_PERMISSIONS: &str = "f361549bad2a4b72bf7fe8c62f2c062b";
