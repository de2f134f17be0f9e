//! API keys: owns `<state_dir>/keys.json` (hashed keys with id, name, scope,
//! creation time and revocation flag), creating, listing and revoking keys,
//! verifying a presented secret in constant time, and the initial admin key
//! written to `<state_dir>/initial-admin-key` on first start.
//!
//! A secret is `spk_` followed by 64 lowercase hex digits (32 bytes from the
//! OS random generator). Only its SHA-256 is stored. A plain, unsalted hash
//! is enough here because the secret has 256 bits of entropy: there is no
//! dictionary to precompute and no way to brute-force a preimage, so a slow
//! password hash (argon2, bcrypt) would only cost CPU on every request.
//!
//! Both files are written atomically (temporary file in the same directory,
//! fsync, rename, fsync of the directory) with mode 0600. Read-modify-write
//! operations hold an exclusive `flock` on `keys.json.lock` so two concurrent
//! `spotter keys` commands cannot lose each other's change.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The key file, under the state directory.
pub(crate) const KEYS_FILE: &str = "keys.json";
/// The first-start admin secret, under the state directory.
pub(crate) const INITIAL_ADMIN_KEY_FILE: &str = "initial-admin-key";
/// Name of the admin key created on first start.
pub(crate) const INITIAL_ADMIN_KEY_NAME: &str = "initial-admin";
/// Every secret starts with this, so leaked keys are recognisable (secret scanners).
pub(crate) const SECRET_PREFIX: &str = "spk_";
/// Random bytes per secret.
pub(crate) const SECRET_BYTES: usize = 32;
/// Bound on the number of keys (revoked ones included) in the file.
pub(crate) const MAX_KEYS: usize = 1000;
const FILE_VERSION: u32 = 1;
const LOCK_FILE: &str = "keys.json.lock";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("keys: cannot {action} {path}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("keys: {path} is not a valid key file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("keys: {path} has mode {mode:o}; it must not be writable by group or others")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("keys: invalid name {name:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidName { name: String },
    #[error("keys: an active key named {name:?} already exists (id {id})")]
    NameTaken { name: String, id: String },
    #[error("keys: no key with id or name {0:?}")]
    NotFound(String),
    #[error("keys: key {id} ({name}) is already revoked")]
    AlreadyRevoked { id: String, name: String },
    #[error("keys: {path} already holds {MAX_KEYS} keys")]
    TooMany { path: PathBuf },
    #[error("keys: unknown scope {0:?} (expected read or admin)")]
    UnknownScope(String),
}

/// What a key may do. `Admin` includes everything `Read` may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Read,
    Admin,
}

impl Scope {
    /// True when a key of this scope may call an endpoint needing `needed`.
    pub fn allows(self, needed: Scope) -> bool {
        self >= needed
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(KeyError::UnknownScope(other.to_string())),
        }
    }
}

/// Everything about a key except its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Random, 16 hex digits; stable handle for `revoke`.
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_unix_s: u64,
    pub revoked: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_unix_s: Option<u64>,
}

/// A freshly created secret. Shown once; `Debug` does not print it.
pub struct Secret(String);

impl Secret {
    /// The secret, to print once or write to the initial key file.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    info: KeyInfo,
    /// SHA-256 of the whole secret (prefix included), lowercase hex.
    sha256: String,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<StoredKey>,
}

/// The keys as loaded at one moment, for verifying requests.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    // Shared, so a verified request takes its caller without copying strings.
    keys: Vec<(Arc<KeyInfo>, [u8; 32])>,
}

