//! The command lines the twin gives the `diaspora` binary: exactly the
//! ones it always gave (a golden scenario with every kind of host), and
//! well formed for every shipped scenario. (The root package checks them
//! against the CLI's own parser.)

use std::collections::BTreeSet;
use std::path::Path;

use diaspora_twin::hosts::{HostAt, HostEnv, HostKind, Records, KINDS};
use diaspora_twin::{example_invocations, scenario_invocations, Scenario};

const GOLDEN: &str = r#"
name = "golden"
duration_s = 10
[[nodes]]
name = "edge"
[[nodes]]
name = "hpc"
fsync = "always"
[[topics]]
name = "frames"
partitions = 2
nodes = ["edge", "hpc"]
[[topics]]
name = "q"
nodes = ["edge"]
qos = true
[[links]]
name = "wan"
to = "hpc"
up = { delay_ms = 20 }
[[bridges]]
name = "b"
from = "edge"
to = "hpc"
topic = "frames"
via = "wan"
[[consumers]]
name = "c"
node = "hpc"
topic = "frames"
group = "g"
[[consumers]]
name = "qc"
node = "edge"
topic = "q"
[consumers.qos]
mode = "x"
[[producers]]
name = "p"
node = "edge"
topic = "frames"
rate = 100
size = 1024
[[producers]]
name = "qp"
node = "edge"
topic = "q"
rate = 2.5
size = 64
payload = "frame"
[producers.qos.buffer]
spill_dir = "spill"
[metrics]
node = "edge"
[[monitors]]
name = "m"
node = "edge"
file = "monitors/x.toml"
"#;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

#[test]
fn command_lines_are_the_ones_the_twin_always_ran() {
    let s = Scenario::parse(GOLDEN).unwrap();
    let got = scenario_invocations(&s, Path::new("/w")).unwrap();
    let got: Vec<(&str, Vec<String>)> = got.iter().map(|i| (i.kind, i.argv.clone())).collect();
    let edge_ca = "/w/edge/data/certs/ca.pem";
    let hpc_ca = "/w/hpc/data/certs/ca.pem";
    let want = vec![
        ("node", words("serve --data-dir /w/edge/data --listen 127.0.0.1:7000 --admin 127.0.0.1:7001 --fsync interval")),
        ("node", words("serve --data-dir /w/hpc/data --listen 127.0.0.1:7002 --admin 127.0.0.1:7003 --fsync always")),
        ("topic", words(&format!("topic create frames --partitions 2 --admin 127.0.0.1:7001 --ca {edge_ca}"))),
        ("topic", words(&format!("topic create frames --partitions 2 --admin 127.0.0.1:7003 --ca {hpc_ca}"))),
        ("topic", words(&format!("stream init q --partitions 1 --admin 127.0.0.1:7001 --ca {edge_ca}"))),
        ("bridge", words(&format!("bridge --name b --from 127.0.0.1:7000/frames --to 127.0.0.1:9000/frames --from-ca {edge_ca} --to-ca {hpc_ca}"))),
        ("consumer", words(&format!("consume --group g --topic frames --json --addr 127.0.0.1:7002 --ca {hpc_ca}"))),
        ("consumer", words(&format!("stream consume --name qc --policy /w/qc/policy.toml --checkpoint /w/qc/checkpoint.json --topic q --json --addr 127.0.0.1:7000 --ca {edge_ca}"))),
        ("metrics-topic", words(&format!("topic create diaspora.metrics --admin 127.0.0.1:7001 --ca {edge_ca}"))),
        ("metrics-publisher", words(&format!("produce --topic diaspora.metrics --addr 127.0.0.1:7000 --ca {edge_ca}"))),
        ("monitor", words(&format!("predict serve --monitor monitors/x.toml --addr 127.0.0.1:7000 --ca {edge_ca} --admin 127.0.0.1:7001"))),
        ("producer", words(&format!("produce --topic frames --synthetic 1000 --size 1024 --rate 100 --acks /w/p/acks.jsonl --id-start 0 --json --addr 127.0.0.1:7000 --ca {edge_ca}"))),
        ("producer", words(&format!("stream produce --policy /w/qp/policy.toml --payload frame --topic q --synthetic 25 --size 64 --rate 2.5 --acks /w/qp/acks.jsonl --id-start 1000000000000 --json --addr 127.0.0.1:7000 --ca {edge_ca}"))),
    ];
    assert_eq!(got, want);
}

