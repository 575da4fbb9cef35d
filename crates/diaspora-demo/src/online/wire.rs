//! The loop's items on the wire, built and parsed in one place: frames,
//! reconstructions, models, the model topic's notices, the uplink's end
//! marker and monitors' predictions.
//!
//! Every parser takes an item that came over the network and returns a
//! value or an error naming what is wrong: sizes are checked (with checked
//! arithmetic and limits) before anything is sliced or allocated, so a
//! malformed item cannot panic a stage or make it allocate more than the
//! item's own size. Property tests below; the fuzz target
//! `crates/diaspora-demo/fuzz` runs [`crate::fuzzing::item`].

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use diaspora_fabric::item::{meta, payload_item};
use diaspora_proto::v1::Item;
use diaspora_ptycho::sim::FrameMeta;
use diaspora_ptycho::C32;
use diaspora_stream::ndarray as nd;
use ndarray::Array2;

/// The largest object side a reconstruction or an edge image may have.
pub const OBJECT_SIDE_MAX: usize = 8192;
/// The largest frame (and probe) side.
pub const FRAME_SIDE_MAX: usize = 2048;
/// The most positions a scan may have.
pub const POSITIONS_MAX: usize = 1 << 20;

/// A side from metadata, within `1..=max`.
fn side(item: &Item, key: &str, max: usize) -> Result<usize> {
    let v = meta::get_i64(item, key).with_context(|| format!("no '{key}'"))?;
    ensure!(
        v >= 1 && v as u64 <= max as u64,
        "'{key}' = {v}: outside 1..={max}"
    );
    Ok(v as usize)
}

/// Bytes of a `side`×`side` complex64 array (sides are bounded: no overflow).
fn complex_len(side: usize) -> usize {
    side * side * 8
}

/// A frame as it travels: `u16` N×N, metadata naming its scan and position,
/// its number in the run (`id`), the object's side and a CRC32C.
pub(crate) fn frame_item(
    frame: &Array2<u16>,
    m: &FrameMeta,
    positions: usize,
    id: u64,
    side: usize,
) -> Item {
    let mut b = Vec::with_capacity(frame.len() * 2);
    for v in frame.iter() {
        b.extend_from_slice(&v.to_le_bytes());
    }
    let payload = Bytes::from(b);
    let crc = crc32c::crc32c(&payload);
    let mut item = payload_item(payload);
    nd::tag_array(&mut item, "u16", &[frame.nrows(), frame.ncols()]);
    for (k, v) in [
        ("scan", meta::string(&m.scan_id)),
        ("index", meta::int(m.index as i64)),
        ("x", meta::int(m.x as i64)),
        ("y", meta::int(m.y as i64)),
        ("dose", meta::float(m.dose)),
        ("positions", meta::int(positions as i64)),
        ("side", meta::int(side as i64)),
        ("id", meta::int(id as i64)),
        ("crc32c", meta::int(crc as i64)),
    ] {
        item.metadata.insert(k.into(), v);
    }
    item
}

/// A received frame: its pixels, metadata and the scan's positions, checked
/// (a frame that crossed the WAN compressed is restored first).
pub(crate) fn read_frame(item: &Item) -> Result<(Array2<u16>, FrameMeta, usize)> {
    let restored;
    let item = if item.metadata.contains_key(diaspora_stream::control::CODEC) {
        let mut it = item.clone();
        diaspora_stream::reduce::restore(&mut it).context("a compressed frame")?;
        restored = it;
        &restored
    } else {
        item
    };
    let scan = meta::get_str(item, "scan").context("frame without a scan")?;
    let get = |k: &str| meta::get_i64(item, k).with_context(|| format!("frame without {k}"));
    let u32_of = |k: &str| -> Result<u32> {
        let v = get(k)?;
        u32::try_from(v).map_err(|_| anyhow::anyhow!("frame's {k} = {v}: not a u32"))
    };
    let index = u32_of("index")?;
    let crc = u32_of("crc32c")?;
    ensure!(
        crc32c::crc32c(&item.payload) == crc,
        "frame {index} of {scan}: checksum mismatch"
    );
    let positions = side(item, "positions", POSITIONS_MAX)?;
    ensure!(
        (index as usize) < positions,
        "frame {index} of {scan}: the scan has {positions} positions"
    );
    let a = nd::item_array::<u16>(item).context("a frame is a u16 array")?;
    ensure!(a.ndim() == 2, "a frame is 2-D");
    let (h, w) = (a.shape()[0], a.shape()[1]);
    ensure!(
        h == w && (1..=FRAME_SIDE_MAX).contains(&h),
        "a frame is square, at most {FRAME_SIDE_MAX} on a side: {h}×{w}"
    );
    let frame = Array2::from_shape_vec((h, w), a.iter().copied().collect())?;
    Ok((
        frame,
        FrameMeta {
            scan_id: scan.to_string(),
            index,
            x: u32_of("x")?,
            y: u32_of("y")?,
            dose: meta::get_f64(item, "dose").unwrap_or(0.0),
        },
        positions,
    ))
}

