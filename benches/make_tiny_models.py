#!/usr/bin/env python3
"""Write the tiny synthetic models in tests/fixtures/models/ and their reference outputs.

    python3 benches/make_tiny_models.py [OUT_DIR]      (default: tests/fixtures/models)

Three folders, each a complete Hugging Face-style model (model.safetensors in F32, config.json,
tokenizer.json) with seeded random weights, plus what the runtime's tests compare against:

    tiny-bert/         BertModel: hidden 36, 3 heads (head_dim 12), intermediate 52, 2 layers,
                       64 positions, 2 token types, WordPiece vocabulary built here
    tiny-llama/        LlamaForCausalLM: hidden 48, 6 heads / 2 key-value heads (head_dim 8),
                       intermediate 76, 2 layers, untied lm_head, q/k/v biases (the Qwen2 path)
    tiny-llama-tied/   the same shapes, lm_head tied to embed_tokens, no biases
    (both decoders share one byte-level BPE tokenizer trained here on the built-in text)

and in each folder perturbed.safetensors (every float tensor plus seeded noise of 3% of its own
standard deviation, stored as F16), reference.json (computed by model_reference.py in float64) and
the inputs used: sentences.txt (tiny-bert) or text.txt (decoders). README.md in OUT_DIR describes the
files and the JSON fields.

Everything is seeded, so running it again rewrites the same files for the same versions of numpy
and tokenizers (the BPE merges come from the tokenizers package's trainer).
Needs numpy, scipy, tokenizers.
"""
import argparse
import json
import os
import sys

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model_reference as ref  # noqa: E402

SEED = 1234
NOISE = 0.03          # perturbation: this fraction of each tensor's standard deviation
GREEDY_TOKENS = 12
EVAL_TOKENS, EVAL_CTX = 100, 16

# The decoders' evaluation text (also their BPE training text, with BERT_SENTENCES).
TEXT = """\
A small model reads a short text and guesses the next word, one token at a time. The guesses are
poor, because its weights are random numbers, yet every run gives the same numbers, so a test can
check them to many digits. When the weights are squeezed into fewer bits and restored, the guesses
change a little; the perplexity, the KL divergence and the share of equal first choices say how much.
"""

BERT_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! Is it raining in the city today?",
    "My new password is \u03c9mega42; please do not share it.",
    "Yes.",
    "Small models are useful for testing because they run quickly and their numbers can be "
    "checked by hand, even when the sentences are long and full of different words.",
    "She was reading quietly while the others played outside.",
]

DECODER_PROMPTS = [
    "The model reads the text.",
    "<|im_start|>user\n42 \u00e9!<|im_end|>",   # special tokens, digits, a 2-byte character
]

BERT_WORDS = """the a an and or but not of to in on at by for with from as is are was were be been
it its this that these those he she they we you i my your his her their our me him them us do does
did have has had will would can could should may might must one two three new old good bad small big
long short quick slow brown lazy dog fox cat over under jump run read write word words text model
models number numbers test testing hello world city day today rain weather yes no please share
password sentence different full even when while others outside play hand useful because they
quiet quick time people make made know think see look come go get give take""".split()

WORD_PIECES = ["##es", "##ed", "##ing", "##er", "##ers", "##ly", "##est", "##ness", "##tion",
               "##al", "##ful", "##ies", "##ment", "##able", "##ive", "##en"]


# --------------------------------------------------------------------------------------------------
# Tokenizers

def bert_tokenizer():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punctuation = list(".,!?;:'\"-()/")
    digits = list("0123456789")
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab_list = (specials + punctuation + digits + letters + ["##" + c for c in letters + digits]
                  + WORD_PIECES + sorted(set(BERT_WORDS) - set(letters)))
    assert len(vocab_list) == len(set(vocab_list))
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                                     max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return tok


def bpe_tokenizer(merges_wanted=110):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + len(alphabet) + merges_wanted,
                                  min_frequency=2, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(TEXT.splitlines() + BERT_SENTENCES, trainer)
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == i, s
    return tok


# --------------------------------------------------------------------------------------------------
# Weights

