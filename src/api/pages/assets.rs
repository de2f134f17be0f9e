//! The page's static files (CSS and JavaScript), compiled into the binary
//! with `include_str!` and served under `/assets/<hash>/<name>`, where the
//! hash is of the file's bytes: a new build's file has a new URL, so the
//! answer may be cached for a year (`immutable`).

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

/// One compiled-in file.
pub(crate) struct Asset {
    pub(crate) name: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) body: &'static str,
    /// The first 16 hex digits of the SHA-256 of `body`.
    pub(crate) hash: String,
}

impl Asset {
    /// Where pages link to it.
    pub(crate) fn url(&self) -> String {
        format!("/assets/{}/{}", self.hash, self.name)
    }
}

const FILES: &[(&str, &str, &str)] = &[
    ("icon.svg", "image/svg+xml", include_str!("assets/icon.svg")),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/common.js"),
    ),
    (
        "signin.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/signin.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/live.js"),
    ),
    (
        "device.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/device.js"),
    ),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|(name, content_type, body)| Asset {
            name,
            content_type,
            body,
            hash: hex::encode(&Sha256::digest(body.as_bytes())[..8]),
        })
        .collect()
});

/// The asset called `name` (a name from the table above).
pub(crate) fn named(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The asset a request path after `/assets/` names: `<hash>/<name>` with
/// the current hash; an old hash or an unknown name is `None` (404).
pub(crate) fn lookup(rest: &str) -> Option<&'static Asset> {
    let (hash, name) = rest.split_once('/')?;
    named(name).filter(|a| a.hash == hash)
}

/// The URL of the asset called `name`, for templates.
pub(crate) fn url(name: &str) -> String {
    named(name).map(Asset::url).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Catches: an asset served under a stale or guessed hash (a cached old
    // file mixed with a new page), or a page linking an asset that is not
    // in the table.
    #[test]
    fn assets_are_found_only_under_their_hash() {
        for (name, ..) in FILES {
            let a = named(name).unwrap();
            assert_eq!(a.hash.len(), 16);
            let url = a.url();
            let rest = url.strip_prefix("/assets/").unwrap();
            assert_eq!(lookup(rest).map(|x| x.name), Some(*name));
            assert!(lookup(&format!("0000000000000000/{name}")).is_none());
        }
        assert!(lookup("nohash").is_none());
        assert_eq!(url("missing.js"), "");
    }
}
