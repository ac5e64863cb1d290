//! The page's two charts as inline SVG: cost against pass rate, and turn latency per model.

use std::fmt::Write as _;

use super::escape_markup;
use crate::report::summary::{ModelStats, Summary, percentile};
use crate::text::shorten;

/// Dots drawn per model in the latency strip; more turns are sampled evenly by rank.
pub(super) const MAX_DOTS: usize = 300;

/// A color per model, by its place in the summary.
pub(super) fn color(i: usize) -> &'static str {
    const PALETTE: [&str; 10] =
        ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948", "#9c755f", "#ff9da7", "#bab0ac"];
    PALETTE[i % PALETTE.len()]
}

/// A round upper bound for an axis (1, 2 or 5 times a power of ten) and its tick step.
pub(super) fn nice_axis(max: f64) -> (f64, f64) {
    if !(max.is_finite() && max > 0.0) {
        return (1.0, 0.25);
    }
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    ((max / step).ceil() * step, step)
}

/// A number as an axis label: no trailing zeros.
pub(super) fn tick_label(value: f64) -> String {
    let text = format!("{value:.8}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Cost against pass rate: a labelled point per model with its 95% interval as an error bar;
/// mean cost of a finished run across, pass rate up.
pub(super) fn cost_chart(summary: &Summary) -> String {
    let (width, height) = (480.0, 320.0);
    let (left, right, top, bottom) = (64.0, 24.0, 16.0, 48.0);
    let (plot_w, plot_h) = (width - left - right, height - top - bottom);
    let points: Vec<(usize, &ModelStats, f64, f64)> = summary
        .models()
        .iter()
        .enumerate()
        .filter_map(|(i, m)| Some((i, m, m.mean_cost_per_run()?, m.pass_rate()?)))
        .collect();
    let confidence = summary.confidence();
    let max_cost = points.iter().filter(|p| !p.1.tally.unpriced).map(|p| p.2).fold(0.0, f64::max);
    let (x_max, x_step) = nice_axis(max_cost);
    let x = |cost: f64| left + cost / x_max * plot_w;
    let y = |rate: f64| top + (1.0 - rate) * plot_h;
    let mut svg = format!(
        "<figure><svg id=\"cost-chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Cost against pass rate, one point per model\"><title>Cost against pass rate</title>"
    );
    for i in 0..=4 {
        let rate = f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\"/><text class=\"tick\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}%</text>",
            left + plot_w,
            y(rate),
            y(rate),
            left - 6.0,
            y(rate) + 4.0,
            i * 25
        );
    }
    let mut tick = 0.0;
    while tick <= x_max + x_step / 2.0 {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{top}\" y2=\"{}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(tick),
            x(tick),
            top + plot_h,
            x(tick),
            top + plot_h + 16.0,
            tick_label(tick)
        );
        tick += x_step;
    }
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">mean cost per run (USD)</text><text class=\"axis\" transform=\"translate(14 {}) rotate(-90)\" text-anchor=\"middle\">pass rate</text>",
        left + plot_w / 2.0,
        height - 8.0,
        top + plot_h / 2.0
    );
    // Labels nudged apart vertically so that close points stay readable.
    let mut labels: Vec<(f64, f64, usize)> =
        points.iter().map(|(i, m, cost, rate)| (x(if m.tally.unpriced { 0.0 } else { *cost }), y(*rate), *i)).collect();
    labels.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut placed: Vec<(f64, f64, usize)> = Vec::new();
    for (px, py, i) in labels {
        let mut ly = py + 4.0;
        while placed.iter().any(|(qx, qy, _)| (qy - ly).abs() < 13.0 && (qx - px).abs() < 150.0) {
            ly += 13.0;
        }
        placed.push((px, ly, i));
    }
    for (i, m, cost, rate) in &points {
        let cx = x(if m.tally.unpriced { 0.0 } else { *cost });
        let (_, ly, _) = placed.iter().find(|p| p.2 == *i).copied().unwrap_or((cx, y(*rate), *i));
        let right_side = cx < left + plot_w * 0.6;
        let (lx, anchor) = if right_side { (cx + 10.0, "start") } else { (cx - 10.0, "end") };
        let cost_text = if m.tally.unpriced {
            "unpriced".to_owned()
        } else {
            format!("${cost:.6} per run, ${:.6} in all", m.tally.cost_usd)
        };
        let fill = if m.tally.unpriced { "none" } else { color(*i) };
        let interval = confidence.of_model(&m.model).and_then(|c| c.interval);
        let interval_text = interval
            .map_or_else(String::new, |i| format!(" [95% interval {:.1}–{:.1}%]", i.low * 100.0, i.high * 100.0));
        if let Some(bar) = interval {
            // A vertical bar from the interval's low to its high end, capped at both.
            let (top_y, bottom_y) = (y(bar.high), y(bar.low));
            let _ = write!(
                svg,
                "<g class=\"error-bar\" data-model=\"{}\" data-low=\"{:.4}\" data-high=\"{:.4}\" stroke=\"{}\" stroke-width=\"1.5\"><line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{top_y:.1}\" y2=\"{bottom_y:.1}\"/><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{top_y:.1}\" y2=\"{top_y:.1}\"/><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{bottom_y:.1}\" y2=\"{bottom_y:.1}\"/></g>",
                escape_markup(&m.model.to_string()),
                bar.low,
                bar.high,
                color(*i),
                cx - 5.0,
                cx + 5.0,
                cx - 5.0,
                cx + 5.0,
            );
        }
        let _ = write!(
            svg,
            "<g class=\"point\"><title>{}: pass rate {:.1}% ({}/{}){interval_text}, {}</title><circle cx=\"{cx:.1}\" cy=\"{:.1}\" r=\"6\" fill=\"{fill}\" stroke=\"{}\" stroke-width=\"2\"/><text class=\"label\" x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"{anchor}\">{}{}</text></g>",
            escape_markup(&m.model.to_string()),
            rate * 100.0,
            m.passed,
            m.runs,
            cost_text,
            y(*rate),
            color(*i),
            escape_markup(&m.model.to_string()),
            if m.tally.unpriced { " (unpriced)" } else { "" },
        );
    }
    svg.push_str(
        "</svg><figcaption>Each point is a model: its pass rate against what one run cost on average, the bar its 95% interval. Up and to the left is better; bars that overlap much are not told apart.</figcaption></figure>",
    );
    svg
}

