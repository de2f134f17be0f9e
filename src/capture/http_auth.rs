//! Logging in to an HTTP camera: the credentials file and the
//! `Authorization` header answering a camera's challenge.
//!
//! This module owns reading `user:password` from `source.credentials_file`
//! (refused when group or others may read or change it, as the project's
//! other secret files), parsing `WWW-Authenticate` challenges, and building
//! Basic and Digest (RFC 7616: MD5, SHA-256 and their `-sess` variants, with
//! `qop=auth` or without qop) answers. The password is never formatted into
//! anything but the header: [`Credentials`]'s `Debug` hides it.

use std::io::Read;
use std::path::Path;

use super::CaptureError;

/// Longest credentials file read (`user:password` on its first line).
const MAX_CREDENTIALS_BYTES: u64 = 4096;

/// A user and password. `Debug` shows the user only.
#[derive(Clone, PartialEq)]
pub(crate) struct Credentials {
    pub(crate) user: String,
    pub(crate) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials {{ user: {:?}, password: *** }}", self.user)
    }
}

/// `user:password` from the first line of `path`. Errors name the key and
/// the path, never the content.
pub(crate) fn read_credentials(path: &Path) -> Result<Credentials, CaptureError> {
    use std::os::unix::fs::MetadataExt;
    let err = |reason: String| CaptureError::HttpSetup {
        key: "source.credentials_file",
        path: path.display().to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mode = file.metadata().map_err(|e| err(e.to_string()))?.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode {mode:03o} lets other users read or change it; chmod 600 it (owned by the service user)"
        )));
    }
    let mut text = String::new();
    file.take(MAX_CREDENTIALS_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| err(e.to_string()))?;
    let line = text.lines().next().unwrap_or("");
    match line.split_once(':') {
        Some((user, pass)) if !user.is_empty() => Ok(Credentials {
            user: user.to_string(),
            password: pass.to_string(),
        }),
        _ => Err(err(
            "the first line must be user:password (no user name found)".into(),
        )),
    }
}

/// A Digest challenge's parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DigestChallenge {
    realm: String,
    nonce: String,
    opaque: Option<String>,
    /// As the camera wrote it (`MD5` when absent).
    algorithm: String,
    /// The camera offers `qop=auth`.
    qop_auth: bool,
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Challenge {
    Basic,
    Digest(DigestChallenge),
    Other(String),
}

/// `key=value` / `key="quoted, value"` pairs, comma separated.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    loop {
        while it.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            it.next();
        }
        let key: String = it
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            return out;
        }
        while it.peek().is_some_and(|c| c.is_whitespace()) {
            it.next();
        }
        let mut value = String::new();
        if it.peek() == Some(&'"') {
            it.next();
            while let Some(c) = it.next() {
                match c {
                    '\\' => value.extend(it.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = it.by_ref().take_while(|c| *c != ',').collect();
            value = value.trim().to_string();
        }
        out.push((key, value));
    }
}

/// The challenge in one `WWW-Authenticate` header value.
pub(crate) fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Challenge::Basic;
    }
    if !scheme.eq_ignore_ascii_case("digest") {
        return Challenge::Other(scheme.to_string());
    }
    let p = params(rest);
    let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    Challenge::Digest(DigestChallenge {
        realm: get("realm").unwrap_or_default(),
        nonce: get("nonce").unwrap_or_default(),
        opaque: get("opaque"),
        algorithm: get("algorithm").unwrap_or_else(|| "MD5".into()),
        qop_auth: get("qop")
            .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"))),
    })
}

/// `Authorization: Basic …`.
pub(crate) fn basic(c: &Credentials) -> String {
    use base64::Engine as _;
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.user, c.password));
    format!("Basic {token}")
}

fn hex_digest(algorithm: &str, data: &str) -> Option<String> {
    use sha2::Digest as _;
    match algorithm {
        "MD5" => Some(hex::encode(md5::Md5::digest(data.as_bytes()))),
        "SHA-256" => Some(hex::encode(sha2::Sha256::digest(data.as_bytes()))),
        _ => None,
    }
}

