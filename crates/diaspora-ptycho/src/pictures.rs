//! Pictures a person looks at: objects side by side (truth, ePIE,
//! surrogate; amplitude above phase), the probe, and curves (the Fourier
//! error, the training loss), as PNG files.
//!
//! Images are composed with the `image` crate, each panel scaled by its own
//! range over the whole panel (amplitude in grey, phase on a blue–white–red
//! scale), and titled with plotters, which also draws the curves. The font
//! is DejaVu Sans Mono, vendored in `assets/` (its licence beside it), so
//! the pictures look the same on a machine without fonts.

use std::path::Path;
use std::sync::Once;

use image::{Rgb, RgbImage};
use ndarray::Array2;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::{PtychoError, Result, C32};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");

fn font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TrueType font, compiled in.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

fn picture<E: std::fmt::Display>(e: E) -> PtychoError {
    PtychoError::Picture(e.to_string())
}

/// How a panel's values become colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Black to white (amplitudes, intensities).
    Grey,
    /// Blue through white to red (phases; white at the middle of the range).
    Diverging,
}

/// One titled image of a picture.
pub struct Panel<'a> {
    /// Its title.
    pub title: String,
    /// Its values.
    pub values: &'a Array2<f32>,
    /// Its colours.
    pub scale: Scale,
}

fn colour(v: f32, scale: Scale) -> Rgb<u8> {
    let t = v.clamp(0.0, 1.0);
    match scale {
        Scale::Grey => {
            let g = (t * 255.0).round() as u8;
            Rgb([g, g, g])
        }
        Scale::Diverging => {
            let (r, g, b) = if t < 0.5 {
                let s = t / 0.5;
                (s, s, 1.0)
            } else {
                let s = (1.0 - t) / 0.5;
                (1.0, s, s)
            };
            Rgb([(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8])
        }
    }
}

/// Writes `rows` of panels as one PNG: each panel at `zoom`× its pixels,
/// titled above. Panels of a row may differ in size.
pub fn panels(path: &Path, rows: &[Vec<Panel<'_>>], zoom: u32) -> Result<()> {
    font();
    let zoom = zoom.max(1);
    let (pad, title_h) = (8u32, 22u32);
    let row_h: Vec<u32> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|p| p.values.nrows() as u32 * zoom)
                .max()
                .unwrap_or(0)
                + title_h
                + pad
        })
        .collect();
    let width = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|p| p.values.ncols() as u32 * zoom + pad)
                .sum::<u32>()
                + pad
        })
        .max()
        .unwrap_or(1)
        .max(160);
    let height = row_h.iter().sum::<u32>() + pad;
    if rows.iter().flatten().any(|p| p.values.is_empty()) {
        return Err(PtychoError::Picture("an empty panel".into()));
    }
    let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let mut titles = Vec::new();
    let mut y0 = pad;
    for (r, row) in rows.iter().enumerate() {
        let mut x0 = pad;
        for p in row {
            let finite = p.values.iter().copied().filter(|v| v.is_finite());
            let (lo, hi) = finite.fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
            let span = if hi > lo { hi - lo } else { 1.0 };
            for ((y, x), &v) in p.values.indexed_iter() {
                let c = colour((v - lo) / span, p.scale);
                for dy in 0..zoom {
                    for dx in 0..zoom {
                        img.put_pixel(
                            x0 + x as u32 * zoom + dx,
                            y0 + title_h + y as u32 * zoom + dy,
                            c,
                        );
                    }
                }
            }
            titles.push((
                format!("{} [{lo:.2}, {hi:.2}]", p.title),
                x0 as i32,
                y0 as i32 + 4,
            ));
            x0 += p.values.ncols() as u32 * zoom + pad;
        }
        y0 += row_h[r];
    }
    let mut buf = img.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let style = TextStyle::from(("sans-serif", 13).into_font()).color(&BLACK);
        for (t, x, y) in &titles {
            root.draw_text(t, &style, (*x, *y)).map_err(picture)?;
        }
        root.present().map_err(picture)?;
    }
    let img = RgbImage::from_raw(width, height, buf).ok_or_else(|| picture("buffer size"))?;
    img.save(path).map_err(picture)
}

