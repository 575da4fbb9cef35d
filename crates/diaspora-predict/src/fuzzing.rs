//! Fuzz bodies (the `fuzz/` crate's targets call these; the tests below
//! run them on fixed and random inputs, so they are exercised without
//! libFuzzer too). Each parser of disk or network bytes must return a
//! value or a clear error, never panic.

use crate::forecast::Forecaster;
use crate::monitor::{decode_event, encode_event};
use crate::nab::{parse_series, parse_windows};
use crate::traces::parse_trace;

/// A NAB series CSV, then a NAB windows file, from the same bytes.
pub fn nab_csv(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = parse_series("fuzz", text) {
            assert_eq!(s.time_us.len(), s.values.len());
            assert!(s.values.iter().all(|v| v.is_finite()));
        }
        let _ = parse_windows(text);
    }
}

/// A metric trace CSV.
pub fn trace_csv(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(t) = parse_trace("fuzz", text) {
            assert!(t.t_s.windows(2).all(|w| w[0] < w[1]));
            assert!(t.values.iter().all(|v| v.is_finite()));
        }
    }
}

/// A monitor event; what decodes re-encodes to something that decodes
/// to the same event.
pub fn monitor_event(data: &[u8]) {
    if let Ok(e) = decode_event(data) {
        let again = decode_event(&encode_event(&e)).expect("a decoded event re-encodes");
        assert_eq!(again, e);
    }
}

/// A model checkpoint.
pub fn checkpoint(data: &[u8]) {
    if let Ok(f) = Forecaster::from_checkpoint_bytes(data, candle_core::Device::Cpu) {
        assert!(f.config().validate().is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_real_checkpoint_with_damage_is_refused_not_fatal() {
        let f = Forecaster::new(
            crate::forecast::ForecasterConfig {
                window: 4,
                horizon: 2,
                hidden: 3,
                ..Default::default()
            },
            candle_core::Device::Cpu,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.safetensors");
        f.save(&p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        checkpoint(&bytes);
        for cut in [0, 1, 8, bytes.len() / 2, bytes.len() - 1] {
            checkpoint(&bytes[..cut]);
            assert!(
                Forecaster::from_checkpoint_bytes(&bytes[..cut], candle_core::Device::Cpu).is_err()
            );
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            checkpoint(&b);
        }
    }

    proptest! {
        #[test]
        fn the_bodies_survive_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            nab_csv(&data);
            trace_csv(&data);
            monitor_event(&data);
            checkpoint(&data);
        }

        #[test]
        fn the_csv_bodies_survive_csv_like_text(
            rows in proptest::collection::vec(("[0-9 .:e-]{0,12}", "[0-9.eE+-]{0,10}"), 0..30)
        ) {
            let mut a = String::from("t_s,value\n");
            let mut b = String::from("timestamp,value\n");
            for (t, v) in &rows {
                a.push_str(&format!("{t},{v}\n"));
                b.push_str(&format!("2024-01-01 {t},{v}\n"));
            }
            trace_csv(a.as_bytes());
            nab_csv(b.as_bytes());
        }
    }
}
