//! Item metadata: the one set of value builders and readers, and the one
//! text form of a value.
//!
//! Metadata values are typed (`int`, `float`, `bool`, `string`, `raw`
//! bytes). Services compare and record them as text — a view joins on a
//! key's text, a provenance recorder keeps them as tags — so there is
//! exactly one text form, [`value_text`]:
//!
//! | value | text |
//! |---|---|
//! | string | itself |
//! | int | decimal |
//! | float | an integral float like an integer (`1`, `-0`), others the shortest text that reads back as the same float (`0.1`, `2.5`); `NaN`, `inf`, `-inf`; never an exponent |
//! | bool | `true` / `false` |
//! | raw | the bytes as UTF-8, invalid sequences replaced by U+FFFD |
//!
//! So the float `1.0` and the int `1` have the same text: a view joins them,
//! and a provenance tag reads `1` for both.
//!
//! ```
//! use diaspora_fabric::item::{meta, Item};
//! let mut item = Item::default();
//! item.metadata.insert("scan".into(), meta::float(17.0));
//! item.metadata.insert("energy".into(), meta::float(8.25));
//! assert_eq!(meta::meta_text(&item, "scan").as_deref(), Some("17"));
//! assert_eq!(meta::meta_text(&item, "energy").as_deref(), Some("8.25"));
//! assert_eq!(meta::get_f64(&item, "energy"), Some(8.25));
//! assert_eq!(meta::get_i64(&item, "scan"), None); // a float, not an int
//! ```

use std::borrow::Cow;

use diaspora_proto::v1::{self, value::Kind};

use super::Item;

/// An int metadata value.
pub fn int(i: i64) -> v1::Value {
    v1::Value {
        kind: Some(Kind::I(i)),
    }
}

/// A float metadata value.
pub fn float(f: f64) -> v1::Value {
    v1::Value {
        kind: Some(Kind::F(f)),
    }
}

/// A bool metadata value.
pub fn boolean(b: bool) -> v1::Value {
    v1::Value {
        kind: Some(Kind::B(b)),
    }
}

/// A string metadata value.
pub fn string(s: &str) -> v1::Value {
    v1::Value {
        kind: Some(Kind::S(s.to_string())),
    }
}

/// A raw-bytes metadata value.
pub fn raw(bytes: impl Into<bytes::Bytes>) -> v1::Value {
    v1::Value {
        kind: Some(Kind::Raw(bytes.into())),
    }
}

/// The kind of `key`'s value in `item`, if it has one.
pub fn get<'a>(item: &'a Item, key: &str) -> Option<&'a Kind> {
    item.metadata.get(key)?.kind.as_ref()
}

/// An int metadata value of `item`.
pub fn get_i64(item: &Item, key: &str) -> Option<i64> {
    match get(item, key)? {
        Kind::I(i) => Some(*i),
        _ => None,
    }
}

/// An int metadata value of `item`, if present and an int ≥ 0.
pub fn get_u64(item: &Item, key: &str) -> Option<u64> {
    get_i64(item, key).and_then(|i| u64::try_from(i).ok())
}

/// A float metadata value of `item`.
pub fn get_f64(item: &Item, key: &str) -> Option<f64> {
    match get(item, key)? {
        Kind::F(f) => Some(*f),
        _ => None,
    }
}

/// A bool metadata value of `item` (false when absent or not a bool).
pub fn get_bool(item: &Item, key: &str) -> bool {
    matches!(get(item, key), Some(Kind::B(true)))
}

/// A string metadata value of `item`.
pub fn get_str<'a>(item: &'a Item, key: &str) -> Option<&'a str> {
    match get(item, key)? {
        Kind::S(s) => Some(s),
        _ => None,
    }
}

/// The text of a value (see the [module](self) table); `None` for a value
/// without a kind.
pub fn value_text(v: &v1::Value) -> Option<Cow<'_, str>> {
    Some(kind_text(v.kind.as_ref()?))
}

/// The text of `key`'s value in `item` (see the [module](self) table): a
/// view's join key, a provenance tag.
pub fn meta_text<'a>(item: &'a Item, key: &str) -> Option<Cow<'a, str>> {
    Some(kind_text(get(item, key)?))
}

fn kind_text(kind: &Kind) -> Cow<'_, str> {
    match kind {
        Kind::S(s) => Cow::Borrowed(s.as_str()),
        Kind::I(i) => Cow::Owned(i.to_string()),
        Kind::F(f) => Cow::Owned(float_text(*f)),
        Kind::B(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Kind::Raw(r) => String::from_utf8_lossy(r),
    }
}

