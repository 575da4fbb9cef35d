//! `diaspora prov …` end to end through the real binary on a SQLite store:
//! records and derivations, a refused cycle, a cascading invalidation with
//! a command action, `why`, PROV-JSON export imported into a second store,
//! DOT and Mermaid, and clear errors.

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_diaspora");

/// Runs `diaspora prov ARGS --store STORE` (the option goes before a `--`
/// that starts a command action's own arguments).
fn prov(store: &std::path::Path, args: &[&str]) -> std::process::Output {
    let split = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    std::process::Command::new(BIN)
        .arg("prov")
        .args(&args[..split])
        .arg("--store")
        .arg(store)
        .args(&args[split..])
        .output()
        .expect("run diaspora")
}

fn ok(store: &std::path::Path, args: &[&str]) -> String {
    let out = prov(store, args);
    assert!(
        out.status.success(),
        "prov {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn prov_cli_records_invalidates_explains_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("a.sqlite");
    let calib = ok(
        &store,
        &[
            "add",
            "--kind",
            "fact",
            "--name",
            "calibration",
            "--tag",
            "scan=17",
            "--uri",
            "file:///c.h5",
        ],
    );
    let calib = calib.trim().to_string();
    let frame = ok(
        &store,
        &[
            "add", "--kind", "data", "--name", "frame-1", "--parent", &calib,
        ],
    );
    let frame = frame.trim().to_string();
    let recon = ok(
        &store,
        &[
            "add",
            "--kind",
            "data",
            "--name",
            "recon-1",
            "--parent",
            &format!("{frame}:derived"),
        ],
    );
    let recon = recon.trim().to_string();
    let other = ok(&store, &["add", "--kind", "data", "--name", "frame-2"])
        .trim()
        .to_string();

    // A cycle is refused with the path.
    let out = prov(&store, &["derive", &calib, &recon]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cycle") && err.contains(&format!("{calib} -> {frame} -> {recon}")),
        "{err}"
    );

    // An action that writes a file, then the invalidation.
    let mark = dir.path().join("invalidated.txt");
    ok(
        &store,
        &[
            "action",
            "add",
            "--on-record",
            &frame,
            "--command",
            "/bin/sh",
            "--",
            "-c",
            &format!("echo $0 >> {}", mark.display()),
            "{name}",
        ],
    );
    let out = ok(
        &store,
        &["invalidate", "scan=17", "--cause", "gain map wrong"],
    );
    assert!(out.contains("3 record(s) newly invalid"), "{out}");
    assert!(out.contains("actions: 1 run, 0 failed"), "{out}");
    assert_eq!(std::fs::read_to_string(&mark).unwrap().trim(), "frame-1");
    let why = ok(&store, &["why", &recon]);
    assert!(
        why.contains("gain map wrong") && why.contains("calibration") && why.contains("(root)"),
        "{why}"
    );
    assert!(ok(&store, &["why", &other]).contains("is valid"));
    let runs = ok(&store, &["action", "runs"]);
    assert!(
        runs.contains(&format!("on #{frame}")) && runs.contains("ok"),
        "{runs}"
    );
    let down = ok(&store, &["lineage", &calib, "--down", "--depth", "1"]);
    assert!(
        down.contains("frame-1") && !down.contains("recon-1"),
        "{down}"
    );
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&store, &["show", &recon, "--json"])).unwrap();
    assert_eq!(shown[0]["why"]["event"]["cause"], "gain map wrong");

    // PROV-JSON out of one store, into another; DOT and Mermaid.
    let doc = dir.path().join("a.json");
    ok(
        &store,
        &[
            "export",
            "--format",
            "prov-json",
            "--out",
            doc.to_str().unwrap(),
        ],
    );
    let parsed: serde_json::Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    assert!(parsed["entity"].as_object().unwrap().len() >= 4);
    let b = dir.path().join("b.sqlite");
    let rep: serde_json::Value =
        serde_json::from_str(&ok(&b, &["import", doc.to_str().unwrap()])).unwrap();
    assert_eq!(rep["records_created"], 4);
    let rep: serde_json::Value =
        serde_json::from_str(&ok(&b, &["import", doc.to_str().unwrap()])).unwrap();
    assert_eq!(rep["records_created"], 0, "re-import merges");
    let stats: serde_json::Value = serde_json::from_str(&ok(&b, &["stats"])).unwrap();
    assert_eq!(
        (stats["records"].as_i64(), stats["invalid"].as_i64()),
        (Some(4), Some(3))
    );
    let dot = ok(&store, &["export", "--format", "dot", "--root", &frame]);
    assert!(dot.starts_with("digraph") && dot.contains("recon-1"));
    let mermaid = ok(&store, &["export", "--format", "mermaid"]);
    assert!(mermaid.contains("flowchart") && mermaid.contains("frame-2"));

    // Clear errors.
    let out = prov(&store, &["invalidate", "nonsense target", "--cause", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read target"));
    let out = prov(&store, &["why", "999999"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no record 999999"));
}

#[test]
fn demo_records_lineage_and_explains_the_bad_frame() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "demo",
            "--skeleton",
            "--frames",
            "40",
            "--width",
            "16",
            "--height",
            "16",
            "--json",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    common::assert_success(&out);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["provenance"]["frames_recorded"], 40);
    // 40 frames, 10 reconstructions (4 frames per position), 10 samples.
    assert_eq!(s["provenance"]["items_recorded"], 60);
    assert_eq!(
        s["provenance"]["invalidated"], 4,
        "the bad frame, its position's reconstruction and training sample, and the statistics"
    );
    let why = s["provenance"]["why"].as_str().unwrap();
    assert!(why.starts_with("hpc-frame-statistics ← frames/"), "{why}");
    let sample_why = s["provenance"]["sample_why"].as_str().unwrap();
    assert!(
        sample_why.starts_with("view.training-samples/0/"),
        "{sample_why}"
    );
    // The view joined every position exactly once, without copying payloads.
    assert_eq!(s["view"]["samples"], 10);
    assert_eq!(s["view"]["payload_bytes_copied"], 0);
    // The store is real: the CLI reads it afterwards.
    let store = dir.path().join("prov.sqlite");
    let stats: serde_json::Value = serde_json::from_str(&ok(&store, &["stats"])).unwrap();
    // Items, the two activities (reconstruction, view) and the statistics.
    assert_eq!(
        (stats["records"].as_i64(), stats["invalid"].as_i64()),
        (Some(63), Some(4))
    );
}

/// The stages of a workflow are separate processes that open one SQLite
/// store at the same moment (the ptychography twin's three stages): each
/// open waits its turn. Switching a new file to WAL and creating the schema
/// upgrade a lock, and SQLite answers a contended upgrade with "database is
/// locked" at once, busy timeout or not; the open retries those.
#[test]
fn processes_opening_one_new_store_at_once_all_succeed() {
    for round in 0..15 {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("shared.sqlite");
        let children: Vec<_> = (0..6)
            .map(|i| {
                common::Reaped::new(
                    std::process::Command::new(BIN)
                        .args(["prov", "add", "--kind", "fact", "--name"])
                        .arg(format!("opened-{i}"))
                        .arg("--store")
                        .arg(&store)
                        .stdout(std::process::Stdio::null())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .expect("run diaspora"),
                )
            })
            .collect();
        for c in children {
            let out = c.take().wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stats: serde_json::Value = serde_json::from_str(&ok(&store, &["stats"])).unwrap();
        assert_eq!(stats["records"], 6, "round {round}: {stats}");
    }
}