/// True when `s` has the shape of a secret (prefix + 64 lowercase hex digits).
pub(crate) fn is_well_formed(s: &str) -> bool {
    s.strip_prefix(SECRET_PREFIX).is_some_and(|h| {
        h.len() == SECRET_BYTES * 2
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

impl KeySet {
    /// The key `presented` belongs to, if it is well formed, known and not
    /// revoked. Every stored hash is compared in constant time and the loop
    /// never exits early, so timing reveals neither which key nor how much of
    /// a hash matched.
    pub(crate) fn verify(&self, presented: &str) -> Option<&Arc<KeyInfo>> {
        if !is_well_formed(presented) {
            return None;
        }
        let h = digest(presented);
        let mut found = None;
        for (info, stored) in &self.keys {
            if bool::from(stored.ct_eq(&h)) {
                found = Some(info);
            }
        }
        found.filter(|i| !i.revoked)
    }

    /// The key with this id, unless it is revoked.
    pub(crate) fn active(&self, id: &str) -> Option<&Arc<KeyInfo>> {
        self.keys
            .iter()
            .map(|(i, _)| i)
            .find(|k| k.id == id && !k.revoked)
    }

    pub(crate) fn infos(&self) -> impl Iterator<Item = &KeyInfo> {
        self.keys.iter().map(|(i, _)| &**i)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The key file of one state directory.
#[derive(Debug, Clone)]
pub struct KeyStore {
    dir: PathBuf,
    path: PathBuf,
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> KeyError + 'a {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Write `bytes` to `path` atomically with mode 0600.
fn write_atomic(_dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    crate::core::fsutil::write_atomic(path, bytes, 0o600).map_err(io_err(path, "replace"))
}

/// The secret for a new key.
fn new_secret() -> Secret {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    Secret(format!("{SECRET_PREFIX}{}", hex::encode(bytes)))
}

fn new_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl KeyStore {
    /// The key store of `state_dir` (nothing is read or created yet).
    pub fn new(state_dir: &Path) -> KeyStore {
        KeyStore {
            dir: state_dir.to_path_buf(),
            path: state_dir.join(KEYS_FILE),
        }
    }

    /// `<state_dir>/keys.json`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn ensure_dir(&self) -> Result<(), KeyError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err(&self.dir, "create directory"))
    }

    /// Hold an exclusive lock for a read-modify-write of the key file.
    fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, KeyError> {
        self.ensure_dir()?;
        let path = self.dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "open"))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            KeyError::Io {
                path,
                action: "lock",
                source: e.into(),
            }
        })
    }

    /// The stored keys; a missing file is an empty list.
    fn read(&self) -> Result<Vec<StoredKey>, KeyError> {
        let meta = match fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.path, "inspect")(e)),
        };
        let mode = meta.mode() & 0o777;
        if mode & 0o022 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: self.path.clone(),
                mode,
            });
        }
        let text = fs::read_to_string(&self.path).map_err(io_err(&self.path, "read"))?;
        let corrupt = |reason: String| KeyError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let file: KeyFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FILE_VERSION {
            return Err(corrupt(format!("unsupported version {}", file.version)));
        }
        if file.keys.len() > MAX_KEYS {
            return Err(corrupt(format!("more than {MAX_KEYS} keys")));
        }
        Ok(file.keys)
    }

    fn write(&self, keys: Vec<StoredKey>) -> Result<(), KeyError> {
        let file = KeyFile {
            version: FILE_VERSION,
            keys,
        };
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| KeyError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        write_atomic(&self.dir, &self.path, &bytes)
    }

    /// Load the keys for verification.
    pub(crate) fn load(&self) -> Result<KeySet, KeyError> {
        let mut keys = Vec::new();
        for k in self.read()? {
            let mut h = [0u8; 32];
            hex::decode_to_slice(&k.sha256, &mut h).map_err(|e| KeyError::Corrupt {
                path: self.path.clone(),
                reason: format!("key {}: bad sha256: {e}", k.info.id),
            })?;
            keys.push((Arc::new(k.info), h));
        }
        Ok(KeySet { keys })
    }

    /// Create a key. The secret is returned once and never stored.
    pub fn create(&self, name: &str, scope: Scope) -> Result<(KeyInfo, Secret), KeyError> {
        if !valid_name(name) {
            return Err(KeyError::InvalidName {
                name: name.chars().take(80).collect(),
            });
        }
        let _lock = self.lock()?;
        let mut keys = self.read()?;
        if let Some(k) = keys.iter().find(|k| !k.info.revoked && k.info.name == name) {
            return Err(KeyError::NameTaken {
                name: name.into(),
                id: k.info.id.clone(),
            });
        }
        if keys.len() >= MAX_KEYS {
            return Err(KeyError::TooMany {
                path: self.path.clone(),
            });
        }
        let secret = new_secret();
        let info = KeyInfo {
            id: new_id(),
            name: name.to_string(),
            scope,
            created_unix_s: now_unix_s(),
            revoked: false,
            revoked_unix_s: None,
        };
        keys.push(StoredKey {
            info: info.clone(),
            sha256: hex::encode(digest(secret.expose())),
        });
        self.write(keys)?;
        Ok((info, secret))
    }

    /// All keys, revoked ones included, oldest first.
    pub(crate) fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(self.read()?.into_iter().map(|k| k.info).collect())
    }

    /// Revoke by id, or else by the name of an active key.
    pub fn revoke(&self, id_or_name: &str) -> Result<KeyInfo, KeyError> {
        let _lock = self.lock()?;
        let mut keys = self.read()?;
        let idx = keys
            .iter()
            .position(|k| k.info.id == id_or_name)
            .or_else(|| {
                keys.iter()
                    .position(|k| !k.info.revoked && k.info.name == id_or_name)
            })
            .or_else(|| keys.iter().position(|k| k.info.name == id_or_name))
            .ok_or_else(|| KeyError::NotFound(id_or_name.chars().take(80).collect()))?;
        let k = &mut keys[idx].info;
        if k.revoked {
            return Err(KeyError::AlreadyRevoked {
                id: k.id.clone(),
                name: k.name.clone(),
            });
        }
        k.revoked = true;
        k.revoked_unix_s = Some(now_unix_s());
        let info = k.clone();
        self.write(keys)?;
        Ok(info)
    }

    #[cfg(test)]
    /// Load and verify in one step (re-reads the file; the API caches instead).
    pub(crate) fn verify(&self, presented: &str) -> Result<Option<KeyInfo>, KeyError> {
        Ok(self.load()?.verify(presented).map(|k| KeyInfo::clone(k)))
    }
}

