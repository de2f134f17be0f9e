//! What is served: [`ROUTES`] (path, metrics name, scope, methods of every
//! route), matching a path to a [`Route`], which routes take a request body
//! ([`takes_body`]) or are probes ([`is_probe`]), and [`dispatch`] from a
//! route to its handler in the route-group files. No handler bodies here.

use std::sync::Arc;

use hyper::Method;

use super::context::{Ctx, Req};
use super::{
    audit, classify, frames, keys, metrics, model, openapi, reload, results, session, shadow,
    sightings, status, support, ApiError, Resp,
};
use crate::keys::Scope;
use crate::store::{AuditAction, AuditRecord};

/// One route of the API: its path (with `{id}` for the parameter), metrics
/// name, the scope it needs (`None` = answers without a key) and methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub path: &'static str,
    pub name: &'static str,
    pub scope: Option<Scope>,
    pub allow: &'static str,
}

const ALLOW_GET: &str = "GET, HEAD";

/// Every route the router serves.
pub const ROUTES: &[RouteSpec] = &[
    RouteSpec {
        path: "/healthz",
        name: "healthz",
        scope: None,
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/readyz",
        name: "readyz",
        scope: None,
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/status",
        name: "status",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/results",
        name: "results",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/results/latest",
        name: "results_latest",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/results/{id}",
        name: "result_by_id",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/metrics",
        name: "metrics",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/keys",
        name: "keys",
        scope: Some(Scope::Admin),
        // POST: create a key (issue 20, the page's device view).
        allow: "GET, HEAD, POST",
    },
    RouteSpec {
        path: "/api/v1/results/{id}/image",
        name: "result_image",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/backup",
        name: "backup",
        scope: Some(Scope::Admin),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/classify",
        name: "classify",
        scope: Some(Scope::Read),
        allow: "POST",
    },
    RouteSpec {
        path: "/api/v1/events",
        name: "events",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/model",
        name: "model",
        scope: Some(Scope::Admin),
        allow: "GET, HEAD, PUT",
    },
    RouteSpec {
        path: "/api/v1/model/rollback",
        name: "model_rollback",
        scope: Some(Scope::Admin),
        allow: "POST",
    },
    RouteSpec {
        path: "/api/v1/openapi.json",
        name: "openapi",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/reload",
        name: "reload",
        scope: Some(Scope::Admin),
        allow: "POST",
    },
    // --- Sightings (issue 18) ---
    RouteSpec {
        path: "/api/v1/sightings",
        name: "sightings",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/sightings/summary",
        name: "sightings_summary",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/sightings/{id}",
        name: "sighting_by_id",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/sightings/{id}/snapshot",
        name: "sighting_snapshot",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    // --- Web page (issue 20) ---
    // Sign-in takes the key in its body, sign-out only ends the cookie's
    // session: both answer without a key (see `session`).
    RouteSpec {
        path: "/api/v1/session",
        name: "session",
        scope: None,
        allow: "POST, DELETE",
    },
    RouteSpec {
        path: "/api/v1/sources/{name}/frame",
        name: "source_frame",
        scope: Some(Scope::Read),
        allow: ALLOW_GET,
    },
    RouteSpec {
        path: "/api/v1/keys/{id}",
        name: "key_by_id",
        scope: Some(Scope::Admin),
        allow: "DELETE",
    },
    RouteSpec {
        path: "/api/v1/model/versions/{sha256}/activate",
        name: "model_activate",
        scope: Some(Scope::Admin),
        allow: "POST",
    },
    // --- Audit trail (issue 23) ---
    RouteSpec {
        path: "/api/v1/audit",
        name: "audit",
        scope: Some(Scope::Admin),
        allow: ALLOW_GET,
    },
    // --- Shadow evaluation (issue 22) ---
    RouteSpec {
        path: "/api/v1/model/shadow",
        name: "model_shadow",
        scope: Some(Scope::Admin),
        allow: "GET, HEAD, POST, DELETE",
    },
    RouteSpec {
        path: "/api/v1/model/shadow/promote",
        name: "model_shadow_promote",
        scope: Some(Scope::Admin),
        allow: "POST",
    },
    // --- Support bundle (issue 22) ---
    RouteSpec {
        path: "/api/v1/support-bundle",
        name: "support_bundle",
        scope: Some(Scope::Admin),
        allow: ALLOW_GET,
    },
];

#[derive(Debug, PartialEq)]
pub(super) enum Route<'a> {
    Healthz,
    Readyz,
    Status,
    Results,
    Latest,
    ById(&'a str),
    Metrics,
    Keys,
    Image(&'a str),
    Backup,
    Classify,
    Events,
    Model,
    ModelRollback,
    OpenApi,
    Reload,
    Sightings,
    SightingsSummary,
    SightingById(&'a str),
    SightingSnapshot(&'a str),
    Session,
    SourceFrame(&'a str),
    KeyById(&'a str),
    ModelActivate(&'a str),
    Audit,
    ModelShadow,
    ModelShadowPromote,
    SupportBundle,
}

impl Route<'_> {
    pub(super) fn spec(&self) -> &'static RouteSpec {
        let i = match self {
            Route::Healthz => 0,
            Route::Readyz => 1,
            Route::Status => 2,
            Route::Results => 3,
            Route::Latest => 4,
            Route::ById(_) => 5,
            Route::Metrics => 6,
            Route::Keys => 7,
            Route::Image(_) => 8,
            Route::Backup => 9,
            Route::Classify => 10,
            Route::Events => 11,
            Route::Model => 12,
            Route::ModelRollback => 13,
            Route::OpenApi => 14,
            Route::Reload => 15,
            Route::Sightings => 16,
            Route::SightingsSummary => 17,
            Route::SightingById(_) => 18,
            Route::SightingSnapshot(_) => 19,
            Route::Session => 20,
            Route::SourceFrame(_) => 21,
            Route::KeyById(_) => 22,
            Route::ModelActivate(_) => 23,
            Route::Audit => 24,
            Route::ModelShadow => 25,
            Route::ModelShadowPromote => 26,
            Route::SupportBundle => 27,
        };
        &ROUTES[i]
    }

    /// A bounded name for metrics labels (never the raw path).
    pub(super) fn name(&self) -> &'static str {
        self.spec().name
    }
}

/// The route a path names; `None` when it names none.
pub(super) fn match_route(path: &str) -> Option<Route<'_>> {
    Some(match path {
        "/healthz" => Route::Healthz,
        "/readyz" => Route::Readyz,
        "/api/v1/status" => Route::Status,
        "/api/v1/results" => Route::Results,
        "/api/v1/results/latest" => Route::Latest,
        "/metrics" => Route::Metrics,
        "/api/v1/keys" => Route::Keys,
        "/api/v1/backup" => Route::Backup,
        "/api/v1/classify" => Route::Classify,
        "/api/v1/events" => Route::Events,
        "/api/v1/model" => Route::Model,
        "/api/v1/model/rollback" => Route::ModelRollback,
        "/api/v1/openapi.json" => Route::OpenApi,
        "/api/v1/reload" => Route::Reload,
        "/api/v1/sightings" => Route::Sightings,
        "/api/v1/sightings/summary" => Route::SightingsSummary,
        "/api/v1/session" => Route::Session,
        "/api/v1/audit" => Route::Audit,
        "/api/v1/model/shadow" => Route::ModelShadow,
        "/api/v1/model/shadow/promote" => Route::ModelShadowPromote,
        "/api/v1/support-bundle" => Route::SupportBundle,
        p if p.starts_with("/api/v1/sightings/") => return match_sighting(p),
        p if p.starts_with("/api/v1/keys/") => {
            let id = p.strip_prefix("/api/v1/keys/")?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            Route::KeyById(id)
        }
        p if p.starts_with("/api/v1/model/versions/") => {
            let sha = p
                .strip_prefix("/api/v1/model/versions/")?
                .strip_suffix("/activate")?;
            if sha.is_empty() || sha.contains('/') {
                return None;
            }
            Route::ModelActivate(sha)
        }
        p if p.starts_with("/api/v1/sources/") => {
            let name = p.strip_prefix("/api/v1/sources/")?.strip_suffix("/frame")?;
            if name.is_empty() || name.contains('/') {
                return None;
            }
            Route::SourceFrame(name)
        }
        p => {
            let id = p.strip_prefix("/api/v1/results/")?;
            if let Some(id) = id.strip_suffix("/image") {
                if id.is_empty() || id.contains('/') {
                    return None;
                }
                return Some(Route::Image(id));
            }
            if id.is_empty() || id.contains('/') {
                return None;
            }
            Route::ById(id)
        }
    })
}

/// `/api/v1/sightings/{id}` and `/api/v1/sightings/{id}/snapshot`.
fn match_sighting(p: &str) -> Option<Route<'_>> {
    let id = p.strip_prefix("/api/v1/sightings/")?;
    let (id, snapshot) = match id.strip_suffix("/snapshot") {
        Some(id) => (id, true),
        None => (id, false),
    };
    if id.is_empty() || id.contains('/') {
        return None;
    }
    Some(if snapshot {
        Route::SightingSnapshot(id)
    } else {
        Route::SightingById(id)
    })
}

/// Whether `route` reads a request body for `method`. Every other request
/// is answered without reading one (see `request`).
pub(super) fn takes_body(route: &Route<'_>, method: &Method) -> bool {
    matches!(
        (route, method),
        (Route::Classify, &Method::POST)
            | (Route::Model, &Method::PUT)
            | (Route::Session, &Method::POST)
            | (Route::Keys, &Method::POST)
            | (Route::ModelShadow, &Method::POST)
    )
}

/// Whether `route` is a probe (liveness or readiness), whose anonymous
/// requests have their own per-address bucket, apart from failed keys.
pub(super) fn is_probe(route: &Route<'_>) -> bool {
    matches!(route, Route::Healthz | Route::Readyz)
}

/// Run the handler of `route`.
pub(super) async fn dispatch(
    ctx: &Arc<Ctx>,
    route: Route<'_>,
    req: Req<'_>,
) -> Result<Resp, ApiError> {
    let (query, caller) = (req.query, req.caller);
    match route {
        Route::Healthz => Ok(status::healthz()),
        Route::Readyz => Ok(status::readyz(ctx, caller)),
        Route::Status => status::status(ctx).await,
        Route::Metrics => Ok(metrics::get(ctx)),
        Route::Results => results::list(ctx, query).await,
        Route::Image(id) => results::image(ctx, id).await,
        Route::Backup => {
            let r = results::backup(ctx, query).await;
            let rec = audit::by(caller, req.peer.ip(), AuditAction::BackupExported);
            audit::record(ctx, rec.outcome_of(&r)).await;
            r
        }
        Route::Latest => results::latest(ctx).await,
        Route::ById(id) => results::by_id(ctx, id).await,
        Route::Keys if req.method == Method::POST => {
            keys::create(ctx, req.content_type, &req.body, caller, req.peer.ip()).await
        }
        Route::Keys => Ok(keys::list(ctx).await),
        Route::KeyById(id) => keys::revoke(ctx, id, caller, req.peer.ip()).await,
        Route::Classify => match req.upload {
            Some(admitted) => {
                classify::classify(ctx, admitted, req.body, req.peer, caller.name()).await
            }
            None => Err(ApiError::Internal(
                "upload dispatched without admission".into(),
            )),
        },
        // Answered in `request::respond` (a stream, not a whole body).
        Route::Events => Err(ApiError::Internal(
            "events route dispatched as a whole body".into(),
        )),
        Route::Model if req.method == Method::PUT => {
            let peer = req.peer.ip();
            let r = model::put(ctx, req.body, query).await;
            // A PUT installs and activates: two records, the version running after.
            for action in [AuditAction::ModelInstalled, AuditAction::ModelActivated] {
                audit::record(ctx, model_record(ctx, caller, peer, action, &r)).await;
            }
            r
        }
        Route::Model => model::get(ctx).await,
        Route::ModelRollback => {
            let r = model::rollback(ctx).await;
            let rec = model_record(ctx, caller, req.peer.ip(), AuditAction::ModelRolledBack, &r);
            audit::record(ctx, rec).await;
            r
        }
        Route::ModelActivate(sha) => {
            let r = model::activate(ctx, sha).await;
            let rec = model_record(ctx, caller, req.peer.ip(), AuditAction::ModelActivated, &r);
            audit::record(ctx, rec).await;
            r
        }
        Route::OpenApi => Ok(openapi::response()),
        Route::Reload => {
            let r = reload::post(ctx).await;
            let rec = audit::by(caller, req.peer.ip(), AuditAction::ConfigReloaded);
            audit::record(ctx, rec.outcome_of(&r)).await;
            r
        }
        Route::Sightings => sightings::list(ctx, query).await,
        Route::SightingsSummary => sightings::summary(ctx, query).await,
        Route::SightingById(id) => sightings::by_id(ctx, id).await,
        Route::SightingSnapshot(id) => sightings::snapshot(ctx, id).await,
        Route::Session if req.method == Method::POST => {
            session::sign_in(ctx, req.peer.ip(), req.content_type, &req.body).await
        }
        Route::Session => {
            let (resp, ended) = session::sign_out(ctx, req.credential, caller);
            if ended {
                let rec = audit::by(caller, req.peer.ip(), AuditAction::SignOut);
                audit::record(ctx, rec).await;
            }
            Ok(resp)
        }
        Route::Audit => audit::list(ctx, query).await,
        Route::SourceFrame(name) => frames::frame(ctx, name, caller, req.peer.ip()).await,
        Route::ModelShadow if req.method == Method::POST => {
            let r = shadow::start(ctx, req.content_type, &req.body).await;
            shadow_record(
                ctx,
                caller,
                req.peer.ip(),
                AuditAction::ModelShadowStarted,
                r,
            )
            .await
        }
        Route::ModelShadow if req.method == Method::DELETE => {
            let r = shadow::discard(ctx).await;
            shadow_record(
                ctx,
                caller,
                req.peer.ip(),
                AuditAction::ModelShadowDiscarded,
                r,
            )
            .await
        }
        Route::ModelShadow => Ok(shadow::get(ctx)),
        Route::ModelShadowPromote => {
            let r = shadow::promote(ctx).await;
            let rec = model_record(
                ctx,
                caller,
                req.peer.ip(),
                AuditAction::ModelShadowPromoted,
                &r,
            );
            audit::record(ctx, rec).await;
            r
        }
        Route::SupportBundle => {
            let r = support::get(ctx, query).await;
            let rec = audit::by(caller, req.peer.ip(), AuditAction::SupportBundle);
            audit::record(ctx, rec.outcome_of(&r)).await;
            r
        }
    }
}

/// Record a shadow start or discard (naming the candidate when it was
/// carried out, else refused with the reason) and answer it.
async fn shadow_record(
    ctx: &Ctx,
    caller: &crate::api::auth::Caller,
    peer: std::net::IpAddr,
    action: AuditAction,
    r: Result<(Resp, String), ApiError>,
) -> Result<Resp, ApiError> {
    let (r, sha) = match r {
        Ok((resp, sha)) => (Ok(resp), Some(sha)),
        Err(e) => (Err(e), None),
    };
    let rec = audit::by(caller, peer, action).outcome_of(&r);
    let rec = match sha {
        Some(sha) => rec.target(sha),
        None => rec,
    };
    audit::record(ctx, rec).await;
    r
}

/// The audit record of a model change: by the caller, naming the model
/// running after it (when ok), or refused with the reason.
fn model_record(
    ctx: &Ctx,
    caller: &crate::api::auth::Caller,
    peer: std::net::IpAddr,
    action: AuditAction,
    r: &Result<Resp, ApiError>,
) -> AuditRecord {
    let rec = audit::by(caller, peer, action).outcome_of(r);
    match (r, ctx.state.model()) {
        (Ok(_), Some(m)) => rec.target(m.sha256),
        _ => rec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: "latest" captured as an id, nested paths or empty ids accepted.
    #[test]
    fn routes_match_exactly() {
        assert_eq!(match_route("/api/v1/results/latest"), Some(Route::Latest));
        assert_eq!(match_route("/api/v1/results/abc"), Some(Route::ById("abc")));
        assert_eq!(match_route("/api/v1/results"), Some(Route::Results));
        assert_eq!(match_route("/api/v1/results/"), None);
        assert_eq!(match_route("/api/v1/results/a/b"), None);
        assert_eq!(match_route("/healthz/"), None);
        assert_eq!(match_route("/"), None);
        assert_eq!(match_route("/api/v1/keys"), Some(Route::Keys));
        // Sightings (issue 18): "summary" is not an id, ids nest only /snapshot.
        assert_eq!(
            match_route("/api/v1/sightings/summary"),
            Some(Route::SightingsSummary)
        );
        assert_eq!(
            match_route("/api/v1/sightings/12"),
            Some(Route::SightingById("12"))
        );
        assert_eq!(
            match_route("/api/v1/sightings/12/snapshot"),
            Some(Route::SightingSnapshot("12"))
        );
        assert_eq!(match_route("/api/v1/sightings/"), None);
        assert_eq!(match_route("/api/v1/sightings//snapshot"), None);
        assert_eq!(match_route("/api/v1/sightings/1/2"), None);
        assert_eq!(match_route("/api/v1/sightings/1/image"), None);
        // Frames (issue 20).
        assert_eq!(
            match_route("/api/v1/sources/cam/frame"),
            Some(Route::SourceFrame("cam"))
        );
        assert_eq!(match_route("/api/v1/sources//frame"), None);
        assert_eq!(match_route("/api/v1/sources/a/b/frame"), None);
        assert_eq!(match_route("/api/v1/sources/cam"), None);
        assert_eq!(
            match_route("/api/v1/keys/00ff"),
            Some(Route::KeyById("00ff"))
        );
        assert_eq!(match_route("/api/v1/keys/"), None);
        assert_eq!(
            match_route("/api/v1/model/versions/ab12/activate"),
            Some(Route::ModelActivate("ab12"))
        );
        assert_eq!(match_route("/api/v1/model/versions//activate"), None);
        assert_eq!(match_route("/api/v1/model/versions/ab12"), None);
        assert_eq!(match_route("/api/v1/model/versions/a/b/activate"), None);
        assert_eq!(match_route("/api/v1/keys/a/b"), None);
    }

    // Catches: a route served but missing from ROUTES (and so from the auth
    // matrix), or a Route mapped to another route's spec (wrong scope).
    #[test]
    fn route_table_matches_the_router() {
        for spec in ROUTES {
            let path = spec.path.replace("{id}", "0123").replace("{name}", "cam");
            let r = match_route(&path).unwrap_or_else(|| panic!("{} not routed", spec.path));
            assert_eq!(r.spec(), spec);
        }
        let names: std::collections::HashSet<_> = ROUTES.iter().map(|r| r.name).collect();
        assert_eq!(names.len(), ROUTES.len());
        // Only the probes and the session (sign-in with the key in the
        // body, sign-out) answer without a key.
        let public: Vec<_> = ROUTES
            .iter()
            .filter(|r| r.scope.is_none())
            .map(|r| r.path)
            .collect();
        assert_eq!(public, ["/healthz", "/readyz", "/api/v1/session"]);
    }

    // Catches: a route that takes no body reading one (a trickled body held
    // open on /healthz), or an upload route whose body is never read.
    #[test]
    fn only_uploads_take_a_body() {
        for spec in ROUTES {
            let path = spec.path.replace("{id}", "0123").replace("{name}", "cam");
            let r = match_route(&path).unwrap();
            for m in [Method::GET, Method::HEAD, Method::POST, Method::PUT] {
                let want = matches!(
                    (spec.path, m.as_str()),
                    ("/api/v1/classify", "POST")
                        | ("/api/v1/model", "PUT")
                        | ("/api/v1/session", "POST")
                        | ("/api/v1/keys", "POST")
                        | ("/api/v1/model/shadow", "POST")
                );
                assert_eq!(takes_body(&r, &m), want, "{} {m}", spec.path);
            }
            let probe = matches!(spec.path, "/healthz" | "/readyz");
            assert_eq!(is_probe(&r), probe, "{}", spec.path);
        }
    }
}
