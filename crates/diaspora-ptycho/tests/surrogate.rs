//! The surrogate end to end on simulated scans at N = 32: it learns, it
//! generalises to a held-out scan of the same kind better than the mean
//! patch, its checkpoints round-trip and bad ones are refused, bad frames
//! are refused, and stitching averages.

use std::sync::OnceLock;
use std::time::Instant;

use candle_core::Device;
use diaspora_ptycho::metrics::{illuminated, ssim};
use diaspora_ptycho::sim::{self, FrameMeta, ObjectKind, ProbeSpec, Scan, SimConfig};
use diaspora_ptycho::surrogate::{
    probe_weight, samples_from, stitch, Sample, Surrogate, SurrogateConfig, Trainer, TrainerConfig,
};
use diaspora_ptycho::{PtychoError, C32};
use ndarray::Array2;

const N: usize = 32;
const STEPS: usize = 240;
const BATCH: usize = 16;
/// Training scans (seeds 1, 11, 21) of this many positions each.
const SCANS: u64 = 3;
const POSITIONS: usize = 200;

fn scan(id: &str, seed: u64, positions: usize) -> Scan {
    sim::simulate(&SimConfig {
        scan_id: id.into(),
        kind: ObjectKind::Particles,
        seed,
        n: N,
        probe: ProbeSpec::default_for(N),
        positions,
        // Below saturation: at N = 32 the default 1e6 photons would clip
        // the whole bright field, and with it what the phase is read from.
        dose: 1e5,
        ..Default::default()
    })
    .unwrap()
}

fn samples(s: &Scan) -> Vec<Sample> {
    samples_from(&s.frames, &s.meta, &s.object, N).unwrap()
}

fn config() -> SurrogateConfig {
    SurrogateConfig {
        n: N,
        bin: 2,
        channels: 6,
        seed: 7,
    }
}

/// One model trained once for the tests that need a trained one.
struct Trained {
    trainer: Trainer,
    train: Vec<Sample>,
    held_out: Scan,
    seconds: f64,
    /// The loss on the first training scan before and after training.
    before: f32,
    after: f32,
}

fn trained() -> &'static Trained {
    static T: OnceLock<Trained> = OnceLock::new();
    T.get_or_init(|| {
        let surrogate = Surrogate::new(config(), Device::Cpu).unwrap();
        let mut trainer = Trainer::new(
            surrogate,
            TrainerConfig {
                capacity: 1024,
                learning_rate: 2e-3,
                seed: 11,
                ..Default::default()
            },
        )
        .unwrap();
        let mut train = Vec::new();
        let mut probe = None;
        for k in 0..SCANS {
            let s = scan(&format!("train-{k}"), 1 + 10 * k, POSITIONS);
            let new = samples(&s);
            for x in &new {
                trainer.push(x.clone()).unwrap();
            }
            trainer.note_scan(&s.config.scan_id);
            train.extend(new);
            probe = Some(s.probe);
        }
        // The loss counts where the probe shines.
        trainer
            .set_loss_weight(Some(&probe_weight(&probe.unwrap(), 0.02)))
            .unwrap();
        let first = &train[..POSITIONS];
        let before = trainer.validate(first).unwrap();
        let t0 = Instant::now();
        for i in 0..STEPS {
            if i == STEPS * 2 / 3 {
                trainer.set_learning_rate(5e-4);
            }
            trainer.step(BATCH).unwrap();
        }
        let seconds = t0.elapsed().as_secs_f64();
        let after = trainer.validate(&train[..POSITIONS]).unwrap();
        Trained {
            trainer,
            train,
            held_out: scan("held-out", 2, 80),
            seconds,
            before,
            after,
        }
    })
}

fn mean(v: &[f32]) -> f32 {
    v.iter().sum::<f32>() / v.len() as f32
}

#[test]
fn training_loss_falls() {
    let t = trained();
    let h = t.trainer.history();
    assert_eq!(h.len(), STEPS);
    let (first, last) = (mean(&h[..10]), mean(&h[h.len() - 20..]));
    eprintln!(
        "{STEPS} steps of {BATCH} in {:.1} s ({} weights): batch loss {first:.4} → {last:.4}; \
         loss on the first scan {:.4} → {:.4}",
        t.seconds,
        t.trainer.surrogate().parameter_count(),
        t.before,
        t.after
    );
    assert!(last < 0.75 * first, "batch loss {first} → {last}");
    assert!(
        t.after < 0.7 * t.before,
        "loss on the first scan {} → {}",
        t.before,
        t.after
    );
    let s = t.trainer.surrogate();
    assert_eq!(s.samples_seen(), t.train.len() as u64);
    assert_eq!(s.steps(), STEPS as u64);
    assert_eq!(s.scan_ids(), &["train-0", "train-1", "train-2"]);
}

