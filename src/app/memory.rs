//! The daemon's resident memory: glibc's malloc settings ([`tune_malloc`]),
//! returning free heap to the kernel ([`trim_malloc`]) and letting go of the
//! code pages that only start-up ran ([`release_code_pages`]).

use std::collections::HashSet;
use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::mman::{madvise, MmapAdvise};

/// The daemon's malloc settings (glibc), each unless the environment sets
/// its own (`MALLOC_ARENA_MAX`, `MALLOC_MMAP_THRESHOLD_`, or any
/// `GLIBC_TUNABLES`), which then wins:
/// - 2 arenas: glibc gives each thread that allocates concurrently its own
///   arena, up to 8 per core, and with the API, capture, inference, sled and
///   LiteRT threads the heap fragments over many of them.
/// - a fixed 256 KiB mmap threshold: blocks at least that large (decoded
///   frames, upload bodies, sled's 512 KiB write buffers) are mapped and
///   returned to the kernel when freed. glibc's default raises the threshold
///   to the largest block freed so far, after which such blocks come from
///   the arenas, and the holes they leave keep RSS at its high-water mark.
///   In the soak test (benches/soak.sh, 5 minutes, dev build) RSS after
///   warm-up went from 60.8 -> 61.7 MiB and 58.6 -> 60.8 MiB in two runs
///   without it to a flat 52-54 MiB with it, at the same request and frame
///   rates.
pub(super) fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let unset = |name: &str| {
            std::env::var_os(name).is_none() && std::env::var_os("GLIBC_TUNABLES").is_none()
        };
        // SAFETY: mallopt only sets allocator tunables; it is called before
        // the daemon starts its threads.
        unsafe {
            if unset("MALLOC_ARENA_MAX") {
                nix::libc::mallopt(nix::libc::M_ARENA_MAX, 2);
            }
            if unset("MALLOC_MMAP_THRESHOLD_") {
                nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 256 << 10);
            }
        }
    }
}

/// How often the monitor returns the allocator's free pages to the kernel.
pub(crate) const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Return free memory inside glibc's arenas to the kernel (`malloc_trim`).
/// glibc gives back only the free top of a thread arena's heap, so holes
/// that short-lived buffers (responses, decoded frames below the mmap
/// threshold, sled's pages) leave in the middle of an arena stay resident.
/// In the soak test's load anonymous memory stepped up by about 2 MiB at a
/// time for several minutes after start (26 -> 35 MiB, mostly sled's page
/// cache filling) and one `malloc_trim(0)` in that daemon gave back 3.9 MiB
/// (the second arena 10.1 -> 5.8 MiB). Called every [`TRIM_EVERY`] by the
/// monitor (a walk over the arenas' free chunks, holding each arena's lock
/// briefly).
pub(crate) fn trim_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only takes glibc's arena locks and madvises free
    // pages; it is safe to call from any thread at any time.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// One mapping of `/proc/self/smaps` that [`release_code_pages`] may drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CleanFileMapping {
    pub start: usize,
    pub end: usize,
    /// Resident bytes when smaps was read.
    pub rss: u64,
}

/// The mappings whose pages can be dropped and read back from their file
/// with nothing lost: private file mappings that are not writable and hold
/// no anonymous (copy-on-write) page. That excludes the heap, stacks and
/// every anonymous mapping; writable data (`.data`, `.bss`); and the
/// relocated read-only data (RELRO: written by the dynamic loader before it
/// was made read-only, so its pages are anonymous copies that dropping
/// would turn back into the file's unrelocated bytes). What is left is
/// code and constants: the binary's, libLiteRt's, libc's. Only mappings of
/// files for which `lasting` is true are taken (see [`release_code_pages`]).
pub(crate) fn clean_file_mappings(
    smaps: &str,
    lasting: impl Fn(&str) -> bool,
) -> Vec<CleanFileMapping> {
    let mut out = Vec::new();
    // The mapping being read and its anonymous bytes.
    let mut cur: Option<(CleanFileMapping, u64)> = None;
    let mut finish = |cur: Option<(CleanFileMapping, u64)>| {
        if let Some((m, 0)) = cur {
            if m.rss > 0 {
                out.push(m);
            }
        }
    };
    for line in smaps.lines() {
        if let Some(h) = header(line) {
            finish(cur.take());
            let p = h.perms.as_bytes();
            let candidate = p.len() == 4
                && p[1] == b'-'
                && p[3] == b'p'
                && h.path.starts_with('/')
                && lasting(h.path);
            if candidate {
                let m = CleanFileMapping {
                    start: h.start,
                    end: h.end,
                    rss: 0,
                };
                // Anonymous starts unknown (u64::MAX) so a smaps without the
                // field never counts as clean.
                cur = Some((m, u64::MAX));
            }
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let Some(first) = fields.next() else { continue };
        let Some((m, anon)) = cur.as_mut() else {
            continue;
        };
        let bytes = fields
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024);
        match first {
            "Rss:" => m.rss = bytes.unwrap_or(0),
            "Anonymous:" => *anon = bytes.unwrap_or(u64::MAX),
            _ => {}
        }
    }
    finish(cur.take());
    out
}

