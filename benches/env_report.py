#!/usr/bin/env python3
"""One JSON line describing the Python side of a benchmark run: the interpreter, the versions of the
reference packages, the BLAS numpy calls (threadpoolctl) and OPENBLAS_CORETYPE, so that a table of
timings says which kernels the references ran on. Missing packages are reported as null."""
import json
import os
import platform
from importlib import metadata

PACKAGES = ["numpy", "scipy", "tokenizers", "safetensors", "gguf", "zipnn", "scikit-learn",
            "faiss-cpu", "zstandard", "torch", "threadpoolctl"]


def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def blas():
    try:
        import numpy  # noqa: F401  (threadpoolctl only sees libraries already loaded)
        from threadpoolctl import threadpool_info
        return [{k: i.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                for i in threadpool_info()]
    except Exception as e:  # the report must not fail the run
        return str(e)


print(json.dumps({
    "python": platform.python_version(),
    "packages": {p: version(p) for p in PACKAGES},
    "blas": blas(),
    "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
}))
