#!/usr/bin/env python3
"""Writes an importance file for `lowbit compress --importance` from all-MiniLM-L6-v2: for every
linear layer's weight (rows = output units, as stored), the per-row second moment of its output
activations, E[y_r^2] over the non-padding tokens of a few sentences (a numpy forward pass, the
one of benches/minilm_eval.py).

    python3 examples/minilm_importance.py MODEL_DIR OUT.safetensors [--n 128] [--sentences FILE]
    python3 examples/minilm_importance.py MODEL_DIR IMPORTANCE.safetensors --score RESTORED.safetensors

--score prints the importance-weighted relative error of a restored checkpoint, the objective
fwsvd minimises: per tensor sum_r i_r ||W_r - W^_r||^2 / sum_r i_r ||W_r||^2, the mean over the
tensors of the importance file (and the unweighted relative MSE over the same tensors beside it).

Sentences: short lines of MODEL_DIR/../text/fortunes.txt, drawn with seed 1 from the lines that
minilm_eval.py (seed 0, 256 lines) does not use, so the statistic is not fitted to the sentences
it is judged on. Needs numpy, scipy, tokenizers, safetensors (the bench venv has them).

Why output activations: fwsvd weights the rows (output units) of W; a row whose outputs are large
carries more of the layer's signal into the residual stream, so its error counts more. The word
embeddings are left out (their rows are tokens; a few sentences see few of them): they use the
data-free proxy.
"""
import argparse, json, os

import numpy as np
import scipy.special as sp
from safetensors.numpy import load_file, save_file
from tokenizers import Tokenizer


def layer_norm(x, g, b, eps=1e-12):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g + b


def forward(model_dir, W, sentences, stats, counts):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_padding(pad_id=0)
    tok.enable_truncation(256)
    enc = tok.encode_batch(sentences)
    ids = np.array([e.ids for e in enc])
    mask = np.array([e.attention_mask for e in enc]).astype(np.float32)
    B, T = ids.shape
    H, D = cfg["num_attention_heads"], cfg["hidden_size"]
    dh = D // H
    x = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.position_embeddings.weight"][:T][None]
         + W["embeddings.token_type_embeddings.weight"][0])
    x = layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"])
    bias = (1.0 - mask)[:, None, None, :] * -1e9
    tokens = mask.reshape(-1) > 0
    for l in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{l}."

        def lin(z, n):
            y = z.reshape(-1, z.shape[-1]) @ W[p + n + ".weight"].T + W[p + n + ".bias"]
            name = p + n + ".weight"
            y2 = (y[tokens].astype(np.float64) ** 2).sum(0)
            stats[name] = stats.get(name, 0.0) + y2
            counts[name] = counts.get(name, 0) + int(tokens.sum())
            return y.reshape(*z.shape[:-1], -1)

        heads = lambda z: z.reshape(B, T, H, dh).transpose(0, 2, 1, 3)
        q, k, v = (heads(lin(x, "attention.self." + n)) for n in ("query", "key", "value"))
        a = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        c = (a @ v).transpose(0, 2, 1, 3).reshape(B, T, D)
        x = layer_norm(lin(c, "attention.output.dense") + x,
                       W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"])
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1 + sp.erf(h / np.sqrt(2)))
        x = layer_norm(lin(h, "output.dense") + x,
                       W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--sentences")
    ap.add_argument("--score", metavar="RESTORED")
    a = ap.parse_args()
    if a.score:
        W = load_file(os.path.join(a.model_dir, "model.safetensors"))
        R = load_file(a.score)
        imp = load_file(a.out)
        weighted, plain = [], []
        for name, i in imp.items():
            w, r = W[name].astype(np.float64), R[name].astype(np.float64)
            e = ((w - r) ** 2).sum(1)
            n = (w ** 2).sum(1)
            weighted.append((i * e).sum() / (i * n).sum())
            plain.append(e.sum() / n.sum())
        print(f"tensors={len(imp)} weighted_rel_mse={np.mean(weighted):.5e} rel_mse={np.mean(plain):.5e}")
        return
    path = a.sentences or os.path.join(a.model_dir, "..", "text", "fortunes.txt")
    lines = [l.strip() for l in open(path, encoding="utf-8", errors="replace")]
    lines = [l for l in lines if 20 <= len(l) <= 200 and l != "%"]
    # minilm_eval.py's draw, excluded here.
    evaluated = set(np.random.default_rng(0).choice(len(lines), min(256, len(lines)), replace=False))
    rest = [i for i in range(len(lines)) if i not in evaluated]
    pick = np.random.default_rng(1).choice(len(rest), min(a.n, len(rest)), replace=False)
    sentences = [lines[rest[i]] for i in pick]
    W = load_file(os.path.join(a.model_dir, "model.safetensors"))
    stats, counts = {}, {}
    for i in range(0, len(sentences), 32):
        forward(a.model_dir, W, sentences[i:i + 32], stats, counts)
    out = {k: (v / counts[k]).astype(np.float32) for k, v in stats.items()}
    save_file(out, a.out)
    spread = [float(v.max() / max(v.mean(), 1e-30)) for v in out.values()]
    print(f"{len(out)} tensors from {len(sentences)} sentences; max/mean row importance "
          f"median {np.median(spread):.2f}, largest {max(spread):.1f}")


if __name__ == "__main__":
    main()
