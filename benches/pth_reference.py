#!/usr/bin/env python3
"""An independent reader of PyTorch checkpoints (torch.save zip format), without torch: `zipfile`
for the archive, `pickle.Unpickler` with a restricted `find_class` and `persistent_load` for
data.pkl, numpy for the values (as_strided over the storage, so offsets and strides are applied by
numpy, not by lowbit's arithmetic). It prints one line per tensor, in the checkpoint's order:

    name<TAB>dtype<TAB>shape<TAB>bytes<TAB>sha256 of the tensor's little-endian C-order bytes

With --compare, it also reads a safetensors file (its JSON header parsed here, no safetensors
package) and checks that it holds exactly these tensors, in this order, with the same dtype, shape
and bytes: the check of lowbit's reading end to end,

    lowbit compress X.pth -o X.lowbit --method lossless
    lowbit decompress X.lowbit -o X.safetensors
    python3 benches/pth_reference.py X.pth --compare X.safetensors

Usage: python3 benches/pth_reference.py X.pth [--compare Y.safetensors]
"""

import collections
import hashlib
import io
import pickle
import sys
import zipfile

import numpy as np

# lowbit's dtype names (safetensors spelling) and numpy types, per storage class / torch dtype.
STORAGES = {
    "FloatStorage": ("F32", np.float32),
    "HalfStorage": ("F16", np.float16),
    "BFloat16Storage": ("BF16", np.uint16),  # numpy has no bfloat16: carried as its bits
    "DoubleStorage": ("F64", np.float64),
    "IntStorage": ("I32", np.int32),
    "LongStorage": ("I64", np.int64),
    "ShortStorage": ("I16", np.int16),
    "CharStorage": ("I8", np.int8),
    "ByteStorage": ("U8", np.uint8),
    "BoolStorage": ("BOOL", np.bool_),
}
DTYPES = {
    "float8_e4m3fn": ("F8_E4M3", np.uint8),
    "float8_e5m2": ("F8_E5M2", np.uint8),
    "uint16": ("U16", np.uint16),
    "uint32": ("U32", np.uint32),
    "uint64": ("U64", np.uint64),
}


class StorageType:
    def __init__(self, name):
        self.name = name


class DType:
    def __init__(self, name):
        self.name = name


class Storage:
    def __init__(self, array):
        self.array = array  # 1-D numpy array over the storage's bytes


class Tensor:
    def __init__(self, dtype_name, array):
        self.dtype_name = dtype_name
        self.array = array


def rebuild(storage, offset, size, stride, *rest, dtype=None):
    if dtype is None:
        name, _ = storage.typed
        flat = storage.array
    else:
        name, np_type = DTYPES[dtype.name]
        flat = storage.array.view(np_type)
    item = flat.dtype.itemsize
    assert offset <= flat.size
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
    )
    # np.array, not np.ascontiguousarray: that one turns a 0-dim tensor into shape (1,).
    return Tensor(name, np.array(view, order="C", copy=True))


def rebuild_v3(storage, offset, size, stride, requires_grad, hooks, dtype, metadata=None):
    return rebuild(storage, offset, size, stride, dtype=dtype)


def rebuild_parameter(data, requires_grad, hooks, state=None):
    return data


ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): rebuild,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild,
    ("torch._utils", "_rebuild_tensor_v3"): rebuild_v3,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): rebuild_parameter,
    ("torch", "device"): lambda *a: str(a),
    ("torch", "Size"): tuple,
}


class Restricted(pickle.Unpickler):
    def __init__(self, data, archive, zf):
        super().__init__(io.BytesIO(data))
        self.archive, self.zf = archive, zf

    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        if module == "torch" and name in STORAGES or (module, name) == ("torch.storage", "UntypedStorage"):
            return StorageType(name)
        if module == "torch" and name in DTYPES:
            return DType(name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")

    def persistent_load(self, pid):
        tag, storage_type, key, _location, numel = pid
        assert tag == "storage"
        raw = self.zf.read(f"{self.archive}/data/{key}")
        if storage_type.name == "UntypedStorage":
            s = Storage(np.frombuffer(raw, np.uint8))
            s.typed = ("U8", np.uint8)
        else:
            name, np_type = STORAGES[storage_type.name]
            s = Storage(np.frombuffer(raw, np_type))
            s.typed = (name, np_type)
        assert s.array.size == numel, (key, s.array.size, numel)
        return s


def tensors(obj, prefix=""):
    join = (lambda k: f"{prefix}.{k}") if prefix else str
    if isinstance(obj, Tensor):
        yield (prefix or "tensor"), obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, (str, int)) and not isinstance(k, bool):
                yield from tensors(v, join(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, join(i))


def read_safetensors(path):
    import json
    import struct

    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    start = 8 + n
    entries = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return [
        (name, e["dtype"], tuple(e["shape"]), data[start + e["data_offsets"][0] : start + e["data_offsets"][1]])
        for name, e in entries
    ]


def main():
    path = sys.argv[1]
    compare = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--compare" else None
    zf = zipfile.ZipFile(path)
    (pkl,) = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    archive = pkl[: -len("/data.pkl")]
    byteorder = f"{archive}/byteorder"
    if byteorder in zf.namelist():
        assert zf.read(byteorder) == b"little"
    obj = Restricted(zf.read(pkl), archive, zf).load()
    count = total = 0
    ours = []
    for name, t in tensors(obj):
        data = t.array.astype(t.array.dtype.newbyteorder("<"), copy=False).tobytes()
        shape = ",".join(str(d) for d in t.array.shape)
        print(f"{name}\t{t.dtype_name}\t[{shape}]\t{len(data)}\t{hashlib.sha256(data).hexdigest()}")
        ours.append((name, t.dtype_name, tuple(t.array.shape), data))
        count += 1
        total += len(data)
    print(f"# {count} tensors, {total} bytes", file=sys.stderr)
    if compare:
        theirs = read_safetensors(compare)
        bad = [a[0] for a, b in zip(ours, theirs) if a != b]
        if len(ours) != len(theirs) or bad:
            print(f"# MISMATCH: {len(ours)} vs {len(theirs)} tensors; differing: {bad[:10]}", file=sys.stderr)
            sys.exit(1)
        print(f"# {compare}: all {count} tensors bit-exact (names, order, dtypes, shapes, bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
