#!/usr/bin/env python3
"""Relative mean squared error of the 2-D weights of a restored checkpoint.

    python3 relmse.py ORIGINAL.safetensors RESTORED.safetensors

rel. MSE = sum over every 2-D float tensor of sum((restored - original)^2)
           / sum over the same tensors of sum(original^2)
i.e. one figure for the whole model (big tensors weigh more), computed in float64.
1-D tensors and integer tensors are left out: they are what the references keep exact.
Prints one JSON line: {"rel_mse": ..., "tensors": N, "weights": N, "max_tensor_rel_mse": ..., "max_tensor": name}.
Exits non-zero when a 2-D tensor is missing from RESTORED or has another shape.
Needs numpy and safetensors.
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    original = load_file(sys.argv[1])
    restored = load_file(sys.argv[2])
    err_sum = 0.0
    ref_sum = 0.0
    tensors = 0
    weights = 0
    worst_name, worst_rel = None, 0.0
    for name in sorted(original):
        x = original[name]
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
            continue
        if name not in restored:
            sys.exit(f"relmse: {sys.argv[2]} lacks tensor {name}")
        y = restored[name]
        if y.shape != x.shape:
            sys.exit(f"relmse: tensor {name}: shape {y.shape} in restored, {x.shape} in original")
        x64 = x.astype(np.float64)
        e = float(((y.astype(np.float64) - x64) ** 2).sum())
        r = float((x64 ** 2).sum())
        err_sum += e
        ref_sum += r
        tensors += 1
        weights += x.size
        if r > 0 and e / r > worst_rel:
            worst_name, worst_rel = name, e / r
    rel = err_sum / ref_sum if ref_sum > 0 else float("nan")
    print(json.dumps({"rel_mse": rel, "tensors": tensors, "weights": weights,
                      "max_tensor_rel_mse": worst_rel, "max_tensor": worst_name}))


if __name__ == "__main__":
    main()
