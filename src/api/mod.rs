//! HTTPS API: owns the listener, TLS termination, connection limits and
//! timeouts, graceful shutdown, routing, authentication and authorisation of
//! every request (API keys from [`crate::keys`]), rate limiting, the request
//! body limit, CORS, the security headers, and the JSON shapes of every
//! response (including the one error table, served as RFC 9457 problem
//! details). Reads [`AppState`], the [`Store`] and the key file; never writes
//! any of them (uploads with `?store=true` and model changes go through the
//! pipeline and the model store; key creation and revocation, issue 20,
//! through [`KeyStore`](crate::keys::KeyStore), locked as `spotter keys` is).
//!
//! Routes, see [`ROUTES`] (methods as listed there; a GET route also answers
//! HEAD; other methods → 405 with `Allow`):
//! - `/healthz` (no key): liveness, always `{"status":"ok"}`.
//! - `/readyz` (no key): 200 or 503; `{"ready":..}` without a key, plus
//!   `"checks":{"source":..,"model":..,"store":..}` with a valid key.
//! - `/api/v1/status` (read): uptime, version, source, readiness, model,
//!   counters, last result, store size, MQTT and GPIO.
//! - `/api/v1/results?since=&until=&limit=` (read): newest first; `since`/
//!   `until` are inclusive nanoseconds since the Unix epoch or RFC 3339 times.
//! - `/api/v1/results/latest`, `/api/v1/results/{id}` (read).
//! - `/api/v1/results?label=&min_score=&model=&cursor=` and
//!   `/api/v1/results/{id}/image` (read), `/api/v1/backup` (admin): see
//!   `results`.
//! - `/metrics` (read): OpenMetrics text.
//! - `/api/v1/keys` (admin): the keys' metadata (never secrets or hashes);
//!   `POST /api/v1/keys` creates a key (its secret in that answer only) and
//!   `DELETE /api/v1/keys/{id}` revokes one (issue 20, for the page).
//! - `POST /api/v1/classify` (read): classify an uploaded image, see
//!   [`classify`].
//! - `/api/v1/events` (read): Server-Sent Events, see [`events`].
//! - `GET|PUT /api/v1/model`, `POST /api/v1/model/rollback`,
//!   `POST /api/v1/model/versions/{sha256}/activate` (admin): see
//!   `model`.
//! - `/api/v1/openapi.json` (read): the OpenAPI description, see [`openapi`].
//! - `/api/v1/sightings?since=&until=&label=&source=&zone=&open=&limit=&cursor=`,
//!   `/api/v1/sightings/{id}`, `/api/v1/sightings/{id}/snapshot` and
//!   `/api/v1/sightings/summary?bucket=&since=&until=` (read, issue 18):
//!   see `sightings`.
//! - `POST /api/v1/reload` (admin): reload the configuration, see [`reload`].
//! - `POST /api/v1/session` (no key: the key is in the body),
//!   `DELETE /api/v1/session`: sign in and out of a browser session
//!   (issue 20), see `session`. The session cookie is accepted wherever a
//!   bearer key is, with its key's scope.
//! - `/api/v1/sources/{name}/frame` (read, issue 20): the source's latest
//!   frame as JPEG with its focus figure, bounded in viewers and rate, see
//!   `frames`.
//! - The web interface (issue 20), apart from the API's routes: `/`,
//!   `/live`, `/history`, `/device` and `/assets/<hash>/<name>`, see `pages`.
//!
//! Order of checks for each request (in `request`): declared body size
//! (413) → CORS preflight from an allowed origin (204) → rate limit (429:
//! the client-address bucket for requests without a verified key, the
//! address's probe bucket for `/healthz` and `/readyz` without a key, the
//! per-key bucket) → key verification (401) → route (404) → scope (401
//! without a key or with an ended session, 403 with too small a scope) →
//! method (405) → a state change authenticated by the session cookie (and
//! a sign-in) from another origin (403 `cross_origin`) → for the
//! routes that take a body (`POST /api/v1/classify`, `PUT /api/v1/model`)
//! only: admission of the upload (503 busy, before any byte of the body is
//! read), its bytes reserved against the global body budget (503
//! `body_budget`), the body read with the size limit (413) and the body
//! deadline (408) → handler. A request that presents a key has it checked on
//! every route, public ones included, so `/healthz` cannot be used to test
//! keys without being counted.
//!
//! Every other request is answered without reading its body: a body of up
//! to [`admission::DRAIN_CAP`](admission) bytes that keeps to the minimum
//! rate is discarded after the answer, so the connection serves the next
//! request; a longer one (or one without `Content-Length`) gets the answer
//! with `Connection: close`. So `POST /healthz` with a large body trickled
//! at a byte a second gets its 405 at once and the connection is closed.
//!
//! TLS: new connections take the server configuration current at accept from
//! a [`TlsReloader`] ([`Server::tls_reloader`]); SIGHUP swaps it, so a renewed
//! certificate (or client CA) applies to new handshakes without dropping the
//! established connections. With `client_ca` set, clients also need a
//! certificate signed by that CA (mTLS) — in addition to the API key.
//!
//! The key file is re-read when its inode, size or modification time changes
//! (one `stat` per request), so `spotter keys create|revoke` apply to the
//! next request without a signal.
//!
//! Store and key-file reads run on tokio's blocking pool (`spawn_blocking`),
//! never on the async workers.
//!
//! # Files
//!
//! - `options`: [`ApiOptions`], [`AccessOptions`] and its validation.
//! - `errors`: [`ApiError`], the error → status/code/title table,
//!   problem+json, the JSON response helper.
//! - `server`: [`Server`], the accept loop, connections, shutdown.
//! - `conns`: who may hold a connection (per-address caps, eviction at the
//!   global cap); `wire`: a connection's bytes between TLS and hyper (head
//!   deadline bookkeeping, problem+json in place of hyper's bodiless 400,
//!   414 and 431).
//! - `request`: the order of checks above, around each handler, and what
//!   happens to a body left unread.
//! - `admission`: the global body budget, body reads with their deadline
//!   and minimum rate, draining unread bodies.
//! - `auth`: the key cache, bearer tokens, rate limits, scopes.
//! - `session`: browser sessions, the cookie, the origin check, sign-in/out.
//! - `frames`: the latest-frame route, its viewer and rate bounds.
//! - `headers`: security headers and CORS.
//! - `router`: [`ROUTES`], path matching, dispatch to the handlers.
//! - `context`: what handlers share (`Ctx`, `Req`, `blocking`).
//! - Handlers, one file per route group: `status` (probes and status),
//!   `results`, `sightings`, `metrics`, `keys`, [`classify`], [`events`], `model`,
//!   [`openapi`], [`reload`].
//! - [`tls`]: certificates and their reload; [`limit`]: token buckets and
//!   the failed-authentication log.
//!
//! [`AppState`]: crate::state::AppState
//! [`Store`]: crate::store::Store

mod admission;
mod audit;
mod auth;
pub(crate) mod classify;
mod conns;
mod context;
mod errors;
pub(crate) mod events;
mod frames;
mod headers;
mod keys;
pub(crate) mod limit;
mod metrics;
mod model;
pub(crate) mod openapi;
mod options;
mod pages;
pub(crate) mod reload;
mod request;
mod results;
mod router;
mod server;
mod session;
mod shadow;
mod sightings;
mod status;
// The support bundle (issue 22).
mod support;
pub mod tls;
mod wire;

pub use crate::config::ClientAuth;
pub use auth::AUTH_FAILURE_LOG_THRESHOLD;
pub use classify::PipelineHandle;
pub use errors::{status_and_code, ApiError};
pub use options::{AccessOptions, ApiOptions};
pub use router::{RouteSpec, ROUTES};
pub use server::{Server, SHUTDOWN_GRACE};
pub use tls::{TlsError, TlsReloader, TlsSettings};

// What the route handlers (`status`, `results`, `classify`, `model`, ...)
// take from here as `super::…`: the shared context and the response and
// error helpers.
use context::{blocking, Ctx};
use errors::{invalid, json_response, Resp};
