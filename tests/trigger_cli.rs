//! Triggers end to end: a real node (`diaspora serve`), `diaspora trigger
//! create|run|list|status` as child processes (SIGKILLed mid-run), and the
//! runner in this process for the publish, HTTP and pool-task actions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cli, start_node, Reaped, Served, BIN};
use diaspora_fabric::item::{meta, Item};
use diaspora_fabric::{
    Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, StartFrom, Stop,
};
use diaspora_provenance::{Provenance, TagValue};
use diaspora_trigger::runner::{RunOptions, Runner};
use diaspora_trigger::spec::TriggerSpec;
use diaspora_trigger::status::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const EVENTS: u64 = 10_000;

/// What event `n` is: 1 % match the filter (`flagged`); of those, every
/// tenth is poison (the action fails for good), and every third of the
/// rest fails twice before it succeeds.
fn kind_of(n: u64) -> Option<&'static str> {
    if !n.is_multiple_of(100) {
        None
    } else if n.is_multiple_of(1000) {
        Some("p")
    } else if n.is_multiple_of(300) {
        Some("t")
    } else {
        Some("ok")
    }
}

fn item_key(n: u64) -> String {
    format!("n-{n}-{}", kind_of(n).unwrap_or("x"))
}

async fn connect(node: &Served) -> Client {
    Client::connect(ClientConfig::new(node.data, &node.ca))
        .await
        .unwrap()
}

/// Publishes `EVENTS` events on `topic`, 1 % of them flagged.
async fn produce_events(node: &Served, topic: &str) {
    let client = connect(node).await;
    let p = Producer::new(&client, ProducerConfig::new(topic))
        .await
        .unwrap();
    let mut pending = Vec::new();
    for n in 0..EVENTS {
        let mut item = Item {
            key: item_key(n).into_bytes().into(),
            payload: n.to_le_bytes().to_vec().into(),
            ..Default::default()
        };
        item.metadata.insert("n".into(), meta::int(n as i64));
        item.metadata
            .insert("flagged".into(), meta::boolean(kind_of(n).is_some()));
        if kind_of(n) == Some("p") {
            item.metadata.insert("poison".into(), meta::boolean(true));
        }
        pending.push(p.send(item).await.unwrap());
    }
    for d in pending {
        d.await.unwrap();
    }
    p.close().await.unwrap();
    client.close();
}

