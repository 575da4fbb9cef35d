//! `diaspora predict …` and `diaspora bench predict` through the binary.

use std::process::Command;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_diaspora");

fn run_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run diaspora");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {stdout}"))
}

/// A small corpus in NAB's layout: two series of 600 five-minute rows, one
/// with a spike inside its anomaly window.
fn tiny_nab() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let stamp = |i: usize| {
        let m = i * 5;
        format!(
            "2024-01-{:02} {:02}:{:02}:00",
            1 + m / 1440,
            (m / 60) % 24,
            m % 60
        )
    };
    for (name, spike) in [
        ("artificialWithAnomaly/a.csv", true),
        ("artificialNoAnomaly/b.csv", false),
    ] {
        let path = dir.path().join("data").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut csv = String::from("timestamp,value\n");
        for i in 0..600 {
            let v = 10.0 + ((i as f64) * 0.2).sin() + if spike && i == 450 { 25.0 } else { 0.0 };
            csv.push_str(&format!("{},{v}\n", stamp(i)));
        }
        std::fs::write(path, csv).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("labels")).unwrap();
    std::fs::write(
        dir.path().join("labels/combined_windows.json"),
        format!(
            "{{\"artificialWithAnomaly/a.csv\": [[\"{}.000000\", \"{}.000000\"]], \"artificialNoAnomaly/b.csv\": []}}",
            stamp(430),
            stamp(470)
        ),
    )
    .unwrap();
    dir
}

#[test]
fn nab_eval_prints_the_standard_score_and_per_series_scores() {
    let nab = tiny_nab();
    let v = run_json(&[
        "predict",
        "eval",
        "--nab",
        nab.path().to_str().unwrap(),
        "--json",
    ]);
    let score = v["nab_score_standard"].as_f64().unwrap();
    assert!((-100.0..=100.0).contains(&score), "{score}");
    let series = v["series"].as_array().unwrap();
    assert_eq!(series.len(), 2);
    assert!(series
        .iter()
        .all(|s| s["name"].as_str().is_some() && s.get("score").is_some()));
    assert_eq!(v["window_count"], 1);
    assert!(v["baselines"]["windowed_gaussian"].as_f64().is_some());
    // The spike is obvious: the detector finds it inside its window.
    let a = series
        .iter()
        .find(|s| s["name"] == "artificialWithAnomaly/a.csv")
        .unwrap();
    assert_eq!(a["tp"], 1, "{a}");
    // The shared NAB subset, when this checkout sits next to it.
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/nab");
    if shared.join("labels/combined_windows.json").exists() {
        let v = run_json(&[
            "predict",
            "eval",
            "--nab",
            shared.to_str().unwrap(),
            "--only",
            "artificialWithAnomaly",
            "--json",
        ]);
        assert_eq!(v["series"].as_array().unwrap().len(), 6);
        assert_eq!(v["window_count"], 6);
    }
}

#[test]
fn trace_eval_prints_ratios_precision_recall_and_lead() {
    let cfg = tempfile::NamedTempFile::new().unwrap();
    // Fewer training steps than the default: this checks the command, not the model.
    std::fs::write(cfg.path(), "pretrain_steps = 20\nonline_train_every = 8\n").unwrap();
    let v = run_json(&[
        "predict",
        "eval",
        "--twin-traces",
        "predict/traces/congestion-ramp",
        "--twin-config",
        cfg.path().to_str().unwrap(),
        "--json",
    ]);
    for h in ["1s", "5s", "10s"] {
        let r = v["rmse_ratio_to_best_baseline"][h].as_f64().unwrap();
        assert!(r.is_finite() && r > 0.0, "{h}: {r}");
    }
    for k in ["onset_precision", "onset_recall"] {
        let x = v[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x), "{k}: {x}");
    }
    assert!(v["lead_time_s_median"].as_f64().is_some());
    assert!(
        v["onsets"].as_u64().unwrap() >= 8,
        "the traces hold congestion onsets"
    );
}

#[test]
fn bench_predict_prints_the_named_fields() {
    let v = run_json(&[
        "bench",
        "predict",
        "--batch",
        "16",
        "--iterations",
        "2",
        "--json",
    ]);
    assert!(v["inference_us_per_series_step"].as_f64().unwrap() > 0.0);
    assert!(v["train_step_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["batch"], 16);
}

#[test]
fn train_writes_a_checkpoint_a_monitor_can_start_from() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("m.safetensors");
    let out = Command::new(BIN)
        .args([
            "predict",
            "train",
            "--traces",
            "predict/traces/congestion-ramp",
            "--steps",
            "5",
        ])
        .args(["--window", "8", "--horizon", "4", "--hidden", "8", "--out"])
        .arg(&model)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    common::assert_success(&out);
    let f = diaspora::predict::forecast::Forecaster::load(
        &model,
        diaspora::predict::forecast::device("cpu").unwrap(),
    )
    .unwrap();
    assert_eq!(f.config().window, 8);
    assert_eq!(f.train_steps(), 5);
    // The shipped monitor checks, and a broken one is refused clearly.
    let ok = Command::new(BIN)
        .args(["predict", "check", "monitors/wan-congestion.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    common::assert_success(&ok);
    assert!(String::from_utf8_lossy(&ok.stdout).contains("link.utilisation"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "name = \"x\"\n[source]\nmetric = \"m\"\n[prediction]\nthreshold = 1\nconfidence_min = 2\n",
    )
    .unwrap();
    let no = Command::new(BIN)
        .args(["predict", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!no.status.success());
    assert!(String::from_utf8_lossy(&no.stderr).contains("confidence_min"));
    // Without CUDA support a CUDA device is refused with the reason.
    if !cfg!(feature = "cuda") {
        let e = diaspora::predict::forecast::device("cuda")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--features cuda"), "{e}");
    }
}

#[test]
fn a_node_publishes_its_metrics_as_events_on_the_metrics_topic() {
    let dir = tempfile::tempdir().unwrap();
    let port = |p: u16| -> u16 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port().max(p)
    };
    let (data, admin) = (port(0), port(0));
    let mut node = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("d"))
        .args(["--listen", &format!("127.0.0.1:{data}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--metrics-interval-ms", "100"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(common::Reaped::new)
        .unwrap();
    let ca = dir.path().join("d/certs/ca.pem");
    let mut events = Vec::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = Command::new(BIN)
            .args([
                "consume",
                "--topic",
                "diaspora.metrics",
                "--from",
                "earliest",
            ])
            .args([
                "--count",
                "3",
                "--idle-timeout-ms",
                "2000",
                "--addr",
                &format!("127.0.0.1:{data}"),
            ])
            .arg("--ca")
            .arg(&ca)
            .output()
            .unwrap();
        events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("node:"))
            .map(str::to_string)
            .collect();
        if events.len() >= 3 {
            break;
        }
    }
    // The events decode, and carry the node's series.
    let decoded = common::metric_events(
        format!("127.0.0.1:{data}").parse().unwrap(),
        &ca,
        3,
        std::time::Duration::from_secs(5),
    );
    node.kill().unwrap();
    let _ = node.wait();
    assert!(events.len() >= 3, "{events:?}");
    assert!(decoded.len() >= 3, "{decoded:?}");
    assert!(decoded.windows(2).all(|w| w[0].t_us < w[1].t_us));
    let names: Vec<&str> = decoded
        .iter()
        .flat_map(|e| e.samples.iter().map(|s| s.name.as_str()))
        .collect();
    assert!(names.contains(&"node.items_appended"), "{names:?}");
    assert!(decoded
        .iter()
        .all(|e| e.source.starts_with("node:") && e.interval_ms == 100));
}
