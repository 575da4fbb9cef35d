//! The benchmark's NumPy baseline runs on the same frames as the Rust ePIE
//! and reports its time (it needs python3 with numpy, which
//! `./scripts/test` installs); the report carries every field.

use diaspora_ptycho::bench::{run, BenchConfig};

#[test]
fn the_numpy_baseline_runs_on_the_same_frames() {
    let work = tempfile::tempdir().unwrap();
    let cfg = BenchConfig {
        sides: vec![32],
        positions: 30,
        iterations: 3,
        train_scans: 0,
        ..Default::default()
    };
    let r = run(&cfg, work.path()).expect("the benchmark runs (python3 with numpy installed?)");
    assert_eq!(r.epie.len(), 1);
    let t = &r.epie[0];
    assert_eq!((t.n, t.frames, t.iterations), (32, 30, 3));
    assert!(t.epie_ms_per_frame_iteration > 0.0);
    assert!(t.numpy_epie_ms_per_frame_iteration > 0.0);
    assert_eq!(r.epie_ms_per_frame_iteration, t.epie_ms_per_frame_iteration);
    assert!(r.surrogate_us_per_frame.is_none(), "no surrogate asked for");
    let json = serde_json::to_value(&r).unwrap();
    for k in [
        "epie_ms_per_frame_iteration",
        "numpy_epie_ms_per_frame_iteration",
        "surrogate_us_per_frame",
        "speedup_vs_epie",
        "phase_ssim_vs_epie",
    ] {
        assert!(json.get(k).is_some(), "{k} missing from {json}");
    }
}
