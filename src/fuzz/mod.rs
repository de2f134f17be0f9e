//! Fuzzing of everything that parses untrusted bytes (tests only).
//!
//! This module owns the fuzz engine and one target per parser:
//! [`image`] (upload check, JPEG/PNG/BMP decoding, pre-processing),
//! [`flatbuf`] (TFLite model and metadata flatbuffers), [`http`] (raw
//! HTTP/1.1 requests to a real in-process server), [`config`] (TOML files
//! and drop-ins), [`ndjson`] (`spotter import`) and [`mjpeg`] (MJPEG frame
//! marker walking).
//!
//! The engine is a mutation fuzzer on the stable toolchain: seeds (real
//! files from `$SPOTTER_TESTDATA` and inputs built here) are mutated by
//! generic byte mutations and by each target's structured ones, and every
//! input must leave the parser with an answer, an error or a success, never
//! a panic, a hang or an allocation beyond the target's bound (a counting
//! global allocator, [`alloc`], measures the fuzzing thread's peak).
//! libFuzzer needs a nightly toolchain and instrumented builds of every C
//! dependency (LiteRT, libjpeg-turbo), so the engine is not coverage-guided.
//!
//! Each target runs for `SPOTTER_FUZZ_SECS` seconds (default
//! [`DEFAULT_SECS`]) in the normal `cargo test --lib`; `scripts/fuzz.sh`
//! runs them longer. Input `n` of a run depends only on the run's seed and
//! `n`, so a failure is replayed exactly with the `SPOTTER_FUZZ_SEED` and
//! `SPOTTER_FUZZ_ITER` it prints; the (minimised) input is also written
//! under `target/fuzz-failures/`, and `SPOTTER_FUZZ_INPUT=<file>` runs one
//! file through a target. Crashes found become regression tests in the
//! target's module (the minimised input as a byte literal).

pub(crate) mod alloc;
mod config;
mod flatbuf;
mod http;
mod image;
mod mjpeg;
mod ndjson;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Seconds each target runs in `cargo test` unless `SPOTTER_FUZZ_SECS` says otherwise.
pub(crate) const DEFAULT_SECS: f64 = 3.0;
/// One input taking longer than this (seconds) is a failure
/// (`SPOTTER_FUZZ_SLOW_SECS`); at three times this the watchdog aborts the
/// process, naming the seed and iteration, so a true infinite loop cannot
/// hold CI.
pub(crate) const DEFAULT_SLOW_SECS: f64 = 10.0;

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// `$SPOTTER_TESTDATA`, or the folder beside the checkout.
pub(crate) fn testdata() -> PathBuf {
    std::env::var_os("SPOTTER_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/testdata"))
        })
}

/// What one run did, for the log line and for `scripts/fuzz.sh`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub iterations: u64,
    /// Inputs the target accepted (parsed, decoded, answered 2xx...).
    pub accepted: u64,
    pub elapsed: Duration,
    /// The largest per-input allocation peak seen, bytes.
    pub peak_alloc: usize,
}

/// What a check says about one input: accepted (`true`) or refused with an
/// error (`false`); a property violation is an `Err`.
pub(crate) type Verdict = Result<bool, String>;

/// One fuzz target's run: its name, seed, time budget and bounds.
pub(crate) struct Fuzz {
    pub name: &'static str,
    pub seed: u64,
    pub budget: Duration,
    pub slow: Duration,
    /// The most one input may allocate on the fuzzing thread (peak live bytes).
    pub max_alloc: usize,
    /// Only this iteration (`SPOTTER_FUZZ_ITER`).
    pub only_iter: Option<u64>,
}

