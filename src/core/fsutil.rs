//! Crash-safe file replacement, shared by everything that keeps small files
//! in the state directory (TLS material, API keys, model versions, the store's
//! schema version).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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

#[cfg(test)]
mod tests {
    use super::*;

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
