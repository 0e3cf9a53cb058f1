"""Vector-dataset benchmark helper (driven by `cargo xtask bench --only vectors`).

  prepare MODEL.safetensors DIR   split MiniLM's word-embedding matrix (30522 x 384) into
                                  DIR/base.npy (all but 1000 rows) and DIR/queries.npy (1000 rows
                                  drawn with a fixed seed), and DIR/truth.npy (each query's 10
                                  exact nearest base rows, squared L2)
  faiss DIR BITS...               faiss-cpu ProductQuantizer (nbits 8, m = BITS/8) trained on the
                                  base rows: recall@10 of the queries against the decoded base,
                                  fixed-length code bits per vector (codebooks not counted)
  recall DIR RESTORED.npy         recall@10 and MSE of a restored base (lowbit's decompressed file)
  gaussian DIR                    DIR/gaussian.npy: 40000 rows of a zero-mean Gaussian in 16
                                  dimensions, covariance eigenvalues 0.8^i in a random basis (seeded)
  rd DIR RESTORED.npy             MSE per dimension of a restored gaussian.npy and the Gaussian
                                  R(D) at that MSE (reverse water-filling on the true eigenvalues)

Prints one JSON object per measurement on stdout.
"""
import json
import sys
import time

import numpy as np

K = 10
QUERIES = 1000
SEED = 12345


def load_embeddings(path):
    from safetensors.numpy import load_file

    return load_file(path)["embeddings.word_embeddings.weight"].astype(np.float32)


def top_k(queries, base, k=K):
    """Indices of each query's k nearest base rows (squared L2), in blocks to bound memory."""
    base_norms = (base.astype(np.float64) ** 2).sum(1)
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 250):
        q = queries[s : s + 250].astype(np.float64)
        d = base_norms[None, :] - 2.0 * q @ base.astype(np.float64).T
        idx = np.argpartition(d, k, axis=1)[:, :k]
        order = np.take_along_axis(d, idx, 1).argsort(1)
        out[s : s + 250] = np.take_along_axis(idx, order, 1)
    return out


def recall(truth, found):
    hits = sum(len(set(t) & set(f)) for t, f in zip(truth, found))
    return hits / truth.size


def prepare(model, d):
    w = load_embeddings(model)
    rng = np.random.default_rng(SEED)
    held = np.sort(rng.choice(len(w), QUERIES, replace=False))
    mask = np.ones(len(w), bool)
    mask[held] = False
    base, queries = w[mask], w[held]
    np.save(f"{d}/base.npy", base)
    np.save(f"{d}/queries.npy", queries)
    np.save(f"{d}/truth.npy", top_k(queries, base))
    print(json.dumps({"prepared": True, "base_rows": len(base), "queries": len(queries), "dim": w.shape[1]}))


def faiss_pq(d, bits_list):
    import faiss

    base = np.load(f"{d}/base.npy")
    queries = np.load(f"{d}/queries.npy")
    truth = np.load(f"{d}/truth.npy")
    dim = base.shape[1]
    for bits in bits_list:
        m = bits // 8
        pq = faiss.ProductQuantizer(dim, m, 8)
        t0 = time.perf_counter()
        pq.train(base)
        codes = pq.compute_codes(base)
        seconds = time.perf_counter() - t0
        restored = pq.decode(codes)
        mse = float(((restored.astype(np.float64) - base) ** 2).mean())
        codebook_bits = 32 * faiss.vector_to_array(pq.centroids).size
        print(
            json.dumps(
                {
                    "reference": f"faiss PQ m{m} nbits8",
                    "code_bits_per_vector": m * 8,
                    "bits_per_vector_with_codebook": m * 8 + codebook_bits / len(base),
                    "recall_at_10": recall(truth, top_k(queries, restored)),
                    "mse_per_dimension": mse,
                    "seconds": seconds,
                    "threads": faiss.omp_get_max_threads(),
                }
            )
        )


def recall_of(d, restored_path):
    base = np.load(f"{d}/base.npy")
    queries = np.load(f"{d}/queries.npy")
    truth = np.load(f"{d}/truth.npy")
    restored = np.load(restored_path).astype(np.float32)
    assert restored.shape == base.shape, (restored.shape, base.shape)
    mse = float(((restored.astype(np.float64) - base) ** 2).mean())
    print(json.dumps({"recall_at_10": recall(truth, top_k(queries, restored)), "mse_per_dimension": mse}))


GAUSS_ROWS = 40000
GAUSS_EIGENVALUES = 0.8 ** np.arange(16)


def gaussian(d):
    rng = np.random.default_rng(SEED)
    basis, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    z = rng.standard_normal((GAUSS_ROWS, 16)) * np.sqrt(GAUSS_EIGENVALUES)
    np.save(f"{d}/gaussian.npy", (z @ basis.T).astype(np.float32))
    print(json.dumps({"gaussian": True, "rows": GAUSS_ROWS, "eigenvalues": GAUSS_EIGENVALUES.tolist()}))


def gaussian_rate(eig, mse):
    """Bits per dimension of the Gaussian R(D) at `mse` per dimension (reverse water-filling)."""
    lo, hi = 0.0, float(eig.max())
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.minimum(eig, mid).sum() < mse * len(eig):
            lo = mid
        else:
            hi = mid
    theta = 0.5 * (lo + hi)
    return float(np.sum(np.maximum(0.0, 0.5 * np.log2(eig / theta))) / len(eig))


def rd_of(d, restored_path):
    x = np.load(f"{d}/gaussian.npy").astype(np.float64)
    y = np.load(restored_path).astype(np.float64)
    assert x.shape == y.shape, (x.shape, y.shape)
    mse = float(((x - y) ** 2).mean())
    print(json.dumps({"mse_per_dimension": mse, "rd_bits_per_dimension": gaussian_rate(GAUSS_EIGENVALUES, mse)}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    elif cmd == "faiss":
        faiss_pq(sys.argv[2], [int(b) for b in sys.argv[3:]])
    elif cmd == "recall":
        recall_of(sys.argv[2], sys.argv[3])
    elif cmd == "gaussian":
        gaussian(sys.argv[2])
    elif cmd == "rd":
        rd_of(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
