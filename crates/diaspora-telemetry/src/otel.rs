//! Tracing and OpenTelemetry setup: an fmt layer on stderr filtered by
//! `RUST_LOG`, and — only when the standard `OTEL_*` env vars ask for it —
//! OTLP/gRPC export of spans (through `tracing-opentelemetry`) and metrics
//! (an SDK meter provider with a periodic reader, which also exports
//! [`Registry`] series as observable instruments).
//!
//! [`OtelConfig::from_vars`] is the pure part: env in, configuration out.
//! [`layers`] builds the layer and the providers without touching global
//! state; [`init_with`] installs them globally.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::error::{Result, TelemetryError};
use crate::registry::{Kind, Labels, NameInfo, Registry, SeriesValue};

/// Log filter when `RUST_LOG` is unset.
pub const DEFAULT_LOG_FILTER: &str = "info";
/// Metric export interval when `OTEL_METRIC_EXPORT_INTERVAL` is unset (the
/// OpenTelemetry default).
pub const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(60);
/// Export timeout when `OTEL_EXPORTER_OTLP_TIMEOUT` is unset.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Targets never turned into exported spans: the exporter's own transport
/// would otherwise trace itself, export those spans, and so on.
const EXPORT_QUIET: &str = "h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";

/// Where and how one signal (traces or metrics) is exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTarget {
    /// The collector's gRPC endpoint, `http://host:port` (or `https://`).
    pub endpoint: String,
    /// Timeout of one export call.
    pub timeout: Duration,
    /// CA certificate (PEM) to verify an `https` endpoint with.
    pub ca_file: Option<PathBuf>,
}

impl ExportTarget {
    /// A plain-text gRPC endpoint with the default timeout.
    pub fn new(endpoint: impl Into<String>) -> Self {
        ExportTarget {
            endpoint: endpoint.into(),
            timeout: DEFAULT_EXPORT_TIMEOUT,
            ca_file: None,
        }
    }
}

/// What [`layers`] and [`init_with`] set up. Build it from the env with
/// [`OtelConfig::from_env`], or by hand.
///
/// ```
/// use diaspora_telemetry::OtelConfig;
/// let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
///             ("OTEL_SERVICE_NAME", "edge-1")];
/// let get = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
/// let config = OtelConfig::from_vars("diaspora", get).unwrap();
/// assert_eq!(config.service_name, "edge-1");
/// assert_eq!(config.traces.unwrap().endpoint, "http://collector:4317");
/// assert!(config.metrics.is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelConfig {
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Other resource attributes.
    pub resource_attributes: Vec<(String, String)>,
    /// `tracing_subscriber::EnvFilter` directives for the stderr log and
    /// for exported spans.
    pub log_filter: String,
    /// Span export; `None`: off.
    pub traces: Option<ExportTarget>,
    /// Metric export; `None`: off.
    pub metrics: Option<ExportTarget>,
    /// How often metrics are exported.
    pub metric_interval: Duration,
}

fn config_err(m: String) -> TelemetryError {
    TelemetryError::Config(m)
}

impl OtelConfig {
    /// Logging only (filter `info`), no export.
    pub fn new(service: &str) -> Self {
        OtelConfig {
            service_name: service.to_string(),
            resource_attributes: Vec::new(),
            log_filter: DEFAULT_LOG_FILTER.to_string(),
            traces: None,
            metrics: None,
            metric_interval: DEFAULT_METRIC_INTERVAL,
        }
    }

    /// Exports traces and metrics to the gRPC collector at `endpoint`.
    pub fn with_endpoint(mut self, endpoint: &str) -> Self {
        self.traces = Some(ExportTarget::new(endpoint));
        self.metrics = Some(ExportTarget::new(endpoint));
        self
    }

    /// Whether anything is exported.
    pub fn exporting(&self) -> bool {
        self.traces.is_some() || self.metrics.is_some()
    }

    /// [`OtelConfig::from_vars`] over the process environment.
    pub fn from_env(service: &str) -> Result<Self> {
        OtelConfig::from_vars(service, |k| std::env::var(k).ok())
    }

