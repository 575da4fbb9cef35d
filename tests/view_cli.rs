//! `diaspora view …` end to end through the binary: spec checking, a view
//! run against a `diaspora serve` process, a snapshot, a restore that
//! continues, the snapshot listing, and the benchmark's named fields.

mod common;

use common::*;
use std::process::Command;

fn view(args: &[&str]) -> std::process::Output {
    Command::new(BIN).arg("view").args(args).output().unwrap()
}

#[test]
fn check_fills_defaults_and_names_faults() {
    let out = view(&["check", "views/ptycho-samples.toml"]);
    common::assert_success(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("name = \"ptycho-samples\""), "{text}");
    assert!(
        text.contains("key_members_max = 4096"),
        "defaults filled in: {text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"v\"\n[[source]]\nname = \"a\"\ntopic = \"t\"\nkey = \"k\"\ncount = 0\n",
    )
    .unwrap();
    let out = view(&["check", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("count must be ≥ 1") && err.contains("bad.toml"),
        "{err}"
    );
    let out = view(&["check", "/nonexistent.toml"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading the view spec"));
}

#[test]
fn a_view_runs_snapshots_and_continues_after_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_node(&dir.path().join("node"), "interval");
    for t in ["a", "b", "view.ab"] {
        cli(&node, &["topic", "create", t, "--partitions", "1"]);
    }
    // `produce` tags items with metadata "id": join a and b on it.
    let spec = dir.path().join("ab.toml");
    std::fs::write(
        &spec,
        r#"
name = "ab"
[[source]]
name = "a"
topic = "a"
key = "id"
[[source]]
name = "b"
topic = "b"
key = "id"
[output]
topic = "view.ab"
"#,
    )
    .unwrap();
    cli(
        &node,
        &[
            "produce",
            "--topic",
            "a",
            "--synthetic",
            "20",
            "--size",
            "256",
        ],
    );
    cli(
        &node,
        &[
            "produce",
            "--topic",
            "b",
            "--synthetic",
            "10",
            "--size",
            "64",
        ],
    );
    let snaps = dir.path().join("snaps");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "view",
            "run",
            "--spec",
            spec.to_str().unwrap(),
            "--snapshots",
            snaps.to_str().unwrap(),
            "--max-items",
            "10",
            "--idle-s",
            "20",
        ];
        args.extend_from_slice(extra);
        json_lines(&cli(&node, &args))
    };
    let first = run(&[]);
    let keys = |lines: &[serde_json::Value]| -> Vec<u64> {
        let mut k: Vec<u64> = lines
            .iter()
            .map(|l| l["key"].as_str().unwrap().parse().unwrap())
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&first), (0..10).collect::<Vec<_>>());
    assert!(first
        .iter()
        .all(|l| l["members"].as_array().unwrap().len() == 2));
    // The rest of b arrives; the restored view continues where it was: the
    // ten pending items of a pair now, nothing is emitted twice.
    cli(
        &node,
        &[
            "produce",
            "--topic",
            "b",
            "--synthetic",
            "10",
            "--size",
            "64",
            "--id-start",
            "10",
        ],
    );
    let second = run(&["--restore", "latest"]);
    assert_eq!(keys(&second), (10..20).collect::<Vec<_>>());
    assert_eq!(second[0]["seq"], 10, "the metastream position continues");
    let out = Command::new(BIN)
        .args(["view", "snapshots", snaps.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let versions: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2]);
    // Twenty references on the output topic.
    let out = cli(
        &node,
        &["consume", "--topic", "view.ab", "--count", "20", "--json"],
    );
    assert_eq!(json_lines(&out).len(), 20);
    // A restore of a view that never saved a snapshot is refused clearly.
    let out = Command::new(BIN)
        .args([
            "view",
            "run",
            "--spec",
            spec.to_str().unwrap(),
            "--snapshots",
        ])
        .arg(dir.path().join("empty"))
        .args([
            "--restore",
            "latest",
            "--ca",
            node.ca.to_str().unwrap(),
            "--addr",
            &node.data.to_string(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("snapshot"), "{err}");
}

#[test]
fn bench_prints_the_named_fields() {
    let out = view(&[
        "bench",
        "--items",
        "20000",
        "--rounds",
        "1",
        "--fabric-items",
        "200",
        "--payload-bytes",
        "4096",
        "--json",
    ]);
    common::assert_success(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["view_items_per_s"]["1:1"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["view_items_per_s"]["4:1"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["payload_bytes_copied"], 0);
    assert_eq!(r["fabric"]["view_items"], 200);
    assert_eq!(r["fabric"]["payload_bytes_delivered"], 200 * 5 * 4096);
}
