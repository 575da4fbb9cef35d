//! Bodies of the `cargo fuzz` targets in `fuzz/`, kept in the library so
//! ordinary tests run them over random inputs too.
//!
//! Each function panics only when an invariant of the crate is violated;
//! any input bytes whatsoever must be handled without panicking.

use crate::interchange::{self, parse_prov_json, ElementKind, MAX_DOCUMENT_ELEMENTS};
use crate::model::*;

/// `prov_json`: [`parse_prov_json`] on arbitrary bytes returns a document
/// or a [`ProvError::Document`], never panics. Whatever parses must parse
/// the same again; every entity and activity must map to a record (an
/// agent to none) whose attributes, exported and read back, give the same
/// record; and its name and id must escape cleanly for DOT and Mermaid.
///
/// ```
/// diaspora_provenance::fuzzing::prov_json(br#"{"entity": {"ex:a": {"prov:label": "a\"b"}}}"#);
/// diaspora_provenance::fuzzing::prov_json(b"{\"used\": {\"_:u\": {\"prov:entity\": 5}}}");
/// diaspora_provenance::fuzzing::prov_json(b"not json");
/// ```
pub fn prov_json(data: &[u8]) {
    let doc = match parse_prov_json(data) {
        Ok(doc) => doc,
        Err(ProvError::Document(msg)) => {
            assert!(!msg.is_empty(), "an empty error message");
            return;
        }
        Err(e) => panic!("parse_prov_json failed with a non-document error: {e}"),
    };
    assert!(doc.elements.len() + doc.relations.len() <= MAX_DOCUMENT_ELEMENTS);
    let again = parse_prov_json(data).expect("a document that parsed once parses again");
    // Debug, not ==: a NaN value is not equal to itself.
    assert_eq!(
        format!("{again:?}"),
        format!("{doc:?}"),
        "parsing is deterministic"
    );
    for el in &doc.elements {
        let mut warnings = Vec::new();
        let rec = el.to_record(&mut warnings);
        assert_eq!(rec.is_none(), el.kind == ElementKind::Agent, "{el:?}");
        let _ = el.invalid_cause();
        check_escapes(&el.id);
        let Some(rec) = rec else { continue };
        check_escapes(&rec.name);
        let back = interchange::record_roundtrip(&rec)
            .unwrap_or_else(|e| panic!("{rec:?} does not round-trip: {e}"));
        assert_same_record(&rec, &back);
    }
    for rel in &doc.relations {
        let _ = rel.edge_kind();
    }
}

/// Panics unless `a` and `b` agree on everything an export carries (not
/// ids, origins or parents).
pub(crate) fn assert_same_record(a: &Record, b: &Record) {
    assert_eq!(
        (a.kind, &a.name, a.time_us, &a.uris, &a.item, a.version),
        (b.kind, &b.name, b.time_us, &b.uris, &b.item, b.version),
        "{a:?} came back as {b:?}"
    );
    // Debug, not ==: a NaN tag is not equal to itself.
    assert_eq!(
        format!("{:?}", a.tags),
        format!("{:?}", b.tags),
        "tags of {a:?}"
    );
}

/// Panics unless the DOT and Mermaid escapes of `s` are safe inside their
/// quotes.
fn check_escapes(s: &str) {
    let d = interchange::dot_escape(s);
    assert!(!d.contains(['\n', '\r']), "raw line break in {d:?}");
    let mut chars = d.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => assert!(chars.next().is_some(), "a trailing backslash in {d:?}"),
            '"' => panic!("an unescaped quote in {d:?}"),
            _ => {}
        }
    }
    let m = interchange::mermaid_escape(s).replace("<br/>", "");
    assert!(
        !m.contains(['"', '\n', '\r', '<', '>', '`']),
        "unsafe character in {m:?}"
    );
}

