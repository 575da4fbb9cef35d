//! `diaspora ptycho …` end to end on small scans: simulate → reconstruct
//! (SSIM against the truth, pictures) → train → infer → eval, and a broken
//! scan directory refused with a message that names the file.

mod common;

use std::path::Path;
use std::process::Command;

use common::{assert_success, BIN};

fn ptycho(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("ptycho")
        .args(args)
        .output()
        .expect("run diaspora")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert_success(out);
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn simulate(dir: &Path, seed: u64) {
    let out = ptycho(&[
        "simulate",
        "--kind",
        "particles",
        "--scan",
        "spiral",
        "--positions",
        "80",
        "--n",
        "32",
        "--dose",
        "1e5",
        "--seed",
        &seed.to_string(),
        "--out",
        dir.to_str().unwrap(),
        "--json",
    ]);
    let r = json(&out);
    assert_eq!(r["frames"], 80);
    for f in [
        "frames.npy",
        "meta.jsonl",
        "corners.npy",
        "scan.json",
        "object.npy",
        "probe.npy",
        "truth.png",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn a_scan_is_simulated_reconstructed_learned_and_evaluated() {
    let tmp = tempfile::tempdir().unwrap();
    let scans: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("scan{i}")))
        .collect();
    for (i, d) in scans.iter().enumerate() {
        simulate(d, i as u64);
    }
    let r = json(&ptycho(&[
        "reconstruct",
        scans[0].to_str().unwrap(),
        "--iterations",
        "30",
        "--json",
    ]));
    assert_eq!(r["iterations"], 30);
    assert!(r["fourier_error"].as_f64().unwrap() < r["fourier_error_first"].as_f64().unwrap());
    let phase = r["phase_ssim_vs_truth"].as_f64().unwrap();
    let amp = r["amplitude_ssim_vs_truth"].as_f64().unwrap();
    assert!(phase > 0.9 && amp > 0.8, "phase {phase}, amplitude {amp}");
    for f in [
        "epie_object.npy",
        "epie_probe.npy",
        "reconstruction.png",
        "epie_probe.png",
        "fourier_error.png",
    ] {
        assert!(scans[0].join(f).is_file(), "{f} missing");
    }

    let model = tmp.path().join("model");
    let t = json(&ptycho(&[
        "train",
        scans[0].to_str().unwrap(),
        scans[1].to_str().unwrap(),
        "--out",
        model.to_str().unwrap(),
        "--steps",
        "40",
        "--batch",
        "8",
        "--channels",
        "4",
        "--bin",
        "1",
        "--iterations",
        "20",
        "--json",
    ]));
    assert_eq!(t["scans"].as_array().unwrap().len(), 2);
    assert!(t["samples"].as_u64().unwrap() > 100);
    assert!(
        t["loss_last"].as_f64().unwrap() < t["loss_first"].as_f64().unwrap(),
        "{t}"
    );
    let ckpt = model.join("surrogate.safetensors");
    assert!(ckpt.is_file() && model.join("training_loss.png").is_file());

    let out = tmp.path().join("infer");
    let i = json(&ptycho(&[
        "infer",
        scans[2].to_str().unwrap(),
        "--model",
        ckpt.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(i["frames"], 80);
    assert!(out.join("surrogate_object.npy").is_file() && out.join("surrogate.png").is_file());

    let e = json(&ptycho(&[
        "eval",
        scans[2].to_str().unwrap(),
        "--model",
        ckpt.to_str().unwrap(),
        "--iterations",
        "20",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]));
    for k in [
        "phase_ssim_vs_epie",
        "amplitude_ssim_vs_epie",
        "speedup_vs_epie",
        "surrogate_us_per_frame",
        "epie_ms_per_frame",
    ] {
        let v = e[k].as_f64().unwrap_or_else(|| panic!("{k} in {e}"));
        assert!(v.is_finite() && v > 0.0, "{k} = {v}");
    }
    assert_eq!(e["model_version"], 1);
    assert!(out.join("eval.png").is_file());
}

#[test]
fn a_broken_scan_directory_is_refused_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("scan");
    simulate(&d, 7);
    std::fs::write(d.join("frames.npy"), b"\x93NUMPY garbage").unwrap();
    let out = ptycho(&["reconstruct", d.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("frames.npy"), "{err}");
    let out = ptycho(&[
        "simulate",
        "--n",
        "48",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("power of two"));
}
