//! Pools end to end: a real node (`diaspora serve`), the pool loop, and
//! workers that are real `diaspora pool worker` processes.

mod common;

use common::{serve, Served, BIN};
use diaspora_fabric::{
    Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, StartFrom, Stop,
};
use diaspora_pool::fabric::{self as pf, ExternalDemand, PoolOptions};
use diaspora_pool::messages::{Event, Task, TaskKind};
use diaspora_pool::supervisor::PoolEvent;
use diaspora_pool::workers::{JobEnd, LossReason, WorkerEvent};
use diaspora_pool::{PoolSpec, Reason};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pool running in this process against `node`, its events recorded.
struct Harness {
    client: Client,
    stop: Arc<Stop>,
    pool: Option<tokio::task::JoinHandle<Result<diaspora_pool::messages::Status, pf::PoolError>>>,
    events: Arc<Mutex<Vec<(i64, Event)>>>,
    follower: tokio::task::JoinHandle<()>,
    name: String,
    logs: std::path::PathBuf,
}

impl Harness {
    async fn start(
        node: &Served,
        spec_toml: &str,
        opts: PoolOptions,
        logs: &std::path::Path,
    ) -> Harness {
        let mut spec = PoolSpec::from_toml(spec_toml).unwrap();
        spec.worker.command = vec![BIN.into(), "pool".into(), "worker".into()];
        let mut admin = diaspora_fabric::AdminClient::connect(node.admin, &node.ca)
            .await
            .unwrap();
        pf::ensure_topics((&mut admin).into(), &spec).await.unwrap();
        let client = Client::connect(ClientConfig::new(node.data, &node.ca))
            .await
            .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let follower = {
            let mut c = Consumer::assign(
                &client,
                ConsumerConfig::new(pf::PoolTopics::new(&spec.name).events)
                    .start(StartFrom::Earliest),
                &[],
            )
            .await
            .unwrap();
            let events = events.clone();
            tokio::spawn(async move {
                while let Ok(ci) = c.next().await {
                    if let Ok(e) = Event::parse(&ci.item.payload) {
                        events.lock().unwrap().push((ci.item.timestamp_us, e));
                    }
                }
            })
        };
        let opts = PoolOptions {
            tick: Duration::from_millis(100),
            log_dir: Some(logs.to_path_buf()),
            worker_env: {
                let mut env = pf::worker_env(node.data, &node.ca, &spec.heartbeat);
                env.push(("RUST_LOG".into(), "diaspora_pool=info".into()));
                env
            },
            ..opts
        };
        let stop = Stop::new();
        let name = spec.name.clone();
        let providers = pf::providers_for(&spec);
        let pool = tokio::spawn(pf::run_pool(
            client.clone(),
            spec,
            providers,
            opts,
            Arc::new(Mutex::new(ExternalDemand::default())),
            stop.clone(),
        ));
        Harness {
            client,
            stop,
            pool: Some(pool),
            events,
            follower,
            name,
            logs: logs.to_path_buf(),
        }
    }

