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
    let subcommands: [&[&str]; 8] = [
        &["serve"],
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
            if f == "--json" {
                continue;
            }
            let v = rest
                .next()
                .unwrap_or_else(|| panic!("{a:?}: {f} has no value"));
            assert!(!v.is_empty() && !v.starts_with("--"), "{a:?}: {f} = {v:?}");
        }
    }
    let kinds: BTreeSet<&str> = all.iter().map(|i| i.kind).collect();
    for k in KINDS {
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
