#!/usr/bin/env python3
"""Writes tests/fixtures/tiny.pth, the PyTorch checkpoint of the integration test tests/it/pytorch.rs,
with torch itself (torch.save, default settings: zip format, pickle protocol 2, 64-byte aligned
STORED storages).

    target/bench-venv/bin/python benches/make_pth_fixture.py     # needs torch

Every value is a formula of its index (no random numbers), so the test recomputes what each tensor
must hold without torch. The layout exercises what real checkpoints hold: a state dict nested under
"model" next to plain values, an nn.Parameter, F32/F16/BF16/I64/BOOL tensors, a 0-dim tensor, and
a view into another tensor's storage (two tensors sharing one storage entry). The test's formulas
must match the ones below.
"""
import collections
import os
import sys

import torch


def values(n, scale, shift):
    # i * scale + shift, computed in float64 then cast: exactly representable in every dtype used.
    return torch.tensor([i * scale + shift for i in range(n)], dtype=torch.float64)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/tiny.pth"
    base = values(48, 0.25, -6.0).float().reshape(6, 8)
    sd = collections.OrderedDict()
    sd["encoder.weight"] = values(24 * 32, 0.125, -48.0).float().reshape(24, 32)
    sd["encoder.bias"] = values(24, 0.5, -6.0).half()
    sd["decoder.weight"] = values(16 * 24, 0.25, -48.0).bfloat16().reshape(16, 24)
    sd["decoder.scale"] = torch.nn.Parameter(values(16, 0.0625, 1.0).float())
    sd["table"] = base
    sd["table_row2"] = base[2]  # a view: storage offset 16, same storage as "table"
    sd["position_ids"] = torch.arange(10, dtype=torch.int64).reshape(1, 10)
    sd["mask"] = torch.tensor([i % 3 == 0 for i in range(7)])
    sd["temperature"] = torch.tensor(0.75)
    obj = {"model": sd, "epoch": 7, "note": "lowbit fixture", "lr": 1e-3, "history": [1, 2.5, None]}
    torch.save(obj, out)
    print(f"{out}: {os.path.getsize(out)} bytes, torch {torch.__version__}")


if __name__ == "__main__":
    main()