    fn pool_events(&self) -> Vec<(i64, PoolEvent)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(t, e)| match e {
                Event::Pool { event } => Some((*t, event.clone())),
                _ => None,
            })
            .collect()
    }

    /// Live workers (joined, not yet lost or left) and their pids from
    /// their latest heartbeats.
    fn live(&self) -> BTreeMap<String, u32> {
        let mut live = BTreeMap::new();
        for (_, e) in self.events.lock().unwrap().iter() {
            match e {
                Event::Heartbeat { worker, pid, .. } => {
                    live.insert(worker.clone(), *pid);
                }
                Event::Pool {
                    event:
                        PoolEvent::Worker(
                            WorkerEvent::Lost { worker, .. } | WorkerEvent::Left { worker, .. },
                        ),
                } => {
                    live.remove(worker);
                }
                _ => {}
            }
        }
        live
    }

    fn latest_status(&self) -> Option<diaspora_pool::messages::Status> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Event::Status(s) => Some(s.clone()),
                _ => None,
            })
    }

    /// Every worker's log that says something.
    fn worker_logs(&self) -> String {
        let mut logs = String::new();
        for e in std::fs::read_dir(&self.logs)
            .into_iter()
            .flatten()
            .flatten()
        {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if !text.trim().is_empty() {
                logs += &format!("--- {}\n{}\n", e.path().display(), text.trim_end());
            }
        }
        logs
    }

    async fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut(&Harness) -> bool) {
        let t = Instant::now();
        while !ok(self) {
            if t.elapsed() >= limit {
                let logs = self.worker_logs();
                let last_status = self.latest_status().map(|s| s.at_us);
                panic!(
                    "{what}: not within {limit:?}; pool task finished: {:?}; last status at {last_status:?}, now {}; workers' logs:\n{logs}\nevents: {:#?}",
                    self.pool.as_ref().map(|p| p.is_finished()),
                    diaspora_fabric::item::now_us(),
                    self.events
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|(_, e)| match e {
                            Event::Heartbeat { in_flight, .. } => !in_flight.is_empty(),
                            Event::Status(_) => false,
                            _ => true,
                        })
                        .cloned()
                        .collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(mut self) -> diaspora_pool::messages::Status {
        self.stop.trigger();
        let status = self.pool.take().unwrap().await.unwrap().unwrap();
        self.follower.abort();
        self.client.close();
        status
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // On a failed assertion: stop the pool (its workers die with its
        // providers when the runtime drops the task).
        self.stop.trigger();
    }
}

/// Creates `diaspora.predictions` on `node`.
async fn predictions_topic(node: &Served) {
    let mut admin = diaspora_fabric::AdminClient::connect(node.admin, &node.ca)
        .await
        .unwrap();
    diaspora_fabric::ensure_topic(
        &mut admin,
        "diaspora.predictions",
        &diaspora_fabric::TopicSettings::with_partitions(1),
    )
    .await
    .unwrap();
}

/// Publishes the predictor's event: monitor `monitor` forecasts its series
/// (labelled `label`) crossing its threshold in `lead_time_s`.
async fn predict(client: &Client, monitor: &str, label: (&str, &str), lead_time_s: f64) {
    let event = diaspora_predict::monitor::MonitorEvent::Prediction {
        monitor: monitor.into(),
        metric: "some.metric".into(),
        labels: [(label.0.to_string(), label.1.to_string())].into(),
        t_us: diaspora_fabric::item::now_us(),
        value: 0.5,
        threshold: 0.95,
        lead_time_s,
        confidence: 0.9,
        forecast: vec![0.7, 0.9, 0.97],
        step_s: lead_time_s / 3.0,
    };
    let p = Producer::new(client, ProducerConfig::new("diaspora.predictions"))
        .await
        .unwrap();
    p.send(diaspora_fabric::item::payload_item(
        diaspora_predict::monitor::encode_event(&event).into(),
    ))
    .await
    .unwrap()
    .await
    .unwrap();
    p.close().await.unwrap();
}

/// Runs `diaspora ARGS --pool POOL` against `node`; it must succeed.
fn pool_cli(node: &Served, pool: &str, args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(BIN)
        .args(args)
        .args(["--pool", pool, "--addr", &node.data.to_string(), "--ca"])
        .arg(&node.ca)
        .output()
        .unwrap();
    common::assert_success(&out);
    out
}

/// A node (`diaspora serve`, killed with the test) in a fresh directory,
/// and a directory for the workers' logs.
fn node() -> (tempfile::TempDir, Served, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let addr = || {
        format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap()
    };
    let node = serve(&dir.path().join("node"), addr(), addr(), "interval");
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    (dir, node, logs)
}

const CRASH_SPEC: &str = r#"
name = "crash"
[worker]
command = ["diaspora"]
[heartbeat]
interval_ms = 300
timeout_ms = 1500
[tasks]
retries = 5
backoff_ms = 50
[scaling]
min_total = 3
max_total = 3
[[site]]
name = "local"
provider = "local"
min = 3
max = 3
"#;

/// Workers SIGKILLed one after another while tasks flow: the pool is back
/// at its minimum within 5 s each time, and every task has exactly one
/// result — none lost, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_one_after_another_lose_no_task() {
    let (dir, node, logs) = node();
    let prov = dir.path().join("prov.sqlite").display().to_string();
    let opts = PoolOptions {
        provenance: Some(prov.clone()),
        ..Default::default()
    };
    let h = Harness::start(&node, CRASH_SPEC, opts, &logs).await;
    h.wait_for("three workers joined", Duration::from_secs(30), |h| {
        h.live().len() == 3
    })
    .await;

    let n = 240;
    let tasks: Vec<Task> = (0..n)
        .map(|i| Task {
            key: format!("t{i:03}"),
            kind: TaskKind::Sleep { ms: 60 },
            inputs: vec![format!("frames/0/{i}")],
            attempt: 0,
            not_before_us: 0,
        })
        .collect();
    pf::submit(&h.client, &h.name, &tasks).await.unwrap();

    let mut recoveries = Vec::new();
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let live = h.live();
        let (victim, pid) = live
            .iter()
            .next()
            .map(|(w, p)| (w.clone(), *p))
            .expect("a live worker");
        let killed_us = diaspora_fabric::item::now_us();
        // SAFETY: SIGKILL to a worker process this test's pool started.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
        let joined_since = |h: &Harness| {
            h.pool_events()
                .iter()
                .filter(|(t, e)| {
                    *t >= killed_us && matches!(e, PoolEvent::Worker(WorkerEvent::Joined { .. }))
                })
                .count()
        };
        h.wait_for(
            &format!("round {round}: {victim} replaced"),
            Duration::from_secs(20),
            |h| {
                let l = h.live();
                l.len() == 3 && !l.contains_key(&victim) && joined_since(h) > 0
            },
        )
        .await;
        let joined_us = h
            .pool_events()
            .iter()
            .filter(|(t, e)| {
                *t >= killed_us && matches!(e, PoolEvent::Worker(WorkerEvent::Joined { .. }))
            })
            .map(|(t, _)| *t)
            .min()
            .unwrap();
        recoveries.push(Duration::from_micros((joined_us - killed_us) as u64));
    }
    eprintln!("back at the minimum after each SIGKILL: {recoveries:?}");
    for r in &recoveries {
        assert!(
            *r < Duration::from_secs(5),
            "recovery {r:?} over the 5 s bound"
        );
    }

    // Every task: exactly one result, all successful.
    let t = Instant::now();
    let results = loop {
        let r = pf::read_results(&h.client, &h.name).await.unwrap();
        if r.len() >= n || t.elapsed() > Duration::from_secs(60) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let keys: BTreeSet<&str> = results.iter().map(|r| r.key.as_str()).collect();
    if results.len() != n {
        // Say which task has no result and everything that names it.
        let missing: Vec<&String> = tasks
            .iter()
            .map(|t| &t.key)
            .filter(|k| !keys.contains(k.as_str()))
            .collect();
        eprintln!("no result for {missing:?}; the events naming them:");
        for (t, e) in h.events.lock().unwrap().iter() {
            let text = format!("{e:?}");
            if missing.iter().any(|k| text.contains(k.as_str())) {
                eprintln!("  {t} {text}");
            }
        }
        eprintln!("workers' logs:\n{}", h.worker_logs());
    }
    assert_eq!(results.len(), n, "one result per task");
    assert_eq!(keys.len(), n, "no key twice");
    assert!(
        results.iter().all(|r| r.ok),
        "{:?}",
        results.iter().find(|r| !r.ok)
    );
    let lost: Vec<LossReason> = h
        .pool_events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            PoolEvent::Worker(WorkerEvent::Lost { reason, .. }) => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        lost,
        vec![
            LossReason::JobEnded {
                end: JobEnd::Signalled { signal: 9 }
            };
            4
        ],
        "each kill reported once, with its reason"
    );
    let status = h.finish().await;
    eprintln!(
        "results {}, retries {}, duplicates dropped {}, lost {}, launched {}",
        status.results, status.retries, status.duplicates, status.lost, status.launched
    );
    assert_eq!(status.lost, 4);
    assert_eq!(status.launched, 7);
    // Each result is a provenance activity: the worker that ran it, the
    // input it used, the result item it generated.
    assert_eq!(status.provenance_recorded, n as u64);
    assert_eq!(status.provenance_dropped, 0);
    let mut p = diaspora_provenance::Provenance::open(&prov).unwrap();
    let acts = p
        .find_tag(
            "pool",
            &diaspora_provenance::model::TagValue::Str("crash".into()),
            10_000,
        )
        .unwrap();
    assert_eq!(acts.len(), n);
    let a = p.find_name("pool/crash/t007", 1).unwrap();
    let rec = p.get(a[0]).unwrap();
    let input = p.find_name("frames/0/7", 1).unwrap()[0];
    assert_eq!(
        rec.parents,
        vec![(input, diaspora_provenance::model::EdgeKind::Used)]
    );
    assert!(
        matches!(&rec.tags["worker"], diaspora_provenance::model::TagValue::Str(w) if w.starts_with("local-"))
    );
}

