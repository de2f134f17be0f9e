//! The focus figure of a frame (issue 20): the variance of the Laplacian of
//! its small luma image ([`super::luma`], one pixel per 8×8 block). A sharp
//! image has strong local contrast, so a large variance; defocus blurs
//! edges and the figure drops. It is relative: compare it while turning
//! the lens on one scene (the peak is the best focus), not between scenes.

/// Variance of the 4-neighbour Laplacian over the interior pixels of a
/// `w`×`h` grey image (rows of `w` bytes); 0 for images under 3×3.
pub(crate) fn laplacian_variance(luma: &[u8], w: u32, h: u32) -> f64 {
    let (w, h) = (w as usize, h as usize);
    if w < 3 || h < 3 || luma.len() < w * h {
        return 0.0;
    }
    let (mut sum, mut sum_sq, mut n) = (0f64, 0f64, 0f64);
    for y in 1..h - 1 {
        let row = &luma[y * w..(y + 1) * w];
        let up = &luma[(y - 1) * w..y * w];
        let down = &luma[(y + 1) * w..(y + 2) * w];
        for x in 1..w - 1 {
            let l = 4 * i32::from(row[x])
                - i32::from(row[x - 1])
                - i32::from(row[x + 1])
                - i32::from(up[x])
                - i32::from(down[x]);
            let l = f64::from(l);
            sum += l;
            sum_sq += l * l;
            n += 1.0;
        }
    }
    let mean = sum / n;
    (sum_sq / n - mean * mean).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w`×`h` checkerboard of `cell`-pixel squares, 40 and 200.
    fn checker(w: usize, h: usize, cell: usize) -> Vec<u8> {
        (0..h)
            .flat_map(|y| {
                (0..w).map(move |x| {
                    if (x / cell + y / cell) % 2 == 0 {
                        40
                    } else {
                        200
                    }
                })
            })
            .collect()
    }

    /// A 3×3 box blur (edges clamped).
    fn blur(img: &[u8], w: usize, h: usize) -> Vec<u8> {
        let at = |x: isize, y: isize| {
            let x = x.clamp(0, w as isize - 1) as usize;
            let y = y.clamp(0, h as isize - 1) as usize;
            u32::from(img[y * w + x])
        };
        (0..h as isize)
            .flat_map(|y| {
                (0..w as isize).map(move |x| {
                    let s: u32 = (-1..=1)
                        .flat_map(|dy| (-1..=1).map(move |dx| at(x + dx, y + dy)))
                        .sum();
                    (s / 9) as u8
                })
            })
            .collect()
    }

    // Catches: a figure that does not fall as the image blurs (the point of
    // it for focusing), that is not zero for a flat image, or that reads
    // out of bounds for tiny or short images.
    #[test]
    fn sharper_is_higher() {
        let (w, h) = (40, 30);
        let sharp = checker(w, h, 4);
        let soft = blur(&sharp, w, h);
        let softer = blur(&soft, w, h);
        let f = |i: &[u8]| laplacian_variance(i, w as u32, h as u32);
        assert!(f(&sharp) > f(&soft), "{} {}", f(&sharp), f(&soft));
        assert!(f(&soft) > f(&softer), "{} {}", f(&soft), f(&softer));
        assert_eq!(
            laplacian_variance(&vec![90; w * h], w as u32, h as u32),
            0.0
        );
        assert_eq!(laplacian_variance(&[1, 2, 3, 4], 2, 2), 0.0);
        assert_eq!(laplacian_variance(&[1, 2, 3], 3, 3), 0.0);
    }
}
