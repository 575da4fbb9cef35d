//! Reductions applied under congestion (the transforms; *when* to apply
//! them is the flow controller's decision) and reconstruction of missing
//! items. Every output is marked in its quality field.

use bytes::Bytes;
use diaspora_fabric::item::Item;
use diaspora_proto::v1::{self, quality::Kind};

use crate::control::{self, CODEC};
use crate::ndarray as nd;

/// Largest payload a zstd-reduced item may expand to, bytes.
pub const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// A reduction or reconstruction that could not be done.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ReduceError(pub String);

/// Sets the item's quality.
pub fn mark(item: &mut Item, kind: Kind, method: &str) {
    item.quality = Some(v1::Quality {
        kind: kind as i32,
        method: method.to_string(),
    });
}

/// Compresses the payload with zstd when that makes it smaller; returns
/// whether it did (then `qos.codec = "zstd"` and quality `reduced(zstd)`).
pub fn zstd_compress(item: &mut Item, level: i32) -> bool {
    let Ok(z) = zstd::bulk::compress(&item.payload, level) else {
        return false;
    };
    if z.len() >= item.payload.len() {
        return false;
    }
    item.payload = Bytes::from(z);
    item.metadata.insert(CODEC.into(), control::string("zstd"));
    mark(item, Kind::Reduced, "zstd");
    true
}

/// Undoes [`zstd_compress`] (the quality stays `reduced(zstd)`: the consumer
/// knows the item travelled reduced). Items without a codec are left alone.
pub fn restore(item: &mut Item) -> Result<(), ReduceError> {
    match control::get_str(item, CODEC) {
        None => Ok(()),
        Some("zstd") => {
            let out = zstd::bulk::decompress(&item.payload, DECOMPRESSED_BYTES_MAX)
                .map_err(|e| ReduceError(format!("zstd payload: {e}")))?;
            item.payload = Bytes::from(out);
            item.metadata.remove(CODEC);
            Ok(())
        }
        Some(other) => Err(ReduceError(format!("unknown payload codec '{other}'"))),
    }
}

/// Combines `n` items into one (a user aggregation function).
pub trait Aggregator: Send {
    /// Returns the aggregate of `items` (in stream order, at least two).
    fn aggregate(&mut self, items: &[Item]) -> Result<Item, ReduceError>;
}