/// On first start (no key in `keys.json`, revoked ones included), create an
/// admin key and write its secret to `<state_dir>/initial-admin-key` (mode
/// 0600). Returns that file's path when a key was created, `None` when keys
/// already exist. The secret file is written before the key is stored, so a
/// crash in between leaves no key without its secret. Logs the path, never
/// the secret.
pub fn ensure_initial_admin_key(state_dir: &Path) -> Result<Option<PathBuf>, KeyError> {
    let store = KeyStore::new(state_dir);
    let _lock = store.lock()?;
    let mut keys = store.read()?;
    if !keys.is_empty() {
        return Ok(None);
    }
    let secret = new_secret();
    let info = KeyInfo {
        id: new_id(),
        name: INITIAL_ADMIN_KEY_NAME.into(),
        scope: Scope::Admin,
        created_unix_s: now_unix_s(),
        revoked: false,
        revoked_unix_s: None,
    };
    let file = state_dir.join(INITIAL_ADMIN_KEY_FILE);
    write_atomic(
        state_dir,
        &file,
        format!("{}\n", secret.expose()).as_bytes(),
    )?;
    keys.push(StoredKey {
        info: info.clone(),
        sha256: hex::encode(digest(secret.expose())),
    });
    store.write(keys)?;
    log::warn!(
        message_id = crate::core::ids::INITIAL_ADMIN_KEY_CREATED, path:display = file.display(), key_id = info.id.as_str();
        "no API key existed: created admin key {} and wrote its secret to {} (readable only by this user); \
         create your own keys with `spotter keys create`, then revoke this one and delete the file",
        info.id,
        file.display()
    );
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    // Catches: secrets stored in clear, short or unprefixed secrets, a key file
    // readable by others, names not unique among active keys.
    #[test]
    fn create_stores_only_a_hash_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::new(dir.path());
        let (info, secret) = ks.create("cam-reader", Scope::Read).unwrap();
        let s = secret.expose();
        assert!(s.starts_with(SECRET_PREFIX) && s.len() == 4 + 64, "{s}");
        assert!(is_well_formed(s));
        let text = fs::read_to_string(ks.path()).unwrap();
        assert!(!text.contains(&s[4..]), "secret stored in clear");
        assert!(text.contains(&hex::encode(Sha256::digest(s.as_bytes()))));
        assert_eq!(mode(ks.path()), 0o600);
        assert_eq!(ks.list().unwrap(), vec![info.clone()]);
        assert!(matches!(
            ks.create("cam-reader", Scope::Admin),
            Err(KeyError::NameTaken { .. })
        ));
        assert!(matches!(
            ks.create("bad name", Scope::Read),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(matches!(
            ks.create("", Scope::Read),
            Err(KeyError::InvalidName { .. })
        ));
        assert!(!format!("{secret:?}").contains(&s[4..]));
        // Two secrets are never equal.
        let (_, s2) = ks.create("other", Scope::Read).unwrap();
        assert_ne!(s2.expose(), s);
    }

    // Catches: revoked keys still verifying, near-miss secrets accepted, scope
    // lost in the round trip, revoke by name not working.
    #[test]
    fn verify_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::new(dir.path());
        let (r, rs) = ks.create("r", Scope::Read).unwrap();
        let (a, as_) = ks.create("a", Scope::Admin).unwrap();
        assert_eq!(ks.verify(rs.expose()).unwrap(), Some(r.clone()));
        assert_eq!(
            ks.verify(as_.expose()).unwrap().unwrap().scope,
            Scope::Admin
        );
        // Last hex digit changed, missing prefix, upper case, truncated, empty.
        let s = rs.expose();
        let last = if s.ends_with('0') { '1' } else { '0' };
        let flipped = format!("{}{last}", &s[..s.len() - 1]);
        for bad in [
            flipped.as_str(),
            &s[4..],
            &s.to_uppercase(),
            &s[..s.len() - 1],
            "",
        ] {
            assert_eq!(ks.verify(bad).unwrap(), None, "{bad}");
        }
        let revoked = ks.revoke("r").unwrap();
        assert!(revoked.revoked && revoked.revoked_unix_s.is_some());
        assert_eq!(ks.verify(rs.expose()).unwrap(), None);
        assert!(matches!(
            ks.revoke(&r.id),
            Err(KeyError::AlreadyRevoked { .. })
        ));
        assert!(matches!(ks.revoke("nobody"), Err(KeyError::NotFound(_))));
        ks.revoke(&a.id).unwrap();
        assert_eq!(ks.verify(as_.expose()).unwrap(), None);
        // The name of a revoked key may be reused.
        ks.create("r", Scope::Read).unwrap();
        assert_eq!(ks.list().unwrap().len(), 3);
    }

    // Catches: the first-start key regenerated on every start, a secret file
    // readable by others, the file's secret not being an admin key.
    #[test]
    fn initial_admin_key_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let file = ensure_initial_admin_key(&state)
            .unwrap()
            .expect("created on first start");
        assert_eq!(file, state.join(INITIAL_ADMIN_KEY_FILE));
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&state.join(KEYS_FILE)), 0o600);
        let secret = fs::read_to_string(&file).unwrap();
        let info = KeyStore::new(&state)
            .verify(secret.trim())
            .unwrap()
            .unwrap();
        assert_eq!(info.scope, Scope::Admin);
        assert_eq!(ensure_initial_admin_key(&state).unwrap(), None);
        // Revoking every key does not resurrect a fresh admin key on restart.
        KeyStore::new(&state).revoke(&info.id).unwrap();
        assert_eq!(ensure_initial_admin_key(&state).unwrap(), None);
        assert_eq!(KeyStore::new(&state).list().unwrap().len(), 1);
    }

    // Catches: a tampered or world-writable key file silently trusted.
    #[test]
    fn corrupt_or_writable_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::new(dir.path());
        ks.create("x", Scope::Read).unwrap();
        fs::set_permissions(ks.path(), fs::Permissions::from_mode(0o666)).unwrap();
        assert!(matches!(
            ks.load(),
            Err(KeyError::InsecurePermissions { .. })
        ));
        fs::write(ks.path(), "{not json").unwrap();
        fs::set_permissions(ks.path(), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(ks.load(), Err(KeyError::Corrupt { .. })));
    }
}