def normal(rng, shape, std):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def bert_weights(rng, cfg):
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    w = {
        "embeddings.word_embeddings.weight": normal(rng, (v, h), 0.5),
        "embeddings.position_embeddings.weight": normal(rng, (cfg["max_position_embeddings"], h), 0.5),
        "embeddings.token_type_embeddings.weight": normal(rng, (cfg["type_vocab_size"], h), 0.5),
        "embeddings.LayerNorm.weight": 1 + normal(rng, (h,), 0.1),
        "embeddings.LayerNorm.bias": normal(rng, (h,), 0.1),
        # Unused by the forward pass but present in real BERT checkpoints (MiniLM has both).
        "embeddings.position_ids": np.arange(cfg["max_position_embeddings"], dtype=np.int64)[None],
        "pooler.dense.weight": normal(rng, (h, h), h ** -0.5),
        "pooler.dense.bias": normal(rng, (h,), 0.05),
    }

    def linear(name, n_out, n_in):
        w[name + ".weight"] = normal(rng, (n_out, n_in), n_in ** -0.5)
        w[name + ".bias"] = normal(rng, (n_out,), 0.05)

    def norm(name):
        w[name + ".weight"] = 1 + normal(rng, (h,), 0.1)
        w[name + ".bias"] = normal(rng, (h,), 0.1)

    for layer in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        # Larger query/key weights make the attention pattern far from uniform.
        for part in ("query", "key"):
            linear(p + "attention.self." + part, h, h)
            w[p + f"attention.self.{part}.weight"] *= 2.0
        linear(p + "attention.self.value", h, h)
        linear(p + "attention.output.dense", h, h)
        norm(p + "attention.output.LayerNorm")
        linear(p + "intermediate.dense", i, h)
        linear(p + "output.dense", h, i)
        norm(p + "output.LayerNorm")
    return w


def llama_weights(rng, cfg, biases, tied):
    h, i, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    heads, kv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    # A tied table is also the output layer: scale it like one, so the logits stay O(1).
    w = {"model.embed_tokens.weight": normal(rng, (v, h), 2.0 * h ** -0.5 if tied else 1.0)}
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        w[p + "input_layernorm.weight"] = 1 + normal(rng, (h,), 0.1)
        w[p + "self_attn.q_proj.weight"] = normal(rng, (heads * d, h), 2.0 * h ** -0.5)
        w[p + "self_attn.k_proj.weight"] = normal(rng, (kv * d, h), 2.0 * h ** -0.5)
        w[p + "self_attn.v_proj.weight"] = normal(rng, (kv * d, h), h ** -0.5)
        if biases:
            w[p + "self_attn.q_proj.bias"] = normal(rng, (heads * d,), 0.2)
            w[p + "self_attn.k_proj.bias"] = normal(rng, (kv * d,), 0.2)
            w[p + "self_attn.v_proj.bias"] = normal(rng, (kv * d,), 0.2)
        w[p + "self_attn.o_proj.weight"] = normal(rng, (h, heads * d), (heads * d) ** -0.5)
        w[p + "post_attention_layernorm.weight"] = 1 + normal(rng, (h,), 0.1)
        w[p + "mlp.gate_proj.weight"] = normal(rng, (i, h), h ** -0.5)
        w[p + "mlp.up_proj.weight"] = normal(rng, (i, h), h ** -0.5)
        w[p + "mlp.down_proj.weight"] = normal(rng, (h, i), i ** -0.5)
    w["model.norm.weight"] = 1 + normal(rng, (h,), 0.1)
    if not tied:
        w["lm_head.weight"] = normal(rng, (v, h), 2.0 * h ** -0.5)
    return w


def perturbed(rng, weights):
    """Every float tensor plus N(0, (NOISE * its std)^2) noise, as F16; integer tensors as they are."""
    out = {}
    for name in sorted(weights):
        t = weights[name]
        if t.dtype.kind == "f":
            noisy = t.astype(np.float64) + rng.standard_normal(t.shape) * NOISE * t.std()
            out[name] = noisy.astype(np.float16)
        else:
            out[name] = t
    return out


# --------------------------------------------------------------------------------------------------
# Files