#[test]
fn held_out_phase_beats_the_mean_patch() {
    let t = trained();
    let held = samples(&t.held_out);
    // The trivial predictor: the training set's mean target patch.
    let mut mean_phase = Array2::<f32>::zeros((N, N));
    let mut mean_amp = Array2::<f32>::zeros((N, N));
    for s in &t.train {
        mean_phase += &s.phase;
        mean_amp += &s.amplitude;
    }
    mean_phase /= t.train.len() as f32;
    mean_amp /= t.train.len() as f32;
    // Scored where the probe shines (|P|² above 10 % of its peak): outside
    // it a frame says little about the object.
    let intensity = t.held_out.probe.mapv(|v| v.norm_sqr());
    let peak = intensity.iter().cloned().fold(0f32, f32::max);
    let mask = intensity.mapv(|v| v > 0.1 * peak);
    let mse = |a: &Array2<f32>, b: &Array2<f32>| -> f64 {
        let (mut s, mut k) = (0f64, 0usize);
        for ((x, y), m) in a.iter().zip(b).zip(&mask) {
            if *m {
                s += ((x - y) as f64).powi(2);
                k += 1;
            }
        }
        s / k as f64
    };
    let frames: Vec<Array2<u16>> = held.iter().map(|s| s.frame.clone()).collect();
    let t0 = Instant::now();
    let pred = t.trainer.surrogate().predict(&frames, 32).unwrap();
    let per_frame = t0.elapsed().as_secs_f64() / frames.len() as f64;
    let (mut net_p, mut triv_p, mut net_a, mut triv_a) = (0f64, 0f64, 0f64, 0f64);
    let (mut net_ssim, mut triv_ssim) = (0f64, 0f64);
    for ((amp, phase), s) in pred.iter().zip(&held) {
        net_p += mse(phase, &s.phase);
        triv_p += mse(&mean_phase, &s.phase);
        net_a += mse(amp, &s.amplitude);
        triv_a += mse(&mean_amp, &s.amplitude);
        net_ssim += ssim(phase, &s.phase, Some(&mask));
        triv_ssim += ssim(&mean_phase, &s.phase, Some(&mask));
    }
    let k = held.len() as f64;
    let (net_p, triv_p, net_a, triv_a) = (net_p / k, triv_p / k, net_a / k, triv_a / k);
    let (net_ssim, triv_ssim) = (net_ssim / k, triv_ssim / k);

    // The stitched image of the held-out scan against the truth.
    let size = t.held_out.object.nrows();
    let metas = &t.held_out.meta;
    let probe = &t.held_out.probe;
    let (_, stitched) = stitch(&pred, metas, probe, size).unwrap();
    let trivial: Vec<_> = pred
        .iter()
        .map(|_| (mean_amp.clone(), mean_phase.clone()))
        .collect();
    let (_, stitched_trivial) = stitch(&trivial, metas, probe, size).unwrap();
    let corners: Vec<(usize, usize)> = metas.iter().map(|m| (m.y as usize, m.x as usize)).collect();
    let lit = illuminated(probe, &corners, (size, size), 0.1).unwrap();
    let truth = t.held_out.object.mapv(|v| v.arg());
    let (img_net, img_triv) = (
        ssim(&stitched, &truth, Some(&lit)),
        ssim(&stitched_trivial, &truth, Some(&lit)),
    );
    eprintln!(
        "held-out patches: phase MSE {net_p:.4} vs mean patch {triv_p:.4}, phase SSIM \
         {net_ssim:.3} vs {triv_ssim:.3}; amplitude MSE {net_a:.4} vs {triv_a:.4}; \
         validation loss {:.4}; stitched phase SSIM {img_net:.3} vs {img_triv:.3}; \
         inference {:.0} µs per frame (batch 32, this build)",
        t.trainer.validate(&held).unwrap(),
        per_frame * 1e6
    );
    assert!(
        net_p < 0.75 * triv_p,
        "phase MSE {net_p} vs trivial {triv_p}"
    );
    // Per patch, SSIM over the small lit disc mostly scores flat
    // background against noise (reported, not checked); over the stitched
    // image it is meaningful.
    assert!(
        img_net > img_triv,
        "stitched phase SSIM {img_net} vs trivial {img_triv}"
    );
}

