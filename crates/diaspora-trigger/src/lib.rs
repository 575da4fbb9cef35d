//! Triggers: actions that run when matching events arrive (issue 20).
//!
//! This crate holds, so far, the pure core a trigger decides with: the
//! metadata filter language ([`filter`]). The trigger runner (sources,
//! actions, retries, the dead-letter topic, positions as a consumer group,
//! provenance of every run) is built on it next; until then nothing here
//! runs an action.
//!
//! ```
//! use diaspora_trigger::filter::{Filter, Value};
//! use std::collections::BTreeMap;
//!
//! let f = Filter::parse(r#"scan.kind == "fly" and energy_kev in [5, 7.5) and not has(bad)"#).unwrap();
//! let mut event = BTreeMap::new();
//! event.insert("scan.kind".to_string(), Value::Str("fly".into()));
//! event.insert("energy_kev".to_string(), Value::Float(6.2));
//! assert!(f.matches(&event));
//! event.insert("bad".to_string(), Value::Bool(true));
//! assert!(!f.matches(&event));
//! ```

pub mod filter;
pub mod fuzzing;
