//! The History page's chart, rendered on the server as SVG: sightings per
//! label per bucket (hour) from the store's summary rows, one stacked bar
//! per bucket. Colours come from classes (`s0`..`s7` in app.css), never
//! inline styles, so the page keeps its strict CSP.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::store::SummaryRow;

/// Labels beyond this many share the last colour.
const COLOURS: usize = 8;
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 160.0;
const PAD: f64 = 20.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The SVG of `rows` over `buckets` buckets of `bucket_ns` from `since_ns`,
/// with `title` as its accessible name, and the legend (label, colour
/// class) in the order of the colours.
pub(crate) fn render(
    title: &str,
    rows: &[SummaryRow],
    since_ns: i64,
    bucket_ns: i64,
    buckets: usize,
) -> (String, Vec<(String, String)>) {
    let mut labels: BTreeMap<&str, u64> = BTreeMap::new();
    let mut per_bucket: BTreeMap<usize, Vec<(&str, u64)>> = BTreeMap::new();
    for r in rows {
        let i = (r.bucket_start_ns - since_ns).div_euclid(bucket_ns.max(1));
        let Ok(i) = usize::try_from(i) else { continue };
        if i >= buckets {
            continue;
        }
        *labels.entry(&r.label).or_default() += r.count;
        per_bucket.entry(i).or_default().push((&r.label, r.count));
    }
    // Most frequent labels get the first colours.
    let mut order: Vec<(&str, u64)> = labels.into_iter().collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let colour = |label: &str| {
        let i = order.iter().position(|(l, _)| *l == label).unwrap_or(0);
        format!("s{}", i.min(COLOURS - 1))
    };
    let max = per_bucket
        .values()
        .map(|v| v.iter().map(|(_, c)| c).sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let bar_w = (WIDTH - 2.0 * PAD) / buckets.max(1) as f64;
    let scale = (HEIGHT - 2.0 * PAD) / max as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">\
         <title>{}</title>\
         <line class=\"axis\" x1=\"{PAD}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\"/>\
         <text class=\"tick\" x=\"2\" y=\"{PAD}\">{max}</text>\
         <text class=\"tick\" x=\"2\" y=\"{y}\">0</text>",
        escape(title),
        escape(title),
        y = HEIGHT - PAD,
        x2 = WIDTH - PAD,
    );
    for (i, stack) in &per_bucket {
        let x = PAD + *i as f64 * bar_w;
        let mut top = HEIGHT - PAD;
        for (label, count) in stack {
            let h = *count as f64 * scale;
            top -= h;
            let _ = write!(
                svg,
                "<rect class=\"{}\" x=\"{x:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{h:.1}\"><title>{}: {count}</title></rect>",
                colour(label),
                (bar_w - 1.0).max(0.5),
                escape(label)
            );
        }
    }
    svg.push_str("</svg>");
    let legend = order
        .iter()
        .map(|(l, _)| (l.to_string(), colour(l)))
        .collect();
    (svg, legend)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bucket: i64, label: &str, count: u64) -> SummaryRow {
        SummaryRow {
            bucket_start_ns: bucket,
            label: label.into(),
            count,
            seconds: 1.0,
        }
    }

    // Catches: a label's markup injected into the page (labels come from a
    // model's file), rows outside the range drawn, the tallest bar not
    // reaching the top, or labels without a legend entry.
    #[test]
    fn bars_stack_per_bucket_and_labels_are_escaped() {
        let rows = vec![
            row(0, "cat", 2),
            row(0, "<script>", 1),
            row(10, "cat", 3),
            row(-10, "cat", 50),
            row(1000, "cat", 50),
        ];
        let (svg, legend) = render("Per hour", &rows, 0, 10, 24);
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert_eq!(
            legend,
            vec![
                ("cat".to_string(), "s0".to_string()),
                ("<script>".to_string(), "s1".to_string())
            ]
        );
        // Bucket 0 and 10 both total 3: the max tick says 3.
        assert!(svg.contains(">3</text>"), "{svg}");
        let (empty, legend) = render("x", &[], 0, 10, 24);
        assert!(empty.starts_with("<svg") && empty.ends_with("</svg>"));
        assert!(legend.is_empty());
    }
}
