//! Bilinear resampling of packed RGB8 that gives, byte for byte, what
//! Pillow's `Image.resize(size, Image.BILINEAR, box)` gives.
//!
//! This crate is the one resampler Spotter's pre-processing uses
//! (`spotter::inference::preprocess`). Model authors and
//! reference pipelines (Ultralytics' letterbox, the testdata's references,
//! most "how to run this .tflite" scripts) resize with Pillow; a quantized
//! detector moves borderline scores by several hundredths when its input is
//! one level off on a few percent of the elements (measured on the
//! full-integer YOLOv8n with `fast_image_resize`'s 16-bit fixed point: bed
//! 0.339 → 0.251). So the arithmetic is Pillow's, not an approximation of it:
//! - coefficients of the triangle filter, widened by the scale when
//!   downscaling (antialiasing), computed in `f64` from an `f32` box and
//!   normalised per output pixel;
//! - those coefficients in 22-bit fixed point (`PRECISION_BITS = 32 - 8 -
//!   2`), rounded half away from zero;
//! - a horizontal pass over only the source rows the vertical pass reads,
//!   rounded and clamped to `u8`, then the vertical pass; a pass whose axis
//!   keeps its size and box is skipped, as Pillow skips it.
//!
//! A sum cannot overflow `i32`: the weights of one output pixel add up to
//! 2^22 (± rounding), so a sum is at most 255 × 2^22 + 2^21 < 2^31. The hot
//! loops say so with wrapping operations, which keeps the dev profile's
//! overflow checks (3× slower here) out of them. Integer sums are exact, so
//! the order in which taps are added does not matter: the vertical pass adds whole rows at a time (contiguous, so the
//! compiler can vectorise it), where Pillow adds per pixel.

/// Fixed-point precision of the coefficients, as Pillow's `Resample.c`.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Rounding term added before the final shift.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resampling coefficients for one axis: for each output position, the first
/// source index, the number of taps and `ksize` fixed-point weights.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    /// What the coefficients were computed for: source size, box (as `f32`
    /// bits) and output size.
    key: (u32, u32, u32, u32),
    /// (first source index, taps) per output position.
    bounds: Vec<(usize, usize)>,
    /// `ksize` weights per output position, zero beyond its taps.
    weights: Vec<i32>,
    ksize: usize,
    /// The same weights over a window of one length for every output
    /// position (`window` = `ksize`, or the source size if smaller): the
    /// window starts at `starts[i]`, moved left at the far edge so it stays
    /// inside the source, and its weights outside the taps are zero. A fixed
    /// trip count lets the compiler unroll the horizontal pass; adding zeros
    /// changes no sum.
    window: usize,
    starts: Vec<usize>,
    windowed: Vec<i32>,
}

impl Axis {
    /// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the
    /// bilinear (triangle, support 1) filter: `in_size` source pixels, the
    /// source interval `[in0, in1)`, `out_size` output pixels.
    fn new(in_size: u32, in0: f32, in1: f32, out_size: u32) -> Axis {
        let scale = f64::from(in1 - in0) / f64::from(out_size);
        let filterscale = scale.max(1.0);
        let support = filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size as usize);
        let mut weights = vec![0i32; out_size as usize * ksize];
        let mut k = vec![0f64; ksize];
        for (xx, w) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // Truncation toward zero, as C's (int) cast: the bounds are then
            // clamped to the image.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) - xmin;
            let taps = xmax.clamp(0, ksize as i64) as usize;
            let mut total = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(taps) {
                let t = ((x as i64 + xmin) as f64 - center + 0.5) * ss;
                *kx = (1.0 - t.abs()).max(0.0);
                total += *kx;
            }
            for (x, wx) in w.iter_mut().enumerate().take(taps) {
                let v = if total != 0.0 { k[x] / total } else { k[x] };
                let f = v * f64::from(1u32 << PRECISION_BITS);
                *wx = if v < 0.0 {
                    (f - 0.5) as i32
                } else {
                    (f + 0.5) as i32
                };
            }
            bounds.push((xmin as usize, taps));
        }
        let window = ksize.min(in_size as usize);
        let mut starts = Vec::with_capacity(bounds.len());
        let mut windowed = vec![0i32; bounds.len() * window];
        for (i, (&(first, taps), w)) in bounds
            .iter()
            .zip(windowed.chunks_exact_mut(window))
            .enumerate()
        {
            let start = first.min(in_size as usize - window);
            let at = first - start;
            w[at..at + taps].copy_from_slice(&weights[i * ksize..i * ksize + taps]);
            starts.push(start);
        }
        Axis {
            key: (in_size, in0.to_bits(), in1.to_bits(), out_size),
            bounds,
            weights,
            ksize,
            window,
            starts,
            windowed,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let (first, n) = self.bounds[i];
        (first, &self.weights[i * self.ksize..i * self.ksize + n])
    }
}

