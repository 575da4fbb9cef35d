//! OTLP export against a real OTLP/gRPC receiver: a tonic server in the
//! test implementing the collector's TraceService and MetricsService.
//!
//! The first test installs the global subscriber through `init_with` (the
//! only test in this process that touches global state); the second uses
//! `layers` with a thread-local default on a current-thread runtime.

use std::sync::Arc;
use std::time::Duration;

use diaspora_telemetry::{init_with, layers, OtelConfig, Registry};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use parking_lot::Mutex;
use tonic::{Request, Response, Status};

/// What the receiver got.
#[derive(Clone, Default)]
struct Collector {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.traces.lock().push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metrics.lock().push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

async fn start_collector() -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let c = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(c.clone()))
            .add_service(MetricsServiceServer::new(c))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (collector, format!("http://{addr}"))
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

/// `(service.name, span name, span attributes)` of every span received.
fn spans(c: &Collector) -> Vec<(String, String, Vec<KeyValue>)> {
    let mut out = Vec::new();
    for req in c.traces.lock().iter() {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push((service.clone(), s.name.clone(), s.attributes.clone()));
                }
            }
        }
    }
    out
}

/// A data point as `(service.name, metric, kind, unit, attributes, value)`.
type Point = (String, String, &'static str, String, Vec<KeyValue>, f64);

fn points(c: &Collector) -> Vec<Point> {
    let mut out = Vec::new();
    for req in c.metrics.lock().iter() {
        for rm in &req.resource_metrics {
            let service = rm
                .resource
                .as_ref()
                .and_then(|r| string_attr(&r.attributes, "service.name"))
                .unwrap_or_default();
            for sm in &rm.scope_metrics {
                for m in &sm.metrics {
                    let (kind, dps) = match &m.data {
                        Some(metric::Data::Sum(s)) => {
                            assert!(s.is_monotonic, "{} is a monotonic sum", m.name);
                            ("sum", &s.data_points)
                        }
                        Some(metric::Data::Gauge(g)) => ("gauge", &g.data_points),
                        other => panic!("unexpected data for {}: {other:?}", m.name),
                    };
                    for dp in dps {
                        let v = match dp.value {
                            Some(number_data_point::Value::AsDouble(v)) => v,
                            Some(number_data_point::Value::AsInt(v)) => v as f64,
                            None => f64::NAN,
                        };
                        out.push((
                            service.clone(),
                            m.name.clone(),
                            kind,
                            m.unit.clone(),
                            dp.attributes.clone(),
                            v,
                        ));
                    }
                }
            }
        }
    }
    out
}

fn config(endpoint: &str, service: &str) -> OtelConfig {
    let mut config = OtelConfig::new(service).with_endpoint(endpoint);
    config.metric_interval = Duration::from_millis(100);
    config.resource_attributes = vec![("deployment.environment".into(), "test".into())];
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_exports_spans_and_registry_metrics_to_a_real_collector() {
    let (collector, endpoint) = start_collector().await;
    let guard = init_with(config(&endpoint, "otlp-test")).unwrap();
    assert!(guard.traces_enabled() && guard.metrics_enabled());
    // A second global install is refused.
    assert!(matches!(
        init_with(OtelConfig::new("again")),
        Err(diaspora_telemetry::TelemetryError::AlreadyInitialized)
    ));

    // The global registry is exported by init; series added after init too.
    let registry = Registry::global();
    let sent = registry
        .counter("test.items_sent", "{item}", &[("site", "edge")])
        .unwrap();
    sent.add(42);
    registry
        .gauge("test.queue_depth", "{item}", &[])
        .unwrap()
        .set(7.5);
    registry
        .observe("test.rtt_ms", "ms", &[("link", "a")], || 12.25)
        .unwrap();
    // A registry of its own, exported explicitly.
    let own = Registry::new();
    own.counter("own.count", "", &[]).unwrap().add(3);
    guard.export_registry(&own);
    guard.export_registry(&own); // twice is once

    {
        let span = tracing::info_span!("ingest_batch", items = 3u64, topic = "frames");
        let _e = span.enter();
        tracing::info!("inside the span");
        let inner = tracing::info_span!("inner_step");
        inner.in_scope(|| {});
    }
    // A debug span is below the default filter: not exported.
    tracing::debug_span!("filtered_out").in_scope(|| {});

    // Let a periodic export happen, then flush what is left at shutdown.
    tokio::time::sleep(Duration::from_millis(400)).await;
    guard.shutdown().unwrap();

    let spans = spans(&collector);
    let ingest = spans
        .iter()
        .find(|(_, name, _)| name == "ingest_batch")
        .unwrap_or_else(|| panic!("no ingest_batch span in {spans:?}"));
    assert_eq!(ingest.0, "otlp-test", "service.name of the resource");
    assert_eq!(string_attr(&ingest.2, "topic").as_deref(), Some("frames"));
    assert!(spans.iter().any(|(_, n, _)| n == "inner_step"));
    assert!(!spans.iter().any(|(_, n, _)| n == "filtered_out"));
    // The exporter's own transport is not traced.
    assert!(
        spans
            .iter()
            .all(|(_, n, _)| !n.contains("h2") && !n.contains("hyper")),
        "{spans:?}"
    );
    let resource_env = collector.traces.lock()[0].resource_spans[0]
        .resource
        .as_ref()
        .and_then(|r| string_attr(&r.attributes, "deployment.environment"));
    assert_eq!(resource_env.as_deref(), Some("test"));

    let points = points(&collector);
    let last = |name: &str| {
        points
            .iter()
            .rev()
            .find(|p| p.1 == name)
            .unwrap_or_else(|| panic!("no {name} in {points:?}"))
            .clone()
    };
    let (service, _, kind, unit, attrs, value) = last("test.items_sent");
    assert_eq!(
        (service.as_str(), kind, unit.as_str(), value),
        ("otlp-test", "sum", "{item}", 42.0)
    );
    assert_eq!(string_attr(&attrs, "site").as_deref(), Some("edge"));
    let (_, _, kind, _, _, value) = last("test.queue_depth");
    assert_eq!((kind, value), ("gauge", 7.5));
    let (_, _, kind, unit, attrs, value) = last("test.rtt_ms");
    assert_eq!((kind, unit.as_str(), value), ("gauge", "ms", 12.25));
    assert_eq!(string_attr(&attrs, "link").as_deref(), Some("a"));
    let own_points: Vec<_> = points.iter().filter(|p| p.1 == "own.count").collect();
    assert!(!own_points.is_empty());
    // Exported once per collection, not twice.
    let per_request = collector
        .metrics
        .lock()
        .iter()
        .map(|r| {
            r.resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .filter(|m| m.name == "own.count")
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(per_request, 1);
    assert_eq!(own_points.last().unwrap().5, 3.0);
}

#[tokio::test(flavor = "current_thread")]
async fn layers_with_a_local_subscriber_flush_on_a_current_thread_runtime() {
    use tracing_subscriber::layer::SubscriberExt;
    let (collector, endpoint) = start_collector().await;
    let mut config = config(&endpoint, "local-test");
    config.metric_interval = Duration::from_secs(3600); // only the shutdown exports
    let (layer, guard) = layers(&config).unwrap();
    let registry = Registry::new();
    guard.export_registry(&registry);
    registry.counter("local.count", "", &[]).unwrap().add(5);
    let subscriber = tracing_subscriber::registry().with(layer);
    {
        let _default = tracing::subscriber::set_default(subscriber);
        tracing::info_span!("local_span").in_scope(|| {});
    }
    // The blocking shutdown would stall this runtime: it refuses.
    // (shutdown_async hands the work to a blocking thread instead.)
    let e = guard.flush().unwrap_err().to_string();
    assert!(e.contains("shutdown_async"), "{e}");
    tokio::time::timeout(Duration::from_secs(20), guard.shutdown_async())
        .await
        .expect("shutdown finishes")
        .unwrap();
    let spans = spans(&collector);
    assert!(
        spans
            .iter()
            .any(|(s, n, _)| n == "local_span" && s == "local-test"),
        "{spans:?}"
    );
    let points = points(&collector);
    assert!(
        points
            .iter()
            .any(|p| p.1 == "local.count" && p.5 == 5.0 && p.0 == "local-test"),
        "{points:?}"
    );
}