/// The text of a float: Rust's `Display` (shortest round-trip digits, no
/// exponent, an integral value without a fraction).
fn float_text(f: f64) -> String {
    f.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with(key: &str, v: v1::Value) -> Item {
        let mut it = Item::default();
        it.metadata.insert(key.into(), v);
        it
    }

    #[test]
    fn text_of_every_kind() {
        for (v, want) in [
            (string("a b"), "a b"),
            (int(-3), "-3"),
            (int(i64::MAX), "9223372036854775807"),
            (float(1.0), "1"),
            (float(-0.0), "-0"),
            (float(0.1), "0.1"),
            (float(2.5), "2.5"),
            (float(1e21), "1000000000000000000000"),
            (float(1.5e-7), "0.00000015"),
            (float(f64::NAN), "NaN"),
            (float(f64::INFINITY), "inf"),
            (float(f64::NEG_INFINITY), "-inf"),
            (boolean(true), "true"),
            (boolean(false), "false"),
            (raw(&b"scan-1"[..]), "scan-1"),
            (raw(&[0xff, b'a'][..]), "\u{fffd}a"),
        ] {
            assert_eq!(value_text(&v).as_deref(), Some(want), "{v:?}");
            assert_eq!(meta_text(&with("k", v.clone()), "k").as_deref(), Some(want));
        }
        assert_eq!(value_text(&v1::Value { kind: None }), None);
        assert_eq!(meta_text(&Item::default(), "k"), None);
    }

    #[test]
    fn an_integral_float_and_an_int_share_their_text() {
        assert_eq!(value_text(&float(17.0)), value_text(&int(17)));
        assert_eq!(value_text(&float(-4.0)), value_text(&int(-4)));
    }

    #[test]
    fn typed_readers_read_only_their_kind() {
        let it = with("k", int(-1));
        assert_eq!(get_i64(&it, "k"), Some(-1));
        assert_eq!(get_u64(&it, "k"), None);
        assert_eq!(get_f64(&it, "k"), None);
        assert_eq!(get_str(&it, "k"), None);
        assert!(!get_bool(&it, "k"));
        assert_eq!(get_f64(&with("k", float(0.5)), "k"), Some(0.5));
        assert_eq!(get_u64(&with("k", int(7)), "k"), Some(7));
        assert!(get_bool(&with("k", boolean(true)), "k"));
        assert_eq!(get_i64(&it, "absent"), None);
    }

    proptest! {
        #[test]
        fn float_text_reads_back_as_the_same_float(f in any::<f64>()) {
            let text = value_text(&float(f)).unwrap().into_owned();
            prop_assert!(!text.contains('e') && !text.contains('E'), "{}", text);
            if f.is_nan() {
                prop_assert_eq!(text, "NaN");
            } else {
                let back: f64 = text.parse().unwrap();
                prop_assert_eq!(back.to_bits(), f.to_bits());
            }
        }

        #[test]
        fn an_integral_float_prints_like_the_integer(i in -(1i64 << 53)..(1i64 << 53)) {
            let f = i as f64;
            prop_assume!(f != 0.0 || i == 0);
            let (a, b) = (float(f), int(i));
            prop_assert_eq!(value_text(&a).unwrap(), value_text(&b).unwrap());
        }

        #[test]
        fn a_fractional_float_has_a_fraction(i in -(1i64 << 40)..(1i64 << 40), frac in 1u32..1000) {
            let f = i as f64 + f64::from(frac) / 1024.0;
            let text = value_text(&float(f)).unwrap().into_owned();
            prop_assert!(text.contains('.'), "{}", text);
        }

        #[test]
        fn readers_take_any_value(i in any::<i64>(), s in ".*", b in any::<bool>(), f in any::<f64>()) {
            let mut it = Item::default();
            it.metadata.insert("i".into(), int(i));
            it.metadata.insert("s".into(), string(&s));
            it.metadata.insert("b".into(), boolean(b));
            it.metadata.insert("f".into(), float(f));
            prop_assert_eq!(get_i64(&it, "i"), Some(i));
            prop_assert_eq!(get_u64(&it, "i"), (i >= 0).then_some(i as u64));
            prop_assert_eq!(get_str(&it, "s"), Some(s.as_str()));
            let text = meta_text(&it, "s");
            prop_assert_eq!(text.as_deref(), Some(s.as_str()));
            prop_assert_eq!(get_bool(&it, "b"), b);
            prop_assert_eq!(get_f64(&it, "f").map(f64::to_bits), Some(f.to_bits()));
            prop_assert_eq!(get_u64(&it, "s"), None);
        }
    }
}