/// The object's side a frame names (the edge stitches to it).
pub(crate) fn frame_object_side(item: &Item) -> Result<usize> {
    side(item, "side", OBJECT_SIDE_MAX)
}

/// Appends a complex64 array, row-major, little-endian.
pub(crate) fn complex_bytes(a: &Array2<C32>, out: &mut Vec<u8>) {
    for v in a.iter() {
        out.extend_from_slice(&v.re.to_le_bytes());
        out.extend_from_slice(&v.im.to_le_bytes());
    }
}

/// A `side`×`side` complex64 array from exactly its bytes.
pub(crate) fn complex_from(bytes: &[u8], side: usize) -> Result<Array2<C32>> {
    ensure!(
        side <= OBJECT_SIDE_MAX && bytes.len() == complex_len(side),
        "{} bytes for a {side}×{side} complex array",
        bytes.len()
    );
    let v: Vec<C32> = bytes
        .chunks_exact(8)
        .map(|c| {
            C32::new(
                f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
                f32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect();
    Ok(Array2::from_shape_vec((side, side), v)?)
}

/// A scan's reconstruction: the training targets and the probe.
pub(crate) struct Recon {
    /// The scan.
    pub scan: String,
    /// The object (training targets).
    pub object: Array2<C32>,
    /// The probe.
    pub probe: Array2<C32>,
}

/// A reconstruction item: object and probe, back to back; metadata `scan`,
/// `side` (the object's), `n` (the probe's) and whatever else is given.
pub(crate) fn recon_item(
    scan: &str,
    object: &Array2<C32>,
    probe: &Array2<C32>,
    extra: &[(&str, diaspora_proto::v1::Value)],
) -> Item {
    let mut b = Vec::with_capacity((object.len() + probe.len()) * 8);
    complex_bytes(object, &mut b);
    complex_bytes(probe, &mut b);
    let mut item = payload_item(Bytes::from(b));
    item.metadata.insert("scan".into(), meta::string(scan));
    item.metadata
        .insert("side".into(), meta::int(object.nrows() as i64));
    item.metadata
        .insert("n".into(), meta::int(probe.nrows() as i64));
    for (k, v) in extra {
        item.metadata.insert((*k).into(), v.clone());
    }
    item
}

/// Parses a reconstruction item.
pub(crate) fn parse_recon(item: &Item) -> Result<Recon> {
    let side = side(item, "side", OBJECT_SIDE_MAX)?;
    let n = side_of_probe(item)?;
    let scan = meta::get_str(item, "scan")
        .context("reconstruction without a scan")?
        .to_string();
    let p = &item.payload;
    let (o, q) = (complex_len(side), complex_len(n));
    ensure!(
        p.len() == o + q,
        "reconstruction of {scan}: {} bytes, not {} (a {side}² object and a {n}² probe)",
        p.len(),
        o + q
    );
    Ok(Recon {
        scan,
        object: complex_from(&p[..o], side)?,
        probe: complex_from(&p[o..], n)?,
    })
}

fn side_of_probe(item: &Item) -> Result<usize> {
    side(item, "n", FRAME_SIDE_MAX)
}

/// A model version as it travels: its checkpoint (safetensors, checked by
/// [`diaspora_ptycho::surrogate::Surrogate::from_checkpoint_bytes`]) and
/// the probe it stitches with.
pub(crate) struct ModelMsg {
    /// Its version.
    pub version: u64,
    /// The checkpoint's bytes.
    pub checkpoint: Bytes,
    /// The probe.
    pub probe: Array2<C32>,
}

/// A model item: the checkpoint's length (u64 LE), the checkpoint, the
/// probe; metadata `version`, `n` and the held-out SSIM.
pub(crate) fn model_item(version: u64, phase_ssim: f64, ckpt: &[u8], probe: &Array2<C32>) -> Item {
    let mut payload = Vec::with_capacity(8 + ckpt.len() + probe.len() * 8);
    payload.extend_from_slice(&(ckpt.len() as u64).to_le_bytes());
    payload.extend_from_slice(ckpt);
    complex_bytes(probe, &mut payload);
    let mut item = payload_item(Bytes::from(payload));
    item.metadata
        .insert("version".into(), meta::int(version as i64));
    item.metadata
        .insert("phase_ssim".into(), meta::float(phase_ssim));
    item.metadata
        .insert("n".into(), meta::int(probe.nrows() as i64));
    item
}

/// Parses a model item (not its checkpoint).
pub(crate) fn parse_model(item: &Item) -> Result<ModelMsg> {
    let version = meta::get_i64(item, "version").context("model without a version")?;
    ensure!(version >= 1, "model version {version}: versions start at 1");
    let n = side_of_probe(item)?;
    let p = &item.payload;
    ensure!(p.len() >= 8, "model item of {} bytes: too short", p.len());
    let len = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
    let want = (len as u128) + 8 + complex_len(n) as u128;
    ensure!(
        p.len() as u128 == want,
        "model v{version}: {} bytes, not {want} (a {len}-byte checkpoint and a {n}² probe)",
        p.len()
    );
    let end = 8 + len as usize;
    Ok(ModelMsg {
        version: version as u64,
        checkpoint: p.slice(8..end),
        probe: complex_from(&p[end..], n)?,
    })
}

/// What the model topic says besides models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A scan is bad: ask provenance which version to run.
    Invalidated(String),
    /// HPC is done: nothing more comes.
    End,
}

/// A notice item.
pub(crate) fn notice_item(notice: &Notice) -> Item {
    let (kind, scan) = match notice {
        Notice::Invalidated(s) => ("invalidated", s.as_str()),
        Notice::End => ("end", ""),
    };
    let mut item = payload_item(Bytes::new());
    item.metadata.insert("notice".into(), meta::string(kind));
    item.metadata.insert("scan".into(), meta::string(scan));
    item
}

/// A notice, if the item is one (none: it is not a notice).
pub(crate) fn parse_notice(item: &Item) -> Result<Option<Notice>> {
    if !item.metadata.contains_key("notice") {
        return Ok(None);
    }
    let Some(kind) = meta::get_str(item, "notice") else {
        bail!("a notice that is not text");
    };
    Ok(Some(match kind {
        "end" => Notice::End,
        "invalidated" => {
            let scan = meta::get_str(item, "scan").unwrap_or_default();
            ensure!(!scan.is_empty(), "an 'invalidated' notice without a scan");
            Notice::Invalidated(scan.to_string())
        }
        other => bail!("an unknown notice '{other}'"),
    }))
}

/// The uplink's last item: how many scans went up.
pub(crate) fn end_item(scans_up: u64) -> Item {
    let mut end = payload_item(Bytes::new());
    end.metadata.insert("end".into(), meta::int(1));
    end.metadata
        .insert("scans_up".into(), meta::int(scans_up as i64));
    end
}

/// The scans the detector sent up, if the item is its end marker.
pub(crate) fn parse_end(item: &Item) -> Result<Option<u64>> {
    if !item.metadata.contains_key("end") {
        return Ok(None);
    }
    let n = meta::get_i64(item, "scans_up").context("an end marker without scans_up")?;
    ensure!(n >= 0, "an end marker with scans_up = {n}");
    Ok(Some(n as u64))
}

/// A monitor's `prediction` event for link `link` (its `link` label), as
/// a line for the timeline; anything else is none.
pub(crate) fn congestion_prediction(payload: &[u8], link: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if v["kind"] != "prediction" || v["labels"]["link"] != link {
        return None;
    }
    Some(format!(
        "{} predicts {} on {link} reaching {:.2} in {:.1} s (now {:.2}, confidence {:.2})",
        v["monitor"].as_str().unwrap_or("a monitor"),
        v["metric"].as_str().unwrap_or("a metric"),
        v["threshold"].as_f64().unwrap_or(0.0),
        v["lead_time_s"].as_f64().unwrap_or(0.0),
        v["value"].as_f64().unwrap_or(0.0),
        v["confidence"].as_f64().unwrap_or(0.0),
    ))
}

/// Every parser on one item (the fuzz body): each returns a value or an
/// error, and what it returns is within the limits.
pub(crate) fn parse_any(item: &Item) {
    if let Ok((f, m, positions)) = read_frame(item) {
        assert!(f.nrows() == f.ncols() && f.nrows() <= FRAME_SIDE_MAX);
        assert!((m.index as usize) < positions);
    }
    let _ = frame_object_side(item);
    if let Ok(r) = parse_recon(item) {
        assert!(r.object.nrows() <= OBJECT_SIDE_MAX && r.probe.nrows() <= FRAME_SIDE_MAX);
    }
    if let Ok(m) = parse_model(item) {
        assert!(m.version >= 1 && m.checkpoint.len() < item.payload.len());
    }
    let _ = parse_notice(item);
    let _ = parse_end(item);
    let _ = congestion_prediction(&item.payload, "wan");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(n: usize, seed: u16) -> Array2<u16> {
        Array2::from_shape_fn((n, n), |(y, x)| (y as u16 * 31 + x as u16) ^ seed)
    }

    fn fm(index: u32) -> FrameMeta {
        FrameMeta {
            scan_id: "scan-001".into(),
            index,
            x: 3,
            y: 4,
            dose: 1e5,
        }
    }

    fn complex(n: usize) -> Array2<C32> {
        Array2::from_shape_fn((n, n), |(y, x)| C32::new(y as f32, -(x as f32)))
    }

    #[test]
    fn a_frame_goes_and_comes_back_and_a_corrupt_one_is_refused() {
        let f = frame(16, 7);
        let item = frame_item(&f, &fm(2), 10, 42, 96);
        let (g, m, positions) = read_frame(&item).unwrap();
        assert_eq!((g, m.index, m.x, m.y, positions), (f.clone(), 2, 3, 4, 10));
        assert_eq!(frame_object_side(&item).unwrap(), 96);
        // Compressed on the way (the uplink's reduction): restored.
        let mut z = item.clone();
        assert!(diaspora_stream::reduce::zstd_compress(&mut z, 1));
        assert_eq!(read_frame(&z).unwrap().0, frame(16, 7));
        // A flipped bit.
        let mut bad = item.clone();
        let mut p = bad.payload.to_vec();
        p[5] ^= 1;
        bad.payload = p.into();
        let e = read_frame(&bad).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");
        // An index past the scan's positions; a negative coordinate.
        let e = read_frame(&frame_item(&f, &fm(10), 10, 1, 96))
            .unwrap_err()
            .to_string();
        assert!(e.contains("10 positions"), "{e}");
        let mut neg = item;
        neg.metadata.insert("x".into(), meta::int(-1));
        assert!(read_frame(&neg).unwrap_err().to_string().contains("x = -1"));
    }

    #[test]
    fn reconstructions_models_notices_and_end_markers_round_trip() {
        let (o, p) = (complex(12), complex(4));
        let r = parse_recon(&recon_item(
            "scan-002",
            &o,
            &p,
            &[("hot_pixels", meta::int(0))],
        ))
        .unwrap();
        assert_eq!(
            (r.scan.as_str(), r.object, r.probe),
            ("scan-002", o, p.clone())
        );
        let m = parse_model(&model_item(3, 0.7, b"checkpoint", &p)).unwrap();
        assert_eq!(
            (m.version, &m.checkpoint[..], m.probe),
            (3, &b"checkpoint"[..], p)
        );
        for n in [Notice::End, Notice::Invalidated("scan-009".into())] {
            assert_eq!(parse_notice(&notice_item(&n)).unwrap(), Some(n));
        }
        assert_eq!(parse_notice(&end_item(3)).unwrap(), None);
        assert_eq!(parse_end(&end_item(7)).unwrap(), Some(7));
        assert_eq!(parse_end(&notice_item(&Notice::End)).unwrap(), None);
    }

    #[test]
    fn lengths_that_would_overflow_or_lie_are_refused() {
        let p = complex(4);
        // A checkpoint length near u64::MAX: 8 + len would overflow.
        let mut m = model_item(1, 0.5, b"ck", &p);
        let mut b = m.payload.to_vec();
        b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        m.payload = b.into();
        assert!(parse_model(&m).is_err());
        // A side whose square would overflow, a negative side, a side 0.
        let mut r = recon_item("s", &complex(2), &p, &[]);
        for bad in [i64::MAX, 1 << 32, -3, 0] {
            r.metadata.insert("side".into(), meta::int(bad));
            assert!(parse_recon(&r).is_err(), "side {bad}");
        }
        let mut n = notice_item(&Notice::End);
        n.metadata.insert("notice".into(), meta::string("reboot"));
        assert!(parse_notice(&n).unwrap_err().to_string().contains("reboot"));
        let mut e = end_item(1);
        e.metadata.insert("scans_up".into(), meta::int(-1));
        assert!(parse_end(&e).is_err());
    }

    #[test]
    fn only_a_prediction_for_the_link_counts() {
        let p = br#"{"kind":"prediction","monitor":"m","metric":"link.utilisation","labels":{"link":"wan"},"threshold":0.95,"lead_time_s":8,"value":0.8,"confidence":1}"#;
        let t = congestion_prediction(p, "wan").unwrap();
        assert!(t.contains("in 8.0 s"), "{t}");
        assert_eq!(congestion_prediction(p, "lan"), None);
        assert_eq!(congestion_prediction(b"{\"kind\":\"alert\"}", "wan"), None);
        assert_eq!(congestion_prediction(b"\xff not json", "wan"), None);
    }

    fn value() -> impl Strategy<Value = diaspora_proto::v1::Value> {
        prop_oneof![
            any::<i64>().prop_map(meta::int),
            any::<f64>().prop_map(meta::float),
            "[a-z0-9-]{0,12}".prop_map(|s| meta::string(&s)),
        ]
    }

    proptest! {
        /// Any metadata under the loop's keys, any payload: every parser
        /// answers, none panics.
        #[test]
        fn no_item_panics_a_parser(
            values in proptest::collection::vec(
                (prop::sample::select(vec![
                    "scan", "index", "x", "y", "positions", "side", "n", "id", "crc32c",
                    "version", "notice", "end", "scans_up", "qos.codec", "ndarray.dtype", "ndarray.shape",
                ]), value()),
                0..12,
            ),
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut item = payload_item(Bytes::from(payload));
            for (k, v) in values {
                item.metadata.insert(k.into(), v);
            }
            parse_any(&item);
        }

        /// A valid frame with one metadata value replaced: read or refused.
        #[test]
        fn a_frame_with_one_value_replaced_is_read_or_refused(
            key in prop::sample::select(vec!["index", "x", "y", "positions", "side", "crc32c", "scan"]),
            v in value(),
        ) {
            let mut item = frame_item(&frame(8, 1), &fm(1), 4, 9, 40);
            item.metadata.insert(key.into(), v);
            parse_any(&item);
        }
    }
}
