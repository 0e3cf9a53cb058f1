#!/usr/bin/env python3
"""Reference forward passes, in plain float64 numpy, for the two model families lowbit's runtime
runs: BERT-style sentence encoders and Llama-style decoders. It is the yardstick for that runtime
(and for the fixtures in tests/fixtures/models/), so it is written to be read, not to be fast.

    python3 benches/model_reference.py embed MODEL_DIR --sentences FILE
    python3 benches/model_reference.py logits MODEL_DIR --prompt TEXT
    python3 benches/model_reference.py generate MODEL_DIR --prompt TEXT --max-tokens N
    python3 benches/model_reference.py eval-decoder ORIG_DIR RESTORED.safetensors --text FILE
                                       [--tokens N] [--ctx L]
    python3 benches/model_reference.py eval-encoder ORIG_DIR RESTORED.safetensors --sentences FILE

Every subcommand prints one JSON object on stdout (floats as Python's repr of a float64).

A model folder holds model.safetensors, config.json (Hugging Face field names) and tokenizer.json.
The weights are read as stored (F32, F16, BF16 or F64) and each is cast to float64; every sum,
product, softmax and norm is then computed in float64.

Tokenization: the `tokenizers` package with the folder's tokenizer.json, special tokens added as its
post-processor says (a BERT tokenizer: [CLS] ... [SEP]; SmolLM2's and the tiny Llama fixtures':
nothing, no BOS). Truncation and padding settings stored inside tokenizer.json are switched off.

BERT encoder (HF BertModel tensor names, with or without a "bert." prefix):
    x = word_embeddings[ids] + position_embeddings[0..T-1] + token_type_embeddings[0]
    x = LayerNorm(x)                                    (LayerNorm: (x-mean)/sqrt(var+eps)*w + b,
                                                         biased variance, eps = layer_norm_eps)
    per layer (post-norm):
        q, k, v = x Wq^T + bq, x Wk^T + bk, x Wv^T + bv  split into heads of hidden/heads
        a = softmax(q k^T / sqrt(head_dim) over the real (non-padding) keys) v
        x = LayerNorm(a Wo^T + bo + x)                  (attention.output.dense, .LayerNorm)
        h = gelu(x Wi^T + bi), gelu(z) = z/2 * (1 + erf(z/sqrt 2))   (intermediate.dense)
        x = LayerNorm(h Wd^T + bd + x)                  (output.dense, output.LayerNorm)
    embedding = mean of x over the real tokens ([CLS] and [SEP] included), divided by its L2 norm
    (sentence-transformers' mean pooling + Normalize). The pooler is not used. A sentence longer
    than max_position_embeddings tokens is truncated to that many (the tokenizer keeps [SEP]).

Llama decoder (HF LlamaForCausalLM tensor names; q/k/v biases used when present, as in Qwen2):
    x = embed_tokens[ids]
    per layer:
        h = RMSNorm(x, input_layernorm)                 (RMSNorm: x / sqrt(mean(x^2) + eps) * w,
                                                         eps = rms_norm_eps)
        q, k, v = h Wq^T (+bq), h Wk^T (+bk), h Wv^T (+bv)  heads of head_dim (config "head_dim",
                                                         else hidden/heads); k, v have
                                                         num_key_value_heads heads
        rotary embedding on q and k, HF "rotate_half" layout: for position p and i < d/2,
            angle = p * theta^(-2i/d) (theta = rope_theta), the pair (i, i + d/2) of each head is
            rotated: (a, b) -> (a cos - b sin, b cos + a sin)
        query head j attends with key/value head j // (heads / kv_heads), scores scaled by
            1/sqrt(head_dim), causal (position p sees positions 0..p), softmax
        x = x + attn Wo^T
        h = RMSNorm(x, post_attention_layernorm)
        x = x + (silu(h Wg^T) * (h Wu^T)) Wd^T          (silu(z) = z / (1 + e^-z))
    logits = RMSNorm(x, model.norm) lm_head^T, where lm_head = embed_tokens when config
    tie_word_embeddings is true or lm_head.weight is absent. rope_scaling is not supported.

eval-decoder: the whole text file (UTF-8) is tokenized in one call; its first N tokens (all of them
if fewer) are cut into non-overlapping windows of L tokens: [0, L), [L, 2L), ...; a last, shorter
window is kept if it has at least 2 tokens. Each window is run from an empty context (no BOS, no
carried state). Inside a window position t predicts the window's token t+1, so a window of n tokens
scores n-1 positions and the first token of a window is never a target. Over all scored positions:
    ppl_orig, ppl_restored = exp(mean over positions of -log p(true next token))
    kl_mean = mean over positions of KL(p_orig || p_restored) = sum_v p_orig(v) log(p_orig(v) /
              p_restored(v)), natural log, the full vocabulary
    top1_agree = share of positions where argmax of both logit rows is the same token
eval-encoder: every non-blank line of the sentences file (stripped) is embedded by both weight sets;
cos_mean, cos_min = mean and smallest cosine between a sentence's two embeddings; nn_agreement =
share of sentences whose nearest other sentence (largest cosine, itself excluded, first index on a
tie) is the same under both.

The restored checkpoint must hold every tensor of the original under the same name; it is used with
the original folder's config.json and tokenizer.json.

Requires numpy, scipy and tokenizers (safetensors is read by this file itself, so BF16 works).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
from scipy.special import erf
from tokenizers import Tokenizer

# --------------------------------------------------------------------------------------------------
# Loading

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path):
    """All tensors of a .safetensors file as numpy arrays in their stored dtype (BF16 -> float32,
    exactly)."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        data = f.read()
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[start:end]
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=_DTYPES[info["dtype"]])
        tensors[name] = array.reshape(info["shape"])
    return tensors