    /// Builds the configuration from env vars read through `var` (pure:
    /// tests pass a map). `service` is the service name unless
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`)
    /// says otherwise. See the crate docs for every variable. Unsupported
    /// values (an HTTP protocol, an exporter other than `otlp`/`none`, an
    /// `https` endpoint without a CA file) are errors naming the variable.
    pub fn from_vars(service: &str, var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |k: &str| {
            var(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut config = OtelConfig::new(service);
        if let Some(f) = get("RUST_LOG") {
            config.log_filter = f;
        }
        if let Some(attrs) = get("OTEL_RESOURCE_ATTRIBUTES") {
            for (k, v) in parse_resource_attributes(&attrs)? {
                if k == "service.name" {
                    config.service_name = v;
                } else {
                    config.resource_attributes.push((k, v));
                }
            }
        }
        if let Some(name) = get("OTEL_SERVICE_NAME") {
            config.service_name = name;
        }
        if let Some(ms) = get("OTEL_METRIC_EXPORT_INTERVAL") {
            config.metric_interval = parse_ms("OTEL_METRIC_EXPORT_INTERVAL", &ms)?;
        }
        let disabled = get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if disabled {
            return Ok(config);
        }
        config.traces = signal(&get, "TRACES")?;
        config.metrics = signal(&get, "METRICS")?;
        Ok(config)
    }
}

fn parse_ms(name: &str, v: &str) -> Result<Duration> {
    match v.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err(config_err(format!(
            "{name}='{v}' is not a positive number of milliseconds"
        ))),
    }
}

/// One signal's export target, or `None` when it is off.
fn signal(get: &impl Fn(&str) -> Option<String>, signal: &str) -> Result<Option<ExportTarget>> {
    // Per-signal variables take precedence over the generic ones.
    let pick = |suffix: &str| {
        let specific = format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}");
        let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
        get(&specific)
            .map(|v| (specific, v))
            .or_else(|| get(&generic).map(|v| (generic, v)))
    };
    let exporter_var = format!("OTEL_{signal}_EXPORTER");
    match get(&exporter_var).as_deref() {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(config_err(format!(
                "{exporter_var}='{other}' is not supported (otlp or none)"
            )))
        }
    }
    let Some((endpoint_var, endpoint)) = pick("ENDPOINT") else {
        return Ok(None);
    };
    if let Some((var, protocol)) = pick("PROTOCOL") {
        if protocol != "grpc" {
            return Err(config_err(format!(
                "{var}='{protocol}' is not supported: this build exports OTLP over gRPC only \
                 (set it to 'grpc' and point {endpoint_var} at the collector's gRPC port, usually 4317)"
            )));
        }
    }
    let endpoint = if endpoint.contains("://") {
        endpoint
    } else {
        format!("http://{endpoint}")
    };
    let ca_file = pick("CERTIFICATE").map(|(_, v)| PathBuf::from(v));
    if endpoint.starts_with("https://") {
        if ca_file.is_none() {
            return Err(config_err(format!(
                "{endpoint_var}='{endpoint}' is https, which needs OTEL_EXPORTER_OTLP_CERTIFICATE \
                 (a PEM CA file; this build has no system root store)"
            )));
        }
    } else if !endpoint.starts_with("http://") {
        return Err(config_err(format!(
            "{endpoint_var}='{endpoint}' must be an http:// or https:// URL"
        )));
    }
    let timeout = match pick("TIMEOUT") {
        Some((var, v)) => parse_ms(&var, &v)?,
        None => DEFAULT_EXPORT_TIMEOUT,
    };
    Ok(Some(ExportTarget {
        endpoint,
        timeout,
        ca_file,
    }))
}

/// `k=v,k2=v2` with percent-encoded values (W3C Baggage octets).
fn parse_resource_attributes(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(config_err(format!(
                "OTEL_RESOURCE_ATTRIBUTES entry '{part}' is not key=value"
            )));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(config_err(format!(
                "OTEL_RESOURCE_ATTRIBUTES entry '{part}' has an empty key"
            )));
        }
        out.push((k.to_string(), percent_decode(v.trim())));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The layer [`layers`] returns: everything this crate adds to a
/// `tracing_subscriber::Registry`.
pub type TelemetryLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// Builds the tracing layer (stderr fmt, plus span export when configured)
/// and the providers behind it, without installing anything globally: use
/// it with `tracing::subscriber::set_default` in tests, or compose it with
/// other layers. [`init_with`] installs it.
///
/// Export needs a tokio runtime (the gRPC channel lives on it): call this
/// from within one when `config` exports anything.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let (layer, guard) = diaspora_telemetry::layers(&diaspora_telemetry::OtelConfig::new("doc")).unwrap();
/// let subscriber = tracing_subscriber::registry().with(layer);
/// tracing::subscriber::with_default(subscriber, || tracing::info!("to stderr"));
/// guard.shutdown().unwrap();
/// ```
pub fn layers(config: &OtelConfig) -> Result<(TelemetryLayer, TelemetryGuard)> {
    let filter = |extra: &str| {
        EnvFilter::try_new(format!("{}{extra}", config.log_filter)).map_err(|e| {
            config_err(format!(
                "RUST_LOG / log filter '{}' does not parse: {e}",
                config.log_filter
            ))
        })
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter("")?);
    if config.exporting() && tokio::runtime::Handle::try_current().is_err() {
        return Err(config_err(
            "OTLP/gRPC export needs a tokio runtime: set telemetry up from within one".into(),
        ));
    }
    let resource = Resource::builder_empty()
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(config.service_name.clone())
        .build();
    let tracer = match &config.traces {
        Some(target) => {
            let exporter = to_target(
                opentelemetry_otlp::SpanExporter::builder().with_tonic(),
                target,
            )?
            .build()
            .map_err(|e| TelemetryError::Export(format!("span exporter: {e}")))?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource.clone())
                    .build(),
            )
        }
        None => None,
    };
    let meter = match &config.metrics {
        Some(target) => {
            let exporter = to_target(
                opentelemetry_otlp::MetricExporter::builder().with_tonic(),
                target,
            )?
            .build()
            .map_err(|e| TelemetryError::Export(format!("metric exporter: {e}")))?;
            let reader = PeriodicReader::builder(exporter)
                .with_interval(config.metric_interval)
                .build();
            Some(
                SdkMeterProvider::builder()
                    .with_reader(reader)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    let otel = match &tracer {
        Some(p) => Some(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("diaspora-telemetry"))
                .with_filter(filter(&format!(",{EXPORT_QUIET}"))?),
        ),
        None => None,
    };
    let layer = fmt.and_then(otel).boxed();
    Ok((
        layer,
        TelemetryGuard {
            tracer,
            meter,
            exported: Mutex::new(HashSet::new()),
        },
    ))
}

/// An exporter builder aimed at `target`: its endpoint, timeout and TLS.
fn to_target<B: WithExportConfig + WithTonicConfig>(
    builder: B,
    target: &ExportTarget,
) -> Result<B> {
    let builder = builder
        .with_endpoint(target.endpoint.clone())
        .with_timeout(target.timeout);
    Ok(match tls(target)? {
        Some(tls) => builder.with_tls_config(tls),
        None => builder,
    })
}

fn tls(
    target: &ExportTarget,
) -> Result<Option<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig>> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig};
    let Some(ca) = &target.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(ca).map_err(|e| {
        config_err(format!(
            "OTEL_EXPORTER_OTLP_CERTIFICATE {}: {e}",
            ca.display()
        ))
    })?;
    Ok(Some(
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)),
    ))
}