/// The amplitude and phase of a complex image.
pub fn parts(a: &Array2<C32>) -> (Array2<f32>, Array2<f32>) {
    (a.mapv(|v| v.norm()), a.mapv(|v| v.arg()))
}

/// Writes a probe's amplitude and phase side by side.
pub fn probe(path: &Path, probe: &Array2<C32>) -> Result<()> {
    let (amp, phase) = parts(probe);
    let zoom = (256 / probe.nrows().max(1)).clamp(1, 8) as u32;
    panels(
        path,
        &[vec![
            Panel {
                title: "probe amplitude".into(),
                values: &amp,
                scale: Scale::Grey,
            },
            Panel {
                title: "probe phase".into(),
                values: &phase,
                scale: Scale::Diverging,
            },
        ]],
        zoom,
    )
}

/// A named series of a curve picture.
pub struct Series<'a> {
    /// Its name in the legend.
    pub name: &'a str,
    /// Its values, one per step.
    pub values: &'a [f64],
}

/// Writes curves against their step, on a logarithmic y axis when `log_y`
/// (non-positive values are left out there).
pub fn curves(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
    log_y: bool,
) -> Result<()> {
    font();
    let keep = |v: f64| v.is_finite() && (!log_y || v > 0.0);
    let values = || {
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|&v| keep(v))
    };
    let (lo, hi) = values().fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    if lo > hi {
        return Err(PtychoError::Picture(format!("{title}: no values to draw")));
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo * 0.9 - 1e-9, hi * 1.1 + 1e-9)
    };
    let steps = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let root = BitMapBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(picture)?;
    let colours = [BLUE, RED, GREEN, MAGENTA, CYAN, BLACK];
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(picture)?;
            for (i, s) in series.iter().enumerate() {
                let c = colours[i % colours.len()];
                chart
                    .draw_series(LineSeries::new(
                        s.values
                            .iter()
                            .enumerate()
                            .filter(|(_, &v)| keep(v))
                            .map(|(k, &v)| (k as f64, v)),
                        c.stroke_width(2),
                    ))
                    .map_err(picture)?
                    .label(s.name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(picture)?;
        }};
    }
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    if log_y {
        draw!(builder
            .build_cartesian_2d(0f64..steps - 1.0, (lo..hi).log_scale())
            .map_err(picture)?);
    } else {
        draw!(builder
            .build_cartesian_2d(0f64..steps - 1.0, lo..hi)
            .map_err(picture)?);
    }
    root.present().map_err(picture)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{object, probe as make_probe, ObjectKind, ProbeSpec};

    #[test]
    fn pictures_are_png_files_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let (amp, phase) = parts(&object(ObjectKind::SiemensStar, 48, 1));
        let path = dir.path().join("o.png");
        panels(
            &path,
            &[
                vec![Panel {
                    title: "truth".into(),
                    values: &amp,
                    scale: Scale::Grey,
                }],
                vec![Panel {
                    title: "phase".into(),
                    values: &phase,
                    scale: Scale::Diverging,
                }],
            ],
            2,
        )
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        // Narrow panels: the picture keeps its minimum width for the titles.
        assert_eq!(img.width(), 160);
        // The panel holds more than one colour (it is not blank).
        let distinct: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 20);
        probe(
            &dir.path().join("p.png"),
            &make_probe(&ProbeSpec::default_for(32), 32).unwrap(),
        )
        .unwrap();
        let e = [1.0, 0.5, 0.1, 0.05];
        curves(
            &dir.path().join("c.png"),
            "Fourier error",
            "iteration",
            "error",
            &[Series {
                name: "ePIE",
                values: &e,
            }],
            true,
        )
        .unwrap();
        let c = image::open(dir.path().join("c.png")).unwrap();
        assert_eq!((c.width(), c.height()), (720, 420));
        assert!(curves(
            &dir.path().join("x.png"),
            "none",
            "x",
            "y",
            &[Series {
                name: "s",
                values: &[f64::NAN]
            }],
            true
        )
        .is_err());
    }
}
