#!/usr/bin/env python3
"""Judge a compressed all-MiniLM-L6-v2 by what it is used for: sentence embeddings.

    python3 benches/minilm_eval.py ORIGINAL_DIR RESTORED.safetensors [--sentences FILE] [--n 256]

ORIGINAL_DIR is the model folder that benches/fetch_data.sh writes (DIR/minilm: model.safetensors,
config.json, tokenizer.json). RESTORED.safetensors is what `lowbit decompress` gave back; it must
hold every tensor of the original, under the same names.

Both weight sets embed the same sentences: by default n lines of DIR/../text/fortunes.txt (lines
of 20 to 200 characters, "%" separators left out), drawn without replacement by a numpy generator
seeded with 0, so every run and every machine uses the same sample. The encoder is run in plain
numpy (BERT: embeddings, 6 post-norm transformer layers with exact-erf GELU), then mean-pooled over
the real tokens and scaled to unit length, the way sentence-transformers builds this model's
embeddings.

One line is printed:

    sentences=N cos_mean=X.XXXXX cos_min=X.XXXXX nn_agreement=X.XXX

cos_mean / cos_min: mean and smallest cosine between a sentence's original and restored embedding;
nn_agreement: the share of sentences whose nearest other sentence is the same under both weight
sets. The exit status is 0 whatever the figures; judging them is left to the reader (and to
`cargo xtask bench`).

Requires numpy, scipy, tokenizers and safetensors (no torch).
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from scipy.special import erf
from tokenizers import Tokenizer

BATCH = 32


def normalise(x, gamma, beta, eps=1e-12):
    """LayerNorm over the last axis."""
    centred = x - x.mean(-1, keepdims=True)
    var = (centred ** 2).mean(-1, keepdims=True)
    return centred / np.sqrt(var + eps) * gamma + beta


class MiniLM:
    """A numpy BERT encoder over one set of weights (tensor name -> array)."""

    def __init__(self, model_dir, weights):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.width = cfg["hidden_size"]
        self.w = weights
        self.tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self.tokenizer.enable_padding(pad_id=0)
        self.tokenizer.enable_truncation(256)

    def dense(self, x, name):
        """x @ W.T + b for the Linear called `name`, over any leading axes."""
        flat = x.reshape(-1, x.shape[-1]) @ self.w[name + ".weight"].T
        return flat.reshape(*x.shape[:-1], -1) + self.w[name + ".bias"]

    def split_heads(self, x):
        b, t, _ = x.shape
        return x.reshape(b, t, self.heads, self.width // self.heads).transpose(0, 2, 1, 3)

    def block(self, x, prefix, mask_bias):
        b, t, _ = x.shape
        head_dim = self.width // self.heads
        q, k, v = (self.split_heads(self.dense(x, prefix + "attention.self." + part))
                   for part in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim) + mask_bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(b, t, self.width)
        x = normalise(self.dense(context, prefix + "attention.output.dense") + x,
                      self.w[prefix + "attention.output.LayerNorm.weight"],
                      self.w[prefix + "attention.output.LayerNorm.bias"])
        hidden = self.dense(x, prefix + "intermediate.dense")
        hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
        return normalise(self.dense(hidden, prefix + "output.dense") + x,
                         self.w[prefix + "output.LayerNorm.weight"],
                         self.w[prefix + "output.LayerNorm.bias"])

    def encode_batch(self, sentences):
        encodings = self.tokenizer.encode_batch(sentences)
        ids = np.array([e.ids for e in encodings])
        mask = np.array([e.attention_mask for e in encodings]).astype(np.float32)
        length = ids.shape[1]
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = normalise(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        # Padding keys get a large negative score, so softmax gives them no weight.
        mask_bias = (1.0 - mask)[:, None, None, :] * -1e9
        for layer in range(self.layers):
            x = self.block(x, f"encoder.layer.{layer}.", mask_bias)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1)[:, None]
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def encode(self, sentences):
        parts = [self.encode_batch(sentences[i:i + BATCH]) for i in range(0, len(sentences), BATCH)]
        return np.concatenate(parts)


def pick_sentences(path, n):
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f]
    usable = [line for line in lines if line != "%" and 20 <= len(line) <= 200]
    chosen = np.random.default_rng(0).choice(len(usable), min(n, len(usable)), replace=False)
    return [usable[i] for i in chosen]


def nearest_other(emb):
    """Index of each row's most similar other row (cosine, rows are unit length)."""
    sim = emb @ emb.T
    np.fill_diagonal(sim, -9)
    return sim.argmax(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("original_dir", help="folder with model.safetensors, config.json, tokenizer.json")
    parser.add_argument("restored", help="decompressed checkpoint (.safetensors)")
    parser.add_argument("--sentences", help="text file, one candidate sentence a line "
                        "(default: ORIGINAL_DIR/../text/fortunes.txt)")
    parser.add_argument("--n", type=int, default=256, help="how many sentences to draw (default 256)")
    args = parser.parse_args()

    source = args.sentences or os.path.join(args.original_dir, "..", "text", "fortunes.txt")
    sentences = pick_sentences(source, args.n)

    original = load_file(os.path.join(args.original_dir, "model.safetensors"))
    restored = load_file(args.restored)
    absent = [name for name in original if name not in restored]
    if absent:
        sys.exit(f"{args.restored}: {len(absent)} tensors of the original are missing, "
                 f"for example {absent[:3]}")
    # Compute both in the original's dtypes, whatever the restored file stored.
    restored = {name: np.asarray(restored[name], dtype=t.dtype) for name, t in original.items()}

    before = MiniLM(args.original_dir, original).encode(sentences)
    after = MiniLM(args.original_dir, restored).encode(sentences)
    cosine = (before * after).sum(1)
    agreement = (nearest_other(before) == nearest_other(after)).mean()
    print(f"sentences={len(sentences)} cos_mean={cosine.mean():.5f} "
          f"cos_min={cosine.min():.5f} nn_agreement={agreement:.3f}")


if __name__ == "__main__":
    main()
