#!/usr/bin/env python3
"""ePIE in NumPy: the baseline `diaspora bench ptycho` measures the Rust
implementation against, on the same frames, the same starting probe and
the same number of iterations.

The algorithm is the one in crates/diaspora-ptycho/src/epie.rs (Maiden &
Rodenburg 2009): per position, psi = P*O_j, Psi = fft2(psi) (unitary),
Psi' = sqrt(I) Psi/|Psi| (saturated pixels only bound |Psi'| from below),
psi' = ifft2(Psi'), object and probe updates with alpha/max|P|^2 and
beta/max|O_j|^2. Complex64 throughout, like the Rust code's f32.

Usage: epie_numpy.py DIR ITERATIONS [PROBE_UPDATE_FROM]
DIR holds frames.npy (uint16, count x N x N, zero frequency at the centre),
corners.npy (int64, count x 2: y, x of each window's top-left pixel) and
probe.npy (complex64, N x N: the starting probe). Prints one JSON line:
{"ms_per_frame_iteration", "fourier_error", "seconds", "frames", "iterations"}.
"""
import json
import sys
import time

import numpy as np

SATURATION = 4095


def epie(frames, corners, probe, iterations, probe_update_from, seed=0):
    count, n, _ = frames.shape
    moduli = np.fft.ifftshift(np.sqrt(frames.astype(np.float32)), axes=(1, 2))
    saturated = np.fft.ifftshift(frames >= SATURATION, axes=(1, 2))
    total = float(np.sum(moduli.astype(np.float64) ** 2))
    size = int(np.max(corners)) + n
    obj = np.ones((size, size), dtype=np.complex64)
    p = probe.astype(np.complex64).copy()
    rng = np.random.default_rng(seed)
    errors = []
    started = time.perf_counter()
    for it in range(iterations):
        err = 0.0
        for j in rng.permutation(count):
            y, x = corners[j]
            patch = obj[y:y + n, x:x + n]
            old = patch.copy()
            psi = p * patch
            big = np.fft.fft2(psi, norm="ortho")
            m = np.abs(big)
            a = moduli[j]
            sat = saturated[j]
            err += float(np.sum(((m - a) ** 2)[~sat]))
            target = np.where(sat, np.maximum(m, a), a)
            big = np.where(m > 1e-20, big * (target / np.maximum(m, 1e-20)), target)
            delta = np.fft.ifft2(big, norm="ortho").astype(np.complex64) - psi
            patch += (np.conj(p) / np.max(np.abs(p) ** 2)) * delta
            if it >= probe_update_from:
                p += (np.conj(old) / np.max(np.abs(old) ** 2)) * delta
        errors.append(err / max(total, 1e-30))
    seconds = time.perf_counter() - started
    return obj, p, errors, seconds


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    d, iterations = sys.argv[1], int(sys.argv[2])
    probe_update_from = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    frames = np.load(f"{d}/frames.npy")
    corners = np.load(f"{d}/corners.npy")
    probe = np.load(f"{d}/probe.npy")
    if frames.ndim != 3 or frames.shape[1] != frames.shape[2]:
        sys.exit(f"frames.npy: count x N x N expected, got {frames.shape}")
    if corners.shape != (frames.shape[0], 2):
        sys.exit(f"corners.npy: {frames.shape[0]} x 2 expected, got {corners.shape}")
    _, _, errors, seconds = epie(frames, corners, probe, iterations, probe_update_from)
    print(json.dumps({
        "ms_per_frame_iteration": seconds * 1e3 / (frames.shape[0] * iterations),
        "fourier_error": errors[-1] if errors else None,
        "seconds": seconds,
        "frames": int(frames.shape[0]),
        "iterations": iterations,
    }))


if __name__ == "__main__":
    main()