def as_float64(tensors):
    return {name: np.asarray(t, dtype=np.float64) for name, t in tensors.items()}


def load_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


def load_tokenizer(model_dir):
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def restored_weights(original, restored_path):
    """The restored checkpoint's tensors, under the original's names; stops if one is missing."""
    restored = read_safetensors(restored_path)
    absent = [name for name in original if name not in restored]
    if absent:
        sys.exit(f"{restored_path}: {len(absent)} tensors of the original are missing, "
                 f"for example {absent[:3]}")
    return {name: restored[name] for name in original}


# --------------------------------------------------------------------------------------------------
# BERT encoder

def layer_norm(x, weight, bias, eps):
    centred = x - x.mean(-1, keepdims=True)
    variance = (centred ** 2).mean(-1, keepdims=True)
    return centred / np.sqrt(variance + eps) * weight + bias


class BertEncoder:
    def __init__(self, config, weights):
        if config.get("hidden_act", "gelu") != "gelu":
            sys.exit(f"unsupported hidden_act {config['hidden_act']!r} (only exact-erf gelu)")
        self.hidden = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.layers = config["num_hidden_layers"]
        self.eps = config.get("layer_norm_eps", 1e-12)
        self.max_positions = config["max_position_embeddings"]
        # Accept both BertModel names and BertFor*'s "bert."-prefixed ones.
        self.w = {(n[len("bert."):] if n.startswith("bert.") else n): t
                  for n, t in as_float64(weights).items()}

    def linear(self, x, name):
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def norm(self, x, name):
        return layer_norm(x, self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def embed_one(self, ids):
        """Unit-length sentence embedding of one token sequence (no padding needed)."""
        return self.embed_batch([ids])[0]

    def embed_batch(self, batch):
        """Sentence embeddings of several token sequences, padded to the longest; padding keys are
        masked out of attention and padding positions out of the mean."""
        length = max(len(ids) for ids in batch)
        ids = np.zeros((len(batch), length), dtype=np.int64)
        mask = np.zeros((len(batch), length), dtype=bool)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = True
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids]
             + w["embeddings.position_embeddings.weight"][:length][None]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self.norm(x, "embeddings.LayerNorm")
        head_dim = self.hidden // self.heads
        key_ok = mask[:, None, None, :]
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."

            def heads(t):
                return t.reshape(len(batch), length, self.heads, head_dim).transpose(0, 2, 1, 3)

            q = heads(self.linear(x, p + "attention.self.query"))
            k = heads(self.linear(x, p + "attention.self.key"))
            v = heads(self.linear(x, p + "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head_dim)
            scores = np.where(key_ok, scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(len(batch), length, self.hidden)
            x = self.norm(self.linear(context, p + "attention.output.dense") + x,
                          p + "attention.output.LayerNorm")
            h = self.linear(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
            x = self.norm(self.linear(h, p + "output.dense") + x, p + "output.LayerNorm")
        m = mask[:, :, None].astype(np.float64)
        pooled = (x * m).sum(1) / m.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def embed(self, sequences, batch_size=32):
        parts = [self.embed_batch(sequences[i:i + batch_size])
                 for i in range(0, len(sequences), batch_size)]
        return np.concatenate(parts)


def bert_ids(tokenizer, sentences, max_positions):
    tokenizer.enable_truncation(max_positions)
    return [enc.ids for enc in tokenizer.encode_batch(sentences)]


def read_sentences(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def nearest_other(emb):
    """Index of each row's most similar other row (rows are unit length; first index on a tie)."""
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


# --------------------------------------------------------------------------------------------------
# Llama decoder

def rms_norm(x, weight, eps):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * weight


class LlamaDecoder:
    def __init__(self, config, weights):
        if config.get("rope_scaling"):
            sys.exit("rope_scaling is not supported")
        if config.get("hidden_act", "silu") != "silu":
            sys.exit(f"unsupported hidden_act {config['hidden_act']!r} (only silu)")
        self.hidden = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads") or self.heads
        self.head_dim = config.get("head_dim") or self.hidden // self.heads
        self.layers = config["num_hidden_layers"]
        self.eps = config["rms_norm_eps"]
        self.theta = config.get("rope_theta", 10000.0)
        self.w = as_float64(weights)
        tied = config.get("tie_word_embeddings", False) or "lm_head.weight" not in self.w
        self.lm_head = self.w["model.embed_tokens.weight" if tied else "lm_head.weight"]

    def linear(self, x, name):
        y = x @ self.w[name + ".weight"].T
        bias = self.w.get(name + ".bias")
        return y if bias is None else y + bias

    def rope(self, x, positions):
        """Rotate (heads, T, head_dim) by position, HF rotate_half layout."""
        half = self.head_dim // 2
        inv_freq = 1.0 / self.theta ** (np.arange(half, dtype=np.float64) * 2.0 / self.head_dim)
        angle = positions[:, None].astype(np.float64) * inv_freq[None, :]   # (T, half)
        cos = np.cos(np.concatenate([angle, angle], -1))
        sin = np.sin(np.concatenate([angle, angle], -1))
        rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
        return x * cos + rotated * sin

    def final_hidden(self, ids):
        """Hidden states after the final RMSNorm, (T, hidden), for one window of token ids."""
        t = len(ids)
        positions = np.arange(t)
        x = self.w["model.embed_tokens.weight"][np.asarray(ids)]
        causal = np.tril(np.ones((t, t), dtype=bool))
        group = self.heads // self.kv_heads
        for layer in range(self.layers):
            p = f"model.layers.{layer}."
            h = rms_norm(x, self.w[p + "input_layernorm.weight"], self.eps)
            q = self.linear(h, p + "self_attn.q_proj").reshape(t, self.heads, self.head_dim)
            k = self.linear(h, p + "self_attn.k_proj").reshape(t, self.kv_heads, self.head_dim)
            v = self.linear(h, p + "self_attn.v_proj").reshape(t, self.kv_heads, self.head_dim)
            q = self.rope(q.transpose(1, 0, 2), positions)
            k = self.rope(k.transpose(1, 0, 2), positions)
            v = v.transpose(1, 0, 2)
            k = np.repeat(k, group, axis=0)   # query head j uses kv head j // group
            v = np.repeat(v, group, axis=0)
            scores = q @ k.transpose(0, 2, 1) / np.sqrt(self.head_dim)
            scores = np.where(causal, scores, -np.inf)
            probs = np.exp(scores - scores.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            attn = (probs @ v).transpose(1, 0, 2).reshape(t, self.heads * self.head_dim)
            x = x + self.linear(attn, p + "self_attn.o_proj")
            h = rms_norm(x, self.w[p + "post_attention_layernorm.weight"], self.eps)
            gate = self.linear(h, p + "mlp.gate_proj")
            up = self.linear(h, p + "mlp.up_proj")
            x = x + self.linear(gate / (1.0 + np.exp(-gate)) * up, p + "mlp.down_proj")
        return rms_norm(x, self.w["model.norm.weight"], self.eps)

    def logits(self, ids):
        """Logits of every position, (T, vocab)."""
        return self.final_hidden(ids) @ self.lm_head.T

    def greedy(self, ids, count):
        """`count` greedy tokens after `ids` (no stop at end-of-sequence; full recompute per step)."""
        ids = list(ids)
        out = []
        for _ in range(count):
            nxt = int(np.argmax(self.logits(ids)[-1]))
            out.append(nxt)
            ids.append(nxt)
        return out


def log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def decoder_windows(ids, tokens, ctx):
    ids = ids[:tokens]
    windows = [ids[i:i + ctx] for i in range(0, len(ids), ctx)]
    return [w for w in windows if len(w) >= 2]


def eval_decoder(config, original, restored, windows):
    """The eval-decoder figures of two weight sets over the windows (see the module docstring)."""
    orig = LlamaDecoder(config, original)
    rest = LlamaDecoder(config, restored)
    nll_o = nll_r = kl = agree = 0.0
    scored = 0
    for window in windows:
        targets = np.asarray(window[1:])
        lp_o = log_softmax(orig.logits(window)[:-1])
        lp_r = log_softmax(rest.logits(window)[:-1])
        rows = np.arange(len(targets))
        nll_o += -lp_o[rows, targets].sum()
        nll_r += -lp_r[rows, targets].sum()
        kl += (np.exp(lp_o) * (lp_o - lp_r)).sum()
        agree += (lp_o.argmax(-1) == lp_r.argmax(-1)).sum()
        scored += len(targets)
    return {
        "tokens": sum(len(w) for w in windows),
        "windows": len(windows),
        "scored_positions": scored,
        "ppl_orig": float(np.exp(nll_o / scored)),
        "ppl_restored": float(np.exp(nll_r / scored)),
        "kl_mean": float(kl / scored),
        "top1_agree": float(agree / scored),
    }


def eval_encoder(config, original, restored, ids):
    before = BertEncoder(config, original).embed(ids)
    after = BertEncoder(config, restored).embed(ids)
    cosine = (before * after).sum(1)
    return {
        "sentences": len(ids),
        "cos_mean": float(cosine.mean()),
        "cos_min": float(cosine.min()),
        "nn_agreement": float((nearest_other(before) == nearest_other(after)).mean()),
    }


def text_ids(tokenizer, path):
    with open(path, encoding="utf-8") as f:
        return tokenizer.encode(f.read()).ids


# --------------------------------------------------------------------------------------------------
# Command line

def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("embed", help="BERT sentence embeddings")
    p.add_argument("model_dir")
    p.add_argument("--sentences", required=True, help="text file, one sentence a line")
    p = sub.add_parser("logits", help="Llama logits of every position of a prompt")
    p.add_argument("model_dir")
    p.add_argument("--prompt", required=True)
    p = sub.add_parser("generate", help="Llama greedy continuation")
    p.add_argument("model_dir")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, required=True)
    p = sub.add_parser("eval-decoder", help="perplexity, KL and top-1 agreement of restored weights")
    p.add_argument("orig_dir")
    p.add_argument("restored")
    p.add_argument("--text", required=True)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--ctx", type=int, default=256)
    p = sub.add_parser("eval-encoder", help="embedding cosines and nearest-neighbour agreement")
    p.add_argument("orig_dir")
    p.add_argument("restored")
    p.add_argument("--sentences", required=True)
    args = parser.parse_args()

    model_dir = getattr(args, "model_dir", None) or args.orig_dir
    config = load_config(model_dir)
    tokenizer = load_tokenizer(model_dir)
    weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))

    if args.command == "embed":
        sentences = read_sentences(args.sentences)
        ids = bert_ids(tokenizer, sentences, config["max_position_embeddings"])
        emb = BertEncoder(config, weights).embed(ids)
        result = {"ids": ids, "embeddings": emb.tolist()}
    elif args.command == "logits":
        ids = tokenizer.encode(args.prompt).ids
        result = {"ids": ids, "logits": LlamaDecoder(config, weights).logits(ids).tolist()}
    elif args.command == "generate":
        ids = tokenizer.encode(args.prompt).ids
        out = LlamaDecoder(config, weights).greedy(ids, args.max_tokens)
        result = {"ids": ids, "generated_ids": out, "generated_text": tokenizer.decode(out)}
    elif args.command == "eval-decoder":
        windows = decoder_windows(text_ids(tokenizer, args.text), args.tokens, args.ctx)
        if not windows:
            sys.exit("the text gives no window of 2 or more tokens")
        result = eval_decoder(config, weights, restored_weights(weights, args.restored), windows)
    else:
        sentences = read_sentences(args.sentences)
        ids = bert_ids(tokenizer, sentences, config["max_position_embeddings"])
        result = eval_encoder(config, weights, restored_weights(weights, args.restored), ids)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
