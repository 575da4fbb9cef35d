//! The loop's HTML report: a page with the figures, the timeline, and
//! pictures (PNG, drawn with the ptychography crate's plotters-based
//! pictures) of truth, ePIE and edge images, quality, loss, WAN bytes and
//! latency.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use diaspora_ptycho::metrics::{align_ramp, compare};
use diaspora_ptycho::pictures::{self, Panel, Scale, Series};
use diaspora_ptycho::workflow::masked_parts;
use ndarray::{s, Array2};

use crate::online::{LoopConfig, Shared, Summary};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `index.html` and its pictures to `dir`; returns the page's path.
pub fn write(dir: &Path, cfg: &LoopConfig, shared: &Shared, summary: &Summary) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut pics: Vec<(&str, &str)> = Vec::new();

    // Scans: truth, ePIE and edge phase side by side, for the scans that
    // show the loop — the first warm-up scan, the first edge scans ePIE
    // also made, the bad scan, the last edge scan.
    let truth = shared.truth.lock();
    let epie = shared.epie.lock();
    let edge = shared.edge.lock();
    let bad = shared.bad_scan.lock().clone();
    let mut chosen: Vec<String> = Vec::new();
    if let Some(first) = epie.keys().next() {
        chosen.push(first.clone());
    }
    chosen.extend(
        edge.keys()
            .filter(|k| epie.contains_key(*k) && Some(*k) != bad.as_ref())
            .take(2)
            .cloned(),
    );
    if let Some(b) = &bad {
        chosen.push(b.clone());
    }
    if let Some(last) = edge.keys().next_back() {
        chosen.push(last.clone());
    }
    chosen.dedup();
    let mut owned: Vec<Vec<(String, Array2<f32>)>> = Vec::new();
    for scan in &chosen {
        let Some(t) = truth.get(scan) else { continue };
        // The region: ePIE's when it ran, else the edge image's extent.
        let r = epie.get(scan);
        let side = r.map_or(t.nrows(), |r| r.object.nrows());
        let t = t.slice(s![..side, ..side]).to_owned();
        let mask = match r {
            Some(r) => r.mask.clone(),
            None => Array2::from_elem((side, side), true),
        };
        let mut row = Vec::new();
        let shown = |a: &Array2<diaspora_ptycho::C32>| {
            let a = align_ramp(a, &t, &mask);
            masked_parts(&a, &mask).1
        };
        row.push((format!("{scan} truth phase"), masked_parts(&t, &mask).1));
        if let Some(r) = r {
            row.push((format!("{scan} ePIE phase"), shown(&r.object)));
        }
        if let Some(e) = edge.get(scan) {
            let o = e.object.slice(s![..side, ..side]).to_owned();
            let q = r
                .and_then(|r| compare(&o, &r.object, &r.mask).ok())
                .map_or(String::new(), |q| format!(", SSIM {:.2}", q.phase_ssim));
            row.push((format!("{scan} edge v{} phase{q}", e.version), shown(&o)));
        }
        owned.push(row);
    }
    let rows: Vec<Vec<Panel<'_>>> = owned
        .iter()
        .map(|r| {
            r.iter()
                .map(|(title, v)| Panel {
                    title: title.clone(),
                    values: v,
                    scale: Scale::Diverging,
                })
                .collect()
        })
        .collect();
    if !rows.is_empty() {
        pictures::panels(&dir.join("scans.png"), &rows, 2)?;
        pics.push((
            "scans.png",
            "Phase images per scan over time: the truth, ePIE at HPC, the surrogate at the edge",
        ));
    }
    drop((truth, epie, edge));

    let vals = shared.validations.lock().clone();
    if !vals.is_empty() {
        let q: Vec<f64> = vals.iter().map(|v| v.phase_ssim).collect();
        let th = vec![cfg.switch_ssim; q.len()];
        pictures::curves(
            &dir.join("quality.png"),
            "held-out phase SSIM against ePIE",
            "validation",
            "SSIM",
            &[
                Series {
                    name: "surrogate",
                    values: &q,
                },
                Series {
                    name: "switch threshold",
                    values: &th,
                },
            ],
            false,
        )?;
        pics.push((
            "quality.png",
            "Surrogate quality over time (validations every few steps)",
        ));
    }
    let losses = shared.losses.lock().clone();
    if !losses.is_empty() {
        pictures::curves(
            &dir.join("loss.png"),
            "training loss",
            "step",
            "loss",
            &[Series {
                name: "mini-batch loss",
                values: &losses,
            }],
            true,
        )?;
        pics.push(("loss.png", "Training loss"));
    }
    let wan: Vec<f64> = shared
        .wan_series
        .lock()
        .iter()
        .map(|(_, b)| *b as f64 / 1e6)
        .collect();
    if !wan.is_empty() {
        pictures::curves(
            &dir.join("wan.png"),
            "frames sent over the WAN (cumulative)",
            "scan",
            "MB",
            &[Series {
                name: "uplink",
                values: &wan,
            }],
            false,
        )?;
        pics.push((
            "wan.png",
            "WAN bytes: every frame during warm-up, one scan in k after the switch",
        ));
    }

    let lat = shared.latencies_ms.lock().clone();
    if !lat.is_empty() {
        let bound = vec![1000.0; lat.len()];
        pictures::curves(
            &dir.join("latency.png"),
            "detector → edge latency per frame",
            "frame",
            "ms",
            &[
                Series {
                    name: "latency",
                    values: &lat,
                },
                Series {
                    name: "QoS bound",
                    values: &bound,
                },
            ],
            true,
        )?;
        pics.push((
            "latency.png",
            "Latency of every frame from the detector to the edge (the QoS policy's bound: 1 s)",
        ));
    }

    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>diaspora demo — the ptychography loop</title>\
         <style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}\
         td,th{{padding:2px 8px;text-align:left}}img{{max-width:100%;border:1px solid #ccc}}\
         .fault{{color:#b00}}.rollback{{color:#06c}}.switch{{font-weight:bold}}</style></head><body>\
         <h1>The ptychography online-training loop</h1>\
         <p>{} scans of {} positions ({} objects), detector at {} frames/s. Warm-up: ePIE at HPC, \
         the surrogate trained online; switch at held-out phase SSIM ≥ {}; then edge inference with \
         one scan in {} sent to HPC for fine-tuning.</p><h2>Figures</h2><table>",
        cfg.scans,
        cfg.positions,
        cfg.kind.name(),
        cfg.rate,
        cfg.switch_ssim,
        cfg.fine_tune_every
    );
    let v = serde_json::to_value(summary)?;
    if let Some(map) = v.as_object() {
        for (k, x) in map {
            let _ = write!(
                html,
                "<tr><th>{}</th><td>{}</td></tr>",
                esc(k),
                esc(&x.to_string())
            );
        }
    }
    html.push_str("</table><h2>Timeline</h2><table><tr><th>t (s)</th><th>what</th><th></th></tr>");
    for e in shared.events.lock().iter() {
        let _ = write!(
            html,
            "<tr class=\"{}\"><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.kind),
            e.t_s,
            esc(&e.kind),
            esc(&e.text)
        );
    }
    html.push_str("</table>");
    for (file, caption) in &pics {
        let _ = write!(
            html,
            "<h2>{}</h2><img src=\"{}\" alt=\"{}\">",
            esc(caption),
            file,
            esc(caption)
        );
    }
    // Once loaded, the page says how many of its pictures the browser
    // decoded (a headless browser's DOM dump shows it; the test reads it).
    html.push_str(
        "<script>window.addEventListener('load',function(){var i=document.images,n=0;\
         for(var k=0;k<i.length;k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}\
         document.body.setAttribute('data-images',i.length);\
         document.body.setAttribute('data-images-decoded',n);});</script>",
    );
    html.push_str("</body></html>\n");
    let page = dir.join("index.html");
    std::fs::write(&page, html).with_context(|| format!("writing {}", page.display()))?;
    Ok(page)
}
