//! Random expressions, printed and parsed back, evaluated against a
//! reference evaluator written separately (below, from the language's
//! rules, over the generated tree rather than the parsed one).

use diaspora_trigger::filter::{CmpOp, Expr, Filter, Lit, Value};
use proptest::prelude::*;
use std::collections::BTreeMap;

const FIELDS: [&str; 5] = ["a", "b.c", "@key", "odd key", "n-1"];

fn lit() -> impl Strategy<Value = Lit> {
    prop_oneof![
        (-5i64..5).prop_map(Lit::Int),
        (-5i32..5, 0u8..4).prop_map(|(i, q)| Lit::Float(i as f64 + q as f64 / 4.0)),
        any::<bool>().prop_map(Lit::Bool),
        "[a-c\"\\\\\n`]{0,3}".prop_map(Lit::Str),
    ]
}

fn num() -> impl Strategy<Value = Lit> {
    prop_oneof![
        (-5i64..5).prop_map(Lit::Int),
        (-5i32..5, 0u8..4).prop_map(|(i, q)| Lit::Float(i as f64 + q as f64 / 4.0)),
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop::sample::select(FIELDS.to_vec()).prop_map(String::from)
}

fn op() -> impl Strategy<Value = CmpOp> {
    prop::sample::select(vec![
        CmpOp::Eq,
        CmpOp::Ne,
        CmpOp::Lt,
        CmpOp::Le,
        CmpOp::Gt,
        CmpOp::Ge,
    ])
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        any::<bool>().prop_map(Expr::Const),
        field().prop_map(Expr::Has),
        (field(), op(), lit()).prop_map(|(field, op, value)| Expr::Cmp { field, op, value }),
        (field(), num(), any::<bool>(), num(), any::<bool>()).prop_map(
            |(field, lo, lo_inclusive, hi, hi_inclusive)| Expr::Range {
                field,
                lo,
                lo_inclusive,
                hi,
                hi_inclusive
            }
        ),
        (field(), prop::collection::vec(lit(), 1..4))
            .prop_map(|(field, values)| Expr::Set { field, values }),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 40, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
            prop::collection::vec(inner, 2..4).prop_map(Expr::Or),
        ]
    })
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-5i64..5).prop_map(Value::Int),
        (-5i32..5, 0u8..4).prop_map(|(i, q)| Value::Float(i as f64 + q as f64 / 4.0)),
        any::<bool>().prop_map(Value::Bool),
        "[a-c\"\\\\\n`]{0,3}".prop_map(Value::Str),
        Just(Value::Bytes(vec![0xff])),
    ]
}

fn event() -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::btree_map(field(), value(), 0..5)
}

/// The reference: numbers as f64 (every generated number is exact in
/// f64), strings by bytes, bools false < true, anything else or absent:
/// the test is false.
fn num_of_value(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(x) => Some(*x),
        _ => None,
    }
}

fn num_of_lit(l: &Lit) -> Option<f64> {
    match l {
        Lit::Int(i) => Some(*i as f64),
        Lit::Float(x) => Some(*x),
        _ => None,
    }
}

fn order(v: &Value, l: &Lit) -> Option<std::cmp::Ordering> {
    if let (Some(a), Some(b)) = (num_of_value(v), num_of_lit(l)) {
        return a.partial_cmp(&b);
    }
    match (v, l) {
        (Value::Str(a), Lit::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        (Value::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn reference(e: &Expr, ev: &BTreeMap<String, Value>) -> bool {
    use std::cmp::Ordering::*;
    match e {
        Expr::Const(b) => *b,
        Expr::Has(f) => ev.contains_key(f),
        Expr::Cmp { field, op, value } => match ev.get(field).and_then(|v| order(v, value)) {
            None => false,
            Some(o) => match op {
                CmpOp::Eq => o == Equal,
                CmpOp::Ne => o != Equal,
                CmpOp::Lt => o == Less,
                CmpOp::Le => o != Greater,
                CmpOp::Gt => o == Greater,
                CmpOp::Ge => o != Less,
            },
        },
        Expr::Range {
            field,
            lo,
            lo_inclusive,
            hi,
            hi_inclusive,
        } => {
            let Some(x) = ev.get(field).and_then(num_of_value) else {
                return false;
            };
            let (lo, hi) = (num_of_lit(lo).unwrap(), num_of_lit(hi).unwrap());
            (x > lo || (*lo_inclusive && x == lo)) && (x < hi || (*hi_inclusive && x == hi))
        }
        Expr::Set { field, values } => ev
            .get(field)
            .is_some_and(|v| values.iter().any(|l| order(v, l) == Some(Equal))),
        Expr::Not(e) => !reference(e, ev),
        Expr::And(es) => es.iter().all(|e| reference(e, ev)),
        Expr::Or(es) => es.iter().any(|e| reference(e, ev)),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn printed_expressions_parse_back_and_evaluate_as_the_reference(e in expr(), evs in prop::collection::vec(event(), 1..6)) {
        let text = Filter::from_expr(e.clone()).to_string();
        let f = Filter::parse(&text).map_err(|err| TestCaseError::fail(err.render(&text)))?;
        prop_assert_eq!(f.expr(), &e, "{}", text);
        for ev in &evs {
            prop_assert_eq!(f.matches(ev), reference(&e, ev), "{} on {:?}", text, ev);
        }
    }

    #[test]
    fn the_parser_never_panics(s in "[a-z0-9 ()\\[\\]{},.=<>!\"`\\\\@-]{0,60}") {
        let _ = Filter::parse(&s);
    }
}
