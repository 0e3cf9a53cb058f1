#!/usr/bin/env python3
"""Reference rows from llama.cpp's own quantizer (llama-quantize, llama-imatrix) on a Llama GGUF,
judged by `lowbit eval` like lowbit's files.

    python3 benches/llamacpp_reference.py LLAMACPP_BIN MODEL.gguf HF_DIR LOWBIT TEXT WORK_DIR
        [--types Q4_0,Q5_0,...] [--pure-types Q4_0,IQ4_NL] [--imatrix-tokens 2048]
        [--tokens 4096] [--no-imatrix] [--keep]

    e.g. python3 benches/llamacpp_reference.py target/llama.cpp/build-llama_cpp_python-0.3.36/bin \\
             /tmp/xt-data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/xt-data/smollm2/hf \\
             target/release/lowbit /tmp/xt-data/text/fortunes.txt target/llamacpp-ref

LLAMACPP_BIN  folder with llama-quantize and llama-imatrix (benches/build_llamacpp.sh prints it)
MODEL.gguf    the GGUF the HF folder was made from by benches/gguf_to_hf.py (its metadata and
              tokenizer are copied; its weights, dequantized, are the HF folder's)
HF_DIR        the original: the model folder `lowbit eval` compares against
LOWBIT        the lowbit binary
TEXT          the judged text; `lowbit eval` scores its first --tokens tokens (windows of 256)
WORK_DIR      where the f16 GGUF, the imatrix, every quantized GGUF and every restored folder go

Steps:
 1. WORK_DIR/f16.gguf: MODEL.gguf's metadata (general.file_type set to 1, MOSTLY_F16) and every
    tensor dequantized by the `gguf` package: 2-D tensors stored as F16, 1-D (norms) as F32 holding
    the F16-rounded values, so that every weight equals the HF folder's (checked, tensor by tensor,
    against HF_DIR/model.safetensors before anything else runs).
 2. Calibration text, not the judged text: the last lines of TEXT, taken from the end until they
    hold about --imatrix-tokens tokens by the HF tokenizer (whole lines, written in their order to
    WORK_DIR/calibration.txt); the judged text is the first --tokens tokens, and the script checks
    that the two do not overlap. Then
        llama-imatrix -m f16.gguf -f calibration.txt -o imatrix.gguf -c 256 -b 256 --chunks N -t T
    (N: whole 256-token chunks the calibration text holds).
 3. For each type in --types: `llama-quantize f16.gguf OUT.gguf TYPE` (llama.cpp's default recipe:
    its per-tensor mixture; the K-types and IQ4_XS fall back to 32-blocks on 576-wide rows, as
    llama.cpp does) and, unless --no-imatrix, `llama-quantize --imatrix imatrix.gguf ...`. For each
    type in --pure-types, `llama-quantize --pure` (every 2-D tensor the one type: the rows the
    `gguf` package's port gave, to anchor the two ways against each other).
 4. Every output GGUF is dequantized by the `gguf` package (it decodes every type used here) into an
    HF folder with benches/gguf_to_hf.py's names, rotary layout and F16 storage; config and
    tokenizer files are copied from HF_DIR. Then
        LOWBIT eval HF_DIR RESTORED --text TEXT --tokens 4096 --json --quiet --backend cpu

Prints one JSON line per row: type, imatrix (true/false), pure, file_bytes, parameters,
bpw_file (file bytes * 8 / parameters: the GGUF as written, header and metadata with the
tokenizer included, as lowbit counts its whole file), bpw_tensors (tensor data bytes * 8 /
parameters), tensor_types (count per ggml type), token_embd_type (the token embedding's type: in
SmolLM2 it is also the output layer), perplexity, perplexity_original, mean_kl,
top1_agreement, and the command that made the file. Needs numpy, gguf, tokenizers.
"""
import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gguf_to_hf import hf_name, hf_tensor, tensor_array, unpermute_rotary, write_safetensors  # noqa: E402

DEFAULT_TYPES = "Q8_0,Q6_K,Q5_K_M,Q5_0,Q4_K_M,IQ4_NL,IQ4_XS,Q4_0,Q3_K_M,Q2_K"
DEFAULT_PURE = "Q4_0,IQ4_NL"
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "generation_config.json")


def log(*a):
    print("llamacpp_reference:", *a, file=sys.stderr, flush=True)