/// A predictor's `prediction` event for a resource the pool serves scales
/// it up before the shortfall is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prediction_scales_the_pool_up_before_the_shortfall() {
    let (_dir, node, logs) = node();
    predictions_topic(&node).await;
    let spec = r#"
name = "predicted"
[worker]
command = ["diaspora"]
[heartbeat]
interval_ms = 300
timeout_ms = 1500
[scaling]
min_total = 1
max_total = 4
prediction_horizon_s = 120
prediction_workers = 3
[[site]]
name = "local"
provider = "local"
min = 1
max = 4
"#;
    let opts = PoolOptions {
        predictions_topic: Some("diaspora.predictions".into()),
        serves: vec!["recon-lag".into()],
        ..Default::default()
    };
    let h = Harness::start(&node, spec, opts, &logs).await;
    h.wait_for("one worker", Duration::from_secs(30), |h| {
        h.live().len() == 1
    })
    .await;
    // Quiet for a while: no demand, no scaling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(h.live().len(), 1);

    // The predictor forecasts the reconstruction lag crossing its
    // threshold in 60 s.
    let sent = Instant::now();
    predict(&h.client, "recon-lag", ("resource", "ptycho-recon"), 60.0).await;
    h.wait_for(
        "three workers on the prediction",
        Duration::from_secs(20),
        |h| h.live().len() == 3,
    )
    .await;
    let took = sent.elapsed();
    eprintln!("scaled 1 → 3 workers {took:?} after a prediction due in 60 s");
    assert!(took < Duration::from_secs(60), "before the shortfall");
    assert!(h
        .pool_events()
        .iter()
        .any(|(_, e)| matches!(e, PoolEvent::Launched { reason: Reason::Prediction, workers, .. } if workers.len() == 2)));
    // A prediction for something else does nothing.
    predict(&h.client, "wan-congestion", ("link", "wan"), 10.0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.live().len(), 3);
    h.finish().await;
}

