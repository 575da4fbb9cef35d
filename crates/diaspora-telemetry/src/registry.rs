//! A bounded registry of metric series: counters, gauges and callbacks, and
//! snapshots of them with per-second rates.
//!
//! A **series** is a name plus labels. Every series of one name has the same
//! kind (counter or gauge) and unit, so a name maps to one OpenTelemetry
//! instrument. Names are dotted (`node.items_appended`): an ASCII letter,
//! then letters, digits, `_`, `.`, `-` or `/`, at most
//! [`SERIES_NAME_CHARS_MAX`] characters; names ending in `.rate` are
//! reserved for the rates a snapshot derives.
//!
//! **Snapshots.** [`Registry::snapshot`] returns one sample per series,
//! sorted by name then labels; each counter is followed by its rate:
//!
//! - `NAME` — the counter's total (a gauge's value), unit as registered;
//! - `NAME.rate` — `(total_now − total_prev) / (t_now − t_prev)` per second,
//!   unit `UNIT/s` (`1/s` for a unitless counter), where `prev` is the
//!   previous snapshot *of this registry* that saw the series (any clone;
//!   the publisher is normally the only caller). A series' first snapshot has
//!   no rate (there is no interval yet). A total below the previous one is
//!   a reset (an observed counter of a restarted node, a reconnected QUIC
//!   connection): the rate counts from zero, `total_now / dt`.
//!
//! A callback that has no value now (a gauge's NaN or infinity, a counter's
//! `None`) leaves its series out of that snapshot.
//!
//! The registry is a pure core: [`Registry::snapshot_at`] takes the clock
//! as an argument; [`Registry::snapshot`] reads a monotonic clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::error::{Result, TelemetryError};
use crate::event::{
    MetricSample, LABELS_MAX, LABEL_KEY_CHARS_MAX, LABEL_VALUE_CHARS_MAX, NAME_CHARS_MAX,
    UNIT_CHARS_MAX,
};

/// Most series in one registry.
pub const SERIES_MAX: usize = 4096;
/// Suffix of the derived rate of a counter.
pub const RATE_SUFFIX: &str = ".rate";
/// Longest series name: room is left for [`RATE_SUFFIX`] within
/// [`NAME_CHARS_MAX`].
pub const SERIES_NAME_CHARS_MAX: usize = NAME_CHARS_MAX - RATE_SUFFIX.len();

/// Labels of a series.
pub type Labels = BTreeMap<String, String>;

/// Whether a name's series are counters or gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic total (u64); snapshots add a rate.
    Counter,
    /// Value that goes up and down (f64).
    Gauge,
}

/// The value of one series, read now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SeriesValue {
    /// A counter's total.
    Counter(u64),
    /// A gauge's value (finite).
    Gauge(f64),
}

/// A name's kind and unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameInfo {
    /// The series name.
    pub name: String,
    /// Counter or gauge.
    pub kind: Kind,
    /// The unit (may be empty).
    pub unit: String,
}

type GaugeFn = Arc<dyn Fn() -> f64 + Send + Sync>;
type CounterFn = Arc<dyn Fn() -> Option<u64> + Send + Sync>;
type NameHook = Arc<dyn Fn(&NameInfo) + Send + Sync>;

#[derive(Clone)]
enum Source {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicU64>),
    ObservedCounter(CounterFn),
    ObservedGauge(GaugeFn),
}

impl Source {
    fn read(&self) -> Option<SeriesValue> {
        match self {
            Source::Counter(a) => Some(SeriesValue::Counter(a.load(Ordering::Relaxed))),
            Source::ObservedCounter(f) => f().map(SeriesValue::Counter),
            Source::Gauge(a) => finite(f64::from_bits(a.load(Ordering::Relaxed))),
            Source::ObservedGauge(f) => finite(f()),
        }
    }
}