#[test]
fn checkpoints_round_trip() {
    let t = trained();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("surrogate.safetensors");
    // A copy through bytes, so the shared trainer stays untouched.
    let mut s = Surrogate::from_checkpoint_bytes(
        &t.trainer.surrogate().checkpoint_bytes().unwrap(),
        Device::Cpu,
    )
    .unwrap();
    s.set_version(7);
    s.note_scan("train-b");
    s.save(&path).unwrap();
    let back = Surrogate::load(&path, Device::Cpu).unwrap();
    assert_eq!(back.version(), 7);
    assert_eq!(back.samples_seen(), t.trainer.surrogate().samples_seen());
    assert_eq!(back.steps(), STEPS as u64);
    assert_eq!(
        back.scan_ids(),
        &["train-0", "train-1", "train-2", "train-b"]
    );
    assert_eq!(back.config(), &config());
    let frames: Vec<Array2<u16>> = t.held_out.frames[..10].to_vec();
    assert_eq!(
        back.predict(&frames, 4).unwrap(),
        t.trainer.surrogate().predict(&frames, 4).unwrap()
    );
}

/// Rewrites one f32 tensor's first element in a checkpoint's bytes.
fn poison(bytes: &[u8], name: &str, value: f32) -> Vec<u8> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    let mut out = bytes.to_vec();
    let at = 8 + header_len + start;
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
    out
}

#[test]
fn bad_checkpoints_are_refused_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let s = Surrogate::new(
        SurrogateConfig {
            channels: 2,
            ..config()
        },
        Device::Cpu,
    )
    .unwrap();
    let good = s.checkpoint_bytes().unwrap();
    assert!(Surrogate::from_checkpoint_bytes(&good, Device::Cpu).is_ok());

    let message = |bytes: &[u8]| -> String {
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, bytes).unwrap();
        match Surrogate::load(&path, Device::Cpu) {
            Err(e @ PtychoError::Checkpoint(_)) => e.to_string(),
            other => panic!("expected a checkpoint error, got {other:?}"),
        }
    };
    // A NaN in one tensor, named.
    let m = message(&poison(&good, "phase.up1.weight", f32::NAN));
    assert!(
        m.contains("phase.up1.weight") && m.contains("non-finite"),
        "{m}"
    );
    let m = message(&poison(&good, "enc0a.bias", f32::INFINITY));
    assert!(m.contains("enc0a.bias"), "{m}");
    let m = message(&poison(&good, "norm.mean", f32::NAN));
    assert!(m.contains("norm.mean"), "{m}");
    // Not safetensors at all.
    let m = message(b"this is not a checkpoint, just some text of some length");
    assert!(m.contains("not a safetensors file"), "{m}");
    // A safetensors file of another format, and one with a tensor missing.
    let t = candle_core::Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
    let other = safetensors::tensor::serialize(
        [("w", &t)],
        Some([("format".to_string(), "something-else/1".to_string())].into()),
    )
    .unwrap();
    let m = message(&other);
    assert!(m.contains("something-else/1"), "{m}");
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&good[8..8 + header_len]).unwrap();
    let meta: std::collections::HashMap<String, String> =
        serde_json::from_value(header["__metadata__"].clone()).unwrap();
    let st = safetensors::SafeTensors::deserialize(&good).unwrap();
    let all = st.tensors();
    let without = |name: &str| -> Vec<u8> {
        let kept: Vec<_> = all.iter().filter(|(n, _)| n != name).cloned().collect();
        safetensors::tensor::serialize(kept, Some(meta.clone())).unwrap()
    };
    let m = message(&without("amp.out.weight"));
    assert!(m.contains("no tensor \"amp.out.weight\""), "{m}");
    // An ill-shaped tensor.
    let mut shaped: Vec<_> = all
        .iter()
        .filter(|(n, _)| n != "enc0a.bias")
        .cloned()
        .collect();
    let wrong = candle_core::Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu).unwrap();
    let wrong_bytes: Vec<u8> = wrong
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    shaped.push((
        "enc0a.bias".to_string(),
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![5], &wrong_bytes)
            .unwrap(),
    ));
    let m = message(&safetensors::tensor::serialize(shaped, Some(meta.clone())).unwrap());
    assert!(m.contains("enc0a.bias") && m.contains("[5]"), "{m}");
    // A missing file is an I/O error naming it.
    let gone = dir.path().join("gone.safetensors");
    let e = Surrogate::load(&gone, Device::Cpu).unwrap_err();
    assert!(
        matches!(e, PtychoError::Io { .. }) && e.to_string().contains("gone"),
        "{e}"
    );
}