/// `diaspora pool drain SITE`: the site's workers go, the other site covers
/// the pool's minimum; `--undo` restores the site's own minimum. `pool
/// status --json` shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_site_moves_the_minimum_to_the_other() {
    let (_dir, node, logs) = node();
    let spec = r#"
name = "sites"
[worker]
command = ["diaspora"]
[heartbeat]
interval_ms = 300
timeout_ms = 1500
[scaling]
min_total = 2
max_total = 4
scale_in_idle_s = 1
cooldown_s = 0
[[site]]
name = "edge"
provider = "local"
min = 1
max = 2
[[site]]
name = "hpc"
provider = "local"
min = 1
max = 2
"#;
    let h = Harness::start(&node, spec, PoolOptions::default(), &logs).await;
    let per_site = |h: &Harness| -> Vec<(String, u32, bool)> {
        h.latest_status()
            .map(|s| {
                s.sites
                    .iter()
                    .map(|x| (x.name.clone(), x.active, x.drained))
                    .collect()
            })
            .unwrap_or_default()
    };
    h.wait_for("one worker per site", Duration::from_secs(30), |h| {
        h.live().len() == 2 && per_site(h) == [("edge".into(), 1, false), ("hpc".into(), 1, false)]
    })
    .await;
    let cli = |args: &[&str]| {
        let out = pool_cli(&node, "sites", args);
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&["pool", "drain", "edge"]);
    h.wait_for("hpc covers the minimum", Duration::from_secs(20), |h| {
        per_site(h) == [("edge".into(), 0, true), ("hpc".into(), 2, false)] && h.live().len() == 2
    })
    .await;
    let left = h.pool_events().iter().any(
        |(_, e)| matches!(e, PoolEvent::Worker(WorkerEvent::Left { site, .. }) if site == "edge"),
    );
    assert!(left, "the edge worker left as planned (not lost)");
    let st: serde_json::Value = serde_json::from_str(&cli(&["pool", "status", "--json"])).unwrap();
    assert_eq!(st["sites"][0]["drained"], true);
    cli(&["pool", "drain", "edge", "--undo"]);
    h.wait_for(
        "edge back to its minimum, hpc's surplus retired",
        Duration::from_secs(20),
        |h| per_site(h) == [("edge".into(), 1, false), ("hpc".into(), 1, false)],
    )
    .await;
    h.finish().await;
}