/// Turn latency per model: every turn as a dot (at most [`MAX_DOTS`], sampled by rank), the
/// middle half as a box, the median as a bar, p5 to p95 as whiskers.
pub(super) fn latency_chart(summary: &Summary) -> String {
    let models: Vec<(usize, &ModelStats)> =
        summary.models().iter().enumerate().filter(|(_, m)| !m.tally.turn_latencies_ms.is_empty()).collect();
    let row = 44.0;
    let (left, right, top, bottom) = (170.0, 24.0, 16.0, 48.0);
    let width = 480.0;
    let plot_w = width - left - right;
    let height = top + bottom + row * models.len().max(1) as f64;
    let p99 = models.iter().filter_map(|(_, m)| percentile(&m.tally.turn_latencies_ms, 99)).max().unwrap_or(0);
    let (x_max, x_step) = nice_axis(p99 as f64);
    let x = |ms: f64| left + ms.min(x_max) / x_max * plot_w;
    let mut svg = format!(
        "<figure><svg id=\"latency-chart\" viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"Turn latency per model\"><title>Turn latency per model</title>"
    );
    let mut tick = 0.0;
    while tick <= x_max + x_step / 2.0 {
        let _ = write!(
            svg,
            "<line class=\"grid\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{top}\" y2=\"{}\"/><text class=\"tick\" x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(tick),
            x(tick),
            height - bottom,
            x(tick),
            height - bottom + 16.0,
            tick_label(tick)
        );
        tick += x_step;
    }
    let _ = write!(
        svg,
        "<text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">turn latency (ms)</text>",
        left + plot_w / 2.0,
        height - 8.0
    );
    for (n, (i, m)) in models.iter().enumerate() {
        let mid = top + row * n as f64 + row / 2.0;
        let mut sorted = m.tally.turn_latencies_ms.clone();
        sorted.sort_unstable();
        let at = |p: usize| percentile(&sorted, p).unwrap_or(0) as f64;
        let beyond = sorted.iter().filter(|&&ms| ms as f64 > x_max).count();
        let label = if beyond > 0 { format!("{} ({beyond} beyond)", m.model) } else { m.model.to_string() };
        let _ = write!(
            svg,
            "<text class=\"label\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            mid + 4.0,
            escape_markup(&shorten(&label, 26))
        );
        let step = sorted.len().div_ceil(MAX_DOTS).max(1);
        svg.push_str("<g class=\"dots\">");
        for (k, ms) in sorted.iter().enumerate().filter(|(k, _)| k % step == 0) {
            // A fixed jitter from the rank, so that the page is the same every time.
            let jitter = ((crate::rng::mix64(k as u64) % 1000) as f64 / 1000.0 - 0.5) * (row * 0.55);
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.2\" fill=\"{}\"/>",
                x(*ms as f64),
                mid + jitter,
                color(*i)
            );
        }
        svg.push_str("</g>");
        let (p5, p25, p50, p75, p95) = (at(5), at(25), at(50), at(75), at(95));
        let _ = write!(
            svg,
            "<g class=\"box\"><title>{}: median {} ms, middle half {}–{} ms, p95 {} ms, {} turn(s)</title><line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{mid:.1}\" y2=\"{mid:.1}\"/><rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/><line class=\"median\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/></g>",
            escape_markup(&m.model.to_string()),
            p50,
            p25,
            p75,
            p95,
            sorted.len(),
            x(p5),
            x(p95),
            x(p25),
            mid - row * 0.3,
            (x(p75) - x(p25)).max(1.0),
            row * 0.6,
            x(p50),
            x(p50),
            mid - row * 0.34,
            mid + row * 0.34,
        );
    }
    if models.is_empty() {
        let _ = write!(
            svg,
            "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">no turn was played</text>",
            left + plot_w / 2.0,
            top + row / 2.0
        );
    }
    svg.push_str(
        "</svg><figcaption>Every turn of every run; the box holds the middle half, the bar is the median, the whiskers reach p5 and p95.</figcaption></figure>",
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(nice_axis(0.0), (1.0, 0.25));
        let (max, step) = nice_axis(0.00123);
        assert!((max - 0.0015).abs() < 1e-12 && (step - 0.0005).abs() < 1e-12, "{max} {step}");
        assert_eq!(nice_axis(8700.0), (10000.0, 2500.0));
        assert_eq!(nice_axis(100.0), (100.0, 25.0));
        assert_eq!(tick_label(0.0004), "0.0004");
        assert_eq!(tick_label(2500.0), "2500");
    }
}