#[test]
fn frames_of_the_wrong_shape_are_refused() {
    let s = Surrogate::new(
        SurrogateConfig {
            channels: 2,
            ..config()
        },
        Device::Cpu,
    )
    .unwrap();
    let frames = vec![
        Array2::<u16>::zeros((N, N)),
        Array2::<u16>::zeros((N, N + 1)),
    ];
    match s.predict(&frames, 8) {
        Err(PtychoError::Invalid(m)) => {
            assert!(m.contains("frame 1") && m.contains("32×33"), "{m}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(matches!(
        s.predict(&frames[..1], 0),
        Err(PtychoError::Invalid(_))
    ));
    assert!(s.predict(&[], 4).unwrap().is_empty());
    // Samples whose patch falls outside the object are refused, naming it.
    let object = Array2::from_elem((40, 40), C32::new(1.0, 0.0));
    let meta = |x: u32, y: u32| FrameMeta {
        scan_id: "s".into(),
        index: 3,
        x,
        y,
        dose: 1.0,
    };
    assert!(samples_from(&frames[..1], &[meta(8, 8)], &object, N).is_ok());
    match samples_from(&frames[..1], &[meta(9, 0)], &object, N) {
        Err(PtychoError::Invalid(m)) => {
            assert!(m.contains("(9, 0)") && m.contains("frame 3"), "{m}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn stitching_constant_patches_gives_the_constant_where_covered() {
    let probe = sim::probe(&ProbeSpec::Gaussian { sigma: 4.0 }, 16).unwrap();
    let meta = |i: u32, x: u32, y: u32| FrameMeta {
        scan_id: "s".into(),
        index: i,
        x,
        y,
        dose: 1.0,
    };
    let metas = vec![meta(0, 0, 0), meta(1, 5, 3), meta(2, 20, 20)];
    let patch = (
        Array2::from_elem((16, 16), 0.7f32),
        Array2::from_elem((16, 16), -0.4f32),
    );
    let patches = vec![patch.clone(); 3];
    let (amp, phase) = stitch(&patches, &metas, &probe, 48).unwrap();
    for y in 0..48 {
        for x in 0..48 {
            let covered = metas.iter().any(|m| {
                (m.x as usize..m.x as usize + 16).contains(&x)
                    && (m.y as usize..m.y as usize + 16).contains(&y)
            });
            if covered {
                assert!(
                    (amp[[y, x]] - 0.7).abs() < 1e-5,
                    "({x}, {y}) {}",
                    amp[[y, x]]
                );
                assert!(
                    (phase[[y, x]] + 0.4).abs() < 1e-5,
                    "({x}, {y}) {}",
                    phase[[y, x]]
                );
            } else {
                assert_eq!((amp[[y, x]], phase[[y, x]]), (1.0, 0.0), "({x}, {y})");
            }
        }
    }
    // Different values average by the probe's intensity: two patches at
    // the same place give the mean.
    let two = vec![
        patch.clone(),
        (patch.0.mapv(|v| v + 0.2), patch.1.mapv(|v| v + 0.2)),
    ];
    let (amp, phase) = stitch(&two, &[meta(0, 0, 0), meta(1, 0, 0)], &probe, 16).unwrap();
    assert!((amp[[8, 8]] - 0.8).abs() < 1e-5 && (phase[[8, 8]] + 0.3).abs() < 1e-5);
    // A position outside the image is refused, naming it.
    match stitch(&patches[..1], &[meta(4, 40, 0)], &probe, 48) {
        Err(PtychoError::Invalid(m)) => {
            assert!(m.contains("(40, 0)") && m.contains("frame 4"), "{m}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(stitch(&patches, &metas[..2], &probe, 48).is_err());
}