/// `item_batch`: the SQLite store's packed blobs — an item batch (first two
/// input bytes: the item count) and a parents list — read from disk must
/// decode or give a [`ProvError::Corrupt`], never panic; whatever decodes
/// must encode back to the same bytes.
///
/// ```
/// diaspora_provenance::fuzzing::item_batch(&[1, 0, 17, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
/// diaspora_provenance::fuzzing::item_batch(b"");
/// ```
pub fn item_batch(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let blob = &data[2..];
    let mut items = Vec::new();
    for k in 0..n.min(4096) {
        match crate::codec::decode_batch_item(blob, n, k) {
            Ok(item) => items.push(item),
            Err(ProvError::Corrupt(_)) => return,
            Err(e) => panic!("unexpected error kind: {e}"),
        }
    }
    if n > 0 && n <= 4096 && items.len() == n {
        let refs: Vec<(i64, &[(RecordId, EdgeKind)])> =
            items.iter().map(|(t, p)| (*t, p.as_slice())).collect();
        let again = crate::codec::encode_batch(&refs);
        // A blob may carry bytes past the last item; what the items span must match.
        assert_eq!(
            &blob[..again.len().min(blob.len())],
            &again[..],
            "decode/encode round trip"
        );
    }
    match crate::codec::unpack_parents(blob) {
        Ok(ps) => assert_eq!(crate::codec::pack_parents(&ps), blob),
        Err(ProvError::Corrupt(_)) => {}
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

/// `pg_tls_url`: [`crate::pg_tls::split_url`] on arbitrary text (as a
/// `postgres://` URL and as given) returns a value or a
/// [`ProvError::Invalid`], never panics. What it returns must hold no
/// `sslmode` or `sslrootcert` for the driver, and splitting it again must
/// give it back unchanged with the defaults (`prefer`, no root file).
///
/// ```
/// diaspora_provenance::fuzzing::pg_tls_url(b"u:p@h/db?sslmode=verify-ca&sslrootcert=%2Fca.pem&x=1");
/// diaspora_provenance::fuzzing::pg_tls_url(b"h/db?a&sslmode=require=&&sslmode=bogus");
/// diaspora_provenance::fuzzing::pg_tls_url(b"\xff?sslrootcert=%ff");
/// ```
pub fn pg_tls_url(data: &[u8]) {
    use crate::pg_tls::{split_url, SslMode};
    let text = String::from_utf8_lossy(data);
    for url in [format!("postgres://{text}"), text.into_owned()] {
        let (driver_url, tls) = match split_url(&url) {
            Ok(split) => split,
            Err(ProvError::Invalid(msg)) => {
                assert!(!msg.is_empty(), "an empty error message");
                continue;
            }
            Err(e) => panic!("split_url failed with a non-Invalid error: {e}"),
        };
        assert!(
            tls.mode == SslMode::Prefer || driver_url.len() < url.len(),
            "an sslmode was read but not taken out: {url:?} -> {driver_url:?}"
        );
        let (again, defaults) = split_url(&driver_url)
            .unwrap_or_else(|e| panic!("{driver_url:?}, split from {url:?}, fails: {e}"));
        assert_eq!(again, driver_url, "splitting is idempotent");
        assert_eq!(defaults.mode, SslMode::Prefer, "{url:?} -> {driver_url:?}");
        assert_eq!(defaults.root_cert, None, "{url:?} -> {driver_url:?}");
    }
}

#[cfg(test)]
mod pg_tls_url_tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pg_tls_url_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            super::pg_tls_url(&data);
        }

        #[test]
        fn pg_tls_url_holds_on_query_like_text(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "sslmode", "sslrootcert", "ssl%6dode", "=", "&", "?", "@", "require",
                    "verify-ca", "verify-full", "disable", "bogus", "%ff", "/ca.pem", "h/db", "u:p",
                ]),
                0..16,
            )
        ) {
            super::pg_tls_url(parts.concat().as_bytes());
        }
    }
}

#[cfg(test)]
mod item_batch_tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn item_batch_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::item_batch(&data);
        }

        #[test]
        fn item_batch_round_trips(items in proptest::collection::vec(
            (any::<i64>(), proptest::collection::vec((any::<i64>(), 0usize..6), 0..4)), 1..20)) {
            let kinds = crate::model::EdgeKind::ALL;
            let items: Vec<(i64, Vec<(i64, crate::model::EdgeKind)>)> = items
                .into_iter()
                .map(|(t, ps)| (t, ps.into_iter().map(|(p, k)| (p, kinds[k])).collect()))
                .collect();
            let refs: Vec<(i64, &[(i64, crate::model::EdgeKind)])> = items.iter().map(|(t, p)| (*t, p.as_slice())).collect();
            let blob = crate::codec::encode_batch(&refs);
            let mut data = (items.len() as u16).to_le_bytes().to_vec();
            data.extend_from_slice(&blob);
            super::item_batch(&data);
            for (k, it) in items.iter().enumerate() {
                prop_assert_eq!(&crate::codec::decode_batch_item(&blob, items.len(), k).unwrap(), it);
            }
        }
    }
}
