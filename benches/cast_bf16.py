#!/usr/bin/env python3
"""Writes a bf16 copy of a safetensors checkpoint: every F32 tensor rounded to bfloat16 (round to
nearest even, as torch's .to(torch.bfloat16) does), other tensors copied as they are.

    python3 cast_bf16.py IN.safetensors OUT.safetensors

The lossless benchmark compresses this file with lowbit and with zipnn, so that both see the same
bf16 bytes. Written by hand (8-byte header length, JSON header, raw little-endian data) because
numpy has no bfloat16 dtype. Needs numpy and safetensors.
"""
import json
import struct
import sys

import numpy as np
from safetensors import safe_open


def to_bf16_bits(x):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even (NaN kept quiet)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    out = ((bits + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    out[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    header, blobs, offset = {}, [], 0
    with safe_open(sys.argv[1], framework="numpy") as f:
        metadata = f.metadata()
        for name in sorted(f.keys()):
            x = f.get_tensor(name)
            if x.dtype == np.float32:
                data, dtype = to_bf16_bits(x).tobytes(), "BF16"
            else:
                data, dtype = np.ascontiguousarray(x).tobytes(), {np.dtype(np.int64): "I64", np.dtype(np.int32): "I32",
                                                                   np.dtype(np.float16): "F16", np.dtype(np.float64): "F64"}[x.dtype]
            header[name] = {"dtype": dtype, "shape": list(x.shape), "data_offsets": [offset, offset + len(data)]}
            blobs.append(data)
            offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors writers do
    with open(sys.argv[2], "wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for b in blobs:
            out.write(b)


if __name__ == "__main__":
    main()