impl Fuzz {
    /// A run configured from the environment; prints how to replay it.
    pub(crate) fn new(name: &'static str, max_alloc: usize) -> Fuzz {
        let seed = env_u64("SPOTTER_FUZZ_SEED").unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ (u64::from(std::process::id()) << 32)
        });
        let secs = env_f64("SPOTTER_FUZZ_SECS")
            .unwrap_or(DEFAULT_SECS)
            .max(0.0);
        let slow = env_f64("SPOTTER_FUZZ_SLOW_SECS")
            .unwrap_or(DEFAULT_SLOW_SECS)
            .max(0.1);
        let f = Fuzz {
            name,
            seed,
            budget: Duration::from_secs_f64(secs),
            slow: Duration::from_secs_f64(slow),
            max_alloc,
            only_iter: env_u64("SPOTTER_FUZZ_ITER"),
        };
        eprintln!(
            "fuzz {name}: seed {seed}, {secs} s (replay: SPOTTER_FUZZ_SEED={seed} cargo test --lib fuzz::{name})"
        );
        f
    }

    /// The random source of iteration `iter`: a function of the seed and `iter` only.
    pub(crate) fn rng(&self, iter: u64) -> StdRng {
        StdRng::seed_from_u64(
            self.seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(iter.wrapping_mul(0xD1B5_4A32_D192_ED03)),
        )
    }

    /// Run `check` on generated inputs until the budget is spent (or once
    /// on `SPOTTER_FUZZ_INPUT`), failing the test on the first violation,
    /// panic, slow input or allocation over the bound. `generate` makes
    /// input `n` from iteration `n`'s random source.
    pub(crate) fn run(
        &self,
        mut generate: impl FnMut(&mut StdRng) -> Vec<u8>,
        mut check: impl FnMut(&[u8]) -> Verdict,
    ) -> Stats {
        if let Some(path) = std::env::var_os("SPOTTER_FUZZ_INPUT") {
            let input = std::fs::read(&path).expect("SPOTTER_FUZZ_INPUT readable");
            if let Err(e) = self.one(&input, &mut check) {
                panic!("fuzz {}: {}: {e}", self.name, PathBuf::from(path).display());
            }
            return Stats::default();
        }
        let watchdog = Watchdog::start(self);
        let started = Instant::now();
        let mut stats = Stats::default();
        let mut iter = self.only_iter.unwrap_or(0);
        loop {
            let input = generate(&mut self.rng(iter));
            watchdog.begin(iter);
            let outcome = self.one(&input, &mut check);
            watchdog.end();
            match outcome {
                Ok((accepted, peak)) => {
                    stats.accepted += u64::from(accepted);
                    stats.peak_alloc = stats.peak_alloc.max(peak);
                }
                Err(e) => self.fail(iter, &input, &e, &mut check),
            }
            stats.iterations += 1;
            iter += 1;
            if self.only_iter.is_some() || started.elapsed() >= self.budget {
                break;
            }
        }
        stats.elapsed = started.elapsed();
        eprintln!(
            "fuzz {}: {} inputs in {:.1} s ({:.0}/s), {} accepted, peak allocation {} KiB",
            self.name,
            stats.iterations,
            stats.elapsed.as_secs_f64(),
            stats.iterations as f64 / stats.elapsed.as_secs_f64().max(1e-9),
            stats.accepted,
            stats.peak_alloc / 1024
        );
        stats
    }

    /// One input: the check's verdict, the input's allocation peak.
    fn one(
        &self,
        input: &[u8],
        check: &mut impl FnMut(&[u8]) -> Verdict,
    ) -> Result<(bool, usize), String> {
        let t0 = Instant::now();
        let (result, peak) = alloc::measure(|| catch_unwind(AssertUnwindSafe(|| check(input))));
        let took = t0.elapsed();
        let accepted = match result {
            Ok(Ok(a)) => a,
            Ok(Err(violation)) => return Err(violation),
            Err(panic) => return Err(format!("panic: {}", panic_message(&panic))),
        };
        if took > self.slow {
            return Err(format!("one input took {:.1} s", took.as_secs_f64()));
        }
        if peak > self.max_alloc {
            return Err(format!(
                "one input allocated {} MiB at its peak (bound {} MiB)",
                peak >> 20,
                self.max_alloc >> 20
            ));
        }
        Ok((accepted, peak))
    }

    /// Minimise the failing input, save it and fail the test with how to replay it.
    fn fail(
        &self,
        iter: u64,
        input: &[u8],
        error: &str,
        check: &mut impl FnMut(&[u8]) -> Verdict,
    ) -> ! {
        let small = minimise(input, |candidate| self.one(candidate, check).is_err());
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/fuzz-failures"));
        let path = dir.join(format!("{}-{}-{iter}.bin", self.name, self.seed));
        let saved = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, &small))
            .map(|()| path.display().to_string())
            .unwrap_or_else(|e| format!("(not saved: {e})"));
        panic!(
            "fuzz {}: input {iter} of seed {} failed: {error}\n  minimised input ({} of {} bytes): {saved}\n  \
             replay: SPOTTER_FUZZ_SEED={} SPOTTER_FUZZ_ITER={iter} cargo test --lib fuzz::{}",
            self.name,
            self.seed,
            small.len(),
            input.len(),
            self.seed,
            self.name
        );
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Remove chunks of `input` while `fails` still holds (at most a few
/// hundred tries; inputs are regenerated exactly anyway).
fn minimise(input: &[u8], mut fails: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut cur = input.to_vec();
    let mut tries = 0;
    let mut chunk = cur.len() / 2;
    while chunk >= 1 && tries < 400 {
        let mut at = 0;
        while at < cur.len() && tries < 400 {
            let end = (at + chunk).min(cur.len());
            let mut candidate = cur[..at].to_vec();
            candidate.extend_from_slice(&cur[end..]);
            tries += 1;
            if fails(&candidate) {
                cur = candidate;
            } else {
                at += chunk;
            }
        }
        chunk /= 2;
    }
    cur
}

/// Aborts the process when one input runs far past the slow bound (an
/// infinite loop never returns to be reported), naming how to replay it.
struct Watchdog {
    /// Milliseconds since `epoch` when the current input started, or 0.
    started_ms: Arc<AtomicU64>,
    iter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn start(f: &Fuzz) -> Watchdog {
        let (started_ms, iter, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let epoch = Instant::now();
        let limit = f.slow * 3;
        let (name, seed) = (f.name, f.seed);
        let thread = {
            let (started_ms, iter, stop) = (started_ms.clone(), iter.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("fuzz-watchdog-{name}"))
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(100));
                        let s = started_ms.load(Ordering::Acquire);
                        if s == 0 {
                            continue;
                        }
                        let now = epoch.elapsed().as_millis() as u64;
                        if now.saturating_sub(s) > limit.as_millis() as u64 {
                            let i = iter.load(Ordering::Acquire);
                            eprintln!(
                                "fuzz {name}: input {i} of seed {seed} still running after {} s: hang. \
                                 replay: SPOTTER_FUZZ_SEED={seed} SPOTTER_FUZZ_ITER={i} cargo test --lib fuzz::{name}",
                                limit.as_secs()
                            );
                            std::process::abort();
                        }
                    }
                })
                .ok()
        };
        Watchdog {
            started_ms,
            iter,
            stop,
            epoch,
            thread,
        }
    }

    fn begin(&self, iter: u64) {
        self.iter.store(iter, Ordering::Release);
        let now = (self.epoch.elapsed().as_millis() as u64).max(1);
        self.started_ms.store(now, Ordering::Release);
    }

    fn end(&self) {
        self.started_ms.store(0, Ordering::Release);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Values that break arithmetic and bounds: sizes, counts, offsets.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    127,
    128,
    255,
    256,
    511,
    512,
    1023,
    1024,
    4095,
    4096,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x1_0000,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    i64::MAX as u64,
    u64::MAX,
    u64::MAX - 1,
];

