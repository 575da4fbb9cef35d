//! Triggers: actions that run when matching events arrive (issue 20).
//!
//! - [`filter`]: the metadata filter language a trigger decides with (pure).
//! - [`spec`]: a trigger's TOML declaration — source, filter, action,
//!   retries, dead-letter topic, provenance store — and its checks (pure).
//! - [`action`]: one attempt of an action (run a command, publish to a
//!   topic, submit a pool task, POST to a URL), classified as done, failed
//!   for now or failed for good.
//! - [`runner`]: the loop — the source read as a consumer group, the
//!   filter, retries with back-off, the dead-letter topic, a provenance
//!   activity per action run, the position committed after every acted-on
//!   event; status published on `diaspora.triggers`.
//! - [`status`]: the status and run records, and their parser.
//! - `source`: a fabric topic (the group on the node) or a Kafka topic
//!   (the group on the Kafka service; feature `kafka`, on by default), read
//!   the same way by the runner.
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

pub mod action;
pub mod filter;
pub mod fuzzing;
pub mod runner;
mod source;
pub mod spec;
pub mod status;
