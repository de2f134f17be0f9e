//! At rest on the device (issue 23): the files holding secrets (the API key
//! store, the initial admin key, the TLS private key, the MQTT password
//! file and client key, a source's credentials file) must be readable by
//! their owner only. [`check_secret_files`] refuses the start when one is
//! readable by its group or by everyone, naming the file and the `chmod`
//! that fixes it ([`ids::SECRET_FILE_PERMISSIONS`]). Files that do not
//! exist yet are not checked (Spotter creates its own 0600).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Settings;
use crate::core::ids;

/// A secret file others can read.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} {path} is readable by {who} (mode {mode:04o}); it holds a secret, so Spotter \
     refuses to start. Fix: chmod 600 {path} (owned by the service user)"
)]
pub struct ExposedSecret {
    pub what: &'static str,
    pub path: PathBuf,
    pub who: &'static str,
    pub mode: u32,
}

/// The secret files `settings` names or Spotter keeps, with what each is.
pub(crate) fn secret_files(settings: &Settings) -> Vec<(&'static str, PathBuf)> {
    let state = &settings.daemon.state_dir;
    let mut v = vec![
        ("API key store", state.join(crate::keys::KEYS_FILE)),
        (
            "initial admin key",
            state.join(crate::keys::INITIAL_ADMIN_KEY_FILE),
        ),
    ];
    v.push((
        "TLS private key",
        settings.api.key.clone().unwrap_or_else(|| {
            state
                .join(crate::api::tls::TLS_DIR)
                .join(crate::api::tls::KEY_FILE)
        }),
    ));
    if let Some(p) = &settings.mqtt.password_file {
        v.push(("MQTT password file", p.clone()));
    }
    if let Some(p) = &settings.mqtt.client_key {
        v.push(("MQTT client key", p.clone()));
    }
    for s in &settings.sources {
        if let Some(p) = &s.credentials_file {
            v.push(("source credentials file", p.clone()));
        }
    }
    v
}

/// Err when `path` exists and its group or others may read it.
pub(crate) fn check_private(what: &'static str, path: &Path) -> Result<(), ExposedSecret> {
    // Missing or unreadable: whoever reads it reports that.
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let mode = meta.mode() & 0o7777;
    let who = match (mode & 0o040 != 0, mode & 0o004 != 0) {
        (_, true) => "everyone",
        (true, false) => "its group",
        (false, false) => return Ok(()),
    };
    Err(ExposedSecret {
        what,
        path: path.to_path_buf(),
        who,
        mode,
    })
}

/// Check every secret file (see the module doc); the first exposed one is
/// logged and returned.
pub(crate) fn check_secret_files(settings: &Settings) -> Result<(), ExposedSecret> {
    for (what, path) in secret_files(settings) {
        if let Err(e) = check_private(what, &path) {
            log::error!(message_id = ids::SECRET_FILE_PERMISSIONS, path:display = path.display(); "{e}");
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    // Catches: a world- or group-readable secret accepted, an owner-only
    // one refused, or a message without the file and the fix.
    #[test]
    fn readable_secrets_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.json");
        std::fs::write(&p, "{}").unwrap();
        for (mode, bad) in [(0o600, false), (0o400, false), (0o644, true), (0o640, true)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check_private("API key store", &p);
            assert_eq!(r.is_err(), bad, "{mode:o}");
            if let Err(e) = r {
                let msg = e.to_string();
                assert!(msg.contains(&format!("chmod 600 {}", p.display())), "{msg}");
                assert!(msg.contains("API key store"), "{msg}");
            }
        }
        assert!(check_private("x", &dir.path().join("missing")).is_ok());
    }

    // Catches: a configured password or key file left out of the check.
    #[test]
    fn configured_secret_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("mqtt.pw");
        let text = format!(
            "[daemon]\nstate_dir = \"{}\"\n[mqtt]\nenabled = true\nhost = \"localhost\"\n\
             username = \"u\"\npassword_file = \"{}\"\n",
            dir.path().join("state").display(),
            pw.display()
        );
        let settings =
            crate::config::from_sources(vec![(dir.path().join("spotter.toml"), text)]).unwrap();
        let files: Vec<PathBuf> = secret_files(&settings).into_iter().map(|f| f.1).collect();
        assert!(files.contains(&pw), "{files:?}");
        std::fs::write(&pw, "secret").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_secret_files(&settings).unwrap_err();
        assert_eq!(e.path, pw);
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_secret_files(&settings).unwrap();
    }
}
