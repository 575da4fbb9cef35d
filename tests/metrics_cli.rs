//! Stream and view metrics on the fabric: a QoS producer, a QoS consumer
//! and a view, each run as a real `diaspora` process with
//! `--metrics-interval-ms`, publish `stream.producer.*`,
//! `stream.consumer.*` and `view.*` events on `diaspora.metrics`, and their
//! last events carry the figures the processes ended with.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const ITEMS: u64 = 200;

/// Every event on the metrics topic, by source, in order.
fn events_by_source(node: &Served) -> HashMap<String, Vec<diaspora_telemetry::MetricEvent>> {
    let mut by: HashMap<String, Vec<_>> = HashMap::new();
    for e in metric_events(node.data, &node.ca, usize::MAX, Duration::from_secs(2)) {
        by.entry(e.source.clone()).or_default().push(e);
    }
    by
}

/// The value of `name` in the source's last event.
fn last(events: &[diaspora_telemetry::MetricEvent], name: &str) -> f64 {
    let e = events.last().expect("events");
    e.samples
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = e.samples.iter().map(|s| s.name.as_str()).collect();
            panic!("no {name} in {names:?}")
        })
        .value
}

#[test]
fn producer_consumer_and_view_publish_their_figures() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node"), "interval");
    cli(&node, &["topic", "create", "diaspora.metrics"]);
    cli(&node, &["stream", "init", "frames"]);
    cli(&node, &["topic", "create", "view.frames"]);
    let n = ITEMS.to_string();
    cli(
        &node,
        &[
            "stream",
            "produce",
            "--topic",
            "frames",
            "--synthetic",
            &n,
            "--rate",
            "400",
            "--metrics-interval-ms",
            "100",
        ],
    );
    cli(
        &node,
        &[
            "stream",
            "consume",
            "--topic",
            "frames",
            "--name",
            "hpc",
            "--count",
            &n,
            "--idle-timeout-ms",
            "10000",
            "--metrics-interval-ms",
            "100",
        ],
    );
    let spec = dir.path().join("frames.toml");
    std::fs::write(
        &spec,
        "name = \"frames\"\n[[source]]\nname = \"f\"\ntopic = \"frames\"\nkey = \"id\"\n[output]\ntopic = \"view.frames\"\n",
    )
    .unwrap();
    cli(
        &node,
        &[
            "view",
            "run",
            "--spec",
            spec.to_str().unwrap(),
            "--max-items",
            &n,
            "--idle-s",
            "20",
            "--metrics-interval-ms",
            "100",
        ],
    );

    let by = events_by_source(&node);
    let mut sources: Vec<&String> = by.keys().collect();
    sources.sort();
    assert_eq!(
        sources,
        ["consumer:frames/hpc", "producer:frames/0", "view:frames"],
        "sources"
    );
    let producer = &by["producer:frames/0"];
    // 200 items at 400/s: about half a second of events, and a last one at stop.
    assert!(producer.len() >= 3, "{} producer events", producer.len());
    assert_eq!(last(producer, "stream.producer.offered"), ITEMS as f64);
    assert_eq!(last(producer, "stream.producer.acked"), ITEMS as f64);
    assert_eq!(last(producer, "stream.producer.unacked"), 0.0);
    let fill = last(producer, "stream.producer.memory_fill");
    assert!((0.0..=1.0).contains(&fill), "memory_fill {fill}");
    // Rates from the second snapshot on (the first has no interval).
    assert!(producer.iter().skip(1).all(|e| e
        .samples
        .iter()
        .any(|s| s.name == "stream.producer.acked.rate"
            && s.labels.get("topic").map(String::as_str) == Some("frames")
            && s.labels.get("partition").map(String::as_str) == Some("0"))));

    let consumer = &by["consumer:frames/hpc"];
    assert_eq!(last(consumer, "stream.consumer.delivered"), ITEMS as f64);
    assert_eq!(last(consumer, "stream.consumer.lost"), 0.0);
    let latency = last(consumer, "stream.consumer.latency_ms");
    assert!(latency > 0.0, "latency_ms {latency}");

    let view = &by["view:frames"];
    assert_eq!(last(view, "view.items_read"), ITEMS as f64);
    assert_eq!(last(view, "view.emitted"), ITEMS as f64);
    assert_eq!(last(view, "view.pending"), 0.0);
}

/// `predict serve` keeps following its metric topic across a node crash:
/// the fabric consumer reconnects and the monitor goes on observing the
/// restarted node's events.
#[test]
fn a_monitor_resubscribes_after_the_node_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("node");
    let data: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let metrics = ["--metrics-interval-ms", "100"];
    let mut node = serve_with(&data_dir, data, admin, "interval", &metrics);
    let monitor = dir.path().join("uptime.toml");
    std::fs::write(
        &monitor,
        "name = \"uptime\"\n[source]\nmetric = \"node.uptime_s\"\nstep_s = 0.1\n\
         [model]\nwindow = 8\nhorizon = 4\nhidden = 8\nbatch = 4\n\
         [prediction]\nthreshold = 1e9\n[output]\ntopic = \"diaspora.predictions\"\n",
    )
    .unwrap();
    let serve = std::process::Command::new(BIN)
        .args(["predict", "serve", "--monitor"])
        .arg(&monitor)
        .args(["--from-start", "--max-s", "14"])
        .args(["--admin", &admin.to_string(), "--addr", &data.to_string()])
        .arg("--ca")
        .arg(&node.ca)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map(common::Reaped::new)
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    sigkill(&mut node);
    std::thread::sleep(Duration::from_millis(500));
    let mut node = serve_with(&data_dir, data, admin, "interval", &metrics);
    let out = serve.take().wait_with_output().unwrap();
    sigkill(&mut node);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The stats line at exit: samples from before the crash (~3 s at 10/s)
    // and from the restarted node.
    let stats: serde_json::Value = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("monitor uptime: "))
        .find_map(|j| serde_json::from_str(j).ok())
        .unwrap_or_else(|| panic!("no stats line: {stderr}"));
    let samples = stats["samples"].as_u64().unwrap();
    assert!(samples >= 60, "{samples} samples: {stderr}");
    // Whatever events it published were all acknowledged.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("events: ") && l.ends_with(" acknowledged, 0 not")),
        "{stderr}"
    );
}