/// Pillow's `clip8`: a fixed-point sum to a pixel value.
#[inline]
fn clip8(v: i32) -> u8 {
    if v <= 0 {
        0
    } else if v >= (255 << PRECISION_BITS) + (1 << PRECISION_BITS) - 1 {
        255
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// A source interval in pixels, `f32` as Pillow keeps it: left, top, right, bottom.
pub type SourceBox = [f32; 4];

/// Resampler with coefficients kept from frame to frame (a camera's frames
/// all have one size, so they are computed once) and its intermediate buffer.
#[derive(Debug, Default)]
pub struct Resampler {
    horizontal: Option<Axis>,
    vertical: Option<Axis>,
    /// Horizontal pass output; `acc` the vertical pass's row of sums.
    tmp: Vec<u8>,
    acc: Vec<i32>,
}

impl Resampler {
    pub fn new() -> Resampler {
        Resampler::default()
    }

    /// Bytes this resampler keeps between frames.
    pub fn retained_bytes(&self) -> usize {
        self.tmp.capacity() + self.acc.capacity() * 4
    }

    /// Drop the intermediate buffers (their contents are per frame).
    pub fn release(&mut self) {
        self.tmp = Vec::new();
        self.acc = Vec::new();
    }

    fn axis(slot: &mut Option<Axis>, in_size: u32, in0: f32, in1: f32, out: u32) -> &Axis {
        let key = (in_size, in0.to_bits(), in1.to_bits(), out);
        if slot.as_ref().is_none_or(|a| a.key != key) {
            *slot = Some(Axis::new(in_size, in0, in1, out));
        }
        // Filled just above when it was empty or stale.
        slot.as_ref().expect("axis set above")
    }

    /// Resample the `sw`×`sh` packed RGB8 image `src` (rows of `sw * 3`
    /// bytes), restricted to `area`, into `out`: `dw`×`dh` packed RGB8.
    /// The caller checks the sizes (`src` holds the image, all sizes > 0,
    /// `area` inside the image).
    pub fn resize(
        &mut self,
        src: &[u8],
        (sw, sh): (u32, u32),
        area: SourceBox,
        (dw, dh): (u32, u32),
        out: &mut [u8],
    ) {
        let [x0, y0, x1, y1] = area;
        let need_h = dw != sw || x0 != 0.0 || x1 != dw as f32;
        let need_v = dh != sh || y0 != 0.0 || y1 != dh as f32;
        let in_row = sw as usize * 3;
        let out_row = dw as usize * 3;
        let Resampler {
            horizontal,
            vertical,
            tmp,
            acc,
        } = self;
        let v = Self::axis(vertical, sh, y0, y1, dh);
        // Source rows the vertical pass reads (all of them when it is skipped).
        let (first, last) = if need_v {
            let (f, _) = v.bounds[0];
            let (l, n) = v.bounds[dh as usize - 1];
            (f, l + n)
        } else {
            (0, sh as usize)
        };
        let rows: &[u8] = if need_h {
            let h = Self::axis(horizontal, sw, x0, x1, dw);
            let dst: &mut [u8] = if need_v {
                tmp.clear();
                tmp.resize((last - first) * out_row, 0);
                tmp
            } else {
                &mut out[..]
            };
            for (r, o) in dst.chunks_exact_mut(out_row).enumerate() {
                let row = &src[(first + r) * in_row..(first + r + 1) * in_row];
                horizontal_row(h, row, o);
            }
            if !need_v {
                return;
            }
            tmp
        } else {
            &src[first * in_row..last * in_row]
        };
        if !need_v {
            // Neither axis changes: a copy, as Pillow's resize returns.
            out.copy_from_slice(&src[..out.len()]);
            return;
        }
        acc.clear();
        acc.resize(out_row, 0);
        for (yy, o) in out.chunks_exact_mut(out_row).enumerate() {
            let (ymin, k) = v.taps(yy);
            acc.fill(HALF);
            for (t, &w) in k.iter().enumerate() {
                let row = &rows[(ymin - first + t) * out_row..(ymin - first + t + 1) * out_row];
                for (a, &p) in acc.iter_mut().zip(row) {
                    *a = a.wrapping_add(i32::from(p).wrapping_mul(w));
                }
            }
            for (d, &a) in o.iter_mut().zip(acc.iter()) {
                *d = clip8(a);
            }
        }
    }
}

/// One output row of the horizontal pass.
fn horizontal_row(h: &Axis, row: &[u8], out: &mut [u8]) {
    match h.window {
        1 => horizontal_window::<1>(h, row, out),
        2 => horizontal_window::<2>(h, row, out),
        3 => horizontal_window::<3>(h, row, out),
        4 => horizontal_window::<4>(h, row, out),
        5 => horizontal_window::<5>(h, row, out),
        6 => horizontal_window::<6>(h, row, out),
        7 => horizontal_window::<7>(h, row, out),
        8 => horizontal_window::<8>(h, row, out),
        9 => horizontal_window::<9>(h, row, out),
        _ => horizontal_window::<0>(h, row, out),
    }
}

/// [`horizontal_row`] for a window of `K` pixels (0: `h.window`, unknown at
/// compile time).
fn horizontal_window<const K: usize>(h: &Axis, row: &[u8], out: &mut [u8]) {
    let n = if K == 0 { h.window } else { K };
    for ((o, &start), k) in out
        .chunks_exact_mut(3)
        .zip(&h.starts)
        .zip(h.windowed.chunks_exact(n))
    {
        let px = &row[start * 3..(start + n) * 3];
        let (mut r, mut g, mut b) = (HALF, HALF, HALF);
        for t in 0..n {
            r = r.wrapping_add(i32::from(px[3 * t]).wrapping_mul(k[t]));
            g = g.wrapping_add(i32::from(px[3 * t + 1]).wrapping_mul(k[t]));
            b = b.wrapping_add(i32::from(px[3 * t + 2]).wrapping_mul(k[t]));
        }
        o[0] = clip8(r);
        o[1] = clip8(g);
        o[2] = clip8(b);
    }
}
