#!/usr/bin/env python3
"""Turn a Llama-architecture GGUF (such as SmolLM2-135M-Instruct.Q4_1.gguf from fetch_data.sh) into a
Hugging Face model folder that model_reference.py, transformers and lowbit's runtime can read.

    python3 benches/gguf_to_hf.py MODEL.gguf OUT_DIR

OUT_DIR receives:
    model.safetensors        every tensor dequantized by the PyPI `gguf` package (llama.cpp's own
                             numpy port) and stored as F16, under HF LlamaForCausalLM names. The
                             weights keep the GGUF's quantization error: this is the Q4_1 model,
                             not the original BF16 release.
    config.json              LlamaForCausalLM fields from the GGUF metadata (head_dim included;
                             tie_word_embeddings is true when the GGUF has no output.weight)
    tokenizer.json           the GGUF's byte-level BPE (tokenizer.ggml.tokens, .merges), set up
                             like SmolLM2's HF tokenizer: no normalizer; pre-tokenizer
                             Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=
                             False, use_regex=True)]; ByteLevel decoder; the control tokens
                             (token_type 3) added as special tokens; no post-processor, so no BOS
                             or EOS is added (the GGUF says add_bos_token = false)
    special_tokens_map.json  bos/eos/unk/pad tokens from the GGUF's token ids
    tokenizer_config.json    the same, with the chat template

Names: token_embd -> model.embed_tokens, output_norm -> model.norm, output -> lm_head, and per layer
N: attn_norm -> input_layernorm, ffn_norm -> post_attention_layernorm, attn_{q,k,v,output} ->
self_attn.{q,k,v,o}_proj, ffn_{gate,up,down} -> mlp.{gate,up,down}_proj (.weight and .bias).

Rotary layout: llama.cpp's HF->GGUF converter reorders the rows of each query/key head from HF's
"rotate_half" layout (the pair of rotated coordinates is (i, i + d/2)) to interleaved pairs (2i,
2i + 1). Within every head this script moves row 2i + j back to row j*d/2 + i (j = 0, 1), for
q_proj with the attention head count and k_proj with the key/value head count (biases alike), so
HF's rotate_half applies to the written weights.

Needs numpy, gguf (and nothing from transformers or torch).
"""
import argparse
import json
import os
import re
import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
CONTROL = 3   # llama.cpp's token type of control (special) tokens


def field(reader, key, default=None):
    """A metadata value as a Python value (string, number or list)."""
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def hf_name(name):
    base, kind = name.rsplit(".", 1)
    if base in TOP_NAMES:
        return f"{TOP_NAMES[base]}.{kind}"
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)", base)
    if m and m.group(2) in LAYER_NAMES:
        return f"model.layers.{m.group(1)}.{LAYER_NAMES[m.group(2)]}.{kind}"
    sys.exit(f"gguf_to_hf.py: no Hugging Face name known for GGUF tensor {name!r}")


