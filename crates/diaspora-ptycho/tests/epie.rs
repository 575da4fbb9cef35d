//! ePIE on simulated scans: it converges, it reconstructs the truth well
//! on a small noise-free scan, several scans run at once, and bad input
//! gets a clear error.

use diaspora_ptycho::epie::{reconstruct, reconstruct_many, EpieConfig, ProbeInit};
use diaspora_ptycho::metrics::compare;
use diaspora_ptycho::sim::{simulate, ObjectKind, ProbeSpec, ScanKind, SimConfig};
use diaspora_ptycho::PtychoError;
use ndarray::s;

fn small(kind: ObjectKind, seed: u64, noise: bool) -> SimConfig {
    SimConfig {
        scan_id: format!("t-{seed}"),
        kind,
        seed,
        n: 32,
        probe: ProbeSpec::default_for(32),
        scan: ScanKind::Spiral,
        positions: 100,
        overlap: 0.7,
        jitter: 0.5,
        dose: 1e5,
        noise,
    }
}

#[test]
fn epie_converges_and_recovers_a_small_noise_free_scan() {
    let cfg = small(ObjectKind::Particles, 1, false);
    let scan = simulate(&cfg).unwrap();
    let r = reconstruct(&scan.frames, &scan.meta, &EpieConfig::new(40, cfg.probe)).unwrap();
    let e = &r.fourier_error;
    assert_eq!(e.len(), 40);
    assert!(e[39] < e[0] * 0.2, "Fourier error {} → {}", e[0], e[39]);
    let (h, w) = r.object.dim();
    let truth = scan.object.slice(s![..h, ..w]).to_owned();
    let q = compare(&r.object, &truth, &r.mask).unwrap();
    eprintln!(
        "{q:?}, error {:.2e} → {:.2e}, {:.3} ms per frame-iteration",
        e[0],
        e[39],
        r.ms_per_frame_iteration()
    );
    assert!(q.phase_ssim > 0.8 && q.amplitude_ssim > 0.8, "{q:?}");
}

#[test]
fn the_probe_can_start_from_the_frames_alone() {
    let cfg = small(ObjectKind::SmoothRandom, 2, false);
    let scan = simulate(&cfg).unwrap();
    let mut ecfg = EpieConfig::new(40, cfg.probe);
    ecfg.probe_init = ProbeInit::FromFrames;
    ecfg.probe_update_from = 2;
    let r = reconstruct(&scan.frames, &scan.meta, &ecfg).unwrap();
    let e = &r.fourier_error;
    assert!(e[39] < e[0] * 0.5, "Fourier error {} → {}", e[0], e[39]);
}

#[test]
fn several_scans_reconstruct_at_once_like_one_at_a_time() {
    let a = simulate(&small(ObjectKind::SiemensStar, 3, true)).unwrap();
    let b = simulate(&small(ObjectKind::Particles, 4, true)).unwrap();
    let ecfg = EpieConfig::new(5, a.config.probe);
    let many = reconstruct_many(&[(&a.frames, &a.meta), (&b.frames, &b.meta)], &ecfg);
    let one = reconstruct(&b.frames, &b.meta, &ecfg).unwrap();
    let two = many.into_iter().nth(1).unwrap().unwrap();
    assert_eq!(
        one.object, two.object,
        "a scan's result depends on its neighbours"
    );
}

#[test]
fn bad_input_gets_a_clear_error() {
    let scan = simulate(&SimConfig {
        positions: 4,
        ..small(ObjectKind::Particles, 5, false)
    })
    .unwrap();
    let ecfg = EpieConfig::new(2, scan.config.probe);
    let text = |e: PtychoError| e.to_string();
    // A frame of the wrong shape.
    let mut frames = scan.frames.clone();
    frames[2] = ndarray::Array2::zeros((32, 16));
    let e = text(reconstruct(&frames, &scan.meta, &ecfg).unwrap_err());
    assert!(e.contains("frame 2") && e.contains("32×32"), "{e}");
    // Metadata naming a position outside the object.
    let mut meta = scan.meta.clone();
    meta[1].x = 10_000;
    let mut sized = ecfg.clone();
    sized.object_size = Some(scan.object.nrows());
    let e = text(reconstruct(&scan.frames, &meta, &sized).unwrap_err());
    assert!(e.contains("frame 1") && e.contains("outside"), "{e}");
    // Counts that do not match.
    let e = text(reconstruct(&scan.frames, &scan.meta[..3], &ecfg).unwrap_err());
    assert!(e.contains("4 frames but 3"), "{e}");
    let e = text(reconstruct(&[], &[], &ecfg).unwrap_err());
    assert!(e.contains("no frames"), "{e}");
    let mut bad = ecfg.clone();
    bad.alpha = 0.0;
    assert!(reconstruct(&scan.frames, &scan.meta, &bad).is_err());
}
