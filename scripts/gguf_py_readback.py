#!/usr/bin/env python3
"""Checks with gguf-py (llama.cpp's own Python reader) that a GGUF file apr
wrote holds the same metadata and tensors as the file it came from.

Usage: gguf_py_readback.py ORIGINAL WRITTEN
       gguf_py_readback.py --write-sample OUT


Compares every metadata key (order, value types, and the encoded value, which
covers nested arrays that gguf-py's contents() flattens), and every tensor
(order, name, GGML type, shape, data bytes). gguf-py's own bookkeeping fields
(GGUF.version, GGUF.tensor_count, GGUF.kv_count) are compared too. Exits 0 and
prints a summary if everything matches; exits 1 listing the differences.

--write-sample writes, with gguf-py's GGUFWriter, a small file holding every
metadata value type, nested arrays and a few tensors, so that apr's reader can
be checked against files written by another implementation.
"""

import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

MAX_REPORTED = 20


def encoded_value(field):
    """The bytes of a field's value as stored (type ids, counts and data), without its key."""
    # parts[0..2] are the key length, key bytes and value type; the rest is the value.
    return b"".join(np.ascontiguousarray(part).tobytes() for part in field.parts[3:])


def describe(field):
    types = "/".join(t.name for t in field.types)
    try:
        value = field.contents()
    except Exception as error:  # contents() does not handle every nesting
        value = f"<{error}>"
    text = repr(value)
    return f"{types} {text[:80]}{'...' if len(text) > 80 else ''}"


def compare_metadata(original, written, problems):
    names_a, names_b = list(original.fields), list(written.fields)
    if names_a != names_b:
        missing = [k for k in names_a if k not in written.fields]
        extra = [k for k in names_b if k not in original.fields]
        problems.append(f"metadata keys differ: missing {missing}, extra {extra}")
    for key in names_a:
        if key not in written.fields:
            continue
        a, b = original.fields[key], written.fields[key]
        if key.startswith("GGUF."):
            if a.contents() != b.contents():
                problems.append(f"{key}: {a.contents()} != {b.contents()}")
            continue
        if a.types != b.types or encoded_value(a) != encoded_value(b):
            problems.append(f"metadata '{key}': {describe(a)} != {describe(b)}")


def compare_tensors(original, written, problems):
    names_a = [t.name for t in original.tensors]
    names_b = [t.name for t in written.tensors]
    if names_a != names_b:
        problems.append(f"tensor names or order differ: {len(names_a)} vs {len(names_b)} tensors")
    by_name = {t.name: t for t in written.tensors}
    for a in original.tensors:
        b = by_name.get(a.name)
        if b is None:
            problems.append(f"tensor '{a.name}' missing")
            continue
        if a.tensor_type != b.tensor_type or list(a.shape) != list(b.shape):
            problems.append(
                f"tensor '{a.name}': {a.tensor_type.name} {list(a.shape)} != {b.tensor_type.name} {list(b.shape)}"
            )
        elif a.n_bytes != b.n_bytes or a.data.tobytes() != b.data.tobytes():
            problems.append(f"tensor '{a.name}': data bytes differ")


def write_sample(path):
    writer = GGUFWriter(path, "llama")
    scalars = [
        ("t.u8", 200, GGUFValueType.UINT8),
        ("t.i8", -100, GGUFValueType.INT8),
        ("t.u16", 60000, GGUFValueType.UINT16),
        ("t.i16", -30000, GGUFValueType.INT16),
        ("t.u32", 4000000000, GGUFValueType.UINT32),
        ("t.i32", -2000000000, GGUFValueType.INT32),
        ("t.f32", 0.125, GGUFValueType.FLOAT32),
        ("t.bool", True, GGUFValueType.BOOL),
        ("t.string", "h\u00e9llo \u2581w\u00f6rld", GGUFValueType.STRING),
        ("t.u64", 2**63 + 5, GGUFValueType.UINT64),
        ("t.i64", -(2**62), GGUFValueType.INT64),
        ("t.f64", -1.0e-300, GGUFValueType.FLOAT64),
    ]
    for key, value, value_type in scalars:
        writer.add_key_value(key, value, value_type)
    writer.add_array("a.i32", [1, -2, 3])
    writer.add_array("a.f32", [0.5, -1.5])
    writer.add_array("a.strings", ["a", "", "\u00fc"])
    writer.add_array("a.bool", [True, False])
    writer.add_array("a.nested", [[1, 2], [3]])
    writer.add_array("a.nested_strings", [["x", "yz"], ["w"]])
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.add_tensor("blk.0.attn_norm.weight", np.arange(5, dtype=np.float16))
    writer.add_tensor("output.weight", np.arange(64, dtype=np.float32).reshape(2, 4, 8))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {path}")
    return 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--write-sample":
        return write_sample(sys.argv[2])
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    original, written = GGUFReader(sys.argv[1]), GGUFReader(sys.argv[2])
    problems = []
    compare_metadata(original, written, problems)
    compare_tensors(original, written, problems)
    if problems:
        print(f"gguf-py finds {len(problems)} differences between {sys.argv[1]} and {sys.argv[2]}:")
        for problem in problems[:MAX_REPORTED]:
            print(f"  {problem}")
        if len(problems) > MAX_REPORTED:
            print(f"  ... and {len(problems) - MAX_REPORTED} more")
        return 1
    n_bytes = sum(int(t.n_bytes) for t in written.tensors)
    print(
        f"gguf-py: {len(written.fields)} fields and {len(written.tensors)} tensors ({n_bytes} data bytes) match; "
        f"alignment {written.alignment}, data offset {written.data_offset}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