def run(cmd, log_path):
    log(" ".join(cmd))
    with open(log_path, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.exit(f"llamacpp_reference.py: {cmd[0]} failed ({r.returncode}); see {log_path}")


def read_safetensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        base = 8 + n
    dtypes = {"F16": "<f2", "F32": "<f4", "BF16": None}
    data = np.memmap(path, dtype=np.uint8, mode="r")
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        raw = data[base + a: base + b]
        if h["dtype"] == "BF16":
            arr = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.view(dtypes[h["dtype"]])
        out[name] = arr.reshape(h["shape"])
    return out


def field_value(f):
    return f.contents()


def write_f16_gguf(src, dst, hf_weights):
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dst + ".part", arch)
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_heads = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    for key, f in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        if key == "general.file_type":
            writer.add_key_value(key, 1, GGUFValueType.UINT32)   # LLAMA_FTYPE_MOSTLY_F16
            continue
        vtype = f.types[0]
        sub = f.types[1] if vtype == GGUFValueType.ARRAY and len(f.types) > 1 else None
        writer.add_key_value(key, field_value(f), vtype, sub)
    worst = 0.0
    for t in reader.tensors:
        a = tensor_array(t)                               # float32, numpy orientation, GGUF row order
        if a.ndim >= 2:
            stored = a.astype(np.float16)
        else:
            stored = a.astype(np.float16).astype(np.float32)
        # the same weight, as the HF folder holds it
        name = hf_name(t.name)
        check = stored.astype(np.float32)
        if ".self_attn.q_proj." in name:
            check = unpermute_rotary(check, heads)
        elif ".self_attn.k_proj." in name:
            check = unpermute_rotary(check, kv_heads)
        ref = np.asarray(hf_weights[name], dtype=np.float32)
        if ref.shape != check.shape:
            sys.exit(f"llamacpp_reference.py: {t.name}: shape {check.shape} but the HF folder has {ref.shape}")
        worst = max(worst, float(np.max(np.abs(ref - check))))
        writer.add_tensor(t.name, stored)
    if worst != 0.0:
        sys.exit(f"llamacpp_reference.py: the f16 GGUF differs from the HF folder (max |diff| {worst})")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(dst + ".part", dst)
    log(f"{dst}: {len(reader.tensors)} tensors, every weight equal to the HF folder's")


def restore(gguf_path, hf_dir, out_dir):
    """Dequantize every tensor of gguf_path into out_dir/model.safetensors (F16, HF names)."""
    reader = GGUFReader(gguf_path)
    arch = reader.fields["general.architecture"].contents()
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_heads = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    tensors, types, data_bytes, params = {}, collections.Counter(), 0, 0
    embedding_type = None
    for t in reader.tensors:
        name, a = hf_tensor(t, heads, kv_heads)
        tensors[name] = a
        types[t.tensor_type.name] += 1
        if t.name == "token_embd.weight":
            embedding_type = t.tensor_type.name
        data_bytes += int(t.n_bytes)
        params += int(t.n_elements)
    os.makedirs(out_dir, exist_ok=True)
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    for f in MODEL_FILES:
        if os.path.exists(os.path.join(hf_dir, f)):
            shutil.copy(os.path.join(hf_dir, f), os.path.join(out_dir, f))
    return dict(sorted(types.items())), embedding_type, data_bytes, params


def calibration_text(text_path, hf_dir, judged_tokens, want_tokens, out_path):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(hf_dir, "tokenizer.json"))
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines(keepends=True)
    picked, count = [], 0
    for line in reversed(lines):
        if count >= want_tokens:
            break
        picked.append(line)
        count += len(tok.encode(line).ids)
    picked.reverse()
    calib = "".join(picked)
    start = len(text) - len(calib)
    if text[start:] != calib:
        sys.exit("llamacpp_reference.py: the calibration lines are not the text's tail")
    # the judged part: the characters of the first judged_tokens tokens (the evaluator tokenizes the
    # whole text and keeps the first tokens)
    enc = tok.encode(text)
    if len(enc.ids) <= judged_tokens:
        sys.exit("llamacpp_reference.py: the text is too short for a disjoint calibration part")
    judged_end = enc.offsets[judged_tokens - 1][1]
    if judged_end > start:
        sys.exit("llamacpp_reference.py: calibration text overlaps the judged text")
    with open(out_path, "w", encoding="utf-8") as f:
        f.write(calib)
    n_tokens = len(tok.encode(calib).ids)
    log(f"calibration: the last {len(picked)} lines, characters {start}..{len(text)} of {len(text)}, "
        f"{n_tokens} tokens; the judged text ends at character {judged_end}")
    return {"lines": len(picked), "tokens": n_tokens, "first_char": start, "chars": len(calib),
            "judged_end_char": judged_end}


