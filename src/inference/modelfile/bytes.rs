//! The bytes of a model file: a read-only, private memory map of the file
//! (or, for bytes that came from memory, an owned buffer), shared by the
//! [`ModelFile`](super::ModelFile) and the runtime that parses the
//! flatbuffer in place (LiteRT), so the model is held once, not copied.
//!
//! Why a map (issue 21, peak RSS): the weights are read once, when the
//! runtime packs them for its kernels (XNNPACK), and not again. Mapped, they
//! are clean page-cache pages: [`ModelBytes::release_pages`] drops them from
//! the process's RSS once the model passed its canary, and whatever the
//! runtime still reads (tensor tables, op options) faults back in from the
//! page cache, unchanged. A copy on the heap would stay resident for the
//! model's lifetime. TF Lite's own `BuildFromFile` maps the file the same way.
//!
//! The file must not be rewritten in place while the model is loaded (a
//! truncated mapping faults): Spotter's model store and the package replace
//! model files by rename, which leaves the mapped inode intact; the README
//! says to do the same by hand.

use std::fs::File;
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::ptr::NonNull;

use nix::sys::mman::{madvise, mmap, munmap, MapFlags, MmapAdvise, ProtFlags};

/// A model's bytes, mapped or owned. Dereferences to the whole file.
pub(crate) struct ModelBytes {
    inner: Inner,
}

enum Inner {
    /// A `PROT_READ`, `MAP_PRIVATE` mapping of `len` bytes; unmapped on drop.
    Mapped {
        ptr: NonNull<u8>,
        len: usize,
    },
    Owned(Vec<u8>),
}

// SAFETY: the mapping is read-only and owned by this value alone (unmapped
// only in `Drop`); reading it from several threads is as safe as reading a
// `&[u8]`.
unsafe impl Send for ModelBytes {}
// SAFETY: as above: no interior mutability; `release_pages` only advises
// the kernel, which keeps the contents readable (re-read from the file).
unsafe impl Sync for ModelBytes {}

impl ModelBytes {
    /// Map `len` bytes of `file` (its length, already checked by the
    /// caller). An empty file cannot be mapped: it is read as empty bytes.
    pub(crate) fn map(file: &File, len: usize) -> std::io::Result<ModelBytes> {
        let Some(n) = NonZeroUsize::new(len) else {
            return Ok(ModelBytes::from(Vec::new()));
        };
        // SAFETY: a fresh read-only private mapping of an open file, at an
        // address the kernel chooses; it aliases no Rust object. Its
        // contents stay valid while the inode lives (the map holds it),
        // unless the file is truncated in place (module documentation).
        let ptr = unsafe {
            mmap(
                None,
                n,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE,
                file,
                0,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(ModelBytes {
            inner: Inner::Mapped {
                ptr: ptr.cast(),
                len,
            },
        })
    }

    /// Whether the bytes are a file mapping (their pages can be released).
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self.inner, Inner::Mapped { .. })
    }

    /// Drop the mapping's pages from this process's RSS (`MADV_DONTNEED`).
    /// The contents are unchanged: a page read later is faulted in again
    /// from the file. Does nothing for owned bytes; a refusal by the kernel
    /// only costs memory, so it is ignored.
    pub(crate) fn release_pages(&self) {
        if let Inner::Mapped { ptr, len } = self.inner {
            // SAFETY: the range is exactly this live mapping. On a private,
            // read-only (never written, so never copied-on-write) file
            // mapping, MADV_DONTNEED discards no data: the pages are
            // re-read from the file on the next access.
            let _ = unsafe { madvise(ptr.cast(), len, MmapAdvise::MADV_DONTNEED) };
        }
    }
}

impl From<Vec<u8>> for ModelBytes {
    fn from(v: Vec<u8>) -> ModelBytes {
        ModelBytes {
            inner: Inner::Owned(v),
        }
    }
}

impl Deref for ModelBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.inner {
            // SAFETY: `ptr` is a live, readable mapping of `len` bytes for
            // as long as `self` (unmapped only in `Drop`).
            Inner::Mapped { ptr, len } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *len) },
            Inner::Owned(v) => v,
        }
    }
}

impl Drop for ModelBytes {
    fn drop(&mut self) {
        if let Inner::Mapped { ptr, len } = self.inner {
            // SAFETY: unmapping the mapping this value created, once; no
            // borrow of it outlives `self`.
            let _ = unsafe { munmap(ptr.cast(), len) };
        }
    }
}

impl std::fmt::Debug for ModelBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelBytes")
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages of `bytes` resident in this process (mincore-free: from
    /// /proc/self/smaps, the mapping starting at its address).
    fn resident_kib(bytes: &ModelBytes) -> u64 {
        let start = format!("{:x}-", bytes.as_ptr() as usize);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&start));
        assert!(lines.next().is_some(), "mapping {start} not in smaps");
        let rss = lines.find(|l| l.starts_with("Rss:")).unwrap();
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    // Would catch the model being copied to the heap again (the mapping's
    // pages staying resident after the release), or a release that loses
    // data (anonymous memory, or a written-to mapping, reads back zeros
    // after MADV_DONTNEED): the pages leave RSS and the bytes read back
    // identical to the file.
    #[test]
    fn released_pages_leave_rss_and_read_back_unchanged() {
        let path = crate::core::testdata()
            .join("models/classification/mobilenet_v1_0.25_128_quant.tflite");
        let want = std::fs::read(&path).unwrap();
        let file = File::open(&path).unwrap();
        let bytes = ModelBytes::map(&file, want.len()).unwrap();
        assert!(bytes.is_mapped());
        assert_eq!(&bytes[..], &want[..]);
        let before = resident_kib(&bytes);
        assert!(
            before * 1024 >= want.len() as u64 / 2,
            "{before} KiB resident"
        );
        bytes.release_pages();
        assert!(resident_kib(&bytes) < before / 4, "pages still resident");
        assert_eq!(&bytes[..], &want[..], "contents changed by the release");
    }

    // Would catch an empty file failing with mmap's EINVAL instead of
    // reaching the "file is only 0 bytes" check.
    #[test]
    fn an_empty_file_is_empty_bytes() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let bytes = ModelBytes::map(tmp.as_file(), 0).unwrap();
        assert!(bytes.is_empty());
        bytes.release_pages();
    }
}
