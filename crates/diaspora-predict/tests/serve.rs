//! The monitor runtime against an embedded node: metric events in,
//! figures and checkpoints out, and each way a run stops.

use std::future::pending;
use std::path::Path;
use std::time::{Duration, Instant};

use diaspora_fabric::item::payload_item;
use diaspora_fabric::{
    Client, ClientConfig, Node, NodeConfig, Producer, ProducerConfig, StartFrom, TopicSettings,
};
use diaspora_predict::serve::{run, Progress, ServeConfig};
use diaspora_predict::PredictError;
use diaspora_telemetry::{encode_event, MetricEvent, MetricSample};

const METRICS: &str = "diaspora.metrics";
const OUTPUT: &str = "diaspora.predictions";

async fn node(dir: &Path, topics: &[&str]) -> Node {
    let mut cfg = NodeConfig::new(dir.join("node"));
    cfg.admin_listen = None;
    let node = Node::start(cfg).await.unwrap();
    for t in topics {
        node.broker()
            .create_topic(t, TopicSettings::with_partitions(1))
            .unwrap();
    }
    node
}

fn monitor(dir: &Path, save_to: &Path) -> std::path::PathBuf {
    let path = dir.join("wan.toml");
    let spec = format!(
        r#"
name = "wan"
[source]
metric = "link.utilisation"
labels = {{ link = "wan" }}
step_s = 0.5
[model]
window = 8
horizon = 4
hidden = 8
train_every = 0
save_to = "{}"
[prediction]
threshold = 0.95
"#,
        save_to.display()
    );
    std::fs::write(&path, spec).unwrap();
    path
}

/// `n` metric events, each with the monitored series and one it ignores.
async fn publish_metrics(node: &Node, n: usize) {
    let client = Client::connect(ClientConfig::new(node.data_addr(), node.ca_file()))
        .await
        .unwrap();
    let producer = Producer::new(&client, ProducerConfig::new(METRICS))
        .await
        .unwrap();
    for i in 0..n {
        let sample = |link: &str| MetricSample {
            name: "link.utilisation".into(),
            value: 0.3 + 0.01 * (i % 7) as f64,
            unit: "1".into(),
            labels: [("link".to_string(), link.to_string())].into(),
        };
        let event = MetricEvent {
            source: "test".into(),
            t_us: 1_700_000_000_000_000 + i as i64 * 500_000,
            interval_ms: 500,
            samples: vec![sample("lan"), sample("wan")],
        };
        producer
            .send(payload_item(encode_event(&event).into()))
            .await
            .unwrap()
            .await
            .unwrap();
    }
    producer.close().await.unwrap();
    client.close();
}

fn config(node: &Node, monitor: std::path::PathBuf) -> ServeConfig {
    ServeConfig {
        node: ClientConfig::new(node.data_addr(), node.ca_file()),
        admin: None,
        monitors: vec![monitor],
        start: StartFrom::Earliest,
        max_s: 0.0,
        idle_s: 0.0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_reads_its_series_and_stops_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &[METRICS, OUTPUT]).await;
    publish_metrics(&node, 40).await;
    let saved = dir.path().join("wan.safetensors");
    let mut cfg = config(&node, monitor(dir.path(), &saved));
    cfg.idle_s = 1.0;
    let (mut started, mut published, mut stopped, mut finished) = (0, 0u64, 0, None);
    let mut progress = |p: Progress<'_>| match p {
        Progress::Started(spec) => {
            assert_eq!(spec.name, "wan");
            started += 1;
        }
        Progress::Published { .. } => published += 1,
        Progress::Unacknowledged { monitor, error } => panic!("{monitor}: {error}"),
        Progress::Stopped { .. } => stopped += 1,
        Progress::Finished { acked, failed } => finished = Some((acked, failed)),
    };
    let report = run(&cfg, pending(), &mut progress).await.unwrap();
    assert_eq!((started, stopped), (1, 1));
    assert_eq!(report.monitors.len(), 1);
    let (name, stats) = &report.monitors[0];
    assert_eq!(name, "wan");
    assert_eq!(stats.samples, 40, "only the wan series is read: {stats:?}");
    assert_eq!(stats.series, 1);
    assert_eq!(published, stats.predictions + stats.alerts);
    assert_eq!(finished, Some((published, 0)));
    assert_eq!((report.acked, report.failed), (published, 0));
    assert!(saved.exists(), "the model is saved on the way out");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_future_stops_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &[METRICS, OUTPUT]).await;
    let saved = dir.path().join("wan.safetensors");
    let cfg = config(&node, monitor(dir.path(), &saved));
    let t0 = Instant::now();
    let shutdown = tokio::time::sleep(Duration::from_millis(300));
    let report = tokio::time::timeout(Duration::from_secs(30), run(&cfg, shutdown, &mut |_| {}))
        .await
        .expect("the run stops at shutdown")
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(report.monitors[0].1.samples, 0);
    assert!(saved.exists());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_output_topic_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), &[METRICS]).await;
    let cfg = config(
        &node,
        monitor(dir.path(), &dir.path().join("m.safetensors")),
    );
    let e = run(&cfg, pending(), &mut |_| {}).await.unwrap_err();
    assert!(matches!(e, PredictError::Runtime { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("monitor wan: output topic") && text.contains("give --admin"),
        "{text}"
    );
    node.shutdown().await;
}