fn finite(v: f64) -> Option<SeriesValue> {
    v.is_finite().then_some(SeriesValue::Gauge(v))
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SeriesKey {
    name: String,
    labels: Labels,
}

struct Inner {
    series: RwLock<BTreeMap<SeriesKey, Source>>,
    names: Mutex<HashMap<String, (Kind, String)>>,
    previous: Mutex<HashMap<SeriesKey, (u64, Duration)>>,
    hooks: Mutex<Vec<NameHook>>,
    epoch: Instant,
}

/// A bounded set of metric series; cheap to clone (an `Arc` inside), safe to
/// share between threads. See the module docs for names and snapshots.
///
/// ```
/// use diaspora_telemetry::Registry;
/// use std::time::Duration;
/// let registry = Registry::new();
/// let sent = registry.counter("app.items_sent", "{item}", &[("site", "edge")]).unwrap();
/// let depth = registry.gauge("app.queue_depth", "{item}", &[]).unwrap();
/// registry.snapshot_at(Duration::from_secs(1));
/// sent.add(20);
/// depth.set(3.0);
/// let s = registry.snapshot_at(Duration::from_secs(3));
/// let value = |n: &str| s.iter().find(|x| x.name == n).unwrap().value;
/// assert_eq!(value("app.items_sent"), 20.0);
/// assert_eq!(value("app.items_sent.rate"), 10.0); // 20 items over 2 s
/// assert_eq!(value("app.queue_depth"), 3.0);
/// ```
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("series", &self.len())
            .finish()
    }
}

/// A registry that may be gone (see [`Registry::downgrade`]), for callbacks
/// that must not keep it alive.
#[derive(Clone)]
pub struct WeakRegistry(Weak<Inner>);

impl std::fmt::Debug for WeakRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeakRegistry")
    }
}

impl WeakRegistry {
    /// The registry, if it is still alive.
    pub fn upgrade(&self) -> Option<Registry> {
        self.0.upgrade().map(|inner| Registry { inner })
    }
}

/// A monotonic counter; cheap to clone, shared with its registry.
#[derive(Debug, Clone)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down; cheap to clone, shared with its registry.
/// A non-finite value leaves the series out of snapshots until set again.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

fn invalid(m: String) -> TelemetryError {
    TelemetryError::InvalidSeries(m)
}

/// Checks a series name (see the module docs).
pub fn validate_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > SERIES_NAME_CHARS_MAX {
        return Err(invalid(format!(
            "name '{name}' has {n} characters; 1..={SERIES_NAME_CHARS_MAX} allowed"
        )));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'));
    if !first_ok || !rest_ok {
        return Err(invalid(format!(
            "name '{name}' must start with an ASCII letter and hold only letters, digits, '_', '.', '-', '/'"
        )));
    }
    if name.ends_with(RATE_SUFFIX) {
        return Err(invalid(format!(
            "name '{name}' ends with '{RATE_SUFFIX}', which is reserved for derived rates"
        )));
    }
    Ok(())
}