def evaluate(lowbit, hf_dir, restored, text, tokens, log_path):
    cmd = [lowbit, "eval", hf_dir, restored, "--text", text, "--tokens", str(tokens), "--json", "--quiet",
           "--backend", "cpu"]
    log(" ".join(cmd))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    with open(log_path, "w") as f:
        f.write(r.stdout + r.stderr)
    if r.returncode != 0:
        sys.exit(f"llamacpp_reference.py: lowbit eval failed; see {log_path}")
    return json.loads(r.stdout), time.perf_counter() - t0


def pick(result, *keys):
    """The first of keys found in the eval JSON (searched one level deep too)."""
    for k in keys:
        if k in result:
            return result[k]
    for v in result.values():
        if isinstance(v, dict):
            for k in keys:
                if k in v:
                    return v[k]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("llamacpp_bin")
    ap.add_argument("gguf")
    ap.add_argument("hf_dir")
    ap.add_argument("lowbit")
    ap.add_argument("text")
    ap.add_argument("work_dir")
    ap.add_argument("--types", default=DEFAULT_TYPES)
    ap.add_argument("--pure-types", default=DEFAULT_PURE)
    ap.add_argument("--imatrix-tokens", type=int, default=2048)
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-imatrix", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the restored folders (default: removed once judged)")
    a = ap.parse_args()
    os.makedirs(a.work_dir, exist_ok=True)
    quantize = os.path.join(a.llamacpp_bin, "llama-quantize")
    imatrix_tool = os.path.join(a.llamacpp_bin, "llama-imatrix")

    f16 = os.path.join(a.work_dir, "f16.gguf")
    if not os.path.exists(f16):
        write_f16_gguf(a.gguf, f16, read_safetensors(os.path.join(a.hf_dir, "model.safetensors")))

    imatrix = None
    calib_info = None
    if not a.no_imatrix:
        calib = os.path.join(a.work_dir, "calibration.txt")
        calib_info = calibration_text(a.text, a.hf_dir, a.tokens, a.imatrix_tokens, calib)
        imatrix = os.path.join(a.work_dir, "imatrix.gguf")
        chunks = calib_info["tokens"] // 256
        imatrix_cmd = [imatrix_tool, "-m", f16, "-f", calib, "-o", imatrix, "-c", "256", "-b", "256",
                       "--chunks", str(chunks), "-t", str(a.threads)]
        if not os.path.exists(imatrix):
            run(imatrix_cmd, os.path.join(a.work_dir, "imatrix.log"))
        print(json.dumps({"imatrix": os.path.basename(imatrix), "command": " ".join(imatrix_cmd),
                          "calibration": calib_info}), flush=True)

    jobs = []
    for t in [x for x in a.pure_types.split(",") if x]:
        jobs.append((t, True, False))
    for t in [x for x in a.types.split(",") if x]:
        jobs.append((t, False, False))
        if imatrix:
            jobs.append((t, False, True))
    for type_name, pure, use_imatrix in jobs:
        tag = type_name + ("-pure" if pure else "") + ("-imatrix" if use_imatrix else "")
        out = os.path.join(a.work_dir, f"{tag}.gguf")
        cmd = [quantize]
        if pure:
            cmd.append("--pure")
        if use_imatrix:
            cmd += ["--imatrix", imatrix]
        cmd += [f16, out, type_name, str(a.threads)]
        if not os.path.exists(out):
            run(cmd, os.path.join(a.work_dir, f"{tag}.quantize.log"))
        restored = os.path.join(a.work_dir, tag)
        types, embedding_type, data_bytes, params = restore(out, a.hf_dir, restored)
        result, seconds = evaluate(a.lowbit, a.hf_dir, restored, a.text, a.tokens,
                                   os.path.join(a.work_dir, f"{tag}.eval.json"))
        if not a.keep:
            shutil.rmtree(restored)
        file_bytes = os.path.getsize(out)
        print(json.dumps({
            "reference": "llama.cpp", "type": type_name, "pure": pure, "imatrix": use_imatrix,
            "file_bytes": file_bytes, "tensor_bytes": data_bytes, "parameters": params,
            "bpw_file": 8 * file_bytes / params, "bpw_tensors": 8 * data_bytes / params,
            "tensor_types": types, "token_embd_type": embedding_type,
            "perplexity": pick(result, "perplexity_compressed"),
            "perplexity_original": pick(result, "perplexity_original"),
            "mean_kl": pick(result, "kl_mean"),
            "top1_agreement": pick(result, "top1_agreement"),
            "eval_seconds": round(seconds, 1),
            "command": " ".join(os.path.basename(c) if c in (quantize, f16, out, imatrix) else c for c in cmd),
            "eval": result,
        }), flush=True)


if __name__ == "__main__":
    main()