_ST_DTYPES = {"float32": "F32", "float16": "F16", "float64": "F64", "int64": "I64", "int32": "I32"}


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name in sorted(tensors):
        t = np.ascontiguousarray(tensors[name])
        blob = t.astype(t.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _ST_DTYPES[t.dtype.name], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def write_json(path, obj, indent=None):
    with open(path, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")


def check_margin(logits, what):
    """Smallest gap between the largest and second-largest logit of each row: the runtime's float32
    must not flip an argmax that the fixture records."""
    top2 = np.sort(logits, axis=-1)[..., -2:]
    margin = float((top2[..., 1] - top2[..., 0]).min())
    if margin < 1e-3:
        sys.exit(f"make_tiny_models.py: {what}: top-2 logit gap {margin:.2e} is too small; change SEED")
    return margin


# --------------------------------------------------------------------------------------------------
# The models

def make_bert(out, rng):
    folder = os.path.join(out, "tiny-bert")
    os.makedirs(folder, exist_ok=True)
    tok = bert_tokenizer()
    cfg = {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 36,
        "initializer_range": 0.02,
        "intermediate_size": 52,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 64,
        "model_type": "bert",
        "num_attention_heads": 3,
        "num_hidden_layers": 2,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": tok.get_vocab_size(),
    }
    weights = bert_weights(rng, cfg)
    noisy = perturbed(rng, weights)
    tok.save(os.path.join(folder, "tokenizer.json"))
    write_json(os.path.join(folder, "config.json"), cfg, indent=2)
    write_safetensors(os.path.join(folder, "model.safetensors"), weights)
    write_safetensors(os.path.join(folder, "perturbed.safetensors"), noisy)
    with open(os.path.join(folder, "sentences.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(BERT_SENTENCES) + "\n")

    # Reference outputs, through model_reference.py's own loading path.
    tok = ref.load_tokenizer(folder)
    sentences = ref.read_sentences(os.path.join(folder, "sentences.txt"))
    ids = ref.bert_ids(tok, sentences, cfg["max_position_embeddings"])
    stored = ref.read_safetensors(os.path.join(folder, "model.safetensors"))
    emb = ref.BertEncoder(cfg, stored).embed(ids)
    unk = tok.token_to_id("[UNK]")
    assert any(unk in row for row in ids), "no sentence has an unknown word"
    scores = ref.eval_encoder(cfg, stored, ref.restored_weights(
        stored, os.path.join(folder, "perturbed.safetensors")), ids)
    write_json(os.path.join(folder, "reference.json"), {
        "model": "tiny-bert",
        "sentences": sentences,
        "ids": ids,
        "embeddings": emb.tolist(),
        "eval_encoder": dict(restored="perturbed.safetensors", sentences_file="sentences.txt",
                             **scores),
    })
    print(f"tiny-bert: vocab {cfg['vocab_size']}, lengths {[len(r) for r in ids]}, "
          f"eval {scores}", file=sys.stderr)
    return tok


def make_llama(out, rng, name, biases, tied, tokenizer):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 48,
        "intermediate_size": 76,
        "num_hidden_layers": 2,
        "num_attention_heads": 6,
        "num_key_value_heads": 2,
        "head_dim": 8,
        "hidden_act": "silu",
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "attention_bias": biases,
        "mlp_bias": False,
        "tie_word_embeddings": tied,
        "vocab_size": tokenizer.get_vocab_size(),
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "torch_dtype": "float32",
    }
    weights = llama_weights(rng, cfg, biases, tied)
    noisy = perturbed(rng, weights)
    tokenizer.save(os.path.join(folder, "tokenizer.json"))
    write_json(os.path.join(folder, "config.json"), cfg, indent=2)
    write_safetensors(os.path.join(folder, "model.safetensors"), weights)
    write_safetensors(os.path.join(folder, "perturbed.safetensors"), noisy)
    with open(os.path.join(folder, "text.txt"), "w", encoding="utf-8") as f:
        f.write(TEXT)

    tok = ref.load_tokenizer(folder)
    stored = ref.read_safetensors(os.path.join(folder, "model.safetensors"))
    model = ref.LlamaDecoder(cfg, stored)
    prompts = []
    for text in DECODER_PROMPTS:
        ids = tok.encode(text).ids
        logits = model.logits(ids)
        generated = model.greedy(ids, GREEDY_TOKENS)
        margin = min(check_margin(model.logits(ids + generated[:k])[-1], f"{name} greedy step {k}")
                     for k in range(GREEDY_TOKENS))
        prompts.append({"text": text, "ids": ids, "logits": logits.tolist(),
                        "generated_ids": generated, "generated_text": tok.decode(generated),
                        "_margin": margin, "_top": logits.argmax(-1).tolist()})
    text_ids = ref.text_ids(tok, os.path.join(folder, "text.txt"))
    windows = ref.decoder_windows(text_ids, EVAL_TOKENS, EVAL_CTX)
    restored = ref.restored_weights(stored, os.path.join(folder, "perturbed.safetensors"))
    scores = ref.eval_decoder(cfg, stored, restored, windows)
    # The top-1 agreement must not hinge on a near tie either.
    rest_model = ref.LlamaDecoder(cfg, restored)
    for w in windows:
        check_margin(model.logits(w)[:-1], f"{name} eval original")
        check_margin(rest_model.logits(w)[:-1], f"{name} eval restored")
    all_top = [t for p in prompts for t in p.pop("_top")]
    margins = [p.pop("_margin") for p in prompts]
    write_json(os.path.join(folder, "reference.json"), {
        "model": name,
        "prompts": prompts,
        "max_tokens": GREEDY_TOKENS,
        "text_ids": text_ids,
        "eval_decoder": dict(restored="perturbed.safetensors", text_file="text.txt",
                             tokens_arg=EVAL_TOKENS, ctx=EVAL_CTX, **scores),
    })
    print(f"{name}: vocab {cfg['vocab_size']}, prompt lengths {[len(p['ids']) for p in prompts]}, "
          f"distinct argmax over prompt positions {len(set(all_top))}/{len(all_top)}, greedy "
          f"{[p['generated_ids'] for p in prompts]}, min greedy margin {min(margins):.3g}, "
          f"text tokens {len(text_ids)}, eval {scores}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("out_dir", nargs="?",
                        default=os.path.join(here, "..", "tests", "fixtures", "models"))
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    make_bert(args.out_dir, rng)
    bpe = bpe_tokenizer()
    make_llama(args.out_dir, rng, "tiny-llama", biases=True, tied=False, tokenizer=bpe)
    make_llama(args.out_dir, rng, "tiny-llama-tied", biases=False, tied=True, tokenizer=bpe)


if __name__ == "__main__":
    main()
