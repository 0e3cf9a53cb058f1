#!/usr/bin/env python3
"""faiss-cpu k-means on the points written by `examples/bench_kmeans.rs`: the reference
of the k-means speed target (lowbit in at most 1.0x faiss's time; BENCHMARKS.md, Targets 3).

Usage: kmeans_reference.py RAW_F32_PATH N DIM [--k 256] [--iters 20] [--threads 2] [--repeats 3]

Prints one JSON object per line:
  {"job":"kmeans","impl":"faiss","seconds":...,"mse":...,"objective":...}
`seconds` is the best of `repeats` trainings (`cpu_seconds`: their mean process CPU time, all
threads; OpenMP threads that spin while waiting count here) on all points (max_points_per_centroid = N, so faiss
does not subsample); `mse` is the mean squared error per coordinate of the points to their nearest
final centroid (the same definition as the Rust side); `objective` is faiss's own last-iteration
sum of squared distances. Needs `pip install faiss-cpu numpy`.
"""
import argparse
import json
import time

import faiss
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("n", type=int)
    ap.add_argument("dim", type=int)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    x = np.fromfile(args.path, dtype="<f4")
    if x.size != args.n * args.dim:
        raise SystemExit(f"{args.path}: {x.size} floats, expected {args.n} x {args.dim}")
    x = np.ascontiguousarray(x.reshape(args.n, args.dim))
    faiss.omp_set_num_threads(args.threads)

    times = []
    cpu = []
    km = None
    for _ in range(args.repeats):
        km = faiss.Kmeans(
            args.dim,
            args.k,
            niter=args.iters,
            seed=args.seed,
            max_points_per_centroid=args.n,
            verbose=False,
        )
        start = time.perf_counter()
        cpu_start = time.process_time()
        km.train(x)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    distances, _ = km.index.search(x, 1)
    mse = float(distances.astype(np.float64).sum() / (args.n * args.dim))
    print(json.dumps({
        "job": "kmeans",
        "impl": "faiss",
        "n": args.n,
        "dim": args.dim,
        "k": args.k,
        "iters": args.iters,
        "threads": args.threads,
        "seconds": round(min(times), 4),
        "cpu_seconds": round(sum(cpu) / len(cpu), 3),
        "mse": round(mse, 6),
        "objective": float(km.obj[-1]),
        "faiss": faiss.__version__,
    }))


if __name__ == "__main__":
    main()
