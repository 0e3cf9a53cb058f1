#!/usr/bin/env python3
"""Test vectors for lowbit's GGUF reader (src/io/gguf.rs), made by the PyPI `gguf` package
(llama.cpp's own Python reader and writer, with numpy ports of ggml's dequantizers).

    python3 benches/make_gguf_vectors.py tests/fixtures/gguf/vectors.gguf

Writes one GGUF file (version 3, written by gguf.GGUFWriter, so the reader is also checked against
llama.cpp's writer) holding, for each ggml type lowbit dequantizes, two tensors:

    <type>           the raw blocks, as the type stores them
    <type>.expected  F32: what `gguf.quants.dequantize` makes of those blocks

The tests (`cargo test --lib io::gguf`) assert that lowbit's f32 values equal the .expected ones
bit for bit. Blocks of the types `gguf.quants` can quantize (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, BF16)
come from quantizing random normal data; the others (Q2_K..Q6_K, IQ4_NL, IQ4_XS) are random bytes
whose f16 scale fields are overwritten with finite values (random bytes there would make NaN and
infinity, whose payloads numpy and Rust need not propagate alike). Q8_K is not in the file: gguf
has no dequantizer for it (the tests check it against ggml's one-line formula instead).

The file also carries a metadata value of every GGUF value type (nested array included) for the
reader's metadata tests. Deterministic (numpy seed 20240607). Needs numpy and gguf.
"""
import sys

import numpy as np
from gguf import GGUFWriter, GGMLQuantizationType as T, GGML_QUANT_SIZES, GGUFValueType as V
from gguf import quants

rng = np.random.default_rng(20240607)

# (type, row-major shape): 2-D shapes check that GGUF's fastest-first dims come back reversed.
QUANTIZED = [(T.Q4_0, (4, 32)), (T.Q4_1, (2, 64)), (T.Q5_0, (4, 32)), (T.Q5_1, (128,)),
             (T.Q8_0, (2, 64)), (T.BF16, (3, 5))]
RAW = {  # type: byte offsets of its f16 scale fields within a block
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
    T.IQ4_NL: [0], T.IQ4_XS: [0],
}
RAW_SHAPES = {T.Q2_K: (256,), T.Q3_K: (256,), T.Q4_K: (2, 256), T.Q5_K: (256,), T.Q6_K: (256,),
              T.IQ4_NL: (2, 64), T.IQ4_XS: (256,)}


def raw_blocks(t, shape):
    block, size = GGML_QUANT_SIZES[t]
    n_blocks = int(np.prod(shape)) // block
    b = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in RAW[t]:
        scale = rng.uniform(0.001, 0.1, size=n_blocks).astype(np.float16)
        b[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return b.reshape(-1)


def main():
    out = sys.argv[1]
    w = GGUFWriter(out, arch="lowbit-test")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo")
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float64("test.f64", 0.1)
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_array("test.array_str", ["a", "bc", ""])
    w.add_key_value("test.nested", [[1, 2], [3]], V.ARRAY)
    for t, shape in QUANTIZED:
        x = rng.standard_normal(shape).astype(np.float32)
        q = quants.quantize(x, t)
        name = t.name.lower()
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=t)
        w.add_tensor(name + ".expected", quants.dequantize(q, t).reshape(shape).astype(np.float32))
    for t, shape in RAW_SHAPES.items():
        block, size = GGML_QUANT_SIZES[t]
        q = raw_blocks(t, shape).reshape(*shape[:-1], shape[-1] // block * size)
        name = t.name.lower()
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=t)
        w.add_tensor(name + ".expected", quants.dequantize(q, t).reshape(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
