#!/usr/bin/env python3
"""The check of lowbit's GGUF reading, end to end, against the PyPI `gguf` package (llama.cpp's own
Python reader, `GGUFReader`, and its numpy dequantizers, `gguf.quants.dequantize`). It prints one
line per tensor, in the file's order:

    name<TAB>ggml type<TAB>lowbit dtype<TAB>row-major shape<TAB>sha256 of the values' bytes

where the values are what lowbit should read: the plain types (F32, F16, BF16, F64, I8..I64) as
stored, every quantized type dequantized to F32 by gguf. With --compare it also reads a safetensors
file (its JSON header parsed here, no safetensors package) and checks that it holds exactly these
tensors, in this order, with the same dtype, shape and bytes:

    lowbit compress X.gguf -o X.lowbit --method lossless
    lowbit decompress X.lowbit -o X.safetensors
    python3 benches/gguf_read_reference.py X.gguf --compare X.safetensors

Prints a summary (tensors, types, parameters, mismatches) on stderr; exits 1 on any mismatch.
(benches/gguf_reference.py is another script: llama.cpp's quantizers as rate-distortion points.)
Needs numpy and gguf.
"""

import collections
import hashlib
import json
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf import quants

PLAIN = {T.F32: ("F32", np.float32), T.F16: ("F16", np.float16), T.BF16: ("BF16", np.uint16),
         T.F64: ("F64", np.float64), T.I8: ("I8", np.int8), T.I16: ("I16", np.int16),
         T.I32: ("I32", np.int32), T.I64: ("I64", np.int64)}


def expected(path):
    """(name, ggml type name, dtype, shape, little-endian bytes) per tensor, in file order."""
    r = GGUFReader(path)
    out = []
    for t in r.tensors:
        shape = [int(d) for d in reversed(t.shape.tolist())]  # GGUF dims are fastest-first
        if t.tensor_type in PLAIN:
            dtype, np_type = PLAIN[t.tensor_type]
            values = np.ascontiguousarray(t.data).view(np.uint8).view(np_type)
        else:
            dtype = "F32"
            values = quants.dequantize(t.data, t.tensor_type).astype(np.float32, copy=False)
        values = np.ascontiguousarray(values).reshape(shape)
        out.append((t.name, t.tensor_type.name, dtype, shape, values.astype(values.dtype.newbyteorder("<")).tobytes()))
    return out


def safetensors_tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return [(k, v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in items]


def main():
    path = sys.argv[1]
    want = expected(path)
    for name, ggml, dtype, shape, b in want:
        print(f"{name}\t{ggml}\t{dtype}\t{shape}\t{hashlib.sha256(b).hexdigest()}")
    types = collections.Counter(w[1] for w in want)
    params = sum(int(np.prod(w[3])) for w in want)
    print(f"{len(want)} tensors, {params} parameters, types {dict(types)}", file=sys.stderr)
    if "--compare" not in sys.argv:
        return
    got = safetensors_tensors(sys.argv[sys.argv.index("--compare") + 1])
    bad = 0
    if [g[0] for g in got] != [w[0] for w in want]:
        print("tensor names or order differ", file=sys.stderr)
        bad += 1
    by_name = {g[0]: g for g in got}
    for name, ggml, dtype, shape, b in want:
        g = by_name.get(name)
        if g is None or g[1] != dtype or list(g[2]) != shape or g[3] != b:
            bad += 1
            print(f"MISMATCH {name} ({ggml}): lowbit {g[1:3] if g else None}, gguf {dtype} {shape}", file=sys.stderr)
    print(f"compared {len(want)} tensors: {len(want) - bad} bit-identical, {bad} mismatches", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
