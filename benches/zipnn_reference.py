#!/usr/bin/env python3
"""Lossless reference: zipnn (byte grouping + Huffman, the state of the art for float checkpoints).

    python3 zipnn_reference.py FILE.safetensors --dtype float32|bfloat16 [--repeat 3]

Compresses the whole file (header included) as one byte buffer, the way zipnn compresses a
checkpoint file: ZipNN(input_format="byte", bytearray_dtype=DTYPE) with its default threads
(all logical CPUs, at most 16). zipnn's compress() overwrites the buffer it is given, so every
repetition compresses a fresh copy; the copy is made outside the timed region.
Prints one JSON line: ratio (input bytes / compressed bytes), median compress and decompress
seconds over --repeat runs, and whether the round trip gave the input back byte for byte.
Needs zipnn (which imports torch).
"""
import argparse
import json
import os
import statistics
import time

from zipnn import ZipNN


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--dtype", required=True, choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with open(a.file, "rb") as f:
        original = f.read()
    codec = ZipNN(input_format="byte", bytearray_dtype=a.dtype)
    t_compress, t_decompress = [], []
    compressed = b""
    round_trip = True
    for _ in range(max(1, a.repeat)):
        buffer = bytearray(original)  # compress() scribbles on its input
        t0 = time.perf_counter()
        compressed = codec.compress(buffer)
        t1 = time.perf_counter()
        restored = codec.decompress(compressed)
        t2 = time.perf_counter()
        t_compress.append(t1 - t0)
        t_decompress.append(t2 - t1)
        round_trip = round_trip and bytes(restored) == original
    print(json.dumps({
        "reference": "zipnn", "input": os.path.basename(a.file), "dtype": a.dtype,
        "input_bytes": len(original), "compressed_bytes": len(compressed),
        "ratio": len(original) / len(compressed),
        "compress_seconds": statistics.median(t_compress),
        "decompress_seconds": statistics.median(t_decompress),
        "repeat": len(t_compress), "threads": codec.threads, "round_trip": round_trip,
    }))


if __name__ == "__main__":
    main()
