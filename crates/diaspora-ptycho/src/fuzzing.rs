//! Fuzz bodies for everything this crate parses from bytes: a scan's
//! `frames.npy`, `meta.jsonl` and `complex64` images, and a surrogate
//! checkpoint. Each must return a value or a clear error, never panic; the
//! fuzz targets in `fuzz/` call these, and so do the unit tests below, on
//! seeds.

use crate::surrogate::Surrogate;

/// `frames.npy` bytes.
pub fn frames(data: &[u8]) {
    if let Ok(frames) = crate::files::parse_frames(data) {
        assert!(!frames.is_empty());
        let n = frames[0].nrows();
        assert!(frames.iter().all(|f| f.dim() == (n, n)));
    }
}

/// `meta.jsonl` bytes.
pub fn meta(data: &[u8]) {
    let _ = crate::files::parse_meta(&String::from_utf8_lossy(data));
}

/// A `complex64` `.npy` image.
pub fn complex(data: &[u8]) {
    if let Ok(a) = crate::files::parse_complex(data, "fuzz.npy") {
        assert!(a.iter().all(|v| v.re.is_finite() && v.im.is_finite()));
    }
}

/// A surrogate checkpoint.
pub fn checkpoint(data: &[u8]) {
    let _ = Surrogate::from_checkpoint_bytes(data, candle_core::Device::Cpu);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array3};
    use ndarray_npy::WriteNpyExt;

    #[test]
    fn the_fuzz_bodies_take_valid_cut_and_flipped_seeds() {
        let mut f = Vec::new();
        Array3::<u16>::from_elem((2, 8, 8), 7)
            .write_npy(&mut f)
            .unwrap();
        let mut c = Vec::new();
        Array2::from_elem((3, 5), crate::C32::new(1.0, -1.0))
            .write_npy(&mut c)
            .unwrap();
        let m = br#"{"scan_id":"s","index":0,"x":1,"y":2,"dose":1000.0}"#.to_vec();
        let net = Surrogate::new(
            crate::surrogate::SurrogateConfig {
                n: 16,
                bin: 1,
                channels: 2,
                seed: 0,
            },
            candle_core::Device::Cpu,
        )
        .unwrap();
        let ck = net.checkpoint_bytes().unwrap();
        for seed in [&f, &c, &m, &ck] {
            for cut in [
                0,
                1,
                seed.len() / 2,
                seed.len().saturating_sub(1),
                seed.len(),
            ] {
                frames(&seed[..cut]);
                meta(&seed[..cut]);
                complex(&seed[..cut]);
                checkpoint(&seed[..cut]);
            }
            let mut flipped = seed.clone();
            for i in (0..flipped.len()).step_by(7) {
                flipped[i] ^= 0x5a;
            }
            frames(&flipped);
            meta(&flipped);
            complex(&flipped);
            checkpoint(&flipped);
        }
    }
}
