#!/usr/bin/env python3
"""Reads a SafeTensors file written by apr with the `safetensors` package and
checks it against the GGUF file its tensors and metadata came from, read
with gguf-py: names (through gguf-py's own HF name table), shapes, values,
config.json, tokenizer.json and tokenizer_config.json.

    safetensors_readback.py --model OUT/model.safetensors --gguf SOURCE.gguf \
        [--qk-rows HF_NAME=GGUF_NAME ...]

--qk-rows names a tensor whose rows are the raw bytes of a GGUF Q/K
projection (so quantized rows can travel through an F16 tensor); its rows
must be the GGUF rows put back into Hugging Face order.

Exits 0 and prints a summary when every check passes; raises otherwise.
"""
import argparse
import json
import os
import sys

import numpy as np
from safetensors import deserialize, safe_open

import gguf

NP_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I8": np.int8,
             "I16": np.int16, "I32": np.int32, "I64": np.int64}
TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 3, 4, 5


def to_numpy(dtype, shape, data):
    if dtype == "BF16":  # numpy has no bfloat16: widen the top half of an f32
        raw = np.frombuffer(bytes(data), dtype=np.uint16).astype(np.uint32) << 16
        return raw.view(np.float32).reshape(shape)
    return np.frombuffer(bytes(data), dtype=NP_DTYPES[dtype]).reshape(shape)


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def hf_to_gguf_order(rows, n_head):
    """Undo llama.cpp's convert permutation (HF -> GGUF): GGUF rows back to HF order."""
    n = rows.shape[0]
    return rows.reshape(n_head, n // n_head // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def check_tensors(model_path, reader, arch, qk_rows):
    with safe_open(model_path, framework="np") as f:
        assert f.metadata() == {"format": "pt"}, f.metadata()
        keys = set(f.keys())
    with open(model_path, "rb") as fh:
        tensors = dict(deserialize(fh.read()))
    assert set(tensors) == keys
    gguf_tensors = {t.name: t for t in reader.tensors}
    n_blocks = int(field(reader, f"{arch}.block_count"))
    model_arch = {name: arch_id for arch_id, name in gguf.MODEL_ARCH_NAMES.items()}[arch]
    name_map = gguf.get_tensor_name_map(model_arch, n_blocks)
    checked = 0
    for hf_name, info in tensors.items():
        values = to_numpy(info["dtype"], info["shape"], info["data"])
        if hf_name in qk_rows:
            source = gguf_tensors[qk_rows[hf_name]]
            heads_key = "attention.head_count_kv" if ".attn_k." in source.name else "attention.head_count"
            n_head = int(field(reader, f"{arch}.{heads_key}"))
            rows = np.asarray(source.data).reshape(values.shape[0], -1)
            expected = hf_to_gguf_order(rows, n_head)
            assert values.tobytes() == expected.tobytes(), f"{hf_name}: rows are not in Hugging Face order"
            assert values.tobytes() != rows.tobytes(), f"{hf_name}: rows were not reordered at all"
            checked += 1
            continue
        gguf_name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        assert gguf_name in gguf_tensors, f"{hf_name} maps to {gguf_name}, not in the GGUF file"
        source = gguf_tensors[gguf_name]
        assert list(info["shape"]) == [int(d) for d in reversed(source.shape)], (hf_name, info["shape"], source.shape)
        if source.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            original = np.asarray(source.data, dtype=np.float32).reshape(values.shape)
        else:
            # A quantized (or BF16) source: the export must hold what gguf-py dequantizes.
            original = gguf.quants.dequantize(source.data, source.tensor_type).reshape(values.shape)
        if info["dtype"] == "F32":
            assert np.array_equal(values, original), f"{hf_name}: values differ"
        elif info["dtype"] == "F16":
            assert np.array_equal(values, original.astype(np.float16)), f"{hf_name}: F16 values differ"
        elif info["dtype"] == "BF16":
            np.testing.assert_allclose(values, original, rtol=2.0**-8, err_msg=hf_name)
        else:
            raise AssertionError(f"{hf_name}: unexpected dtype {info['dtype']}")
        checked += 1
    return tensors, checked


def check_config(config, reader, arch, hf_names):
    tokens = field(reader, "tokenizer.ggml.tokens")
    assert config["model_type"] == arch
    assert config["architectures"] == [{"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[arch]]
    for hf_key, gguf_key in [("hidden_size", "embedding_length"), ("intermediate_size", "feed_forward_length"),
                             ("num_hidden_layers", "block_count"), ("num_attention_heads", "attention.head_count"),
                             ("num_key_value_heads", "attention.head_count_kv"),
                             ("max_position_embeddings", "context_length")]:
        assert config[hf_key] == int(field(reader, f"{arch}.{gguf_key}")), hf_key
    for hf_key, gguf_key in [("rms_norm_eps", "attention.layer_norm_rms_epsilon"), ("rope_theta", "rope.freq_base")]:
        assert np.float32(config[hf_key]) == np.float32(field(reader, f"{arch}.{gguf_key}")), hf_key
    vocab_size = field(reader, f"{arch}.vocab_size")
    assert config["vocab_size"] == (int(vocab_size) if vocab_size is not None else len(tokens))
    assert config["tie_word_embeddings"] == ("lm_head.weight" not in hf_names)
    assert config["bos_token_id"] == int(field(reader, "tokenizer.ggml.bos_token_id"))
    assert config["eos_token_id"] == int(field(reader, "tokenizer.ggml.eos_token_id"))
    assert config["torch_dtype"] in ("float32", "float16", "bfloat16")


def check_tokenizer(tokenizer, tokenizer_config, reader):
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    model = tokenizer["model"]
    assert model["type"] == "BPE"
    vocab = model["vocab"]
    padding = {i for i, (t, k) in enumerate(zip(tokens, types)) if k == TOKEN_UNUSED and t == f"[PAD{i}]"}
    assert len(vocab) == len(tokens) - len(padding), (len(vocab), len(tokens), len(padding))
    for i, token in enumerate(tokens):
        if i not in padding:
            assert vocab[token] == i, (token, vocab[token], i)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    assert merges == list(field(reader, "tokenizer.ggml.merges")), "merges differ"
    added = {(a["id"], a["content"], a["special"]) for a in tokenizer["added_tokens"]}
    expected = {(i, tokens[i], types[i] == TOKEN_CONTROL) for i in range(len(tokens))
                if types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED)}
    assert added == expected, sorted(added ^ expected)[:5]
    assert tokenizer["decoder"]["type"] == "ByteLevel"
    pre = tokenizer["pre_tokenizer"]
    parts = pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]
    assert parts[-1]["type"] == "ByteLevel", pre
    for role in ("bos", "eos", "pad", "unk"):
        key = {"pad": "padding", "unk": "unknown"}.get(role, role)
        token_id = field(reader, f"tokenizer.ggml.{key}_token_id")
        want = None if token_id is None else tokens[int(token_id)]
        assert tokenizer_config[f"{role}_token"] == want, (role, tokenizer_config[f"{role}_token"], want)
    assert tokenizer_config["chat_template"] == field(reader, "tokenizer.chat_template")
    add_bos = field(reader, "tokenizer.ggml.add_bos_token")
    if add_bos is not None:
        assert tokenizer_config["add_bos_token"] == bool(add_bos)
    return len(vocab), len(merges), len(added)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--qk-rows", action="append", default=[], help="HF_NAME=GGUF_NAME")
    args = parser.parse_args()
    reader = gguf.GGUFReader(args.gguf)
    arch = field(reader, "general.architecture")
    qk_rows = dict(pair.split("=", 1) for pair in args.qk_rows)
    tensors, checked = check_tensors(args.model, reader, arch, qk_rows)
    directory = os.path.dirname(os.path.abspath(args.model))
    load = lambda name: json.load(open(os.path.join(directory, name), encoding="utf-8"))
    check_config(load("config.json"), reader, arch, set(tensors))
    vocab, merges, added = check_tokenizer(load("tokenizer.json"), load("tokenizer_config.json"), reader)
    print(f"ok: {checked} tensors, vocab {vocab}, merges {merges}, added tokens {added}")


if __name__ == "__main__":
    sys.exit(main())