/// Built-in aggregation: `"mean"` (element-wise, ndarray payloads) or `"last"`.
pub fn aggregate_builtin(function: &str, items: &[Item]) -> Result<Item, ReduceError> {
    let last = items
        .last()
        .ok_or_else(|| ReduceError("nothing to aggregate".into()))?;
    match function {
        "last" => Ok(last.clone()),
        "mean" => {
            // Running mean by interpolation: m_k = m_{k-1} + (x_k − m_{k-1})/k.
            let mut m = items[0].clone();
            for (k, it) in items.iter().enumerate().skip(1) {
                m = nd::interpolate_items(&m, it, 1.0 / (k as f64 + 1.0))
                    .map_err(|e| ReduceError(format!("mean of array payloads: {e}")))?;
            }
            m.metadata.extend(
                last.metadata
                    .iter()
                    .filter(|(k, _)| !k.starts_with("ndarray."))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            m.timestamp_us = last.timestamp_us;
            m.headers = last.headers.clone();
            m.key = last.key.clone();
            Ok(m)
        }
        other => Err(ReduceError(format!("no built-in aggregation '{other}'"))),
    }
}

/// Makes a substitute for a missing item (a user reconstructor, e.g. a model).
pub trait Reconstructor: Send {
    /// A substitute for the item at `seq`, from the last delivered item
    /// (`prev`, at `prev_seq`) and the next one (`next`, at `next_seq`), either
    /// of which may be unknown. `None`: no substitute (the item is lost).
    fn reconstruct(
        &mut self,
        seq: u64,
        prev: Option<(u64, &Item)>,
        next: Option<(u64, &Item)>,
    ) -> Option<Item>;
}

/// Hold-last: the previous item again (or the next one at the start).
pub fn hold_last(prev: Option<(u64, &Item)>, next: Option<(u64, &Item)>) -> Option<Item> {
    prev.or(next).map(|(_, it)| it.clone())
}

/// Linear interpolation between the neighbours for ndarray payloads;
/// hold-last for anything else or at the edges.
pub fn linear(seq: u64, prev: Option<(u64, &Item)>, next: Option<(u64, &Item)>) -> Option<Item> {
    match (prev, next) {
        (Some((ps, p)), Some((ns, n))) if ns > ps => {
            let w = (seq.saturating_sub(ps)) as f64 / (ns - ps) as f64;
            match nd::interpolate_items(p, n, w.clamp(0.0, 1.0)) {
                Ok(mut it) => {
                    it.timestamp_us =
                        p.timestamp_us + ((n.timestamp_us - p.timestamp_us) as f64 * w) as i64;
                    Some(it)
                }
                Err(_) => hold_last(prev, next),
            }
        }
        _ => hold_last(prev, next),
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn zstd_round_trip_marks_the_item() {
        let mut it = Item {
            payload: Bytes::from(vec![7u8; 10_000]),
            ..Default::default()
        };
        assert!(zstd_compress(&mut it, 1));
        assert!(it.payload.len() < 1000);
        assert_eq!(it.quality.as_ref().unwrap().method, "zstd");
        restore(&mut it).unwrap();
        assert_eq!(it.payload.len(), 10_000);
        // Incompressible payloads are left as they are.
        let mut r = Item {
            payload: Bytes::from(
                (0..4096u32)
                    .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                    .collect::<Vec<_>>(),
            ),
            ..Default::default()
        };
        let before = r.payload.clone();
        if !zstd_compress(&mut r, 1) {
            assert_eq!(r.payload, before);
            assert!(r.quality.is_none());
        }
    }

    #[test]
    fn corrupt_or_unknown_codecs_are_errors() {
        let mut it = Item {
            payload: Bytes::from_static(b"not zstd"),
            ..Default::default()
        };
        it.metadata.insert(CODEC.into(), control::string("zstd"));
        assert!(restore(&mut it).unwrap_err().to_string().contains("zstd"));
        it.metadata.insert(CODEC.into(), control::string("lz77"));
        assert!(restore(&mut it).unwrap_err().to_string().contains("lz77"));
    }

    #[test]
    fn mean_and_linear_on_frames() {
        let a = nd::array_item(Array2::<u16>::from_elem((4, 4), 10));
        let b = nd::array_item(Array2::<u16>::from_elem((4, 4), 20));
        let c = nd::array_item(Array2::<u16>::from_elem((4, 4), 30));
        let m = aggregate_builtin("mean", &[a.clone(), b.clone(), c.clone()]).unwrap();
        assert!(nd::item_array::<u16>(&m).unwrap().iter().all(|&x| x == 20));
        // Seq 1 and 2 between 0 (a) and 3 (c): 16.67 → 17, 23.33 → 23.
        let s1 = linear(1, Some((0, &a)), Some((3, &c))).unwrap();
        let s2 = linear(2, Some((0, &a)), Some((3, &c))).unwrap();
        assert!(nd::item_array::<u16>(&s1).unwrap().iter().all(|&x| x == 17));
        assert!(nd::item_array::<u16>(&s2).unwrap().iter().all(|&x| x == 23));
        // Not arrays: hold-last.
        let plain = Item {
            payload: Bytes::from_static(b"x"),
            ..Default::default()
        };
        assert_eq!(
            linear(1, Some((0, &plain)), Some((2, &b))).unwrap().payload,
            plain.payload
        );
        assert!(aggregate_builtin("median", &[a]).is_err());
    }
}