#[test]
fn a_qos_host_gets_its_policy_file_and_records() {
    let s = Scenario::parse(GOLDEN).unwrap();
    let env = HostEnv::stand_in(&s, Path::new("/w"));
    let qp = diaspora_twin::hosts::producer::Producer
        .command(HostAt {
            scenario: &s,
            index: 1,
            env: &env,
        })
        .unwrap();
    assert_eq!(qp.files.len(), 1);
    assert_eq!(qp.files[0].0, Path::new("/w/qp/policy.toml"));
    let policy: toml::Table = toml::from_str(&qp.files[0].1).unwrap();
    assert_eq!(policy["buffer"]["spill_dir"].as_str(), Some("/w/qp/spill"));
    assert_eq!(qp.stdout.as_deref(), Some(Path::new("/w/qp/summary.json")));
    assert_eq!(
        qp.records,
        Records::Acks {
            topic: "q".into(),
            path: "/w/qp/acks.jsonl".into(),
            items: 25,
            summary: Some("/w/qp/summary.json".into()),
        }
    );
    let p = diaspora_twin::hosts::producer::Producer
        .command(HostAt {
            scenario: &s,
            index: 0,
            env: &env,
        })
        .unwrap();
    assert!(p.files.is_empty());
    assert!(matches!(
        p.records,
        Records::Acks {
            summary: None,
            items: 1000,
            ..
        }
    ));
}

const POOL_GOLDEN: &str = r#"
name = "pool-golden"
duration_s = 10
[[nodes]]
name = "hpc"
[[links]]
name = "site-b"
to = "hpc"
up = { delay_ms = 5, loss = 0.01 }
[[pools]]
name = "p"
node = "hpc"
tick_ms = 100
[pools.spec.scaling]
min_total = 2
max_total = 2
[[pools.spec.site]]
name = "a"
provider = "local"
min = 1
max = 1
[[pools.spec.site]]
name = "b"
provider = "local"
min = 1
max = 1
via = "site-b"
[[tasks]]
name = "t"
pool = "p"
rate = 5
sleep_ms = 20
[[faults]]
at_s = 3
kind = "kill_child"
host = "p"
"#;

