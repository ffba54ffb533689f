#!/usr/bin/env python3
"""Writes apr-engine/tests/fixtures/quant/<DTYPE>.json with gguf-py's answers.

Each fixture holds a few raw blocks and the float32 values gguf-py's
`gguf.quants.dequantize` gives for them (as little-endian hex, so NaN payloads
and signed zeros survive). For the dtypes gguf-py can quantize it also holds
an input vector and gguf-py's `gguf.quants.quantize` bytes for it.

Blocks are random but valid: random quant bytes with finite f16 scales
(including a subnormal and a negative one). For the dtypes gguf-py does not
dequantize (Q8_1, Q8_K, the integer types and F64), the expected values come
from numpy with llama.cpp's formula, and the fixture says so in "expected_by".

Usage: scripts/gen_quant_fixtures.py [OUT_DIR]   (deterministic: fixed seed)
"""

import json
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

# Byte offsets of the f16 scale fields in each block (llama.cpp's block structs).
F16_SCALE_OFFSETS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0], T.Q8_1: [0, 2],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
# gguf-py 0.19 still lists Q8_1 at 40 bytes (an old layout with f32 d and s);
# ggml's block_q8_1 is f16 d, f16 s, 32 int8 = 36 bytes, as apr's dtype table says.
BLOCK_SIZES = dict(GGML_QUANT_SIZES)
BLOCK_SIZES[T.Q8_1] = (32, 36)
QUANTIZED_BY_GGUF_PY = [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
RANDOM_BLOCKS = 6
PLAIN_ELEMENTS = 64


def scale_values(rng, count):
    """Finite f16 scales: mostly small normals, one subnormal, one negative."""
    scales = rng.normal(0.0, 0.02, size=count).astype(np.float16)
    scales[0] = np.uint16(0x0003).view(np.float16)  # subnormal
    if count > 1:
        scales[1] = np.float16(-0.0173)
    return scales


def random_blocks(rng, qtype):
    _, type_size = BLOCK_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(RANDOM_BLOCKS, type_size), dtype=np.uint8)
    if qtype == T.Q8_K:
        d = rng.normal(0.0, 0.01, size=RANDOM_BLOCKS).astype(np.float32)
        blocks[:, 0:4] = d.view(np.uint8).reshape(RANDOM_BLOCKS, 4)
        return blocks
    offsets = F16_SCALE_OFFSETS[qtype]
    scales = scale_values(rng, RANDOM_BLOCKS * len(offsets)).reshape(RANDOM_BLOCKS, len(offsets))
    for k, at in enumerate(offsets):
        blocks[:, at:at + 2] = scales[:, k].copy().view(np.uint8).reshape(RANDOM_BLOCKS, 2)
    return blocks


def llama_cpp_dequantize(blocks, qtype):
    """llama.cpp's dequantize_row for the int8 types gguf-py lacks: q * d."""
    if qtype == T.Q8_1:
        d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
        q = blocks[:, 4:].copy().view(np.int8).astype(np.float32)
        return (q * d).reshape(-1)
    if qtype == T.Q8_K:
        d = blocks[:, 0:4].copy().view(np.float32)
        q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)
    raise ValueError(qtype)


def quantize_input(rng, qtype):
    """Values with the cases that decide rounding: a zero block, ties, a negative extreme."""
    block_size, _ = BLOCK_SIZES[qtype]
    n_blocks = max(4, 256 // block_size)
    x = rng.normal(0.0, 1.0, size=(n_blocks, block_size)).astype(np.float32)
    if block_size > 1:
        x[0, :] = 0.0
        x[1, 0] = -3.5  # largest magnitude is negative
        # Block 2: amax 127 so Q8_0's d is 1 and these land exactly on .5 ties.
        x[2, :] = np.float32(0.25)
        x[2, 0], x[2, 1], x[2, 2], x[2, 3] = 127.0, 0.5, -2.5, 3.5
    else:
        specials = np.array([0x3f808000, 0x3f818000, 0x7fc00000, 0x7f800000, 0xff800000,
                             0x80000000, 0x33800000, 0x477fe000, 0x47800000, 0x3f800fff],
                            dtype=np.uint32).view(np.float32)
        x = x.reshape(-1)
        x[:len(specials)] = specials
    return x.reshape(-1)


def hexbytes(array):
    return np.ascontiguousarray(array).tobytes().hex()


def fixture(rng, qtype):
    entry = {"dtype": qtype.name, "ggml_type": int(qtype), "generator": "scripts/gen_quant_fixtures.py",
             "gguf_py_version": gguf_version()}
    if qtype in (T.F32, T.F16, T.BF16):
        width = {T.F32: 4, T.F16: 2, T.BF16: 2}[qtype]
        raw = rng.integers(0, 256, size=PLAIN_ELEMENTS * width, dtype=np.uint8)
        if qtype == T.F16:
            raw[0:2] = np.array([0x7c01], dtype=np.uint16).view(np.uint8)  # NaN payload
            raw[2:4] = np.array([0x0001], dtype=np.uint16).view(np.uint8)  # smallest subnormal
        blocks = raw
        expected = gguf.quants.dequantize(blocks, qtype)
        entry["expected_by"] = "gguf.quants.dequantize"
    elif qtype in (T.I8, T.I16, T.I32, T.I64, T.F64):
        np_type = {T.I8: np.int8, T.I16: np.int16, T.I32: np.int32, T.I64: np.int64, T.F64: np.float64}[qtype]
        blocks = rng.integers(0, 256, size=PLAIN_ELEMENTS * np.dtype(np_type).itemsize, dtype=np.uint8)
        if qtype == T.F64:
            blocks = rng.normal(0, 1e3, size=PLAIN_ELEMENTS).astype(np.float64).view(np.uint8)
        expected = blocks.view(np_type).astype(np.float32)
        entry["expected_by"] = "numpy astype(float32)"
    else:
        blocks = random_blocks(rng, qtype)
        if qtype in (T.Q8_1, T.Q8_K):
            expected = llama_cpp_dequantize(blocks, qtype)
            entry["expected_by"] = "numpy, llama.cpp dequantize_row formula (q * d)"
        else:
            expected = gguf.quants.dequantize(blocks, qtype)
            entry["expected_by"] = "gguf.quants.dequantize"
    entry["blocks_hex"] = hexbytes(blocks)
    entry["expected_f32_hex"] = hexbytes(np.asarray(expected, dtype=np.float32).reshape(-1))

    if qtype in QUANTIZED_BY_GGUF_PY:
        values = quantize_input(rng, qtype)
        quantized = gguf.quants.quantize(values, qtype)
        entry["quantize_input_f32_hex"] = hexbytes(values)
        entry["quantize_expected_hex"] = hexbytes(np.asarray(quantized).view(np.uint8))
        entry["quantize_dequantized_f32_hex"] = hexbytes(
            np.asarray(gguf.quants.dequantize(np.asarray(quantized).view(np.uint8), qtype), dtype=np.float32))
    return entry


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # pragma: no cover - only the label suffers
        return "unknown"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "apr-engine", "tests", "fixtures", "quant")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(20240607)
    dtypes = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q8_1,
              T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K, T.I8, T.I16, T.I32, T.I64, T.F64]
    for qtype in dtypes:
        entry = fixture(rng, qtype)
        path = os.path.join(out_dir, f"{qtype.name}.json")
        with open(path, "w") as f:
            json.dump(entry, f, indent=1)
            f.write("\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
