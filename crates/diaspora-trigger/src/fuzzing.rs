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

/// The status parser (`trigger list` reads statuses from the network) on
/// arbitrary bytes: never panics; what it accepts serialises and parses
/// back to the same.
pub fn status_parse(data: &[u8]) {
    if let Ok(s) = crate::status::TriggerStatus::parse(data) {
        let again = crate::status::TriggerStatus::parse(&serde_json::to_vec(&s).unwrap())
            .expect("a parsed status parses again");
        assert_eq!(again, s);
    }
}

/// A trigger spec (a file a user hands the runner) on arbitrary bytes:
/// never panics.
pub fn spec_parse(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::spec::TriggerSpec::parse(text);
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
            super::status_parse(s);
            super::spec_parse(s);
        }
        super::status_parse(br#"{"name":"t","state":"running","source":"s","filter":"true","action":"command","dead_letter":"d","group":"g"}"#);
        super::spec_parse(b"name = \"t\"\n[source]\ntopic = \"a\"\n[action]\nkind = \"http\"\nurl = \"http://[::1\"\n");
    }
}
