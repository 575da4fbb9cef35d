//! A scan on disk, readable by NumPy as it is.
//!
//! A scan directory holds `frames.npy` (`uint16`, count × N × N, zero
//! frequency at the centre), `meta.jsonl` (one [`FrameMeta`] per frame, in
//! order) and `corners.npy` (`int64`, count × 2: each window's top-left
//! `y, x`, the same positions for NumPy), plus, when it was simulated,
//! `scan.json` (the [`SimConfig`]), `object.npy` and `probe.npy`
//! (`complex64`, the truth). Reconstructions and predictions are written as
//! `complex64` `.npy` files beside them.
//!
//! Reading checks everything against limits before it allocates: at most
//! [`FRAMES_MAX`] frames of at most [`SIDE_MAX`]² pixels, shapes that agree
//! with the metadata, positions that are whole numbers. A `.npy` file is
//! viewed in place (no allocation from its header's claims).

use std::path::Path;

use ndarray::{Array2, Array3, Axis, Ix2, Ix3};
use ndarray_npy::{ViewNpyExt, WriteNpyExt};

use crate::sim::{FrameMeta, Scan, SimConfig};
use crate::{PtychoError, Result, C32};

/// The most frames a scan may hold.
pub const FRAMES_MAX: usize = 1 << 20;
/// The largest frame side.
pub const SIDE_MAX: usize = 2048;
/// The largest object side.
pub const OBJECT_MAX: usize = 1 << 15;

fn io(context: String) -> impl FnOnce(std::io::Error) -> PtychoError {
    move |source| PtychoError::Io { context, source }
}

/// Parses the bytes of a `frames.npy`: count × N × N `uint16`.
pub fn parse_frames(bytes: &[u8]) -> Result<Vec<Array2<u16>>> {
    let view = ndarray::ArrayView3::<u16>::view_npy(bytes)
        .map_err(|e| PtychoError::Invalid(format!("frames.npy: {e}")))?;
    let (count, rows, cols) = view.dim();
    if rows != cols || !rows.is_power_of_two() || !(8..=SIDE_MAX).contains(&rows) {
        return Err(PtychoError::Invalid(format!(
            "frames.npy: frames are {rows}×{cols}; N×N with N a power of two in 8..={SIDE_MAX}"
        )));
    }
    if count == 0 || count > FRAMES_MAX {
        return Err(PtychoError::Invalid(format!(
            "frames.npy: {count} frames (1..={FRAMES_MAX})"
        )));
    }
    Ok(view.axis_iter(Axis(0)).map(|f| f.to_owned()).collect())
}

/// Parses `meta.jsonl`: one frame's metadata per line.
pub fn parse_meta(text: &str) -> Result<Vec<FrameMeta>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if out.len() >= FRAMES_MAX {
            return Err(PtychoError::Invalid(format!(
                "meta.jsonl: more than {FRAMES_MAX} records"
            )));
        }
        let m: FrameMeta = serde_json::from_str(line)
            .map_err(|e| PtychoError::Invalid(format!("meta.jsonl line {}: {e}", i + 1)))?;
        if m.x as usize > OBJECT_MAX
            || m.y as usize > OBJECT_MAX
            || !(m.dose > 0.0 && m.dose.is_finite())
        {
            return Err(PtychoError::Invalid(format!(
                "meta.jsonl line {}: position ({}, {}) beyond {OBJECT_MAX} or dose {} not > 0",
                i + 1,
                m.x,
                m.y,
                m.dose
            )));
        }
        out.push(m);
    }
    Ok(out)
}

/// Parses a `complex64` image `.npy` (an object or a probe).
pub fn parse_complex(bytes: &[u8], what: &str) -> Result<Array2<C32>> {
    let view = ndarray::ArrayView2::<C32>::view_npy(bytes)
        .map_err(|e| PtychoError::Invalid(format!("{what}: {e}")))?;
    let (rows, cols) = view.dim();
    if rows == 0 || cols == 0 || rows > OBJECT_MAX || cols > OBJECT_MAX {
        return Err(PtychoError::Invalid(format!(
            "{what}: {rows}×{cols} (1..={OBJECT_MAX} each side)"
        )));
    }
    if view.iter().any(|v| !v.re.is_finite() || !v.im.is_finite()) {
        return Err(PtychoError::Invalid(format!(
            "{what}: holds NaN or infinite values"
        )));
    }
    Ok(view.to_owned())
}

/// A scan read from its directory.
#[derive(Clone, Debug)]
pub struct ScanFiles {
    /// The frames.
    pub frames: Vec<Array2<u16>>,
    /// Their metadata, one per frame.
    pub meta: Vec<FrameMeta>,
    /// How it was simulated, when it was.
    pub config: Option<SimConfig>,
    /// The true object, when known.
    pub object: Option<Array2<C32>>,
    /// The true probe, when known.
    pub probe: Option<Array2<C32>>,
}

/// Reads a file into a buffer aligned for any `.npy` element type (a
/// `Vec<u8>` from the allocator is aligned to at least 8 on the platforms
/// we run on; `view_npy` checks and refuses otherwise).
fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io(format!("reading {}", path.display())))
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