/// The files mapped when [`note_start_up_files`] ran: the binary and the
/// libraries the dynamic loader mapped before `main`.
static START_UP_FILES: OnceLock<HashSet<String>> = OnceLock::new();

/// Remember the files mapped now, before the daemon starts any thread:
/// the binary and the libraries loaded with it, which the dynamic loader
/// never unloads. Called first thing by [`super::run`].
pub(super) fn note_start_up_files() {
    if let Ok(maps) = std::fs::read_to_string("/proc/self/maps") {
        let _ = START_UP_FILES.set(mapped_files(&maps));
    }
}

/// The absolute paths in a `/proc/self/maps` (or smaps) text.
fn mapped_files(maps: &str) -> HashSet<String> {
    maps.lines()
        .filter_map(header)
        .filter(|h| h.path.starts_with('/'))
        .map(|h| h.path.to_string())
        .collect()
}

/// A mapping's line in `/proc/self/maps` or smaps.
struct Header<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    /// The rest of the line (a path may hold spaces); empty for anonymous.
    path: &'a str,
}

/// `start-end perms offset device inode   path`, or `None` for another line
/// (smaps' `Key: value` lines).
fn header(line: &str) -> Option<Header<'_>> {
    let mut fields = line.splitn(6, ' ');
    let (a, b) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(a, 16).ok()?;
    let end = usize::from_str_radix(b, 16).ok()?;
    let perms = fields.next()?;
    // offset, device, inode
    fields.nth(2)?;
    let path = fields.next().unwrap_or("").trim();
    Some(Header {
        start,
        end,
        perms,
        path,
    })
}

/// Drop this process's resident pages of clean file mappings
/// ([`clean_file_mappings`]) with `MADV_DONTNEED`; returns the resident
/// bytes they held.
///
/// Why: start-up runs code that never runs again (config parsing, key and
/// certificate set-up, the store's recovery, LiteRT's registration of every
/// operator), and the kernel maps 64 KiB around every page it faults in, so
/// by the first frame the binary and libLiteRt.so hold several MiB of code
/// that stays resident. Dropped, the pages stay in the page cache; the code
/// still in use faults back in (minor faults, from memory) and the rest is
/// no longer counted against the daemon. Called once before the model load
/// (the set-up code) and on every change to ready, it took the release
/// build's peak from model + 29.7 to model + 25.5 MiB and its idle RSS from
/// 30.9 to 21.8 MiB (`benches/py/peak_rss.py --reps 3`, x86_64).
///
/// Safe because only pages identical to their file are dropped: the
/// mappings are read-only, private and hold no anonymous page. And only
/// mappings of files that stay mapped for the life of the process are
/// considered: the binary and its libraries ([`note_start_up_files`]) and
/// the LiteRT libraries loaded (never unloaded). So no other mapping can
/// take a selected one's place between reading smaps and the madvise, as it
/// could if a library being loaded by another thread at that moment (a
/// resolver module, a LiteRT library that fails its checks) were unloaded
/// and its addresses reused for data.
pub(crate) fn release_code_pages() -> std::io::Result<u64> {
    let Some(start_up) = START_UP_FILES.get() else {
        return Ok(0);
    };
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let litert: Vec<String> = crate::inference::litert::loaded_libraries()
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let lasting = |path: &str| start_up.contains(path) || litert.iter().any(|l| l == path);
    let mut released = 0;
    for m in clean_file_mappings(&smaps, lasting) {
        let Some(start) = NonNull::new(m.start as *mut c_void) else {
            continue;
        };
        // SAFETY: the range is a whole mapping of this process whose pages
        // equal their file's (see above); MADV_DONTNEED on it only removes
        // page-table entries, and the next access reads the page again.
        let r = unsafe { madvise(start, m.end - m.start, MmapAdvise::MADV_DONTNEED) };
        // A mapping that refuses (locked pages: EINVAL) keeps its pages.
        if r.is_ok() {
            released += m.rss;
        }
    }
    Ok(released)
}