/// A position to mutate: anywhere, or (half the time) near the start or
/// end, where headers and flatbuffer root tables live.
fn position(rng: &mut StdRng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    match rng.gen_range(0..4) {
        0 => rng.gen_range(0..len.min(4096)),
        1 => len - 1 - rng.gen_range(0..len.min(65536)),
        _ => rng.gen_range(0..len),
    }
}

/// Apply one generic byte-level mutation; `others` supplies splices.
pub(crate) fn mutate_bytes(rng: &mut StdRng, data: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = data.len();
    match rng.gen_range(0..12) {
        // Flip one bit.
        0 if len > 0 => {
            let i = position(rng, len);
            data[i] ^= 1 << rng.gen_range(0..8);
        }
        // A random byte.
        1 if len > 0 => {
            let i = position(rng, len);
            data[i] = rng.gen();
        }
        // An interesting value of 1, 2, 4 or 8 bytes, either endianness.
        2 | 3 if len > 0 => {
            let width = [1usize, 2, 4, 8][rng.gen_range(0..4)];
            let mut v = INTERESTING[rng.gen_range(0..INTERESTING.len())];
            if rng.gen_bool(0.3) {
                v = v.wrapping_add(rng.gen_range(0..16)).wrapping_sub(8);
            }
            let bytes: Vec<u8> = if rng.gen() {
                v.to_le_bytes()[..width].to_vec()
            } else {
                v.to_be_bytes()[8 - width..].to_vec()
            };
            let mut i = position(rng, len);
            if width == 4 && rng.gen_bool(0.5) {
                i &= !3; // flatbuffer offsets are 4-aligned
            }
            for (k, b) in bytes.iter().enumerate() {
                if let Some(d) = data.get_mut(i + k) {
                    *d = *b;
                }
            }
        }
        // Add or subtract a small amount (a length or an offset off by some).
        4 if len > 0 => {
            let i = position(rng, len);
            let d = rng.gen_range(1..=8);
            data[i] = if rng.gen() {
                data[i].wrapping_add(d)
            } else {
                data[i].wrapping_sub(d)
            };
        }
        // Insert random bytes.
        5 => {
            let i = position(rng, len + 1).min(len);
            let n = rng.gen_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            data.splice(i..i, bytes);
        }
        // Delete a range.
        6 if len > 0 => {
            let i = position(rng, len);
            let n = rng.gen_range(1..=(len - i).min(256));
            data.drain(i..i + n);
        }
        // Duplicate a range in place.
        7 if len > 0 => {
            let i = position(rng, len);
            let n = rng.gen_range(1..=(len - i).min(256));
            let copy = data[i..i + n].to_vec();
            let at = position(rng, len + 1).min(len);
            data.splice(at..at, copy);
        }
        // Copy a range over another place.
        8 if len > 1 => {
            let from = position(rng, len);
            let n = rng.gen_range(1..=(len - from).min(64));
            let to = position(rng, len);
            let copy = data[from..from + n].to_vec();
            for (k, b) in copy.into_iter().enumerate() {
                if let Some(d) = data.get_mut(to + k) {
                    *d = b;
                }
            }
        }
        // Truncate.
        9 if len > 0 => {
            let keep = if rng.gen() {
                rng.gen_range(0..len)
            } else {
                len - rng.gen_range(1..=len.min(64))
            };
            data.truncate(keep);
        }
        // Splice: the head of this input, the tail of another.
        10 if !others.is_empty() => {
            let other = &others[rng.gen_range(0..others.len())];
            let cut = rng.gen_range(0..=len);
            let from = rng.gen_range(0..=other.len());
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        // A run of one byte (0x00 or 0xFF runs break marker scanners).
        _ => {
            let i = position(rng, len + 1).min(len);
            let n = rng.gen_range(1..=64);
            let b = [0u8, 0xFF, b'\n', b' '][rng.gen_range(0..4)];
            data.splice(i..i, std::iter::repeat_n(b, n));
        }
    }
}

/// A seed mutated by 1 to 8 generic byte mutations (the seed itself 1 time in 64).
pub(crate) fn mutated_seed(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut data = seeds[rng.gen_range(0..seeds.len())].clone();
    if rng.gen_range(0..64) == 0 {
        return data;
    }
    for _ in 0..rng.gen_range(1..=8) {
        mutate_bytes(rng, &mut data, seeds);
    }
    data
}

/// Text tokens mutated in: a target's dictionary of keywords and values.
pub(crate) fn mutate_text(rng: &mut StdRng, data: &mut Vec<u8>, dict: &[&str]) {
    let len = data.len();
    let token = dict[rng.gen_range(0..dict.len())].as_bytes();
    match rng.gen_range(0..3) {
        // Insert a token.
        0 => {
            let at = rng.gen_range(0..=len);
            data.splice(at..at, token.iter().copied());
        }
        // Replace a word (a run of non-delimiters) by a token.
        1 if len > 0 => {
            let at = rng.gen_range(0..len);
            let delim = |b: &u8| b" \t\r\n=,:;\"'[]{}()&?/".contains(b);
            let start = data[..at].iter().rposition(delim).map_or(0, |i| i + 1);
            let end = data[at..].iter().position(delim).map_or(len, |i| at + i);
            data.splice(start..end, token.iter().copied());
        }
        // Swap two lines, delete one or duplicate one.
        _ => {
            let mut lines: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            let n = lines.len();
            let (a, b) = (rng.gen_range(0..n), rng.gen_range(0..n));
            match rng.gen_range(0..3) {
                0 => lines.swap(a, b),
                1 if n > 1 => {
                    lines.remove(a);
                }
                _ => {
                    let l = lines[a].clone();
                    lines.insert(b, l);
                }
            }
            *data = lines.join(&b'\n');
        }
    }
}
