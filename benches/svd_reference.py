#!/usr/bin/env python3
"""Reference timings for the SVD speed benchmark (target: lowbit at equal error in at most
0.5x `randomized_svd`'s time; BENCHMARKS.md, Targets 3).

Reads the raw little-endian f32 row-major matrix that `examples/bench_svd.rs` wrote, then times
scikit-learn's `randomized_svd` (k = 128, n_oversamples = 10, n_iter = 2 and 4, default power
iteration normaliser, best of 3) and numpy's LAPACK SVD (full, truncated to 128; best of 3), and
prints one JSON object per line, the same shape as the Rust side:
  {"job":"svd","impl":"sklearn","power_iters":2,"seconds":0.109,"rel_error":0.0425}
rel_error = ||W - U_k S_k V_k^T||_F / ||W||_F, computed in float64.

Usage: svd_reference.py PATH ROWS COLS   (needs numpy and scikit-learn)
Thread count: whatever BLAS uses by default; set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS to pin it.
"""
import json
import sys
import time

import numpy as np
from sklearn.utils.extmath import randomized_svd

RANK = 128
OVERSAMPLE = 10


def rel_error(w, u, s, vt):
    w64 = w.astype(np.float64)
    approx = (u.astype(np.float64) * s.astype(np.float64)) @ vt.astype(np.float64)
    return float(np.linalg.norm(w64 - approx) / np.linalg.norm(w64))


def best_of(n, f):
    best, out = float("inf"), None
    for _ in range(n):
        start = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    path, rows, cols = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    w = np.fromfile(path, dtype="<f4")
    if w.size != rows * cols:
        sys.exit(f"{path}: {w.size} values, expected {rows} x {cols}")
    w = w.reshape(rows, cols)

    for n_iter in (2, 4):
        seconds, (u, s, vt) = best_of(
            3,
            lambda: randomized_svd(
                w, RANK, n_oversamples=OVERSAMPLE, n_iter=n_iter, random_state=0
            ),
        )
        print(json.dumps({"job": "svd", "impl": "sklearn", "power_iters": n_iter,
                          "seconds": round(seconds, 4),
                          "rel_error": round(rel_error(w, u, s, vt), 4)}))

    seconds, (u, s, vt) = best_of(3, lambda: np.linalg.svd(w, full_matrices=False))
    print(json.dumps({"job": "svd", "impl": "numpy-lapack", "power_iters": None,
                      "seconds": round(seconds, 4),
                      "rel_error": round(rel_error(w, u[:, :RANK], s[:RANK], vt[:RANK]), 4)}))


if __name__ == "__main__":
    main()