def unpermute_rotary(w, heads):
    """Undo llama.cpp's interleaving of the rotary pairs: rows (per head) 2i + j -> j*d/2 + i."""
    head_dim = w.shape[0] // heads
    rest = w.shape[1:]
    return (w.reshape(heads, head_dim // 2, 2, *rest)
             .swapaxes(1, 2)
             .reshape(w.shape))


def tensor_array(t):
    """Dequantized float32 array of a GGUF tensor in numpy (row-major, HF) orientation."""
    if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        a = np.asarray(t.data, dtype=np.float32)
    else:
        a = dequantize(t.data, t.tensor_type).astype(np.float32)
    shape = tuple(int(n) for n in reversed(t.shape))   # GGUF lists the fastest axis first
    return a.reshape(shape)


def hf_tensor(t, heads, kv_heads):
    """A GGUF tensor as (Hugging Face name, float32 array in HF layout): dequantized, and the
    rotary pairs of q_proj / k_proj put back in HF's order."""
    name = hf_name(t.name)
    a = tensor_array(t)
    if ".self_attn.q_proj." in name:
        a = unpermute_rotary(a, heads)
    elif ".self_attn.k_proj." in name:
        a = unpermute_rotary(a, kv_heads)
    return name, a


def write_safetensors(path, tensors):
    """F16 safetensors, tensors in name order (written here so that no extra package is needed)."""
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        blob = np.ascontiguousarray(tensors[name], dtype="<f2").tobytes()
        header[name] = {"dtype": "F16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path + ".part", "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)
    os.replace(path + ".part", path)


def build_tokenizer(reader):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ")) for m in field(reader, "tokenizer.ggml.merges")]
    if field(reader, "tokenizer.ggml.model") != "gpt2":
        sys.exit("gguf_to_hf.py: only byte-level BPE (tokenizer.ggml.model = gpt2) is supported")
    if any(len(m) != 2 for m in merges):
        sys.exit("gguf_to_hf.py: a merge is not two space-separated symbols")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    special = [tokens[i] for i, t in enumerate(types) if t == CONTROL]
    tokenizer.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    for s in special:
        assert tokenizer.token_to_id(s) == vocab[s], s
    return tokenizer, tokens, special


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf")
    parser.add_argument("out_dir")
    args = parser.parse_args()

    reader = GGUFReader(args.gguf)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"gguf_to_hf.py: architecture {arch!r} is not llama")
    heads = int(field(reader, "llama.attention.head_count"))
    kv_heads = int(field(reader, "llama.attention.head_count_kv", heads))
    hidden = int(field(reader, "llama.embedding_length"))
    head_dim = int(field(reader, "llama.attention.key_length", hidden // heads))
    rope_dim = int(field(reader, "llama.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        sys.exit("gguf_to_hf.py: partial rotary embedding is not supported")

    tensors = {}
    for t in reader.tensors:
        name, a = hf_tensor(t, heads, kv_heads)
        tensors[name] = a

    tokenizer, tokens, special = build_tokenizer(reader)
    vocab_size = len(tokens)
    tied = "lm_head.weight" not in tensors
    eps = float(str(np.float32(field(reader, "llama.attention.layer_norm_rms_epsilon"))))
    bos = field(reader, "tokenizer.ggml.bos_token_id")
    eos = field(reader, "tokenizer.ggml.eos_token_id")
    unk = field(reader, "tokenizer.ggml.unknown_token_id")
    pad = field(reader, "tokenizer.ggml.padding_token_id")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "rms_norm_eps": eps,
        "rope_theta": float(field(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "attention_bias": any(n.endswith("q_proj.bias") for n in tensors),
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "vocab_size": vocab_size,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        "torch_dtype": "float16",
    }
    if tensors["model.embed_tokens.weight"].shape != (vocab_size, hidden):
        sys.exit("gguf_to_hf.py: token embedding shape does not match vocabulary and width")

    os.makedirs(args.out_dir, exist_ok=True)
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"), tensors)
    tokenizer.save(os.path.join(args.out_dir, "tokenizer.json"))
    names = {}
    for key, idx in (("bos_token", bos), ("eos_token", eos), ("unk_token", unk), ("pad_token", pad)):
        if idx is not None:
            names[key] = tokens[idx]
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out_dir, "special_tokens_map.json"), "w") as f:
        json.dump(dict(names, additional_special_tokens=special), f, indent=2)
    tokenizer_config = dict(names, add_bos_token=bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
                            add_eos_token=False, model_max_length=config["max_position_embeddings"],
                            tokenizer_class="GPT2Tokenizer", clean_up_tokenization_spaces=False)
    template = field(reader, "tokenizer.chat_template")
    if template:
        tokenizer_config["chat_template"] = template
    with open(os.path.join(args.out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config, f, indent=2)
    print(f"wrote {args.out_dir}: {len(tensors)} tensors, "
          f"{sum(a.size for a in tensors.values())} parameters, vocab {vocab_size}, tied={tied}")


if __name__ == "__main__":
    main()