/// Every item on `topic` so far (all partitions).
async fn read_all(client: &Client, topic: &str, want: usize) -> Vec<Item> {
    let mut c = Consumer::assign(
        client,
        ConsumerConfig::new(topic).start(StartFrom::Earliest),
        &[],
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    while let Some(ci) = c.poll(Duration::from_secs(3)).await.unwrap() {
        out.push(ci.item);
        if out.len() >= want + 10 {
            break;
        }
    }
    c.close().await;
    out
}

fn trigger(node: &Served, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.arg("trigger")
        .args(args)
        .args(["--ca", node.ca.to_str().unwrap()])
        .args(["--addr", &node.data.to_string()])
        .env("RUST_LOG", "warn");
    c
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The acceptance test of issue 20's triggers: 10 000 events, 1 % match;
/// some actions fail twice first, some fail for good; the trigger is
/// SIGKILLed mid-run and restarted. Every matching event's effect happens
/// exactly once (the action writes it under the event's idempotency key),
/// non-matching events are never acted on, the permanent failures are on
/// the dead-letter topic, and every run is in provenance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_one_percent_matching_retried_dead_lettered_and_resumed_after_sigkill()
{
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node"), "interval");
    cli(&node, &["topic", "create", "frames", "--partitions", "4"]);
    produce_events(&node, "frames").await;
    acceptance(&node, dir.path(), "[source]\ntopic = \"frames\"\n").await;
}

/// The same with a Kafka source: the events go into Kafka through the
/// Kafka bridge (metadata and all), and the trigger reads the Kafka topic
/// as the group trigger.flagged on the Kafka service (Tansu).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_from_a_kafka_topic_with_the_position_kept_on_the_kafka_service() {
    let Some(bin) = diaspora_kafka::testing::Tansu::from_env("the Kafka trigger test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tansu = diaspora_kafka::testing::Tansu::start(&bin, &dir.path().join("tansu")).unwrap();
    let bootstrap = tansu.bootstrap();
    let node = start_node(&dir.path().join("node"), "interval");
    cli(&node, &["topic", "create", "frames", "--partitions", "4"]);
    produce_events(&node, "frames").await;
    let bridge = common::start_kafka_bridge(&node, &bootstrap, "frames", &["--create-topic"]);
    common::wait_kafka_count(
        &bootstrap,
        "frames",
        4,
        EVENTS as i64,
        Duration::from_secs(180),
    );
    drop(bridge);
    let source = format!(
        "[source]\nkind = \"kafka\"\ntopic = \"frames\"\n[source.kafka]\nbootstrap = \"{bootstrap}\"\n"
    );
    acceptance(&node, dir.path(), &source).await;
}

/// Runs the acceptance of triggers against the events on `source` (a
/// spec's `[source]` table): the trigger is created, SIGKILLed mid-run and
/// run again; effects, runs, dead letters, provenance and status checked.
async fn acceptance(node: &Served, dir: &Path, source: &str) {
    let effects = dir.join("effects");
    std::fs::create_dir(&effects).unwrap();
    let runs = dir.join("runs.log");
    // The action: log the run; poison fails for good (exit 42); "t" events
    // fail on their first two attempts; otherwise write the effect under
    // the event's place (atomic rename: a repeated run rewrites the same
    // file), after a pause in which a SIGKILL may land.
    let script = format!(
        r#"k="$DIASPORA_EVENT_ITEM_KEY"; a="$DIASPORA_TRIGGER_ATTEMPT"
echo "$k $a $DIASPORA_TRIGGER_KEY" >> {runs}
case "$k" in
  *-p) echo "poisoned scan" >&2; exit 42 ;;
  *-t) if [ "$a" -lt 3 ]; then echo "busy, try later" >&2; exit 1; fi ;;
esac
sleep 0.02
f={effects}/$DIASPORA_EVENT_PARTITION-$DIASPORA_EVENT_OFFSET
echo "$k" > "$f.tmp" && mv "$f.tmp" "$f"
"#,
        runs = runs.display(),
        effects = effects.display()
    );
    let prov = dir.join("prov.db");
    let spec_path = dir.join("flagged.toml");
    std::fs::write(
        &spec_path,
        format!(
            r#"name = "flagged"
filter = 'flagged == true and n in [0, {EVENTS}) and has(n)'
provenance = "sqlite:{prov}"

{source}
[action]
kind = "command"
argv = ["sh", "-c", {script:?}]
timeout_ms = 10000
permanent_exit_codes = [42]

[retry]
attempts = 4
backoff_ms = 20
backoff_max_ms = 200
"#,
            prov = prov.display(),
        ),
    )
    .unwrap();
    let spec = spec_path.to_str().unwrap();

    // Before `create`, the dead-letter topic is missing: a clear refusal.
    let out = trigger(node, &["run", "--spec", spec, "--idle-s", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("triggers.flagged.dlq does not exist") && err.contains("trigger create"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["trigger", "create", "--spec", spec, "--partitions", "2"])
        .args(["--ca", node.ca.to_str().unwrap()])
        .args(["--admin", &node.admin.to_string()])
        .output()
        .unwrap();
    common::assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("created topic triggers.flagged.dlq"));

    // First run: SIGKILLed once a third of the matching events were acted on.
    let mut first = Reaped::new(
        trigger(
            node,
            &["run", "--spec", spec, "--status-interval-ms", "200"],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("first.err")).unwrap())
        .spawn()
        .unwrap(),
    );
    let t0 = Instant::now();
    while lines(&runs).len() < 40 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the trigger ran {} actions in 120 s",
            lines(&runs).len()
        );
        if let Some(st) = first.try_wait().unwrap() {
            panic!(
                "the trigger exited early: {st}: {}",
                std::fs::read_to_string(dir.join("first.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let runs_at_kill = lines(&runs).len();

    // While it is down, `list` shows the status it last published.
    let out = trigger(node, &["list"]).output().unwrap();
    common::assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("flagged"));

    // Second run: resumes from the committed position, stops when idle.
    let out = trigger(node, &["run", "--spec", spec, "--idle-s", "3", "--json"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !records.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Effects: exactly the matching, non-poison events, each once.
    let want_ok: BTreeSet<String> = (0..EVENTS)
        .filter(|n| matches!(kind_of(*n), Some("ok" | "t")))
        .map(item_key)
        .collect();
    let want_poison: BTreeSet<String> = (0..EVENTS)
        .filter(|n| kind_of(*n) == Some("p"))
        .map(item_key)
        .collect();
    assert_eq!((want_ok.len(), want_poison.len()), (90, 10));
    let mut got_effects = BTreeSet::new();
    for e in std::fs::read_dir(&effects).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        assert!(!name.ends_with(".tmp"), "a half-written effect: {name}");
        let k = std::fs::read_to_string(e.path())
            .unwrap()
            .trim()
            .to_string();
        assert!(got_effects.insert(k.clone()), "{k} has two effects");
    }
    assert_eq!(got_effects, want_ok, "effects");

    // Runs: every matching event ran, no other did; "t" events took three
    // attempts; what ran again after the kill is at most the event in hand.
    let all_runs = lines(&runs);
    let mut first_attempts: BTreeMap<String, usize> = BTreeMap::new();
    let mut attempts: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for l in &all_runs {
        let mut f = l.split(' ');
        let (k, a) = (
            f.next().unwrap().to_string(),
            f.next().unwrap().parse().unwrap(),
        );
        assert!(
            want_ok.contains(&k) || want_poison.contains(&k),
            "a non-matching event was acted on: {l}"
        );
        if a == 1 {
            *first_attempts.entry(k.clone()).or_default() += 1;
        }
        attempts.entry(k).or_default().insert(a);
    }
    let ran: BTreeSet<&String> = attempts.keys().collect();
    let matching: BTreeSet<&String> = want_ok.iter().chain(&want_poison).collect();
    assert_eq!(ran, matching, "every matching event ran");
    let reruns: Vec<_> = first_attempts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        reruns.len() <= 1,
        "more than the event in hand at the SIGKILL ran again: {reruns:?} ({runs_at_kill} runs at the kill)"
    );
    for k in &want_ok {
        if k.ends_with("-t") {
            assert_eq!(
                attempts[k],
                BTreeSet::from([1, 2, 3]),
                "{k}: two transient failures, then success"
            );
        }
    }
    for k in &want_poison {
        assert_eq!(
            attempts[k],
            BTreeSet::from([1]),
            "{k}: permanent, not retried"
        );
    }

    // The dead-letter topic: the poison events, with why.
    let client = connect(node).await;
    let dlq = read_all(&client, "triggers.flagged.dlq", 10).await;
    let mut dead: BTreeSet<String> = BTreeSet::new();
    for item in &dlq {
        let err = meta::get_str(item, "trigger.error").unwrap();
        assert!(
            err.contains("exited 42 (permanent): poisoned scan"),
            "{err}"
        );
        assert_eq!(meta::get_i64(item, "trigger.attempts"), Some(1));
        assert!(meta::get_bool(item, "poison"));
        // The payload came along (the runner reads events without theirs).
        let n = u64::from_le_bytes(item.payload[..8].try_into().unwrap());
        dead.insert(item_key(n));
    }
    assert_eq!(dead, want_poison, "dead-lettered");
    assert!(dlq.len() <= 11, "{} dead letters for 10 events", dlq.len());

    // Provenance: an activity per action run, keyed.
    let prov_url = format!("sqlite:{}", prov.display());
    let (ok_keys, dead_keys) = tokio::task::spawn_blocking(move || {
        let mut p = Provenance::open(&prov_url).unwrap();
        let ids = p
            .find_tag("trigger.name", &TagValue::Str("flagged".into()), 10_000)
            .unwrap();
        let (mut ok, mut dead) = (BTreeSet::new(), BTreeSet::new());
        for id in ids {
            let r = p.get(id).unwrap();
            let key = r.tags["trigger.key"].text();
            match r.tags["trigger.outcome"].text().as_str() {
                "ok" => ok.insert(key),
                "dead_lettered" => dead.insert(key),
                o => panic!("outcome {o}"),
            };
        }
        (ok, dead)
    })
    .await
    .unwrap();
    assert_eq!((ok_keys.len(), dead_keys.len()), (90, 10));

    // The status the second run left: stopped, with its counters.
    let out = trigger(node, &["status", "flagged"]).output().unwrap();
    common::assert_success(&out);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["state"], "stopped");
    assert_eq!(st["dead_letter"], "triggers.flagged.dlq");
    assert!(st["stats"]["matched"].as_u64().unwrap() >= 1);
    let out = trigger(node, &["status", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no status of trigger nope"));
    client.close();
}

/// `trigger check` prints a good spec in full and refuses a bad filter
/// with the column of the mistake.
#[test]
fn check_shows_defaults_and_points_at_a_bad_filter() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "name = \"t\"\nfilter = 'a in {1, 2}'\n[source]\ntopic = \"frames\"\n[action]\nkind = \"http\"\nurl = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["trigger", "check"])
        .arg(&good)
        .output()
        .unwrap();
    common::assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("attempts = 5") && text.contains("timeout_ms = 30000"),
        "{text}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"t\"\nfilter = 'a == 1 and or b'\n[source]\ntopic = \"frames\"\n[action]\nkind = \"command\"\nargv = [\"true\"]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["trigger", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("filter:") && err.contains("column 12"),
        "{err}"
    );
}

/// A tiny HTTP server: answers 503 to the first POST of each idempotency
/// key and 200 to the next, 400 to keys of poison events; records what it
/// was sent.
async fn http_sink(
    seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let key = head
                    .lines()
                    .find_map(|l| l.strip_prefix("idempotency-key:"))
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let body: serde_json::Value =
                    serde_json::from_slice(&buf[head_end..head_end + len]).unwrap();
                let status = {
                    let mut seen = seen.lock().unwrap();
                    let before = seen.iter().filter(|(k, _)| *k == key).count();
                    let poison = body["metadata"]["poison"] == serde_json::json!(true);
                    seen.push((key, body));
                    if poison {
                        "400 Bad Request"
                    } else if before == 0 {
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    }
                };
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nno"
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (addr, h)
}

/// The publish, HTTP and pool-task actions, with the runner in this
/// process: each acts on exactly the matching events, with their
/// idempotency keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_http_and_pool_task_actions_act_on_exactly_the_matching_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node"), "interval");
    cli(&node, &["topic", "create", "frames", "--partitions", "2"]);
    for t in [
        "alerts",
        "triggers.pub.dlq",
        "triggers.hook.dlq",
        "triggers.task.dlq",
        "pool.reduce.tasks",
        "diaspora.triggers",
    ] {
        cli(&node, &["topic", "create", t]);
    }
    produce_events(&node, "frames").await;
    let client = connect(&node).await;
    let want: BTreeSet<u64> = (0..EVENTS).filter(|n| kind_of(*n).is_some()).collect();
    let opts = RunOptions {
        idle: Some(Duration::from_secs(2)),
        ..RunOptions::default()
    };
    let retry = "[retry]\nattempts = 3\nbackoff_ms = 10\nbackoff_max_ms = 50\n";

    // Publish: the matching events, payloads and all, on `alerts`.
    let spec = TriggerSpec::parse(&format!(
        "name = \"pub\"\nfilter = 'flagged == true'\n[source]\ntopic = \"frames\"\n[action]\nkind = \"publish\"\ntopic = \"alerts\"\n{retry}"
    ))
    .unwrap();
    let stats = Runner::start(spec, &client)
        .await
        .unwrap()
        .run(Stop::new(), opts.clone(), |_| {})
        .await
        .unwrap();
    assert_eq!(
        (stats.seen, stats.matched, stats.succeeded),
        (EVENTS, 100, 100)
    );
    let alerts = read_all(&client, "alerts", 100).await;
    let got: BTreeSet<u64> = alerts
        .iter()
        .map(|i| {
            assert!(meta::get_str(i, "trigger.key")
                .unwrap()
                .starts_with("pub:frames/"));
            u64::from_le_bytes(i.payload[..8].try_into().unwrap())
        })
        .collect();
    assert_eq!(alerts.len(), 100);
    assert_eq!(got, want);

    // HTTP: each key refused once with 503 (retried), poison refused with
    // 400 (dead-lettered at once).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (addr, server) = http_sink(seen.clone()).await;
    let spec = TriggerSpec::parse(&format!(
        "name = \"hook\"\nfilter = 'flagged == true'\n[source]\ntopic = \"frames\"\n[action]\nkind = \"http\"\nurl = \"http://{addr}/hook\"\nheaders = {{ authorization = \"Bearer x\" }}\ntimeout_ms = 5000\n{retry}"
    ))
    .unwrap();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let o = outcomes.clone();
    let stats = Runner::start(spec, &client)
        .await
        .unwrap()
        .run(Stop::new(), opts.clone(), move |r| {
            o.lock()
                .unwrap()
                .push((r.key.clone(), r.outcome, r.attempts))
        })
        .await
        .unwrap();
    server.abort();
    assert_eq!(
        (stats.matched, stats.succeeded, stats.dead_lettered),
        (100, 90, 10)
    );
    let outcomes = outcomes.lock().unwrap().clone();
    for (key, outcome, attempts) in outcomes.iter() {
        match outcome {
            Outcome::Ok => assert_eq!(*attempts, 2, "{key}"),
            Outcome::DeadLettered => assert_eq!(*attempts, 1, "{key}"),
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 90 * 2 + 10);
    let posted: BTreeSet<u64> = seen
        .iter()
        .map(|(k, body)| {
            assert_eq!(body["key"], serde_json::json!(k));
            body["metadata"]["n"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(posted, want);
    let dlq = read_all(&client, "triggers.hook.dlq", 10).await;
    assert_eq!(dlq.len(), 10);
    assert!(meta::get_str(&dlq[0], "trigger.error")
        .unwrap()
        .contains("400"));

    // Pool task: one task per matching event, keyed, naming its input.
    let spec = TriggerSpec::parse(&format!(
        "name = \"task\"\nfilter = 'flagged == true and not has(poison)'\n[source]\ntopic = \"frames\"\n[action]\nkind = \"pool_task\"\npool = \"reduce\"\ntask = {{ kind = \"command\", argv = [\"true\"] }}\n{retry}"
    ))
    .unwrap();
    let stats = Runner::start(spec, &client)
        .await
        .unwrap()
        .run(Stop::new(), opts, |_| {})
        .await
        .unwrap();
    assert_eq!(stats.succeeded, 90);
    let tasks = read_all(&client, "pool.reduce.tasks", 90).await;
    assert_eq!(tasks.len(), 90);
    let keys: BTreeSet<String> = tasks
        .iter()
        .map(|i| {
            let t: diaspora_pool::messages::Task = serde_json::from_slice(&i.payload).unwrap();
            assert_eq!(t.inputs.len(), 1);
            assert!(t.key.ends_with(t.inputs[0].as_str()), "{t:?}");
            t.key
        })
        .collect();
    assert_eq!(keys.len(), 90);

    // `trigger list` sees all three, stopped.
    let out = Command::new(BIN)
        .args(["trigger", "list", "--json"])
        .args(["--ca", node.ca.to_str().unwrap()])
        .args(["--addr", &node.data.to_string()])
        .output()
        .unwrap();
    common::assert_success(&out);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in ["pub", "hook", "task"] {
        assert_eq!(all[name]["state"], "stopped", "{name}: {all}");
    }
    assert_eq!(all["hook"]["stats"]["dead_lettered"], 10);
    client.close();
}

/// A trigger stopped while it backs off from a failed attempt leaves the
/// event in hand uncommitted: the next run acts on it (nothing skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_stopped_while_backing_off_acts_on_that_event_when_it_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node"), "interval");
    for t in ["frames", "triggers.hook.dlq"] {
        cli(&node, &["topic", "create", t]);
    }
    let client = connect(&node).await;
    let p = Producer::new(&client, ProducerConfig::new("frames"))
        .await
        .unwrap();
    for n in 0..3u64 {
        let mut item = Item::default();
        item.metadata.insert("n".into(), meta::int(n as i64));
        p.send(item).await.unwrap().await.unwrap();
    }
    p.close().await.unwrap();
    // Every key is refused (503) the first time, accepted after.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (addr, server) = http_sink(seen.clone()).await;
    let spec = format!(
        "name = \"hook\"\n[source]\ntopic = \"frames\"\n[action]\nkind = \"http\"\nurl = \"http://{addr}/\"\n[retry]\nattempts = 5\nbackoff_ms = 5000\nbackoff_max_ms = 5000\n"
    );
    let stop = Stop::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s.trigger();
    });
    let first = Runner::start(TriggerSpec::parse(&spec).unwrap(), &client)
        .await
        .unwrap()
        .run(stop, RunOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!((first.matched, first.succeeded, first.attempts), (1, 0, 1));
    let second = Runner::start(TriggerSpec::parse(&spec).unwrap(), &client)
        .await
        .unwrap()
        .run(
            Stop::new(),
            RunOptions {
                idle: Some(Duration::from_secs(2)),
                ..RunOptions::default()
            },
            |_| {},
        )
        .await
        .unwrap();
    server.abort();
    // The event in hand at the stop is the first the second run acts on.
    assert_eq!((second.matched, second.succeeded), (3, 3));
    let keys: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(
        keys.iter()
            .filter(|k| k.as_str() == "hook:frames/0/0")
            .count(),
        2
    );
    assert_eq!(keys.len(), 2 + 2 + 2);
    client.close();
}
