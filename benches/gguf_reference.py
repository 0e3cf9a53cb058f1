#!/usr/bin/env python3
"""Reference rate-distortion points: llama.cpp's block quantizers applied to a safetensors checkpoint.

    python3 gguf_reference.py MODEL.safetensors OUT_DIR [--types Q8_0,Q5_1,Q5_0,Q4_1,Q4_0]

For each quantization type, every 2-D float tensor whose rows are a whole number of blocks is
quantized with `gguf.quants.quantize` (the PyPI package of llama.cpp; numpy port of its C
quantizers) and restored with `gguf.quants.dequantize`; every other tensor (1-D: biases and
LayerNorm, integer tensors, and rows that do not split into blocks) is kept as stored. The
restored checkpoint is written to OUT_DIR/<type>.safetensors, in the original dtypes and names,
for relmse.py and minilm_eval.py.

Prints one JSON line per type:
  bits_per_weight_format   bits of one block / weights per block, as llama.cpp stores it (Q4_0: 18 B / 32 = 4.5)
  bits_per_weight_tensors  8 * (bytes of the quantized tensors as stored + bytes of the kept tensors) / all
                           parameters: the whole model's tensor data, GGUF file header not counted
  quantize_seconds, dequantize_seconds  wall time of the numpy port (not llama.cpp's C speed: context only)
Needs numpy, safetensors, gguf.
"""
import argparse
import json
import os
import time

import numpy as np
from gguf import GGMLQuantizationType, GGML_QUANT_SIZES
from gguf import quants
from safetensors.numpy import load_file, save_file

DEFAULT_TYPES = "Q8_0,Q5_1,Q5_0,Q4_1,Q4_0"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("out_dir")
    ap.add_argument("--types", default=DEFAULT_TYPES)
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    weights = load_file(a.model)
    names = sorted(weights)
    parameters = sum(int(weights[n].size) for n in names)
    for type_name in a.types.split(","):
        qtype = GGMLQuantizationType[type_name]
        block_size, block_bytes = GGML_QUANT_SIZES[qtype]
        restored = {}
        stored_bytes = 0
        quantized, kept = 0, 0
        t_quant = t_dequant = 0.0
        for name in names:
            x = weights[name]
            if x.ndim == 2 and np.issubdtype(x.dtype, np.floating) and x.shape[-1] % block_size == 0:
                t0 = time.perf_counter()
                q = quants.quantize(x.astype(np.float32), qtype)
                t1 = time.perf_counter()
                y = quants.dequantize(q, qtype).reshape(x.shape)
                t2 = time.perf_counter()
                t_quant += t1 - t0
                t_dequant += t2 - t1
                expected = x.size // block_size * block_bytes
                if q.nbytes != expected:
                    raise SystemExit(f"{name}: {type_name} gave {q.nbytes} bytes, expected {expected}")
                stored_bytes += q.nbytes
                restored[name] = y.astype(x.dtype)
                quantized += 1
            else:
                stored_bytes += x.nbytes
                restored[name] = x
                kept += 1
        out = os.path.join(a.out_dir, f"{type_name}.safetensors")
        save_file(restored, out)
        print(json.dumps({
            "reference": "gguf", "type": type_name,
            "bits_per_weight_format": block_bytes * 8 / block_size,
            "bits_per_weight_tensors": 8 * stored_bytes / parameters,
            "parameters": parameters, "quantized_tensors": quantized, "kept_tensors": kept,
            "quantize_seconds": t_quant, "dequantize_seconds": t_dequant, "restored": out,
        }), flush=True)


if __name__ == "__main__":
    main()
