//! The HTML report of a twin run: throughput and latency over time with the
//! fault windows shaded, the assertions and the figures. One self-contained
//! file (inline SVG, no scripts, no external assets) that opens anywhere.
//!
//! The charts are drawn directly as SVG: two line charts need a few dozen
//! lines, and a plotting crate would pull a font and raster stack into the
//! build for nothing.

// SVG fragments are written as raw multi-line strings, each ending in a
// newline so the generated file stays readable.
#![allow(clippy::write_with_newline)]

use std::fmt::Write;

use crate::analysis::Analysis;

/// A fault to shade on the charts.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    /// Start, seconds since the run began.
    pub start_s: f64,
    /// End, seconds since the run began (== start for instantaneous faults).
    pub end_s: f64,
    /// What happened, e.g. "outage wan" or "SIGKILL hpc".
    pub label: String,
}

/// One assertion and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What was asserted, e.g. "lost = 0".
    pub what: String,
    /// The measured value, as text.
    pub measured: String,
    /// Whether it held.
    pub passed: bool,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Series<'a> {
    name: &'a str,
    color: &'a str,
    points: Vec<(f64, f64)>,
}

/// A line chart as an SVG element.
fn chart(
    title: &str,
    y_label: &str,
    series: &[Series],
    faults: &[FaultWindow],
    x_max: f64,
) -> String {
    let (w, h, left, right, top, bottom) = (860.0, 280.0, 70.0, 20.0, 30.0, 40.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let y_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-9)
        * 1.1;
    let x_max = x_max.max(1.0);
    let x = |v: f64| left + v / x_max * pw;
    let y = |v: f64| top + ph - v / y_max * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{t}">
<text x="{left}" y="18" font-size="14" font-weight="bold">{t}</text>
"#,
        t = esc(title)
    );
    for f in faults {
        let (x0, x1) = (x(f.start_s), x(f.end_s.max(f.start_s)));
        let width = (x1 - x0).max(2.0);
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{top}" width="{width:.1}" height="{ph}" fill="#f4a261" fill-opacity="0.25"><title>{l}</title></rect>
<text x="{tx:.1}" y="{ty}" font-size="10" fill="#b5651d">{l}</text>
"##,
            tx = x0 + 2.0,
            ty = top + 12.0,
            l = esc(&f.label)
        );
    }
    // Axes and ticks.
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="#333"/>
"##,
        b = top + ph,
        r = left + pw
    );
    for i in 0..=5 {
        let (vx, vy) = (x_max * i as f64 / 5.0, y_max * i as f64 / 5.0);
        let _ = write!(
            s,
            r##"<text x="{tx:.1}" y="{ty}" font-size="10" text-anchor="middle">{vx:.0}</text><text x="{lx}" y="{ly:.1}" font-size="10" text-anchor="end">{vy}</text><line x1="{left}" y1="{ly0:.1}" x2="{r}" y2="{ly0:.1}" stroke="#ddd"/>
"##,
            tx = x(vx),
            ty = top + ph + 14.0,
            lx = left - 4.0,
            ly = y(vy) + 3.0,
            ly0 = y(vy),
            r = left + pw,
            vy = human(vy)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{cx:.1}" y="{by}" font-size="11" text-anchor="middle">time (s)</text><text x="14" y="{cy:.1}" font-size="11" text-anchor="middle" transform="rotate(-90 14 {cy:.1})">{yl}</text>
"#,
        cx = left + pw / 2.0,
        by = h - 6.0,
        cy = top + ph / 2.0,
        yl = esc(y_label)
    );
    for (k, ser) in series.iter().enumerate() {
        let pts: Vec<String> = ser
            .points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", x(*a), y(*b)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="1.8" points="{p}"/><text x="{lx:.1}" y="{ly}" font-size="11" fill="{c}">{n}</text>
"#,
            c = ser.color,
            p = pts.join(" "),
            lx = left + pw - 160.0 + k as f64 * 85.0,
            ly = top - 8.0,
            n = esc(ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn human(v: f64) -> String {
    match v {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// The services' timelines (the ptychography loop's stages), merged in
/// time order, with each one's summary: a section of the report.
pub fn services_section(
    services: &std::collections::BTreeMap<String, crate::results::ServiceFigures>,
) -> String {
    if services.is_empty() {
        return String::new();
    }
    let mut events: Vec<(f64, &str, &str, &str)> = Vec::new();
    for (host, f) in services {
        for (t, kind, text) in &f.events {
            events.push((*t, host, kind, text));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rows = String::new();
    for (t, host, kind, text) in events {
        let _ = write!(
            rows,
            "<tr><td>{t:.1} s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(host),
            esc(kind),
            esc(text)
        );
    }
    let mut summaries = String::new();
    for (host, f) in services {
        let _ = write!(
            summaries,
            "<h3>{}</h3><pre>{}</pre>",
            esc(host),
            esc(&f
                .summary
                .as_ref()
                .map_or("no summary: it did not finish".into(), |v| {
                    serde_json::to_string_pretty(v).unwrap_or_default()
                }))
        );
    }
    format!(
        "<h2>Services: phases and events</h2><table><tr><th>t</th><th>service</th><th>kind</th><th>event</th></tr>{rows}</table>{summaries}"
    )
}

/// Renders the whole report (`sections`: HTML placed before the
/// assertions, e.g. [`services_section`]).
///
/// ```
/// use diaspora_twin::analysis::{analyze, AckRecord, ConsumeRecord};
/// use diaspora_twin::report::{html_report, Check, FaultWindow};
/// let a = analyze(&[AckRecord { id: 1, partition: 0, offset: 0, acked_us: 0, fate: None }],
///                 &[ConsumeRecord { id: Some(1), partition: 0, offset: 0, quality: None, timestamp_us: 0, latency_us: 9 }], 0);
/// let html = html_report("demo", &a, &[FaultWindow { start_s: 0.0, end_s: 1.0, label: "outage".into() }],
///                        &[Check { what: "lost = 0".into(), measured: "0".into(), passed: true }], "", "{}");
/// assert!(html.contains("<svg") && html.contains("outage") && html.contains("PASSED"));
/// ```
pub fn html_report(
    scenario: &str,
    analysis: &Analysis,
    faults: &[FaultWindow],
    checks: &[Check],
    sections: &str,
    results_json: &str,
) -> String {
    let passed = checks.iter().all(|c| c.passed);
    let x_max = analysis.timeline.len() as f64;
    let t = |f: fn(&crate::analysis::Second) -> f64| -> Vec<(f64, f64)> {
        analysis
            .timeline
            .iter()
            .map(|s| (s.t_s as f64 + 0.5, f(s)))
            .collect()
    };
    let throughput = chart(
        "Throughput",
        "items / s",
        &[
            Series {
                name: "acked",
                color: "#2a9d8f",
                points: t(|s| s.acked as f64),
            },
            Series {
                name: "consumed",
                color: "#264653",
                points: t(|s| s.consumed as f64),
            },
        ],
        faults,
        x_max,
    );
    let latency = chart(
        "Latency p99 (producer → consumer)",
        "ms",
        &[Series {
            name: "p99",
            color: "#e76f51",
            points: t(|s| s.latency_us_p99 as f64 / 1000.0),
        }],
        faults,
        x_max,
    );
    let mut rows = String::new();
    for c in checks {
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(&c.what),
            esc(&c.measured),
            if c.passed { "ok" } else { "bad" },
            if c.passed { "passed" } else { "FAILED" }
        );
    }
    let mut quality_rows = String::new();
    for (q, n) in &analysis.quality_mix {
        let _ = write!(quality_rows, "<tr><td>{}</td><td>{n}</td></tr>", esc(q));
    }
    let quality = if analysis.quality_mix.keys().any(|q| q != "original")
        || analysis.reduced_away + analysis.shed > 0
    {
        format!(
            "<h2>Delivered by quality</h2><table><tr><th>quality</th><th>items</th></tr>{quality_rows}\
             <tr><td>reduced away at the producer</td><td>{}</td></tr>\
             <tr><td>shed at the producer</td><td>{}</td></tr></table>",
            analysis.reduced_away, analysis.shed
        )
    } else {
        String::new()
    };
    let mut fault_rows = String::new();
    for f in faults {
        let _ = write!(
            fault_rows,
            "<tr><td>{:.1} s</td><td>{:.1} s</td><td>{}</td></tr>",
            f.start_s,
            f.end_s,
            esc(&f.label)
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>diaspora twin: {name}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 920px; }}
.verdict {{ font-size: 1.4em; font-weight: bold; padding: .3em .6em; display: inline-block; border-radius: 4px; }}
.pass {{ background: #d8f3dc; color: #1b4332; }} .fail {{ background: #ffccd5; color: #800f2f; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: .3em .7em; text-align: left; }}
.ok {{ color: #1b4332; }} .bad {{ color: #800f2f; font-weight: bold; }}
.figures span {{ display: inline-block; margin-right: 1.5em; }}
pre {{ background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: .8em; }}
</style></head><body>
<h1>Twin scenario <code>{name}</code></h1>
<p class="verdict {cls}">{verdict}</p>
<p class="figures"><span>acked <b>{acked}</b></span><span>consumed <b>{consumed}</b></span><span>lost <b>{lost}</b></span><span>duplicated <b>{dup}</b></span><span>latency p50 <b>{p50:.1} ms</b></span><span>p99 <b>{p99:.1} ms</b></span></p>
{throughput}
{latency}
{quality}
{sections}
<h2>Assertions</h2><table><tr><th>assertion</th><th>measured</th><th>outcome</th></tr>{rows}</table>
<h2>Faults</h2><table><tr><th>from</th><th>to</th><th>fault</th></tr>{fault_rows}</table>
<h2>Results JSON</h2><pre>{json}</pre>
</body></html>
"#,
        name = esc(scenario),
        cls = if passed { "pass" } else { "fail" },
        verdict = if passed { "PASSED" } else { "FAILED" },
        acked = analysis.acked,
        consumed = analysis.consumed,
        lost = analysis.lost,
        dup = analysis.duplicated,
        p50 = analysis.latency_us_p50 as f64 / 1000.0,
        p99 = analysis.latency_us_p99 as f64 / 1000.0,
        json = esc(results_json),
    )
}
