//! The overview's chart: records per time bucket, stacked by outcome,
//! drawn as SVG on the server with plotters (no script, no CDN).

use plotters::prelude::*;

use crate::audit::Outcome;

/// Outcomes in stacking order, with their colours (the same as the
/// legend's in console.css; the table below the chart has the numbers).
const STACK: [(Outcome, RGBColor); 4] = [
    (Outcome::Issued, RGBColor(46, 125, 50)),
    (Outcome::Denied, RGBColor(198, 40, 40)),
    (Outcome::Error, RGBColor(239, 108, 0)),
    (Outcome::Revoked, RGBColor(84, 110, 122)),
];

/// An SVG of `buckets` (labels, ascending) with counts per outcome.
pub fn stacked(buckets: &[String], counts: &dyn Fn(usize, Outcome) -> u64) -> Result<String, String> {
    let mut svg = String::new();
    {
        let width = 900u32;
        let root = SVGBackend::with_string(&mut svg, (width, 280)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let total = |i: usize| STACK.iter().map(|(o, _)| counts(i, *o)).sum::<u64>();
        let top = (0..buckets.len()).map(total).max().unwrap_or(0).max(1);
        let n = u32::try_from(buckets.len().max(1)).unwrap_or(u32::MAX);
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0u32..n, 0u64..top + top / 10 + 1)
            .map_err(|e| e.to_string())?;
        let label_every = (n / 12).max(1);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(usize::try_from(n.min(12)).unwrap_or(12))
            .x_label_formatter(&|x| {
                if x % label_every == 0 {
                    buckets
                        .get(usize::try_from(*x).unwrap_or(usize::MAX))
                        .map(|b| b.get(5..).unwrap_or(b).replace('T', " "))
                        .unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .y_desc("records")
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, _) in buckets.iter().enumerate() {
            let x = u32::try_from(i).unwrap_or(u32::MAX);
            let mut base = 0u64;
            for (outcome, colour) in STACK {
                let count = counts(i, outcome);
                if count == 0 {
                    continue;
                }
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, base), (x + 1, base + count)],
                        colour.filled(),
                    )))
                    .map_err(|e| e.to_string())?;
                base += count;
            }
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