/// Reads a scan directory (see the module page).
pub fn read_scan(dir: &Path) -> Result<ScanFiles> {
    let frames = parse_frames(&read(&dir.join("frames.npy"))?)?;
    let text = String::from_utf8(read(&dir.join("meta.jsonl"))?)
        .map_err(|_| PtychoError::Invalid("meta.jsonl is not UTF-8".into()))?;
    let meta = parse_meta(&text)?;
    if meta.len() != frames.len() {
        return Err(PtychoError::Invalid(format!(
            "{}: {} frames but {} metadata records",
            dir.display(),
            frames.len(),
            meta.len()
        )));
    }
    let config = match read_optional(&dir.join("scan.json"))? {
        Some(b) => Some(
            serde_json::from_slice(&b)
                .map_err(|e| PtychoError::Invalid(format!("scan.json: {e}")))?,
        ),
        None => None,
    };
    let object = read_optional(&dir.join("object.npy"))?
        .map(|b| parse_complex(&b, "object.npy"))
        .transpose()?;
    let probe = read_optional(&dir.join("probe.npy"))?
        .map(|b| parse_complex(&b, "probe.npy"))
        .transpose()?;
    Ok(ScanFiles {
        frames,
        meta,
        config,
        object,
        probe,
    })
}

/// Writes a `complex64` image as `.npy`.
pub fn write_complex(path: &Path, a: &Array2<C32>) -> Result<()> {
    let f = std::fs::File::create(path).map_err(io(format!("creating {}", path.display())))?;
    a.write_npy(std::io::BufWriter::new(f))
        .map_err(|e| PtychoError::Invalid(format!("writing {}: {e}", path.display())))
}

/// Writes the frames, metadata and positions of a scan to `dir` (created
/// if needed), and its configuration, object and probe when given.
pub fn write_scan(
    dir: &Path,
    frames: &[Array2<u16>],
    meta: &[FrameMeta],
    truth: Option<&Scan>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let n = frames.first().map(|f| f.nrows()).unwrap_or(0);
    let mut stack = Array3::<u16>::zeros((frames.len(), n, n));
    for (mut slot, f) in stack.axis_iter_mut(Axis(0)).zip(frames) {
        slot.assign(f);
    }
    let path = dir.join("frames.npy");
    let f = std::fs::File::create(&path).map_err(io(format!("creating {}", path.display())))?;
    stack
        .write_npy(std::io::BufWriter::new(f))
        .map_err(|e| PtychoError::Invalid(format!("writing {}: {e}", path.display())))?;
    let corners = Array2::from_shape_fn((meta.len(), 2), |(i, k)| {
        if k == 0 {
            meta[i].y as i64
        } else {
            meta[i].x as i64
        }
    });
    let path = dir.join("corners.npy");
    let f = std::fs::File::create(&path).map_err(io(format!("creating {}", path.display())))?;
    corners
        .write_npy(std::io::BufWriter::new(f))
        .map_err(|e| PtychoError::Invalid(format!("writing {}: {e}", path.display())))?;
    let mut lines = String::new();
    for m in meta {
        lines.push_str(&serde_json::to_string(m).expect("metadata serialises"));
        lines.push('\n');
    }
    let path = dir.join("meta.jsonl");
    std::fs::write(&path, lines).map_err(io(format!("writing {}", path.display())))?;
    if let Some(scan) = truth {
        let path = dir.join("scan.json");
        std::fs::write(
            &path,
            serde_json::to_vec_pretty(&scan.config).expect("a config serialises"),
        )
        .map_err(io(format!("writing {}", path.display())))?;
        write_complex(&dir.join("object.npy"), &scan.object)?;
        write_complex(&dir.join("probe.npy"), &scan.probe)?;
    }
    Ok(())
}

// Keep the dimension types named where the views are made.
#[allow(dead_code)]
type Frames3 = Ix3;
#[allow(dead_code)]
type Image2 = Ix2;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::{simulate, ProbeSpec};
    use proptest::prelude::*;

    #[test]
    fn a_scan_round_trips_through_its_directory() {
        let cfg = SimConfig {
            positions: 6,
            n: 32,
            probe: ProbeSpec::default_for(32),
            ..Default::default()
        };
        let scan = simulate(&cfg).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_scan(dir.path(), &scan.frames, &scan.meta, Some(&scan)).unwrap();
        let back = read_scan(dir.path()).unwrap();
        assert_eq!(back.frames, scan.frames);
        assert_eq!(back.meta, scan.meta);
        assert_eq!(back.config.as_ref(), Some(&scan.config));
        assert_eq!(back.object.as_ref(), Some(&scan.object));
        assert_eq!(back.probe.as_ref(), Some(&scan.probe));
        // Fewer metadata lines than frames: refused, naming both counts.
        let text = std::fs::read_to_string(dir.path().join("meta.jsonl")).unwrap();
        let short: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.path().join("meta.jsonl"), short).unwrap();
        let e = read_scan(dir.path()).unwrap_err().to_string();
        assert!(e.contains("6 frames but 5"), "{e}");
    }

    #[test]
    fn bad_files_get_clear_errors() {
        assert!(parse_frames(b"not an npy file")
            .unwrap_err()
            .to_string()
            .contains("frames.npy"));
        let e = parse_meta("{\"scan_id\":\"s\",\"index\":0,\"x\":1}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
        let mut nan = Vec::new();
        Array2::from_elem((4, 4), C32::new(f32::NAN, 0.0))
            .write_npy(&mut nan)
            .unwrap();
        let e = parse_complex(&nan, "object.npy").unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
        let mut odd = Vec::new();
        Array3::<u16>::zeros((2, 12, 12))
            .write_npy(&mut odd)
            .unwrap();
        assert!(parse_frames(&odd)
            .unwrap_err()
            .to_string()
            .contains("power of two"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_frames(&bytes);
            let _ = parse_complex(&bytes, "x.npy");
            let _ = parse_meta(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn a_valid_header_with_a_cut_body_is_refused(cut in 0usize..200) {
            let mut good = Vec::new();
            Array3::<u16>::zeros((2, 8, 8)).write_npy(&mut good).unwrap();
            let end = good.len().saturating_sub(cut + 1);
            prop_assert!(parse_frames(&good[..end]).is_err());
        }
    }
}