/// A pool: `pool run` with its spec file (this binary's workers, a site's
/// link as its fabric address), two recorders of its topics, and one task
/// producer per partition of its tasks topic.
#[test]
fn a_pool_gets_its_spec_recorders_and_one_task_producer_per_partition() {
    let s = Scenario::parse(POOL_GOLDEN).unwrap();
    let got = scenario_invocations(&s, Path::new("/w")).unwrap();
    let got: Vec<(&str, Vec<String>)> = got.iter().map(|i| (i.kind, i.argv.clone())).collect();
    let ca = "/w/hpc/data/certs/ca.pem";
    let want = vec![
        ("node", words("serve --data-dir /w/hpc/data --listen 127.0.0.1:7000 --admin 127.0.0.1:7001 --fsync interval")),
        ("pool", words(&format!("pool run --spec /w/p/spec.toml --addr 127.0.0.1:7000 --admin 127.0.0.1:7001 --ca {ca} --log-dir /w/p/workers --tick-ms 100 --json"))),
        ("pool-recorder", words(&format!("consume --topic pool.p.events --from earliest --json --payload --addr 127.0.0.1:7000 --ca {ca}"))),
        ("pool-recorder", words(&format!("consume --topic pool.p.results --from earliest --json --payload --addr 127.0.0.1:7000 --ca {ca}"))),
        ("pool-recorder", words(&format!("consume --topic pool.p.tasks --from earliest --json --payload --addr 127.0.0.1:7000 --ca {ca}"))),
        ("tasks", words(&format!("produce --topic pool.p.tasks --file /w/t-p0/tasks.jsonl --partition 0 --rate 2.5 --acks /w/t-p0/acks.jsonl --json --addr 127.0.0.1:7000 --ca {ca}"))),
        ("tasks", words(&format!("produce --topic pool.p.tasks --file /w/t-p1/tasks.jsonl --partition 1 --rate 2.5 --acks /w/t-p1/acks.jsonl --json --addr 127.0.0.1:7000 --ca {ca}"))),
    ];
    assert_eq!(got, want);

    let env = HostEnv::stand_in(&s, Path::new("/w"));
    let at = |index| HostAt {
        scenario: &s,
        index,
        env: &env,
    };
    let pool = diaspora_twin::hosts::pool::Pool.command(at(0)).unwrap();
    let spec: toml::Table = toml::from_str(&pool.files[0].1).unwrap();
    assert_eq!(spec["name"].as_str(), Some("p"));
    assert_eq!(
        spec["worker"]["command"].as_array().unwrap().len(),
        3,
        "{spec}"
    );
    let sites = spec["site"].as_array().unwrap();
    assert!(sites[0].get("fabric_addr").is_none());
    assert_eq!(sites[1]["fabric_addr"].as_str(), Some("127.0.0.1:9000"));
    assert!(
        sites[1].get("via").is_none(),
        "pool run refuses unknown fields"
    );

    let t1 = diaspora_twin::hosts::tasks::Tasks.command(at(1)).unwrap();
    assert_eq!(
        t1.files[0].1.lines().collect::<Vec<_>>(),
        (0..50)
            .filter(|n| n % 2 == 1)
            .map(|n| format!(r#"{{"key":"t-{n}","kind":"sleep","ms":20}}"#))
            .collect::<Vec<_>>()
    );
    let Records::Tasks { share, .. } = t1.records else {
        panic!("{:?}", t1.records)
    };
    assert_eq!(share.task(3), 7);

    // A kill_child fault names a pool; a site's link leads to its node.
    let e = Scenario::parse(&POOL_GOLDEN.replace("host = \"p\"", "host = \"hpc\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pool 'hpc'"), "{e}");
    let other = POOL_GOLDEN
        .replace("[[links]]", "[[nodes]]\nname = \"edge\"\n[[links]]")
        .replace("to = \"hpc\"", "to = \"edge\"");
    let e = Scenario::parse(&other).unwrap_err().to_string();
    assert_eq!(e, "link 'site-b' leads to 'edge', not to 'hpc'");
}

#[test]
fn a_link_must_lead_to_the_node_named() {
    let bad = GOLDEN.replace(
        "node = \"hpc\"\ntopic = \"frames\"\ngroup",
        "node = \"edge\"\nvia = \"wan\"\ntopic = \"frames\"\ngroup",
    );
    let s = Scenario::parse(&bad).unwrap();
    let e = scenario_invocations(&s, Path::new("/w")).unwrap_err();
    assert!(
        matches!(e, diaspora_twin::TwinError::WrongLink { .. }),
        "{e}"
    );
    assert_eq!(e.to_string(), "link 'wan' leads to 'hpc', not to 'edge'");
}

/// Every shipped scenario's command lines: a subcommand, then flags each
/// with one non-empty value (`--json` alone); every kind of host appears.
#[test]
fn every_shipped_command_line_is_well_formed() {
    let twins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../twins");
    let all = example_invocations(&twins).unwrap();
    assert!(!all.is_empty());
    let subcommands: [&[&str]; 12] = [
        &["serve"],
        &["kafka-bridge"],
        &["kafka-consume"],
        &["demo"],
        &["pool", "run"],
        &["topic", "create"],
        &["stream", "init"],
        &["bridge"],
        &["consume"],
        &["stream", "consume"],
        &["produce"],
        &["stream", "produce"],
    ];
    for inv in &all {
        let a = &inv.argv;
        let sub = subcommands
            .iter()
            .chain([&["predict", "serve"][..]].iter())
            .filter(|s| a.len() >= s.len() && a[..s.len()] == s[..])
            .map(|s| s.len())
            .max()
            .unwrap_or_else(|| panic!("{}: {} {a:?}: unknown subcommand", inv.scenario, inv.kind));
        let mut rest = a[sub..].iter().peekable();
        // `topic create NAME` / `stream init NAME`: one positional.
        if inv.kind.ends_with("topic") {
            let name = rest.next().expect("topic name");
            assert!(!name.starts_with('-') && !name.is_empty(), "{a:?}");
        }
        while let Some(f) = rest.next() {
            assert!(
                f.starts_with("--") && f.len() > 2,
                "{}: {a:?}: {f} is not a flag",
                inv.scenario
            );
            // The flags that take no value (`consume --payload`; `stream
            // produce --payload KIND` takes one).
            if f == "--json"
                || (f == "--payload" && a[0] == "consume")
                || (f == "--create-topic" && a[0] == "kafka-bridge")
            {
                continue;
            }
            let v = rest
                .next()
                .unwrap_or_else(|| panic!("{a:?}: {f} has no value"));
            assert!(!v.is_empty() && !v.starts_with("--"), "{a:?}: {f} = {v:?}");
        }
    }
    let kinds: BTreeSet<&str> = all.iter().map(|i| i.kind).collect();
    // A broker runs Tansu, not the binary: it has no line here.
    for k in KINDS.iter().filter(|k| k.name != "broker") {
        assert!(
            kinds.contains(k.name),
            "no shipped scenario has a {}",
            k.name
        );
    }
    for k in ["topic", "metrics-topic", "metrics-publisher"] {
        assert!(kinds.contains(k), "{k}");
    }
}
