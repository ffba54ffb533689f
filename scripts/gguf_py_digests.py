#!/usr/bin/env python3
"""Digests of gguf-py's dequantization of every tensor in a GGUF file.

    scripts/gguf_py_digests.py MODEL.gguf
        prints JSON: {"file", "size", "gguf_py_version", "tensors": [{"name",
        "ggml_type", "offset" (absolute byte offset of the data), "n_bytes",
        "n_elements", "sha256" (of the float32 little-endian values that
        gguf.quants.dequantize gives)}, ...]}

    scripts/gguf_py_digests.py MODEL.gguf --dump TENSOR OUT.f32
        writes that tensor's dequantized float32 values (little endian) to OUT.f32,
        so a mismatch can be located value by value.

The tensor data is dequantized in slices of whole blocks, which gives the
same values as one call (every block is independent) in bounded memory.
"""

import hashlib
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import gguf
from gguf import GGMLQuantizationType
from gguf.constants import GGML_QUANT_SIZES

SLICE_ELEMENTS = 1 << 22


def tensor_table(path):
    reader = gguf.GGUFReader(path)
    rows = []
    for t in reader.tensors:
        rows.append({
            "name": t.name,
            "ggml_type": int(t.tensor_type),
            "offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "n_elements": int(t.n_elements),
        })
    return rows


def dequantized_slices(path, row):
    """Yields the tensor's float32 values slice by slice."""
    qtype = GGMLQuantizationType(row["ggml_type"])
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=row["offset"], shape=(row["n_bytes"],))
    step = max(1, SLICE_ELEMENTS // block_elems) * block_bytes
    for start in range(0, row["n_bytes"], step):
        raw = np.array(data[start:start + step])
        values = gguf.quants.dequantize(raw, qtype)
        yield np.asarray(values, dtype="<f4").reshape(-1)


def digest(args):
    path, row = args
    h = hashlib.sha256()
    for values in dequantized_slices(path, row):
        h.update(values.tobytes())
    return dict(row, sha256=h.hexdigest())


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "unknown"


def main(argv):
    if len(argv) not in (2, 5) or (len(argv) == 5 and argv[2] != "--dump"):
        sys.exit(__doc__)
    path = argv[1]
    rows = tensor_table(path)
    if len(argv) == 5:
        name, out = argv[3], argv[4]
        row = next((r for r in rows if r["name"] == name), None)
        if row is None:
            sys.exit(f"no tensor named {name!r} in {path}")
        with open(out, "wb") as f:
            for values in dequantized_slices(path, row):
                f.write(values.tobytes())
        return
    # Largest first so the pool finishes together.
    order = sorted(range(len(rows)), key=lambda i: -rows[i]["n_elements"])
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        digests = list(pool.map(digest, [(path, rows[i]) for i in order]))
    by_index = dict(zip(order, digests))
    result = {
        "file": os.path.basename(path),
        "size": os.path.getsize(path),
        "gguf_py_version": gguf_version(),
        "tensors": [by_index[i] for i in range(len(rows))],
    }
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv)