/// Sets telemetry up from the process environment: see [`init_with`] and
/// [`OtelConfig::from_env`].
pub fn init(service: &str) -> Result<TelemetryGuard> {
    init_with(OtelConfig::from_env(service)?)
}

/// Installs the [`layers`] as the global tracing subscriber (and `log`
/// bridge), sets the global OpenTelemetry tracer and meter providers when
/// they export, and exports [`Registry::global`]. Keep the guard alive for
/// as long as telemetry should flow; dropping it flushes and shuts down.
///
/// Fails with [`TelemetryError::AlreadyInitialized`] when a global
/// subscriber exists.
pub fn init_with(config: OtelConfig) -> Result<TelemetryGuard> {
    let (layer, guard) = layers(&config)?;
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialized)?;
    if let Some(p) = &guard.tracer {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    if let Some(p) = &guard.meter {
        opentelemetry::global::set_meter_provider(p.clone());
    }
    guard.export_registry(Registry::global());
    Ok(guard)
}

/// Owns the OpenTelemetry providers; flushes and shuts them down when
/// dropped (or by [`TelemetryGuard::shutdown`]).
///
/// Shutting down exports what is buffered, through a gRPC channel that runs
/// on the tokio runtime it was built on, so the shutdown must not block that
/// runtime's only thread: on a current-thread runtime use
/// [`TelemetryGuard::shutdown_async`]. (Dropping the guard there hands the
/// shutdown to a thread of its own and does not wait for it.)
pub struct TelemetryGuard {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    exported: Mutex<HashSet<usize>>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("traces", &self.tracer.is_some())
            .field("metrics", &self.meter.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn traces_enabled(&self) -> bool {
        self.tracer.is_some()
    }

    /// Whether metrics are exported.
    pub fn metrics_enabled(&self) -> bool {
        self.meter.is_some()
    }

    /// Exports every series of `registry`, present and future, through this
    /// guard's meter provider: one observable instrument per name (counters
    /// as observable counters of the total, gauges as observable gauges),
    /// one data point per series with its labels as attributes. Does
    /// nothing when metrics are not exported, or for a registry exported
    /// before. The instruments do not keep the registry alive.
    pub fn export_registry(&self, registry: &Registry) {
        let Some(provider) = &self.meter else {
            return;
        };
        if !self.exported.lock().insert(registry.id()) {
            return;
        }
        bridge(provider.meter("diaspora-telemetry"), registry);
    }

    /// Exports what is buffered now, waiting for it (blocking).
    pub fn flush(&self) -> Result<()> {
        let (t, m) = (self.tracer.clone(), self.meter.clone());
        outside_runtime(move || {
            let mut errors = Vec::new();
            if let Some(t) = t {
                if let Err(e) = t.force_flush() {
                    errors.push(format!("traces: {e}"));
                }
            }
            if let Some(m) = m {
                if let Err(e) = m.force_flush() {
                    errors.push(format!("metrics: {e}"));
                }
            }
            joined(errors)
        })
    }

    /// Flushes and shuts the providers down (blocking). On a current-thread
    /// tokio runtime this would wait on the runtime it blocks: it refuses
    /// with an error there; use [`TelemetryGuard::shutdown_async`].
    pub fn shutdown(mut self) -> Result<()> {
        let (t, m) = (self.tracer.take(), self.meter.take());
        outside_runtime(move || shutdown_providers(t, m))
    }

    /// Flushes and shuts the providers down on a blocking thread, leaving
    /// the runtime free to carry the export. Works on any tokio runtime.
    pub async fn shutdown_async(mut self) -> Result<()> {
        let (t, m) = (self.tracer.take(), self.meter.take());
        tokio::task::spawn_blocking(move || shutdown_providers(t, m))
            .await
            .map_err(|e| TelemetryError::Export(format!("shutdown task: {e}")))?
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let (t, m) = (self.tracer.take(), self.meter.take());
        if t.is_none() && m.is_none() {
            return;
        }
        let run = move || {
            if let Err(e) = shutdown_providers(t, m) {
                eprintln!("diaspora-telemetry: {e}");
            }
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => {
                // Blocking here would stall the export this waits for.
                std::thread::spawn(run);
            }
            Ok(_) => tokio::task::block_in_place(run),
            Err(_) => run(),
        }
    }
}

/// Runs blocking provider work where it cannot stall the runtime it waits on.
fn outside_runtime(f: impl FnOnce() -> Result<()>) -> Result<()> {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::CurrentThread) => Err(TelemetryError::Export(
            "blocking flush or shutdown on a current-thread tokio runtime would stall the export; \
             use TelemetryGuard::shutdown_async"
                .into(),
        )),
        Ok(_) => tokio::task::block_in_place(f),
        Err(_) => f(),
    }
}

