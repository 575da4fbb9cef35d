//! Report structs as metrics: every numeric field of a `Serialize` report
//! becomes a series named `PREFIX.FIELD`.
//!
//! The stream producer and consumer, the view runner and other components
//! keep their figures in plain report structs (serialised for `--json`
//! summaries). [`collect_fields`] registers those figures on a
//! [`Registry`] without the component depending on this crate: a callback
//! reads a fresh report at each snapshot. Fields are counters (monotonic
//! totals, with `.rate` in snapshots) unless named as gauges.
//!
//! [`ReportSlot`] is for a report owned by a loop (a consumer that is
//! `&mut self`): the loop stores a copy after each step, the callbacks read
//! the latest.

use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use crate::error::{Result, TelemetryError};
use crate::registry::Registry;

/// Most fields one report may register.
pub const FIELDS_MAX: usize = 64;

/// Registers each numeric field of the report `read` returns as
/// `PREFIX.FIELD` with `labels`: a counter with unit `counter_unit`, or a
/// gauge with the unit `gauges` gives it. Fields must be non-negative
/// integers for counters (floats are gauges only); nested objects,
/// strings and booleans are skipped. `read` is called once now to learn
/// the fields, then at every snapshot (once per field: keep it cheap);
/// `None` means "no value now".
///
/// ```
/// use diaspora_telemetry::{collect_fields, Registry};
/// #[derive(serde::Serialize)]
/// struct Report { sent: u64, queue_fill: f64, name: String }
/// let registry = Registry::new();
/// collect_fields(&registry, "demo", &[("topic", "t")], "{item}", &[("queue_fill", "1")], || {
///     Some(Report { sent: 7, queue_fill: 0.25, name: "x".into() })
/// })
/// .unwrap();
/// let names: Vec<String> = registry.names().into_iter().map(|n| n.name).collect();
/// assert_eq!(names, ["demo.queue_fill", "demo.sent"]);
/// ```
pub fn collect_fields<T, F>(
    registry: &Registry,
    prefix: &str,
    labels: &[(&str, &str)],
    counter_unit: &str,
    gauges: &[(&str, &str)],
    read: F,
) -> Result<()>
where
    T: Serialize,
    F: Fn() -> Option<T> + Send + Sync + 'static,
{
    let first = read().map(|r| to_object(&r)).transpose()?.ok_or_else(|| {
        TelemetryError::InvalidSeries(format!("'{prefix}': no report to learn the fields from"))
    })?;
    let numeric: Vec<(String, bool)> = first
        .iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::Number(n) => Some((k.clone(), n.is_f64())),
            _ => None,
        })
        .collect();
    if numeric.len() > FIELDS_MAX {
        return Err(TelemetryError::InvalidSeries(format!(
            "'{prefix}': {} numeric fields, over {FIELDS_MAX}",
            numeric.len()
        )));
    }
    let gauge_unit = |field: &str| gauges.iter().find(|(g, _)| *g == field).map(|(_, u)| *u);
    // Refuse before registering anything.
    if let Some((field, _)) = numeric
        .iter()
        .find(|(f, is_float)| *is_float && gauge_unit(f).is_none())
    {
        return Err(TelemetryError::InvalidSeries(format!(
            "'{prefix}.{field}' is fractional: name it as a gauge"
        )));
    }
    let read = Arc::new(read);
    for (field, _) in numeric {
        let name = format!("{prefix}.{field}");
        let r = Arc::clone(&read);
        match gauge_unit(&field) {
            Some(unit) => registry.observe(&name, unit, labels, move || {
                read_field(&*r, &field).unwrap_or(f64::NAN)
            })?,
            None => registry.observe_counter(&name, counter_unit, labels, move || {
                read_field(&*r, &field).map(|v| v as u64)
            })?,
        }
    }
    Ok(())
}

/// Reads one field of a fresh report. Each field's callback reads its own
/// report: a snapshot then shows every field as of the same moment or
/// later, never a cached value older than a report the owner just stored.
fn read_field<T: Serialize>(read: &dyn Fn() -> Option<T>, field: &str) -> Option<f64> {
    let report = read()?;
    to_object(&report).ok()?.get(field)?.as_f64()
}