fn validate_labels(name: &str, unit: &str, labels: &[(&str, &str)]) -> Result<Labels> {
    let n = unit.chars().count();
    if n > UNIT_CHARS_MAX || !unit.is_ascii() {
        return Err(invalid(format!(
            "unit '{unit}' of '{name}' must be ASCII of at most {UNIT_CHARS_MAX} characters"
        )));
    }
    let mut out = Labels::new();
    for (k, v) in labels {
        let (kn, vn) = (k.chars().count(), v.chars().count());
        if kn == 0 || kn > LABEL_KEY_CHARS_MAX || vn > LABEL_VALUE_CHARS_MAX {
            return Err(invalid(format!(
                "label {k}={v} of '{name}': keys 1..={LABEL_KEY_CHARS_MAX}, values ≤ {LABEL_VALUE_CHARS_MAX} characters"
            )));
        }
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(invalid(format!("label '{k}' of '{name}' given twice")));
        }
    }
    if out.len() > LABELS_MAX {
        return Err(invalid(format!(
            "'{name}' has {} labels; LABELS_MAX is {LABELS_MAX}",
            out.len()
        )));
    }
    Ok(out)
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry {
            inner: Arc::new(Inner {
                series: RwLock::new(BTreeMap::new()),
                names: Mutex::new(HashMap::new()),
                previous: Mutex::new(HashMap::new()),
                hooks: Mutex::new(Vec::new()),
                epoch: Instant::now(),
            }),
        }
    }

    /// The process-wide registry, made on first use. [`crate::init`]
    /// exports it through OpenTelemetry when metrics export is on.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.inner.series.read().len()
    }

    /// Whether the registry holds no series.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers (or finds) a series. `make` builds the source of a new
    /// series; `existing` decides what to do with a series already there.
    fn register(
        &self,
        name: &str,
        unit: &str,
        labels: &[(&str, &str)],
        kind: Kind,
        existing: impl FnOnce(&mut Source) -> Result<()>,
        make: impl FnOnce() -> Source,
    ) -> Result<Source> {
        validate_name(name)?;
        let labels = validate_labels(name, unit, labels)?;
        let new_name = {
            let mut names = self.inner.names.lock();
            match names.get(name) {
                Some((k, u)) if *k != kind || u != unit => {
                    return Err(invalid(format!(
                        "'{name}' is registered as a {k:?} in '{u}', not a {kind:?} in '{unit}'"
                    )));
                }
                Some(_) => None,
                None => {
                    // Reserved now, so a concurrent registration of the same
                    // name with another kind is refused; released below if
                    // no series of it gets stored.
                    names.insert(name.to_string(), (kind, unit.to_string()));
                    Some(NameInfo {
                        name: name.to_string(),
                        kind,
                        unit: unit.to_string(),
                    })
                }
            }
        };
        let key = SeriesKey {
            name: name.to_string(),
            labels,
        };
        let result = {
            let mut series = self.inner.series.write();
            if let Some(s) = series.get_mut(&key) {
                existing(s).map(|_| s.clone())
            } else if series.len() >= SERIES_MAX {
                Err(TelemetryError::RegistryFull {
                    name: name.to_string(),
                    max: SERIES_MAX,
                })
            } else {
                let s = make();
                series.insert(key, s.clone());
                Ok(s)
            }
        };
        if let Some(info) = new_name {
            let has_series = self.inner.series.read().keys().any(|k| k.name == name);
            if !has_series {
                // Nothing of that name was stored (full registry): release it.
                self.inner.names.lock().remove(name);
            } else {
                let hooks = self.inner.hooks.lock().clone();
                for h in hooks {
                    h(&info);
                }
            }
        }
        result
    }

    /// A counter: registers `name` with `labels`, or returns the one
    /// registered before (the same total). Fails when the name is invalid,
    /// used by a gauge or with another unit, observed by a callback, or the
    /// registry is full.
    pub fn counter(&self, name: &str, unit: &str, labels: &[(&str, &str)]) -> Result<Counter> {
        let s = self.register(
            name,
            unit,
            labels,
            Kind::Counter,
            |s| match s {
                Source::Counter(_) => Ok(()),
                _ => Err(invalid(format!(
                    "'{name}' {labels:?} is observed by a callback"
                ))),
            },
            || Source::Counter(Arc::new(AtomicU64::new(0))),
        )?;
        match s {
            Source::Counter(a) => Ok(Counter(a)),
            _ => unreachable!("checked above"),
        }
    }

    /// A gauge (initially 0): registers `name` with `labels`, or returns the
    /// one registered before. Fails like [`Registry::counter`].
    pub fn gauge(&self, name: &str, unit: &str, labels: &[(&str, &str)]) -> Result<Gauge> {
        let s = self.register(
            name,
            unit,
            labels,
            Kind::Gauge,
            |s| match s {
                Source::Gauge(_) => Ok(()),
                _ => Err(invalid(format!(
                    "'{name}' {labels:?} is observed by a callback"
                ))),
            },
            || Source::Gauge(Arc::new(AtomicU64::new(0f64.to_bits()))),
        )?;
        match s {
            Source::Gauge(a) => Ok(Gauge(a)),
            _ => unreachable!("checked above"),
        }
    }

    /// A gauge read by calling `f` at every snapshot and export. A non-finite
    /// result means "no value now" (the series is left out). Registering the
    /// same series again replaces the callback (say, for a new connection).
    /// `f` runs with no registry lock held, but must be quick.
    pub fn observe(
        &self,
        name: &str,
        unit: &str,
        labels: &[(&str, &str)],
        f: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Result<()> {
        let f: GaugeFn = Arc::new(f);
        let g = f.clone();
        self.register(
            name,
            unit,
            labels,
            Kind::Gauge,
            |s| match s {
                Source::ObservedGauge(old) => {
                    *old = g;
                    Ok(())
                }
                _ => Err(invalid(format!("'{name}' {labels:?} is a settable gauge"))),
            },
            || Source::ObservedGauge(f),
        )
        .map(|_| ())
    }

    /// A counter read by calling `f` (a monotonic total kept elsewhere, such
    /// as the node's counters); `None` means "no value now". Snapshots add
    /// its rate like any counter's. Registering again replaces the callback.
    pub fn observe_counter(
        &self,
        name: &str,
        unit: &str,
        labels: &[(&str, &str)],
        f: impl Fn() -> Option<u64> + Send + Sync + 'static,
    ) -> Result<()> {
        let f: CounterFn = Arc::new(f);
        let g = f.clone();
        self.register(
            name,
            unit,
            labels,
            Kind::Counter,
            |s| match s {
                Source::ObservedCounter(old) => {
                    *old = g;
                    Ok(())
                }
                _ => Err(invalid(format!(
                    "'{name}' {labels:?} is a settable counter"
                ))),
            },
            || Source::ObservedCounter(f),
        )
        .map(|_| ())
    }

    /// Every registered name with its kind and unit, sorted by name.
    pub fn names(&self) -> Vec<NameInfo> {
        let mut v: Vec<NameInfo> = self
            .inner
            .names
            .lock()
            .iter()
            .map(|(name, (kind, unit))| NameInfo {
                name: name.clone(),
                kind: *kind,
                unit: unit.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The current value of every series of `name` that has one.
    pub fn values_of(&self, name: &str) -> Vec<(Labels, SeriesValue)> {
        let sources: Vec<(Labels, Source)> = self
            .inner
            .series
            .read()
            // Keys sort by name first, and empty labels sort first: a range
            // scan visits exactly this name's series.
            .range(
                SeriesKey {
                    name: name.to_string(),
                    labels: Labels::new(),
                }..,
            )
            .take_while(|(k, _)| k.name == name)
            .map(|(k, s)| (k.labels.clone(), s.clone()))
            .collect();
        sources
            .into_iter()
            .filter_map(|(l, s)| s.read().map(|v| (l, v)))
            .collect()
    }

    /// Calls `hook` now for every registered name and later, once, for
    /// each new one: how an exporter keeps one instrument per name (the
    /// OpenTelemetry bridge does). The hook runs with no registry lock held;
    /// it must not keep the registry alive (use [`Registry::downgrade`]).
    pub fn on_new_name(&self, hook: impl Fn(&NameInfo) + Send + Sync + 'static) {
        // A name registered while the hook is being added could be seen
        // both as new and as existing: the hook sees each name once.
        let seen = Mutex::new(std::collections::HashSet::new());
        let hook: NameHook = Arc::new(move |info: &NameInfo| {
            if seen.lock().insert(info.name.clone()) {
                hook(info);
            }
        });
        self.inner.hooks.lock().push(hook.clone());
        for info in self.names() {
            hook(&info);
        }
    }

    /// Identity of the registry (equal for clones).
    #[cfg(feature = "otel")]
    pub(crate) fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// A weak handle, for callbacks that must not keep the registry alive.
    pub fn downgrade(&self) -> WeakRegistry {
        WeakRegistry(Arc::downgrade(&self.inner))
    }

    /// A snapshot at the registry's own monotonic clock (see the module docs).
    pub fn snapshot(&self) -> Vec<MetricSample> {
        self.snapshot_at(self.inner.epoch.elapsed())
    }

    /// A snapshot at `now`, a monotonic time since any fixed origin (the
    /// same origin for every call on this registry). Rates are computed
    /// against the previous snapshot's time for each series; a call with a
    /// time not after the previous one reports no rates.
    pub fn snapshot_at(&self, now: Duration) -> Vec<MetricSample> {
        // Read the sources out first: callbacks run with no lock held.
        let sources: Vec<(SeriesKey, Source)> = self
            .inner
            .series
            .read()
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let units: HashMap<String, String> = self
            .inner
            .names
            .lock()
            .iter()
            .map(|(n, (_, u))| (n.clone(), u.clone()))
            .collect();
        let mut out = Vec::with_capacity(sources.len() + sources.len() / 2);
        let mut previous = self.inner.previous.lock();
        for (key, source) in sources {
            let Some(value) = source.read() else { continue };
            let unit = units.get(&key.name).cloned().unwrap_or_default();
            match value {
                SeriesValue::Gauge(v) => out.push(MetricSample {
                    name: key.name,
                    value: v,
                    unit,
                    labels: key.labels,
                }),
                SeriesValue::Counter(total) => {
                    let rate = match previous.get(&key) {
                        Some(&(prev_total, prev_t)) if now > prev_t => {
                            let delta = if total >= prev_total {
                                total - prev_total
                            } else {
                                total
                            };
                            Some(delta as f64 / (now - prev_t).as_secs_f64())
                        }
                        _ => None,
                    };
                    if previous.get(&key).map_or(true, |&(_, t)| now > t) {
                        previous.insert(key.clone(), (total, now));
                    }
                    let rate_unit = if unit.is_empty() {
                        "1/s".to_string()
                    } else {
                        format!("{unit}/s")
                    };
                    let rate_name = format!("{}{RATE_SUFFIX}", key.name);
                    out.push(MetricSample {
                        name: key.name,
                        value: total as f64,
                        unit,
                        labels: key.labels.clone(),
                    });
                    if let Some(r) = rate {
                        out.push(MetricSample {
                            name: rate_name,
                            value: r,
                            unit: rate_unit,
                            labels: key.labels,
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(s: &[MetricSample], name: &str) -> Option<f64> {
        s.iter().find(|x| x.name == name).map(|x| x.value)
    }

    #[test]
    fn rates_are_computed_between_snapshots_with_an_injected_clock() {
        let r = Registry::new();
        let c = r.counter("a.sent", "By", &[]).unwrap();
        c.add(100);
        let s = r.snapshot_at(Duration::from_secs(10));
        assert_eq!(value(&s, "a.sent"), Some(100.0));
        assert_eq!(value(&s, "a.sent.rate"), None, "no interval yet");
        c.add(50);
        let s = r.snapshot_at(Duration::from_millis(10_500));
        assert_eq!(value(&s, "a.sent.rate"), Some(100.0), "50 B over 0.5 s");
        assert_eq!(
            s.iter().find(|x| x.name == "a.sent.rate").unwrap().unit,
            "By/s"
        );
        // The clock did not advance: no rate, and the baseline is kept.
        c.add(10);
        let s = r.snapshot_at(Duration::from_millis(10_500));
        assert_eq!(value(&s, "a.sent.rate"), None);
        let s = r.snapshot_at(Duration::from_millis(11_500));
        assert_eq!(value(&s, "a.sent.rate"), Some(10.0));
    }

    #[test]
    fn a_counter_that_goes_back_is_a_reset() {
        let r = Registry::new();
        let total = Arc::new(AtomicU64::new(1000));
        let t = total.clone();
        r.observe_counter("node.items", "{item}", &[], move || {
            Some(t.load(Ordering::Relaxed))
        })
        .unwrap();
        r.snapshot_at(Duration::from_secs(1));
        total.store(30, Ordering::Relaxed); // the node restarted
        let s = r.snapshot_at(Duration::from_secs(3));
        assert_eq!(value(&s, "node.items"), Some(30.0));
        assert_eq!(value(&s, "node.items.rate"), Some(15.0));
    }

    #[test]
    fn series_are_shared_sorted_and_labelled() {
        let r = Registry::new();
        let a = r.counter("x.c", "", &[("k", "2")]).unwrap();
        let b = r.counter("x.c", "", &[("k", "2")]).unwrap();
        a.add(1);
        b.add(2);
        r.counter("x.c", "", &[("k", "1")]).unwrap().add(7);
        r.gauge("a.g", "ms", &[]).unwrap().set(2.5);
        r.observe("m.o", "1", &[], || 0.25).unwrap();
        let s = r.snapshot_at(Duration::from_secs(1));
        let names: Vec<_> = s
            .iter()
            .map(|x| format!("{}{:?}={}", x.name, x.labels, x.value))
            .collect();
        assert_eq!(
            names,
            [
                "a.g{}=2.5",
                "m.o{}=0.25",
                r#"x.c{"k": "1"}=7"#,
                r#"x.c{"k": "2"}=3"#
            ]
        );
        assert_eq!(s[0].unit, "ms");
        assert_eq!(r.len(), 4);
        assert_eq!(r.values_of("x.c").len(), 2);
        assert_eq!(r.names().len(), 3);
    }

    #[test]
    fn observed_values_without_a_value_are_left_out() {
        let r = Registry::new();
        r.observe("g.nan", "", &[], || f64::NAN).unwrap();
        r.observe_counter("c.none", "", &[], || None).unwrap();
        r.gauge("g.inf", "", &[]).unwrap().set(f64::INFINITY);
        assert!(r.snapshot_at(Duration::from_secs(1)).is_empty());
        // Re-registering replaces the callback.
        r.observe("g.nan", "", &[], || 4.0).unwrap();
        assert_eq!(
            value(&r.snapshot_at(Duration::from_secs(2)), "g.nan"),
            Some(4.0)
        );
    }

    #[test]
    fn bad_series_are_refused_with_clear_errors() {
        let r = Registry::new();
        let err = |res: Result<Counter>| res.unwrap_err().to_string();
        assert!(err(r.counter("", "", &[])).contains("0 characters"));
        assert!(err(r.counter("9x", "", &[])).contains("must start with an ASCII letter"));
        assert!(err(r.counter("a b", "", &[])).contains("only letters"));
        assert!(err(r.counter("a.rate", "", &[])).contains("reserved"));
        assert!(err(r.counter(&"a".repeat(196), "", &[])).contains("1..=195"));
        assert!(err(r.counter("a", "", &[("k", "1"), ("k", "2")])).contains("given twice"));
        let many: Vec<(String, String)> =
            (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(err(r.counter("a", "", &many)).contains("LABELS_MAX is 32"));
        r.gauge("g", "ms", &[]).unwrap();
        assert!(err(r.counter("g", "ms", &[])).contains("registered as a Gauge"));
        assert!(r
            .gauge("g", "s", &[("x", "y")])
            .unwrap_err()
            .to_string()
            .contains("in 'ms'"));
        r.observe_counter("o", "", &[], || Some(1)).unwrap();
        assert!(err(r.counter("o", "", &[])).contains("observed by a callback"));
    }

    #[test]
    fn the_registry_is_bounded() {
        let r = Registry::new();
        let ids: Vec<String> = (0..SERIES_MAX).map(|i| i.to_string()).collect();
        for id in &ids {
            r.counter("c", "", &[("i", id)]).unwrap();
        }
        let e = r.counter("c", "", &[("i", "one more")]).unwrap_err();
        assert!(
            matches!(
                e,
                TelemetryError::RegistryFull {
                    max: SERIES_MAX,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("4096 series"));
        // A new name is refused too, and not left reserved.
        assert!(r.gauge("new.name", "", &[]).is_err());
        assert!(r.names().iter().all(|n| n.name != "new.name"));
        // Existing series are still found.
        r.counter("c", "", &[("i", "7")]).unwrap().inc();
        assert_eq!(r.len(), SERIES_MAX);
        // Every snapshot of a full registry splits into valid events.
        let samples = r.snapshot_at(Duration::from_secs(1));
        let event = crate::MetricEvent {
            source: "s".into(),
            t_us: 0,
            interval_ms: 1,
            samples,
        };
        for part in crate::event::split_event(event) {
            crate::decode_event(&crate::encode_event(&part)).unwrap();
        }
    }

    #[test]
    fn values_of_reads_exactly_one_name() {
        let r = Registry::new();
        for (name, v) in [("a", 1), ("a.b", 2), ("ab", 3), ("A", 4)] {
            r.counter(name, "", &[("z", "1")]).unwrap().add(v);
            r.counter(name, "", &[]).unwrap().add(10 * v);
        }
        let mut got = r.values_of("a");
        got.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            got,
            [
                (Labels::new(), SeriesValue::Counter(10)),
                (
                    [("z".to_string(), "1".to_string())].into(),
                    SeriesValue::Counter(1)
                )
            ]
        );
        assert!(r.values_of("b").is_empty());
    }

    #[test]
    fn hooks_see_existing_and_new_names_once() {
        let r = Registry::new();
        r.counter("a", "", &[]).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        r.on_new_name(move |i: &NameInfo| s2.lock().push(i.name.clone()));
        r.counter("a", "", &[("l", "1")]).unwrap();
        r.gauge("b", "", &[]).unwrap();
        assert_eq!(*seen.lock(), ["a", "b"]);
    }
}