/// `Authorization: Digest …` for `GET uri`, or why the challenge cannot
/// be answered (an algorithm other than MD5 or SHA-256, or `auth-int` only).
pub(crate) fn digest(
    c: &Credentials,
    ch: &DigestChallenge,
    uri: &str,
    cnonce: &str,
) -> Result<String, String> {
    let alg = ch.algorithm.to_ascii_uppercase();
    let (base, sess) = match alg.strip_suffix("-SESS") {
        Some(b) => (b, true),
        None => (alg.as_str(), false),
    };
    let h = |data: &str| {
        hex_digest(base, data).ok_or_else(|| {
            format!(
                "the camera's Digest algorithm {:?} is not supported (MD5 or SHA-256)",
                ch.algorithm
            )
        })
    };
    let nc = "00000001";
    let mut ha1 = h(&format!("{}:{}:{}", c.user, ch.realm, c.password))?;
    if sess {
        ha1 = h(&format!("{ha1}:{}:{cnonce}", ch.nonce))?;
    }
    let ha2 = h(&format!("GET:{uri}"))?;
    let response = if ch.qop_auth {
        h(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce))?
    } else {
        h(&format!("{ha1}:{}:{ha2}", ch.nonce))?
    };
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!(
        "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, response=\"{response}\"",
        q(&c.user),
        q(&ch.realm),
        q(&ch.nonce),
        q(uri),
        ch.algorithm
    );
    if ch.qop_auth {
        out.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
    }
    if let Some(o) = &ch.opaque {
        out.push_str(&format!(", opaque=\"{}\"", q(o)));
    }
    Ok(out)
}

/// The request target of `url` for Digest's `uri`: path and query.
pub(crate) fn request_target(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('#').next().unwrap_or("");
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => rest[i..].to_string(),
        Some(i) => format!("/{}", &rest[i..]),
        None => "/".into(),
    }
}

/// The answer to a 401's challenges: Digest preferred over Basic; `Err`
/// says why none can be answered.
pub(crate) fn answer(
    challenges: &[&str],
    c: &Credentials,
    uri: &str,
    cnonce: &str,
) -> Result<String, String> {
    let parsed: Vec<Challenge> = challenges.iter().map(|h| parse_challenge(h)).collect();
    let mut why = None;
    for ch in &parsed {
        if let Challenge::Digest(d) = ch {
            match digest(c, d, uri, cnonce) {
                Ok(h) => return Ok(h),
                Err(e) => why = Some(e),
            }
        }
    }
    if parsed.is_empty() || parsed.contains(&Challenge::Basic) {
        return Ok(basic(c));
    }
    Err(why.unwrap_or_else(|| {
        let schemes: Vec<String> = parsed
            .iter()
            .map(|p| match p {
                Challenge::Other(s) => s.clone(),
                Challenge::Basic => "Basic".into(),
                Challenge::Digest(_) => "Digest".into(),
            })
            .collect();
        format!(
            "the camera asks for {} authentication; Spotter speaks Basic and Digest",
            schemes.join(", ")
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mufasa() -> Credentials {
        Credentials {
            user: "Mufasa".into(),
            password: "Circle of Life".into(),
        }
    }

    /// Catches: a wrong Digest computation (any camera requiring Digest
    /// would refuse every login): the RFC 7616 section 3.9.1 examples, MD5
    /// and SHA-256, from the challenge header as a server writes it.
    #[test]
    fn digest_matches_rfc7616_examples() {
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        for (alg, want) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let header = format!(
                "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", algorithm={alg}, \
                 nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
                 opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
            );
            let Challenge::Digest(ch) = parse_challenge(&header) else {
                panic!("not parsed as Digest: {header}")
            };
            let h = digest(&mufasa(), &ch, "/dir/index.html", cnonce).unwrap();
            assert!(h.contains(&format!("response=\"{want}\"")), "{alg}: {h}");
            assert!(h.contains("qop=auth, nc=00000001"), "{h}");
            assert!(
                h.contains("opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""),
                "{h}"
            );
            assert!(!h.contains("Circle of Life"), "{h}");
        }
    }

    /// Catches: Basic sent to a Digest-only camera (password in clear, and
    /// refused), Digest not preferred when both are offered, an unknown
    /// scheme answered with Basic, or the password in `Debug` output.
    #[test]
    fn answer_picks_the_scheme_and_hides_the_password() {
        let c = mufasa();
        let d = "Digest realm=\"r\", nonce=\"n\"";
        assert!(answer(&["Basic realm=\"x\"", d], &c, "/", "c")
            .unwrap()
            .starts_with("Digest "));
        assert!(answer(&["Basic realm=\"x\""], &c, "/", "c")
            .unwrap()
            .starts_with("Basic "));
        assert!(answer(&[], &c, "/", "c").unwrap().starts_with("Basic "));
        let e = answer(&["Negotiate"], &c, "/", "c").unwrap_err();
        assert!(e.contains("Negotiate"), "{e}");
        let e = answer(
            &["Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"],
            &c,
            "/",
            "c",
        )
        .unwrap_err();
        assert!(e.contains("SHA-512-256"), "{e}");
        assert!(!format!("{c:?}").contains("Circle"));
        assert_eq!(request_target("http://h:81/stream?x=1#f"), "/stream?x=1");
        assert_eq!(request_target("https://h"), "/");
        assert_eq!(request_target("http://h?action=stream"), "/?action=stream");
    }
}