/// [`release_code_pages`], with what it released (or why not) at debug
/// level; `after` names the step that had just run.
pub(super) fn release_code_pages_logged(after: &str) {
    match release_code_pages() {
        Ok(bytes) => log::debug!(
            spotter_released_bytes = bytes;
            "released {} KiB of resident code pages after {after}", bytes >> 10
        ),
        Err(e) => log::debug!("could not release code pages after {after}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0200000 r--p 00000000 fd:01 123 /usr/bin/spotter
Rss:                 800 kB
Anonymous:             0 kB
55d0a0200000-55d0a0900000 r-xp 00200000 fd:01 123 /usr/bin/spotter
Rss:                4000 kB
Anonymous:             0 kB
55d0a0900000-55d0a0a00000 r--p 00900000 fd:01 123 /usr/bin/spotter
Rss:                 400 kB
Anonymous:           400 kB
55d0a0a00000-55d0a0a10000 rw-p 00a00000 fd:01 123 /usr/bin/spotter
Rss:                  64 kB
Anonymous:            64 kB
55d0a1000000-55d0a1800000 rw-p 00000000 00:00 0 [heap]
Rss:                6000 kB
Anonymous:          6000 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 456 /usr/lib/libc.so.6
Rss:                   0 kB
Anonymous:             0 kB
7f0000100000-7f0000200000 r--s 00000000 fd:01 789 /var/lib/spotter/shared
Rss:                  12 kB
Anonymous:             0 kB
7f0000200000-7f0000300000 r--p 00000000 00:00 0
Rss:                  40 kB
Anonymous:            40 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0 [vdso]
Rss:                   8 kB
Anonymous:             0 kB
7f0000400000-7f0000500000 r-xp 00000000 fd:01 999 /usr/lib/libLiteRt.so
Rss:                 256 kB
7f0000600000-7f0000610000 r-xp 00000000 fd:01 321 /usr/lib/libnss_mdns.so.2
Rss:                  16 kB
Anonymous:             0 kB
";

    /// Catches dropping a page that is not the file's: the relocated
    /// read-only data (anonymous pages in an r--p file mapping), writable
    /// data, the heap, shared and special mappings, or a mapping whose smaps
    /// entry does not say it holds no anonymous page.
    #[test]
    fn only_clean_private_read_only_file_mappings_are_dropped() {
        let got = clean_file_mappings(SMAPS, |_| true);
        let spotter = vec![
            CleanFileMapping {
                start: 0x55d0a0000000,
                end: 0x55d0a0200000,
                rss: 800 << 10,
            },
            CleanFileMapping {
                start: 0x55d0a0200000,
                end: 0x55d0a0900000,
                rss: 4000 << 10,
            },
        ];
        let nss = CleanFileMapping {
            start: 0x7f0000600000,
            end: 0x7f0000610000,
            rss: 16 << 10,
        };
        assert_eq!(got, [spotter, vec![nss]].concat());
    }

    /// Catches dropping pages of a file that may be unmapped meanwhile (a
    /// library loaded after start that is not LiteRT's): only the files the
    /// caller names as lasting are taken.
    #[test]
    fn only_mappings_of_lasting_files_are_dropped() {
        let got = clean_file_mappings(SMAPS, |p| p != "/usr/lib/libnss_mdns.so.2");
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|m| m.start < 0x7f0000000000), "{got:?}");
        let files = mapped_files(SMAPS);
        assert!(files.contains("/usr/bin/spotter") && files.contains("/usr/lib/libLiteRt.so"));
        assert!(!files
            .iter()
            .any(|f| f.contains("heap") || f.contains("vdso")));
        assert_eq!(files.len(), 5, "{files:?}");
        let spaced = header("7f00-7f10 r-xp 00000000 fd:01 7     /opt/my models/lib.so").unwrap();
        assert_eq!(
            (spaced.perms, spaced.path),
            ("r-xp", "/opt/my models/lib.so")
        );
    }

    /// Catches a release that selects nothing or does not reach the kernel
    /// on this machine, and one that breaks the process: this test binary's
    /// code pages drop, and code runs and data reads correctly afterwards.
    #[test]
    fn releasing_code_pages_lowers_rss_and_the_process_runs_on() {
        note_start_up_files();
        let resident = || -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
            clean_file_mappings(&smaps, |_| true)
                .iter()
                .map(|m| m.rss)
                .sum()
        };
        let before = resident();
        assert!(before > 0, "no clean file mapping is resident");
        let released = release_code_pages().expect("release");
        assert!(released > 0);
        // Other test threads fault code back in meanwhile, but not all of it.
        assert!(
            resident() < before,
            "clean file pages still resident after the release"
        );
        // Code and constants read back from the file are intact.
        let text = format!("{:?}", (1..=4).map(|i| i * 3).collect::<Vec<_>>());
        assert_eq!(text, "[3, 6, 9, 12]");
        assert_eq!(header("10-20 r--p 0 0:0 0").map(|h| h.end), Some(32));
    }
}
