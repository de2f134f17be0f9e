//! Zones: named polygons over a source's frame, in normalized coordinates
//! (0..1 from the left and from the top, whatever the frame size), and the
//! point of a detection that decides whether it is inside one.
//!
//! This module owns the geometry only: validating a polygon (at least three
//! points, all within the frame, a non-zero area, no edge crossing another)
//! and testing a point against it. Which zones exist and which source they
//! belong to is configuration; what happens in them is the sightings'.

/// Why a polygon cannot be a zone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolygonError {
    #[error("a zone needs at least 3 points, got {0}")]
    TooFewPoints(usize),
    #[error(
        "point {index} ({x}, {y}) is outside the frame: coordinates are fractions from 0 to 1"
    )]
    OutOfRange { index: usize, x: f64, y: f64 },
    #[error("the points enclose no area (they are on one line or repeated)")]
    NoArea,
    #[error("edge {a} crosses edge {b}: the polygon intersects itself (list the points in order around the zone)")]
    SelfIntersecting { a: usize, b: usize },
}

/// A simple polygon in normalized frame coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    points: Vec<[f64; 2]>,
}

impl Polygon {
    /// Validate `points` (in order around the zone, either direction; the
    /// last connects back to the first).
    pub fn new(points: Vec<[f64; 2]>) -> Result<Polygon, PolygonError> {
        if points.len() < 3 {
            return Err(PolygonError::TooFewPoints(points.len()));
        }
        for (index, &[x, y]) in points.iter().enumerate() {
            if !(0.0..=1.0).contains(&x) || !(0.0..=1.0).contains(&y) {
                return Err(PolygonError::OutOfRange { index, x, y });
            }
        }
        let n = points.len();
        // Every pair of edges that do not share a vertex must not touch.
        for a in 0..n {
            for b in a + 1..n {
                if b == a + 1 || (a == 0 && b == n - 1) {
                    continue;
                }
                let e = |i: usize| (points[i], points[(i + 1) % n]);
                if segments_touch(e(a), e(b)) {
                    return Err(PolygonError::SelfIntersecting { a, b });
                }
            }
        }
        let twice_area: f64 = (0..n)
            .map(|i| {
                let ([x0, y0], [x1, y1]) = (points[i], points[(i + 1) % n]);
                x0 * y1 - x1 * y0
            })
            .sum();
        if twice_area.abs() < 1e-12 {
            return Err(PolygonError::NoArea);
        }
        Ok(Polygon { points })
    }

    pub fn points(&self) -> &[[f64; 2]] {
        &self.points
    }

    /// Whether the normalized point (`x`, `y`) is inside (even-odd rule; a
    /// point exactly on the left or top edge counts as inside, on the right
    /// or bottom edge as outside, so adjacent zones never both claim it).
    pub fn contains(&self, x: f64, y: f64) -> bool {
        let n = self.points.len();
        let mut inside = false;
        for i in 0..n {
            let ([xi, yi], [xj, yj]) = (self.points[i], self.points[(i + n - 1) % n]);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
        }
        inside
    }
}

/// Orientation of the triangle (p, q, r): >0 counter-clockwise, <0
/// clockwise, 0 collinear (within rounding).
fn orient(p: [f64; 2], q: [f64; 2], r: [f64; 2]) -> f64 {
    let v = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]);
    if v.abs() < 1e-12 {
        0.0
    } else {
        v
    }
}

/// Whether `r`, collinear with segment `p`–`q`, lies on it.
fn on_segment(p: [f64; 2], q: [f64; 2], r: [f64; 2]) -> bool {
    r[0] >= p[0].min(q[0])
        && r[0] <= p[0].max(q[0])
        && r[1] >= p[1].min(q[1])
        && r[1] <= p[1].max(q[1])
}

/// Whether two closed segments share a point.
fn segments_touch((p1, q1): ([f64; 2], [f64; 2]), (p2, q2): ([f64; 2], [f64; 2])) -> bool {
    let (d1, d2) = (orient(p1, q1, p2), orient(p1, q1, q2));
    let (d3, d4) = (orient(p2, q2, p1), orient(p2, q2, q1));
    if d1 * d2 < 0.0 && d3 * d4 < 0.0 {
        return true;
    }
    (d1 == 0.0 && on_segment(p1, q1, p2))
        || (d2 == 0.0 && on_segment(p1, q1, q2))
        || (d3 == 0.0 && on_segment(p2, q2, p1))
        || (d4 == 0.0 && on_segment(p2, q2, q1))
}