/// The ptychography library's ePIE as a pool's built-in task kind: a
/// simulated scan reconstructed by a worker process, its figures in the
/// result and its files where the task said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_reconstructs_a_scan_with_the_builtin_epie() {
    let (dir, node, logs) = node();
    let scan = dir.path().join("scan");
    let out = std::process::Command::new(BIN)
        .args([
            "ptycho",
            "simulate",
            "--positions",
            "40",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&scan)
        .output()
        .unwrap();
    common::assert_success(&out);
    let spec = r#"
name = "science"
[worker]
command = ["diaspora"]
[heartbeat]
interval_ms = 300
timeout_ms = 3000
[scaling]
min_total = 1
max_total = 1
[[site]]
name = "hpc"
provider = "local"
min = 1
max = 1
"#;
    let h = Harness::start(&node, spec, PoolOptions::default(), &logs).await;
    let recon = dir.path().join("recon");
    let task = Task {
        key: "scan-3".into(),
        kind: TaskKind::Builtin {
            name: "ptycho.reconstruct".into(),
            args: serde_json::json!({"scan": scan, "out": recon, "iterations": 10}),
        },
        inputs: vec![],
        attempt: 0,
        not_before_us: 0,
    };
    let unknown = Task {
        key: "nope".into(),
        kind: TaskKind::Builtin {
            name: "ptycho.dance".into(),
            args: serde_json::Value::Null,
        },
        inputs: vec![],
        attempt: 0,
        not_before_us: 0,
    };
    pf::submit(&h.client, &h.name, &[task, unknown])
        .await
        .unwrap();
    let t = Instant::now();
    let results = loop {
        let r = pf::read_results(&h.client, &h.name).await.unwrap();
        if r.len() == 2 {
            break r;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "results: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ok = results.iter().find(|r| r.key == "scan-3").unwrap();
    assert!(ok.ok, "{:?}", ok.error);
    let figures: serde_json::Value = serde_json::from_str(&ok.output).unwrap();
    assert_eq!(figures["frames"], 40);
    assert_eq!(figures["iterations"], 10);
    assert!(recon.join("reconstruction.png").exists());
    assert!(recon.join("epie_object.npy").exists());
    let bad = results.iter().find(|r| r.key == "nope").unwrap();
    assert!(!bad.ok);
    assert!(
        bad.error
            .as_deref()
            .unwrap()
            .contains("no built-in task 'ptycho.dance'"),
        "{bad:?}"
    );
    h.finish().await;
}

/// Live migration between worker processes: a running stateful task is
/// moved by command to a worker at the other site, another when a
/// prediction names its site, and a third when its site is drained;
/// nothing of any state is lost (the target's state on arrival is the
/// source's at the switch-over, by checksum), and rounds, bytes and pause
/// are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_tasks_move_between_sites_by_command_on_a_prediction_and_on_a_drain() {
    let (_dir, node, logs) = node();
    let spec = r#"
name = "mover"
[worker]
command = ["diaspora"]
[heartbeat]
interval_ms = 200
timeout_ms = 3000
[scaling]
min_total = 2
max_total = 2
[[site]]
name = "edge"
provider = "local"
min = 1
max = 1
[[site]]
name = "hpc"
provider = "local"
min = 1
max = 1
"#;
    predictions_topic(&node).await;
    let opts = PoolOptions {
        predictions_topic: Some("diaspora.predictions".into()),
        ..Default::default()
    };
    let h = Harness::start(&node, spec, opts, &logs).await;
    h.wait_for("two workers", Duration::from_secs(30), |h| {
        h.live().len() == 2
    })
    .await;
    let stateful = |key: &str| Task {
        key: key.into(),
        kind: TaskKind::Stateful {
            bytes: 8 << 20,
            page: 64 << 10,
            write_every_ms: 2,
            run_ms: 4000,
        },
        inputs: vec![],
        attempt: 0,
        not_before_us: 0,
    };
    let running_on = |h: &Harness, key: &str| -> Option<String> {
        h.events
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find_map(|(_, e)| match e {
                Event::Heartbeat {
                    worker, migratable, ..
                } if migratable.iter().any(|k| k == key) => Some(worker.clone()),
                _ => None,
            })
    };
    let migrated = |h: &Harness, key: &str| {
        h.events.lock().unwrap().iter().find_map(|(_, e)| match e {
            Event::TaskMigrated {
                key: k,
                from,
                to,
                report,
                checksum,
            } if k == key => Some((from.clone(), to.clone(), report.clone(), *checksum)),
            _ => None,
        })
    };
    let result_of = |key: &'static str| {
        let client = h.client.clone();
        let name = h.name.clone();
        async move {
            let t = Instant::now();
            loop {
                let r = pf::read_results(&client, &name).await.unwrap();
                if let Some(r) = r.into_iter().find(|r| r.key == key) {
                    return r;
                }
                assert!(t.elapsed() < Duration::from_secs(60), "no result for {key}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let cli = |args: &[&str]| {
        pool_cli(&node, "mover", args);
    };

    // 1. By command.
    pf::submit(&h.client, &h.name, &[stateful("by-command")])
        .await
        .unwrap();
    h.wait_for("by-command running", Duration::from_secs(20), |h| {
        running_on(h, "by-command").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let source = running_on(&h, "by-command").unwrap();
    let other = if source.starts_with("edge-") {
        "hpc"
    } else {
        "edge"
    };
    cli(&["pool", "migrate", "by-command", "--to", other]);
    h.wait_for("moved", Duration::from_secs(30), |h| {
        migrated(h, "by-command").is_some()
    })
    .await;
    let (from, to, report, checksum) = migrated(&h, "by-command").unwrap();
    eprintln!(
        "by command: {from} → {to}: {} rounds {:?}, {:.1} MiB moved of {:.0} MiB, pause {:.1} ms, total {:.0} ms",
        report.rounds,
        report.chunks_per_round,
        report.bytes as f64 / (1 << 20) as f64,
        report.state_bytes as f64 / (1 << 20) as f64,
        report.pause.as_secs_f64() * 1e3,
        report.total.as_secs_f64() * 1e3
    );
    assert_eq!(from, source);
    assert!(to.starts_with(&format!("{other}-")));
    let r = result_of("by-command").await;
    assert!(r.ok, "{r:?}");
    assert_eq!(r.worker, to, "the target finished it");
    let out: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert_eq!(out["moved_from"], from.as_str());
    assert_eq!(
        out["checksum_on_arrival"], checksum,
        "state intact on arrival"
    );
    assert!(out["ran_ms"].as_u64().unwrap() >= 4000);
    assert!(report.rounds >= 2 && report.bytes >= report.state_bytes);

    // 2. A prediction of trouble at the site running it.
    pf::submit(&h.client, &h.name, &[stateful("on-prediction")])
        .await
        .unwrap();
    h.wait_for("on-prediction running", Duration::from_secs(20), |h| {
        running_on(h, "on-prediction").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let source = running_on(&h, "on-prediction").unwrap();
    let site = source.rsplit_once('-').unwrap().0.to_string();
    predict(&h.client, "site-link", ("site", &site), 30.0).await;
    h.wait_for(
        "moved off the site in trouble",
        Duration::from_secs(30),
        |h| migrated(h, "on-prediction").is_some(),
    )
    .await;
    let (from, to, report, checksum) = migrated(&h, "on-prediction").unwrap();
    eprintln!(
        "on a prediction for {site}: {from} → {to}: {} rounds, {:.1} MiB, pause {:.1} ms",
        report.rounds,
        report.bytes as f64 / (1 << 20) as f64,
        report.pause.as_secs_f64() * 1e3
    );
    assert_eq!(from, source);
    let r = result_of("on-prediction").await;
    let out: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert!(r.ok && r.worker == to);
    assert_eq!(out["checksum_on_arrival"], checksum);

    // 3. On a drain of the site running it.
    pf::submit(&h.client, &h.name, &[stateful("on-drain")])
        .await
        .unwrap();
    h.wait_for("on-drain running", Duration::from_secs(20), |h| {
        running_on(h, "on-drain").is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let source = running_on(&h, "on-drain").unwrap();
    let site = source.rsplit_once('-').unwrap().0.to_string();
    cli(&["pool", "drain", &site]);
    h.wait_for("moved off the drained site", Duration::from_secs(30), |h| {
        migrated(h, "on-drain").is_some()
    })
    .await;
    let (from, to, report, checksum) = migrated(&h, "on-drain").unwrap();
    eprintln!(
        "on a drain of {site}: {from} → {to}: {} rounds, {:.1} MiB, pause {:.1} ms",
        report.rounds,
        report.bytes as f64 / (1 << 20) as f64,
        report.pause.as_secs_f64() * 1e3
    );
    assert!(!to.starts_with(&format!("{site}-")));
    let r = result_of("on-drain").await;
    let out: serde_json::Value = serde_json::from_str(&r.output).unwrap();
    assert!(r.ok && r.worker == to);
    assert_eq!(out["checksum_on_arrival"], checksum);
    h.wait_for("the drained worker left", Duration::from_secs(20), |h| {
        h.pool_events()
            .iter()
            .any(|(_, e)| matches!(e, PoolEvent::Worker(WorkerEvent::Left { worker, .. }) if *worker == from))
    })
    .await;
    let results = pf::read_results(&h.client, &h.name).await.unwrap();
    assert_eq!(results.len(), 3, "one result per task: {results:?}");
    h.finish().await;
}
