//! The ptychography online-training loop end to end (`diaspora demo`, the
//! real binary, small settings), checked through its provenance store:
//! after the bad scan is found, the model version the edge rolls back to
//! was trained on nothing derived from it, and every edge image made with
//! an invalidated version is invalid.

mod common;

use std::collections::HashSet;

use diaspora_provenance::{Direction, EdgeKind, Provenance, TagValue};

const BIN: &str = env!("CARGO_BIN_EXE_diaspora");

#[test]
fn the_loop_switches_to_the_edge_and_rolls_back_by_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let report = dir.path().join("report");
    // Small and quick: 40-position scans at 40 frames/s, a low switch
    // threshold and short validation intervals so the switch comes within
    // the first scans, and every scan after it goes to HPC.
    let out = std::process::Command::new(BIN)
        .args([
            "demo",
            "--scans",
            "12",
            "--positions",
            "40",
            "--rate",
            "40",
            "--switch-ssim",
            "0.05",
            "--fine-tune-every",
            "1",
            "--epie-iterations",
            "10",
            "--channels",
            "4",
            "--batch",
            "8",
            "--validate-every",
            "5",
            "--json",
            "--report",
        ])
        .arg(&report)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    common::assert_success(&out);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["lost"], 0, "{s:#}");
    assert_eq!(s["frames"], 480);
    assert!(s["switched_at_s"].is_number(), "no switch: {s:#}");
    assert!(s["edge_scans"].as_u64().unwrap() > 0, "{s:#}");
    // Every scan goes up here (--fine-tune-every 1): about the same bytes
    // per frame (a frame's id grows by a byte or two over the run).
    assert!(
        s["wan_bytes_per_frame_after_switch"].as_f64().unwrap()
            <= 1.01 * s["wan_bytes_per_frame_before_switch"].as_f64().unwrap(),
        "{s:#}"
    );
    let bad = s["bad_scan"].as_str().expect("a bad scan was injected");
    let invalid_versions: Vec<i64> = s["invalidated_versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(
        !invalid_versions.is_empty(),
        "a version trained on {bad} shipped and was invalidated: {s:#}"
    );
    let rolled_to = s["rollback_to_version"]
        .as_i64()
        .expect("the edge rolled back");
    assert!(
        s["checks"].as_object().unwrap().values().all(|c| c == true),
        "{s:#}"
    );

    // Now from the store itself.
    let mut prov = Provenance::open(&data.join("prov.sqlite").display().to_string()).unwrap();
    let bad_records: HashSet<i64> = prov
        .find_tag("scan", &TagValue::infer(bad), usize::MAX)
        .unwrap()
        .into_iter()
        .collect();
    assert!(bad_records.len() >= 40, "frames of {bad} recorded");
    for id in &bad_records {
        assert!(prov.is_invalid(*id).unwrap(), "record {id} of {bad} valid");
    }
    // The version the edge runs now: valid, and nothing upstream of it is
    // of the bad scan (or invalid at all).
    assert!(!invalid_versions.contains(&rolled_to));
    if rolled_to > 0 {
        let id = prov
            .model_version("ptycho-surrogate", rolled_to)
            .unwrap()
            .expect("the version is recorded");
        assert!(!prov.is_invalid(id).unwrap());
        let up = prov.lineage(id, Direction::Up, None).unwrap();
        assert!(!up.truncated);
        assert!(
            up.edges.iter().any(|e| e.kind == EdgeKind::Trained),
            "version {rolled_to} names what it was trained on"
        );
        for (n, _) in &up.nodes {
            assert!(
                !bad_records.contains(n),
                "version {rolled_to} saw {bad} ({n})"
            );
            assert!(
                !prov.is_invalid(*n).unwrap(),
                "version {rolled_to} rests on invalid {n}"
            );
        }
    }
    // Every version trained on the bad scan is invalid, and so is every
    // edge image it made.
    for v in &invalid_versions {
        let id = prov.model_version("ptycho-surrogate", *v).unwrap().unwrap();
        assert!(prov.is_invalid(id).unwrap());
        let down = prov.lineage(id, Direction::Down, Some(1)).unwrap();
        for e in down.edges.iter().filter(|e| e.kind == EdgeKind::Inferred) {
            assert!(
                prov.is_invalid(e.child).unwrap(),
                "edge image {} valid",
                e.child
            );
        }
    }
    // The report is there, with its pictures.
    let page = std::fs::read_to_string(report.join("index.html")).unwrap();
    for png in [
        "scans.png",
        "quality.png",
        "loss.png",
        "wan.png",
        "latency.png",
    ] {
        assert!(page.contains(png), "{png} not on the page");
        assert!(
            std::fs::metadata(report.join(png)).unwrap().len() > 1000,
            "{png} empty"
        );
    }
    assert!(page.contains("rollback"), "the timeline shows the rollback");
    // And a real browser renders it: every picture decoded.
    if let Some((images, decoded)) = report_in_browser(&report.join("index.html")) {
        assert!(images >= 4, "{images} pictures on the page");
        assert_eq!(decoded, images, "pictures the browser could not decode");
    }
}

/// Loads the report in headless Chromium (installed by `./scripts/test`,
/// named by `DIASPORA_TEST_CHROMIUM`) and reads back, from the DOM the
/// browser rendered, how many of the page's pictures it decoded.
fn report_in_browser(page: &std::path::Path) -> Option<(u64, u64)> {
    let Ok(chromium) = std::env::var("DIASPORA_TEST_CHROMIUM") else {
        eprintln!("DIASPORA_TEST_CHROMIUM unset: the report's browser check is skipped");
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--allow-file-access-from-files",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout).to_string();
    let attr = |name: &str| -> u64 {
        let key = format!("{name}=\"");
        let at = dom
            .find(&key)
            .unwrap_or_else(|| panic!("{name} missing: the page's script did not run\n{dom}"));
        dom[at + key.len()..]
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    Some((attr("data-images"), attr("data-images-decoded")))
}