fn shutdown_providers(t: Option<SdkTracerProvider>, m: Option<SdkMeterProvider>) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(t) = t {
        if let Err(e) = t.shutdown() {
            errors.push(format!("traces: {e}"));
        }
    }
    if let Some(m) = m {
        if let Err(e) = m.shutdown() {
            errors.push(format!("metrics: {e}"));
        }
    }
    joined(errors)
}

fn joined(errors: Vec<String>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TelemetryError::Export(errors.join("; ")))
    }
}

fn attributes(labels: &Labels) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect()
}

/// One observable instrument per registry name, now and for names added later.
fn bridge(meter: Meter, registry: &Registry) {
    let weak = registry.downgrade();
    registry.on_new_name(move |info: &NameInfo| {
        let name = info.name.clone();
        let weak = weak.clone();
        // Each series of the name, as long as the registry lives.
        let each = move |f: &mut dyn FnMut(SeriesValue, &[KeyValue])| {
            if let Some(registry) = weak.upgrade() {
                for (labels, value) in registry.values_of(&name) {
                    f(value, &attributes(&labels));
                }
            }
        };
        match info.kind {
            Kind::Counter => {
                meter
                    .u64_observable_counter(info.name.clone())
                    .with_unit(info.unit.clone())
                    .with_callback(move |observer| {
                        each(&mut |value, attrs| {
                            if let SeriesValue::Counter(total) = value {
                                observer.observe(total, attrs);
                            }
                        })
                    })
                    .build();
            }
            Kind::Gauge => {
                meter
                    .f64_observable_gauge(info.name.clone())
                    .with_unit(info.unit.clone())
                    .with_callback(move |observer| {
                        each(&mut |value, attrs| {
                            if let SeriesValue::Gauge(v) = value {
                                observer.observe(v, attrs);
                            }
                        })
                    })
                    .build();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<OtelConfig> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtelConfig::from_vars("svc", |k| map.get(k).cloned())
    }

    #[test]
    fn without_endpoints_nothing_is_exported() {
        let c = from(&[]).unwrap();
        assert_eq!(c, OtelConfig::new("svc"));
        assert!(!c.exporting());
        assert_eq!(c.log_filter, "info");
        assert_eq!(c.metric_interval, Duration::from_secs(60));
    }

    #[test]
    fn the_generic_endpoint_enables_both_signals() {
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1500"),
            ("RUST_LOG", "debug,h2=warn"),
        ])
        .unwrap();
        let target = ExportTarget {
            endpoint: "http://c:4317".into(),
            timeout: Duration::from_millis(1500),
            ca_file: None,
        };
        assert_eq!(c.traces.as_ref(), Some(&target));
        assert_eq!(c.metrics.as_ref(), Some(&target));
        assert_eq!(c.metric_interval, Duration::from_millis(250));
        assert_eq!(c.log_filter, "debug,h2=warn");
    }

    #[test]
    fn signal_variables_take_precedence_and_enable_only_their_signal() {
        let c = from(&[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "m:4317")]).unwrap();
        assert_eq!(c.traces, None);
        assert_eq!(c.metrics.unwrap().endpoint, "http://m:4317", "scheme added");
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "7"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ])
        .unwrap();
        let t = c.traces.unwrap();
        assert_eq!(
            (t.endpoint.as_str(), t.timeout),
            ("http://t:4317", Duration::from_millis(7))
        );
        assert_eq!(c.metrics, None);
    }

    #[test]
    fn sdk_disabled_turns_export_off() {
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ])
        .unwrap();
        assert!(!c.exporting());
        let c = from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "false"),
        ])
        .unwrap();
        assert!(c.exporting());
    }

    #[test]
    fn service_name_precedence() {
        assert_eq!(from(&[]).unwrap().service_name, "svc");
        let c = from(&[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=fromattrs, site=edge%201,k=a=b",
        )])
        .unwrap();
        assert_eq!(c.service_name, "fromattrs");
        assert_eq!(
            c.resource_attributes,
            [
                ("site".to_string(), "edge 1".to_string()),
                ("k".into(), "a=b".into())
            ]
        );
        let c = from(&[
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=fromattrs"),
            ("OTEL_SERVICE_NAME", "fromenv"),
        ])
        .unwrap();
        assert_eq!(c.service_name, "fromenv");
    }

    #[test]
    fn unsupported_settings_are_clear_errors() {
        let e = |vars: &[(&str, &str)]| from(vars).unwrap_err().to_string();
        let m = e(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]);
        assert!(
            m.contains("OTEL_EXPORTER_OTLP_PROTOCOL='http/protobuf' is not supported"),
            "{m}"
        );
        let m = e(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ]);
        assert!(
            m.contains("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'"),
            "{m}"
        );
        let m = e(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317")]);
        assert!(m.contains("needs OTEL_EXPORTER_OTLP_CERTIFICATE"), "{m}");
        assert!(from(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
        ])
        .is_ok());
        let m = e(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c")]);
        assert!(m.contains("must be an http:// or https:// URL"), "{m}");
        let m = e(&[("OTEL_METRIC_EXPORT_INTERVAL", "soon")]);
        assert!(m.contains("OTEL_METRIC_EXPORT_INTERVAL='soon'"), "{m}");
        let m = e(&[("OTEL_TRACES_EXPORTER", "zipkin")]);
        assert!(
            m.contains("OTEL_TRACES_EXPORTER='zipkin' is not supported"),
            "{m}"
        );
        let m = e(&[("OTEL_RESOURCE_ATTRIBUTES", "novalue")]);
        assert!(m.contains("'novalue' is not key=value"), "{m}");
        // The protocol is only checked for a signal that is exported.
        assert!(from(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).is_ok());
    }

    #[test]
    fn a_bad_log_filter_and_a_missing_runtime_are_reported() {
        let mut c = OtelConfig::new("svc");
        c.log_filter = "=][".into();
        let e = layers(&c).err().unwrap().to_string();
        assert!(e.contains("does not parse"), "{e}");
        let c = OtelConfig::new("svc").with_endpoint("http://127.0.0.1:1");
        let e = layers(&c).err().unwrap().to_string();
        assert!(e.contains("needs a tokio runtime"), "{e}");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Cc"), "a b,c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
