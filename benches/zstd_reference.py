#!/usr/bin/env python3
"""General-purpose lossless compressors on a checkpoint file, for context beside zipnn and lowbit.

    python3 zstd_reference.py FILE [--levels 3,19] [--xz] [--repeat 1]

zstd through the `zstandard` package (one thread, whole file in one frame), and with --xz the
standard library's lzma at preset 9 | PRESET_EXTREME (what `xz -9e` does). Prints one JSON line per
setting: ratio (input bytes / compressed bytes), median compress and decompress seconds over --repeat,
and whether the round trip gave the input back. Needs zstandard.
"""
import argparse
import json
import lzma
import os
import statistics
import time

import zstandard


def measure(name, original, compress, decompress, repeat):
    t_c, t_d = [], []
    packed, ok = b"", True
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        packed = compress(original)
        t1 = time.perf_counter()
        restored = decompress(packed)
        t2 = time.perf_counter()
        t_c.append(t1 - t0)
        t_d.append(t2 - t1)
        ok = ok and restored == original
    return {"reference": name, "input_bytes": len(original), "compressed_bytes": len(packed),
            "ratio": len(original) / len(packed), "compress_seconds": statistics.median(t_c),
            "decompress_seconds": statistics.median(t_d), "repeat": len(t_c), "round_trip": ok}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--levels", default="3,19")
    ap.add_argument("--xz", action="store_true")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    with open(a.file, "rb") as f:
        original = f.read()
    base = os.path.basename(a.file)
    for level in [int(x) for x in a.levels.split(",") if x]:
        c = zstandard.ZstdCompressor(level=level)
        d = zstandard.ZstdDecompressor()
        row = measure(f"zstd -{level}", original, c.compress, d.decompress, a.repeat)
        print(json.dumps({**row, "input": base}), flush=True)
    if a.xz:
        preset = 9 | lzma.PRESET_EXTREME
        row = measure("xz -9e", original, lambda b: lzma.compress(b, preset=preset), lzma.decompress, a.repeat)
        print(json.dumps({**row, "input": base}), flush=True)


if __name__ == "__main__":
    main()
