//! Files and directories in the state directory: crash-safe file replacement
//! ([`write_atomic`]), shared by everything that keeps small files there (TLS
//! material, API keys, model versions, the store's schema version), and
//! private directory creation ([`create_private_dir`]) for the state
//! directory and the result store, and reading a file's first bytes
//! ([`read_up_to`]).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::core::ids;

/// Mode of the directories Spotter creates: the results, snapshots, keys
/// and TLS key are nobody else's business.
pub(crate) const PRIVATE_DIR_MODE: u32 = 0o700;

/// What [`create_private_dir`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PrivateDir {
    /// Created (with any missing parents), all [`PRIVATE_DIR_MODE`].
    Created,
    /// Existed without access for others; left as it is (e.g. systemd's
    /// `StateDirectoryMode=0750`).
    Existing,
    /// Existed with access for others and holds Spotter's `marker` file:
    /// the others' bits were removed (old mode given).
    Tightened { from: u32 },
    /// Existed with access for others and is not provably Spotter's (no
    /// marker, another owner, or a sticky shared directory such as /tmp):
    /// left alone, warned about.
    Open { mode: u32 },
}

/// Create `dir` as a private directory, whatever the umask: every directory
/// this creates (missing parents too) gets [`PRIVATE_DIR_MODE`] set
/// explicitly after `mkdir`. An existing `dir` that others can access is
/// tightened (others' bits removed, group kept) only when it is provably
/// Spotter's: owned by this user, not sticky, and holding `marker` (a file
/// only Spotter writes there); otherwise it is left alone. Either case is
/// logged as a warning with [`ids::STATE_DIR_PERMISSIONS`].
pub(crate) fn create_private_dir(dir: &Path, marker: &str) -> io::Result<PrivateDir> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut p = dir;
    loop {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", p.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p.to_path_buf());
                match p.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    if !missing.is_empty() {
        for p in missing.iter().rev() {
            match fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(p) {
                Ok(()) => fs::set_permissions(p, fs::Permissions::from_mode(PRIVATE_DIR_MODE))?,
                // Created meanwhile by someone else: theirs, keep its mode.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && p.is_dir() => {}
                Err(e) => return Err(e),
            }
        }
        return Ok(PrivateDir::Created);
    }
    let meta = fs::metadata(dir)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o007 == 0 {
        return Ok(PrivateDir::Existing);
    }
    let ours = meta.uid() == nix::unistd::geteuid().as_raw()
        && mode & 0o1000 == 0
        && dir.join(marker).is_file();
    if ours {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & !0o007))?;
        log::warn!(
            message_id = ids::STATE_DIR_PERMISSIONS, path:display = dir.display(), old_mode = format!("{mode:04o}");
            "{} was accessible to other users (mode {mode:04o}); removed their access (mode {:04o})",
            dir.display(), mode & !0o007
        );
        Ok(PrivateDir::Tightened { from: mode })
    } else {
        log::warn!(
            message_id = ids::STATE_DIR_PERMISSIONS, path:display = dir.display(), old_mode = format!("{mode:04o}");
            "{} is accessible to other users (mode {mode:04o}) and Spotter did not create it; results and snapshots there are readable by them: chmod o-rwx {} (or 0700)",
            dir.display(), dir.display()
        );
        Ok(PrivateDir::Open { mode })
    }
}

/// Replace `path` with `bytes` atomically: a uniquely named temporary file in
/// the same directory (never world-readable, then set to `mode` before any
/// byte is written), fsync, rename over `path`, fsync the directory. Readers
/// and a power cut see either the old or the new content, never a torn file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // NamedTempFile creates its file with mode 0600 and removes it on error.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

/// Read until `buf` is full or the input ends (retrying interrupted reads);
/// the number of bytes read.
pub(crate) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
#[cfg(test)]
mod tests {
    use super::*;

    /// Gives one byte per read, after an interrupted read first.
    struct Trickle<'a>(&'a [u8], bool);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.1 {
                self.1 = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            let Some((&b, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            buf[0] = b;
            self.0 = rest;
            Ok(1)
        }
    }

    // Would catch: a short read or an interrupted one taken as the end of
    // the input (a file's header sniffed from its first byte only, an age
    // file taken for plain NDJSON).
    #[test]
    fn read_up_to_fills_across_short_and_interrupted_reads() {
        let mut buf = [0u8; 4];
        assert_eq!(
            read_up_to(&mut Trickle(b"abcdef", false), &mut buf).unwrap(),
            4
        );
        assert_eq!(&buf, b"abcd");
        let mut buf = [0u8; 8];
        assert_eq!(
            read_up_to(&mut Trickle(b"xyz", false), &mut buf).unwrap(),
            3
        );
        assert_eq!(&buf[..3], b"xyz");
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    // Would catch the state directory or store being created with the
    // umask's permissions (world-readable results and snapshots when run
    // outside systemd), parents left open, or an existing open directory of
    // Spotter's left as it was. Runs under umask 000 in a child process so
    // the process-wide umask of the other tests is untouched.
    #[test]
    fn private_dirs_are_0700_whatever_the_umask() {
        if std::env::var_os("SPOTTER_UMASK_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "core::fsutil::tests::private_dirs_are_0700_whatever_the_umask",
                    "--nocapture",
                ])
                .env("SPOTTER_UMASK_CHILD", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/state");
        assert_eq!(
            create_private_dir(&deep, "keys.json").unwrap(),
            PrivateDir::Created
        );
        for p in [d.path().join("a"), d.path().join("a/b"), deep.clone()] {
            assert_eq!(mode(&p), 0o700, "{}", p.display());
        }
        // Control: the umask really was 000 here.
        let open = d.path().join("open");
        fs::create_dir(&open).unwrap();
        assert_eq!(mode(&open), 0o777);
        // An open directory without Spotter's marker is left alone...
        assert_eq!(
            create_private_dir(&open, "keys.json").unwrap(),
            PrivateDir::Open { mode: 0o777 }
        );
        assert_eq!(mode(&open), 0o777);
        // ... one with it loses the others' access, keeping the group's.
        fs::write(open.join("keys.json"), b"{}").unwrap();
        assert_eq!(
            create_private_dir(&open, "keys.json").unwrap(),
            PrivateDir::Tightened { from: 0o777 }
        );
        assert_eq!(mode(&open), 0o770);
        // systemd's StateDirectoryMode=0750 is respected.
        let sd = d.path().join("systemd");
        fs::create_dir(&sd).unwrap();
        fs::set_permissions(&sd, fs::Permissions::from_mode(0o750)).unwrap();
        assert_eq!(
            create_private_dir(&sd, "keys.json").unwrap(),
            PrivateDir::Existing
        );
        assert_eq!(mode(&sd), 0o750);
        // A sticky shared directory is never changed.
        let tmp = d.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).unwrap();
        fs::write(tmp.join("keys.json"), b"{}").unwrap();
        assert!(matches!(
            create_private_dir(&tmp, "keys.json").unwrap(),
            PrivateDir::Open { .. }
        ));
        assert_eq!(mode(&tmp), 0o1777);
        // A file in the way is an error, not a directory.
        fs::write(d.path().join("file"), b"x").unwrap();
        assert!(create_private_dir(&d.path().join("file"), "m").is_err());
    }

    // Would catch a secret file being created with the umask's permissions,
    // or a replacement leaving temporary files behind.
    #[test]
    fn replaces_content_with_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    // Would catch a failed write clobbering the existing file.
    #[test]
    fn failure_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"old", 0o644).unwrap();
        assert!(write_atomic(&dir.path().join("missing-dir/f"), b"x", 0o644).is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
    }
}
