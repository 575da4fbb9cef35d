//! Fuzz target bodies (run by `cargo fuzz` in `fuzz/` and, on a corpus of
//! their own, by this crate's tests).

use crate::filter::Filter;

/// The filter parser on arbitrary bytes: never panics; what it accepts
/// prints to text that parses back to the same filter.
pub fn filter_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = Filter::parse(text) {
        let printed = f.to_string();
        let again = Filter::parse(&printed)
            .unwrap_or_else(|e| panic!("printed {printed:?} does not parse: {e}"));
        assert_eq!(again, f, "{printed}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_fuzz_body_takes_odd_input() {
        for s in [
            &b"a == 1"[..],
            b"((((",
            b"a in [1,",
            b"\xff\xfe",
            b"`",
            b"\"\\u{110000}\"",
            b"a == \"\\u{",
            b"not not not",
            b"a in {1,2,3,}",
            b"-",
            b"a == -0.0",
            b"a == 1e308",
            b"a == 1e309",
        ] {
            super::filter_parse(s);
        }
    }
}
