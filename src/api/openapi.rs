//! The OpenAPI 3.1 description of the API (`docs/openapi.json`, compiled
//! in), served at `/api/v1/openapi.json`. A test keeps it and [`ROUTES`]
//! equal: every served route and method is described, and nothing else.
//!
//! [`ROUTES`]: super::ROUTES

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;

/// The document, as served.
pub(crate) const DOCUMENT: &str = include_str!("../../docs/openapi.json");

pub(super) fn response() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(DOCUMENT.as_bytes())));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::super::ROUTES;
    use super::*;
    use std::collections::BTreeSet;

    // Catches: a route served but not described (or described but not served),
    // or methods that differ between the router and the document.
    #[test]
    fn document_matches_the_route_table() {
        let doc: serde_json::Value =
            serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        let described: BTreeSet<(String, String)> = paths
            .iter()
            .flat_map(|(p, ops)| {
                ops.as_object()
                    .expect("path item")
                    .keys()
                    .map(move |m| (p.clone(), m.to_uppercase()))
            })
            .collect();
        // HEAD is implied by GET (and stated in info.description), so it is not listed.
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .flat_map(|r| {
                r.allow
                    .split(", ")
                    .filter(|m| *m != "HEAD")
                    .map(move |m| (r.path.to_string(), m.to_string()))
            })
            .collect();
        for r in ROUTES {
            let methods: Vec<&str> = r.allow.split(", ").collect();
            assert_eq!(
                methods.contains(&"GET"),
                methods.contains(&"HEAD"),
                "{}: HEAD exactly with GET",
                r.path
            );
        }
        assert_eq!(described, served, "described vs served (path, method)");
        // Public routes are marked as callable without a key, the rest are not.
        for r in ROUTES {
            for (m, op) in paths[r.path].as_object().unwrap() {
                let anonymous = op["security"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|x| x.as_object().is_some_and(|o| o.is_empty()))
                });
                assert_eq!(anonymous, r.scope.is_none(), "{m} {}: security", r.path);
                assert!(
                    op["responses"].get("200").is_some(),
                    "{m} {}: no 200",
                    r.path
                );
            }
        }
    }
}
