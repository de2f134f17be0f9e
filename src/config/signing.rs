//! `[signing]` (issue 22): which Ed25519 public keys a signed model bundle
//! must be signed by (`trusted_keys`, PEM or DER files, as
//! `openssl pkey -pubout` or `spotter model keygen` write them), and whether
//! a bare `.tflite` or an unsigned bundle is still accepted by the local API
//! and CLI (`allow_unsigned_local`, default true; never over MQTT). The keys
//! are read where they are used ([`crate::modelstore::Trust`]): this only
//! validates the settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::raw::Layers;
use super::{in_range, val, ConfigError};

type Field<T> = Option<Spanned<T>>;

/// At most this many trusted keys (each is tried against a signature).
pub const MAX_TRUSTED_KEYS: usize = 32;

/// `[signing]`, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SigningSettings {
    /// Public key files; a bundle must be signed by one of them.
    pub trusted_keys: Vec<PathBuf>,
    /// The local API and CLI accept a bare `.tflite` or an unsigned bundle.
    pub allow_unsigned_local: bool,
}

impl Default for SigningSettings {
    fn default() -> SigningSettings {
        SigningSettings {
            trusted_keys: Vec::new(),
            allow_unsigned_local: true,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigning {
    pub trusted_keys: Field<Vec<PathBuf>>,
    pub allow_unsigned_local: Field<bool>,
}

pub(super) fn build_signing(l: &Layers) -> Result<SigningSettings, ConfigError> {
    macro_rules! get {
        ($f:ident) => {
            l.get(|r| r.signing.as_ref()?.$f.as_ref())
        };
    }
    let d = SigningSettings::default();
    let keys = get!(trusted_keys);
    in_range(
        &keys,
        "signing.trusted_keys",
        |v: &Vec<PathBuf>| v.len() <= MAX_TRUSTED_KEYS,
        &format!("at most {MAX_TRUSTED_KEYS} public key files"),
    )?;
    Ok(SigningSettings {
        trusted_keys: val(&keys, d.trusted_keys),
        allow_unsigned_local: val(&get!(allow_unsigned_local), d.allow_unsigned_local),
    })
}