fn to_object<T: Serialize>(report: &T) -> Result<serde_json::Map<String, serde_json::Value>> {
    match serde_json::to_value(report) {
        Ok(serde_json::Value::Object(o)) => Ok(o),
        Ok(_) => Err(TelemetryError::InvalidSeries(
            "a report must serialise as a JSON object".into(),
        )),
        Err(e) => Err(TelemetryError::InvalidSeries(format!(
            "report does not serialise: {e}"
        ))),
    }
}

/// The latest copy of a report kept by a loop, read by [`collect_fields`]
/// callbacks. Cloning shares the slot.
///
/// ```
/// use diaspora_telemetry::fields::ReportSlot;
/// let slot = ReportSlot::new(0u64);
/// let reader = slot.clone();
/// slot.store(5);
/// assert_eq!(reader.load(), 5);
/// ```
#[derive(Debug, Default)]
pub struct ReportSlot<T>(Arc<Mutex<T>>);

impl<T> Clone for ReportSlot<T> {
    fn clone(&self) -> Self {
        ReportSlot(Arc::clone(&self.0))
    }
}

impl<T: Clone> ReportSlot<T> {
    /// A slot holding `initial`.
    pub fn new(initial: T) -> Self {
        ReportSlot(Arc::new(Mutex::new(initial)))
    }

    /// Replaces the report.
    pub fn store(&self, report: T) {
        *self.0.lock() = report;
    }

    /// A copy of the latest report.
    pub fn load(&self) -> T {
        self.0.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Kind, SeriesValue};

    #[derive(Clone, Serialize, Default)]
    struct Report {
        delivered: u64,
        held: u64,
        fill: f64,
        label: String,
        nested: Option<Vec<u8>>,
    }

    fn value(registry: &Registry, name: &str) -> Option<f64> {
        registry.values_of(name).first().map(|(_, v)| match v {
            SeriesValue::Counter(c) => *c as f64,
            SeriesValue::Gauge(g) => *g,
        })
    }

    #[test]
    fn fields_follow_the_slot_and_kinds_are_as_declared() {
        let slot = ReportSlot::new(Report::default());
        let registry = Registry::new();
        let reader = slot.clone();
        collect_fields(
            &registry,
            "stream.consumer",
            &[("topic", "frames")],
            "{item}",
            &[("held", "{item}"), ("fill", "1")],
            move || Some(reader.load()),
        )
        .unwrap();
        let names: Vec<(String, bool)> = registry
            .names()
            .into_iter()
            .map(|n| (n.name, n.kind == Kind::Counter))
            .collect();
        assert_eq!(
            names,
            [
                ("stream.consumer.delivered".to_string(), true),
                ("stream.consumer.fill".to_string(), false),
                ("stream.consumer.held".to_string(), false),
            ]
        );
        slot.store(Report {
            delivered: 12,
            held: 3,
            fill: 0.5,
            ..Report::default()
        });
        assert_eq!(value(&registry, "stream.consumer.delivered"), Some(12.0));
        assert_eq!(value(&registry, "stream.consumer.held"), Some(3.0));
        assert_eq!(value(&registry, "stream.consumer.fill"), Some(0.5));
    }

    #[test]
    fn a_fractional_field_not_named_a_gauge_is_refused() {
        let err = collect_fields(&Registry::new(), "x", &[], "1", &[], || {
            Some(Report {
                fill: 0.5,
                ..Report::default()
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("'x.fill' is fractional"), "{err}");
        // Nothing was registered.
        let registry = Registry::new();
        let _ = collect_fields(&registry, "x", &[], "1", &[], || Some(Report::default()));
        assert!(registry.is_empty());
    }

    #[test]
    fn no_report_and_non_objects_are_refused() {
        let none = collect_fields(&Registry::new(), "x", &[], "1", &[], || None::<Report>);
        assert!(none.unwrap_err().to_string().contains("no report"));
        let scalar = collect_fields(&Registry::new(), "x", &[], "1", &[], || Some(5u64));
        assert!(scalar.unwrap_err().to_string().contains("JSON object"));
    }
}
