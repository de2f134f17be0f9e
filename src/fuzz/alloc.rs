//! The test binary's global allocator: the system allocator, counting the
//! bytes a thread allocates while [`measure`] runs on it (the peak of live
//! bytes), so a fuzz target can fail an input that makes a parser allocate
//! without bound. Threads not measuring pay one thread-local read per call.
//! Allocations by C code (libjpeg-turbo, LiteRT) are not seen.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

/// Record `delta` bytes on this thread if it is measuring. `try_with`: the
/// allocator runs while thread-locals are torn down too.
fn note(delta: isize) {
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let live = LIVE.get() + delta;
            LIVE.set(live);
            if live > PEAK.get() {
                PEAK.set(live);
            }
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counting
// touches only const-initialised thread-locals without destructors, which
// never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Run `f`, returning its result and the peak of bytes it held allocated on
/// this thread above what was live when it started.
pub(crate) fn measure<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.set(0);
    PEAK.set(0);
    TRACKING.set(true);
    let r = f();
    TRACKING.set(false);
    (r, PEAK.get().max(0) as usize)
}

#[cfg(test)]
mod tests {
    /// Catches the allocator not counting (every fuzz allocation bound
    /// would then pass vacuously).
    #[test]
    fn measure_sees_a_large_allocation() {
        let (len, peak) = super::measure(|| {
            let v = vec![1u8; 3 << 20];
            std::hint::black_box(&v).len()
        });
        assert_eq!(len, 3 << 20);
        assert!(peak >= 3 << 20, "peak {peak}");
        let ((), peak) = super::measure(|| {});
        assert!(peak < 4096, "peak {peak}");
    }
}