/// Whether `name` can name a zone: 1 to 64 ASCII letters, digits, `_`, `-`
/// or `.` (safe in URLs, MQTT topics and file names; the config refuses
/// others, the API answers 400 for them).
pub fn is_valid_zone_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Which point of a detection's box decides the zone it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anchor {
    /// The middle of the box's bottom edge: where a person or a car stands
    /// (Frigate's choice too).
    #[default]
    BottomCenter,
    /// The box's centre.
    Center,
}

impl Anchor {
    /// The anchor of a box (`x`, `y`, `w`, `h` in pixels of a `image_w` ×
    /// `image_h` frame), normalized; `None` for a frame without a size.
    pub fn point(self, [x, y, w, h]: [f64; 4], image_w: u32, image_h: u32) -> Option<(f64, f64)> {
        if image_w == 0 || image_h == 0 {
            return None;
        }
        let ax = (x + w / 2.0) / f64::from(image_w);
        let ay = match self {
            Anchor::BottomCenter => y + h,
            Anchor::Center => y + h / 2.0,
        } / f64::from(image_h);
        // A box clipped at the frame's bottom edge has its anchor on it: keep
        // it inside, where a zone drawn to the edge includes it.
        Some((ax.clamp(0.0, 1.0 - 1e-9), ay.clamp(0.0, 1.0 - 1e-9)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poly(p: &[[f64; 2]]) -> Result<Polygon, PolygonError> {
        Polygon::new(p.to_vec())
    }

    // Would catch a zone check that inverts inside/outside, ignores concave
    // parts, or depends on the points' direction.
    #[test]
    fn contains_by_even_odd_rule_in_either_direction() {
        // An L shape: the notch at the top right is outside.
        let l = [
            [0.1, 0.1],
            [0.5, 0.1],
            [0.5, 0.5],
            [0.9, 0.5],
            [0.9, 0.9],
            [0.1, 0.9],
        ];
        for pts in [l.to_vec(), l.iter().rev().copied().collect()] {
            let p = Polygon::new(pts).unwrap();
            assert!(p.contains(0.3, 0.3));
            assert!(p.contains(0.8, 0.8));
            assert!(!p.contains(0.8, 0.3), "notch");
            assert!(!p.contains(0.05, 0.5));
            assert!(!p.contains(0.5, 0.95));
        }
    }

    // Would catch two adjacent zones that both claim (or both miss) a point
    // on their shared edge.
    #[test]
    fn shared_edge_belongs_to_exactly_one_zone() {
        let left = poly(&[[0.0, 0.0], [0.5, 0.0], [0.5, 1.0], [0.0, 1.0]]).unwrap();
        let right = poly(&[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]).unwrap();
        for y in [0.1, 0.5, 0.9] {
            assert!(left.contains(0.5, y) != right.contains(0.5, y), "y {y}");
        }
    }

    // Would catch a config that accepts a zone it cannot evaluate: every
    // refusal says what is wrong.
    #[test]
    fn invalid_polygons_are_refused_with_the_reason() {
        assert_eq!(
            poly(&[[0.0, 0.0], [1.0, 1.0]]),
            Err(PolygonError::TooFewPoints(2))
        );
        assert!(matches!(
            poly(&[[0.0, 0.0], [1.2, 0.0], [0.5, 0.5]]),
            Err(PolygonError::OutOfRange { index: 1, .. })
        ));
        assert_eq!(
            poly(&[[0.0, 0.0], [0.5, 0.5], [1.0, 1.0]]),
            Err(PolygonError::NoArea)
        );
        // A bow tie: edges 0 and 2 cross.
        let e = poly(&[[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]).unwrap_err();
        assert_eq!(e, PolygonError::SelfIntersecting { a: 0, b: 2 });
        assert!(e.to_string().contains("intersects itself"));
        // A vertex touching a non-adjacent edge is refused too.
        assert!(matches!(
            poly(&[[0.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.5, 1.0]]),
            Err(PolygonError::SelfIntersecting { .. })
        ));
    }

    // Would catch the anchor taken at the box's top (a person's head over
    // the door line) or not normalized by the frame size.
    #[test]
    fn anchors_are_normalized_box_points() {
        let b = [100.0, 50.0, 40.0, 100.0];
        assert_eq!(Anchor::BottomCenter.point(b, 400, 200), Some((0.3, 0.75)));
        assert_eq!(Anchor::Center.point(b, 400, 200), Some((0.3, 0.5)));
        assert_eq!(Anchor::Center.point(b, 0, 200), None);
        // A box clipped at the bottom edge stays inside the frame.
        let (_, y) = Anchor::BottomCenter
            .point([0.0, 100.0, 10.0, 100.0], 400, 200)
            .unwrap();
        assert!(y < 1.0);
    }
}
