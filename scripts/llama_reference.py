#!/usr/bin/env python3
"""llama.cpp's reference outputs for one model, as committed under reference/.

    scripts/llama_reference.py MODEL.gguf OUT_DIR            # tokenization, greedy, logits_top20
    scripts/llama_reference.py --kld-summary TEXT --ctx N MODEL.gguf OUT.json

Runs llama.cpp through the llama-cpp-python sdist's own `llama_cpp` package
(its ctypes bindings only) over the shared libraries that
scripts/build-llama-cpp.sh builds, so nothing is compiled twice. Settings are
those of reference/README.md: CPU, 2 threads, n_ctx 512, the whole prompt in one
batch then one token per step, flash attention off, f16 KV cache, greedy.

The JSON schema is the one reference/qwen2.5-coder-*/ uses, plus, per greedy
case, `chat_template_applied` (false for a raw prompt, which is tokenized as
written), `system` (the system message given to the template, or null) and
`steps_top5` (llama.cpp's top-5 [id, logit] at each generated step, so a test
can tell a near-tie from a real disagreement); logits_top20.json's results
carry `chat_template_applied` too.
"""

import argparse
import ctypes
import json
import math
import os
import sys
from pathlib import Path

LLAMA_DIR = Path(os.environ.get("APR_LLAMA_DIR", Path.home() / ".cache/apr/llama.cpp"))
SDIST_VERSION = os.environ.get("LLAMA_CPP_PYTHON_VERSION", "0.3.36")
LLAMA_CPP_COMMIT = "ggml-org/llama.cpp@0c1e57098 (vendored in llama-cpp-python 0.3.36 sdist)"

N_THREADS = 2
N_CTX = 512
MAX_NEW_TOKENS = 32
SYSTEM = "You are a helpful assistant."
QUESTIONS = [
    "What is 2+2?",
    "What is 2+2? Answer with just the number.",
    "What is the capital of France?",
    "Explain what a hash map is in one sentence.",
]
RAW_PROMPTS = [
    "Water boils at",
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time",
]
LOGITS_PROMPTS = [("What is 2+2?", True), ("Water boils at", False)]
TOKENIZATION_CASES = [
    ("english", "Hello, world! I'm sure you'll LOVE it, don't you? We'RE testing contractions.", False),
    ("english_pangram", "The quick brown fox jumps over the lazy dog.", False),
    ("python_indent", "def add(a, b):\n    if a > b:\n        return a + b\n    return b - a\n\nprint(add(2, 3))\n", False),
    ("cjk_unicode", "你好，世界！こんにちは 안녕하세요 Привет, мир! Ελληνικά", False),
    ("leading_trailing_spaces", "   leading and trailing spaces   ", False),
    ("chatml_special", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", True),
    ("empty", "", False),
    ("long_repeat", "a" * 300, False),
]
EXTRA_TOKENIZATION_CASES = [
    ("chatml_special_parse_off", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", False),
    ("nfd_combining_accent", "cafe\u0301 re\u0301sume\u0301", False),
]


def import_llama_cpp():
    """The sdist's `llama_cpp` package, loading our build's libllama.so."""
    lib_dir = LLAMA_DIR / "build/bin"
    package_dir = LLAMA_DIR / f"sdist/llama_cpp_python-{SDIST_VERSION}"
    if not (lib_dir / "libllama.so").exists() or not (package_dir / "llama_cpp").is_dir():
        sys.exit(f"no llama.cpp shared build under {LLAMA_DIR}: run scripts/build-llama-cpp.sh")
    os.environ["LLAMA_CPP_LIB_PATH"] = str(lib_dir)
    sys.path.insert(0, str(package_dir))
    import llama_cpp  # noqa: E402 (needs the path and library set above)

    return llama_cpp


L = import_llama_cpp()
import numpy as np  # noqa: E402 (a dependency of the sdist's package, installed with it)


class Engine:
    """One model and one context with the reference settings."""

    def __init__(self, model_path, flash_attn=False, n_ctx=N_CTX, n_batch=N_CTX):
        L.llama_backend_init()
        model_params = L.llama_model_default_params()
        model_params.n_gpu_layers = 0
        self.model = L.llama_model_load_from_file(str(model_path).encode(), model_params)
        if not self.model:
            sys.exit(f"{model_path}: llama.cpp could not load the model")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        params = L.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
        params.n_threads = params.n_threads_batch = N_THREADS
        params.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.type_k = params.type_v = L.GGML_TYPE_F16
        self.ctx = L.llama_init_from_model(self.model, params)
        if not self.ctx:
            sys.exit(f"{model_path}: llama.cpp could not create a context")
        self.n_batch = n_batch

    def tokenize(self, text, add_special, parse_special):
        raw = text.encode()
        capacity = len(raw) + 8
        buf = (L.llama_token * capacity)()
        n = L.llama_tokenize(self.vocab, raw, len(raw), buf, capacity, add_special, parse_special)
        if n < 0:
            sys.exit(f"tokenize {text!r}: needs {-n} tokens")
        return list(buf[:n])

    def piece(self, token):
        buf = ctypes.create_string_buffer(256)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, True)
        return buf.raw[:n]

    def detokenize(self, ids):
        arr = (L.llama_token * max(len(ids), 1))(*ids)
        buf = ctypes.create_string_buffer(64 + 64 * len(ids))
        n = L.llama_detokenize(self.vocab, arr, len(ids), buf, len(buf), False, True)
        return buf.raw[:n].decode("utf-8", errors="replace")

    def is_eog(self, token):
        return L.llama_vocab_is_eog(self.vocab, token)

    def clear(self):
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)

    def eval(self, tokens, start, wanted):
        """Decodes `tokens` at positions start.. as one batch; returns the
        logits rows (float32 numpy) of the indices in `wanted`, in order."""
        assert len(tokens) <= self.n_batch
        batch = L.llama_batch_init(len(tokens), 0, 1)
        try:
            wanted = set(wanted)
            for i, token in enumerate(tokens):
                batch.token[i] = token
                batch.pos[i] = start + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i in wanted
            batch.n_tokens = len(tokens)
            if L.llama_decode(self.ctx, batch) != 0:
                sys.exit("llama_decode failed")
            return [self.row(i) for i in sorted(wanted)]
        finally:
            L.llama_batch_free(batch)

    def row(self, i):
        ptr = L.llama_get_logits_ith(self.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def chat_template(self):
        template = L.llama_model_chat_template(self.model, None)
        return template.decode() if template else None

    def render_chat(self, messages):
        """The prompt as llama.cpp's llama_chat_apply_template renders it."""
        template = self.chat_template().encode()
        chat = (L.llama_chat_message * len(messages))()
        for slot, (role, content) in zip(chat, messages):
            slot.role, slot.content = role.encode(), content.encode()
        buf = ctypes.create_string_buffer(8192)
        n = L.llama_chat_apply_template(template, chat, len(messages), True, buf, len(buf))
        if n < 0 or n > len(buf):
            sys.exit(f"llama_chat_apply_template failed ({n})")
        return buf.raw[:n].decode()


def jinja_render(template, messages):
    """The same prompt through the model's own Jinja template (a cross-check)."""
    import jinja2

    env = jinja2.Environment()
    msgs = [{"role": r, "content": c} for r, c in messages]
    return env.from_string(template).render(messages=msgs, add_generation_prompt=True)


def prompt_for(engine, text, templated):
    """(prompt text, prompt ids): the chat template with SYSTEM, or the raw text.
    Tokenized as llama.cpp's tools do: add_special=True (BOS only if the model
    asks for it), special tokens parsed."""
    if not templated:
        return text, engine.tokenize(text, True, True)
    messages = [("system", SYSTEM), ("user", text)]
    prompt = engine.render_chat(messages)
    jinja = jinja_render(engine.chat_template(), messages)
    if prompt != jinja:
        sys.exit(f"llama.cpp's rendering {prompt!r} differs from the Jinja template's {jinja!r}")
    return prompt, engine.tokenize(prompt, True, True)


def greedy_rows(engine, prompt_ids, forced=None):
    """The reference path: prompt in one batch (all rows), then one token per
    step. Greedy unless `forced` gives the tokens to feed. Returns (generated
    ids, stop reason, logits rows for prompt + generated positions)."""
    engine.clear()
    rows = engine.eval(prompt_ids, 0, range(len(prompt_ids)))
    generated = []
    while True:
        if forced is not None:
            if len(generated) == len(forced):
                return generated, None, rows
            token = forced[len(generated)]
        else:
            token = int(np.argmax(rows[-1]))  # ties -> lowest id
        generated.append(token)
        if forced is None and engine.is_eog(token):
            return generated, "eog", rows + engine.eval([token], len(prompt_ids) + len(generated) - 1, [0])
        rows += engine.eval([token], len(prompt_ids) + len(generated) - 1, [0])
        if forced is None and len(generated) == MAX_NEW_TOKENS:
            return generated, "max_tokens", rows


def text_of(engine, ids):
    return engine.detokenize([t for t in ids if not engine.is_eog(t)])


def settings(engine, model_path):
    eog = [t for t in range(engine.n_vocab) if engine.is_eog(t)]
    return {
        "engine": f"llama.cpp via llama-cpp-python {SDIST_VERSION}",
        "llama_cpp_commit": LLAMA_CPP_COMMIT,
        "device": "CPU only (n_gpu_layers=0)",
        "n_threads": N_THREADS,
        "n_threads_batch": N_THREADS,
        "n_ctx": N_CTX,
        "n_batch": N_CTX,
        "n_ubatch": N_CTX,
        "flash_attn": "disabled (LLAMA_FLASH_ATTN_TYPE_DISABLED)",
        "kv_cache_type": "f16 for K and V",
        "logits_all": True,
        "model_file": Path(model_path).name,
        "add_bos": bool(L.llama_vocab_get_add_bos(engine.vocab)),
        "system_info": L.llama_print_system_info().decode(),
        "decoding": "greedy: argmax of the logits row (ties -> lowest id); no repetition penalty; stops after "
        f"{MAX_NEW_TOKENS} new tokens or at an end-of-generation token {eog}, which is included in generated_ids",
        "chat_template": "llama_chat_apply_template(model template, [system, user], add_ass=true), equal to the "
        "model's Jinja template rendered with the same messages; raw prompts are tokenized as written",
        "tokenize_call": "llama_tokenize(add_special=true, parse_special=true)",
    }


def greedy_json(engine, model_path):
    results = []
    cases = [(q, True) for q in QUESTIONS] + [(p, False) for p in RAW_PROMPTS]
    for question, templated in cases:
        prompt, prompt_ids = prompt_for(engine, question, templated)
        generated, stop, rows = greedy_rows(engine, prompt_ids)
        steps = rows[len(prompt_ids) - 1 : len(prompt_ids) - 1 + len(generated)]
        results.append(
            {
                "question": question,
                "chat_template_applied": templated,
                "system": SYSTEM if templated else None,
                "prompt": prompt,
                "prompt_ids": prompt_ids,
                "n_prompt": len(prompt_ids),
                "generated_ids": generated,
                "n_generated": len(generated),
                "stop_reason": stop,
                "text": text_of(engine, generated),
                "steps_top5": [top20(row)[:5] for row in steps],
            }
        )
        print(f"  {question!r}: {results[-1]['text']!r}", file=sys.stderr)
    return {"settings": settings(engine, model_path), "results": results}


def tokenization_case(engine, name, text, parse_special):
    ids = engine.tokenize(text, False, parse_special)
    pieces = [engine.piece(t) for t in ids]
    return {
        "name": name,
        "text": text,
        "parse_special": parse_special,
        "ids": ids,
        "n_tokens": len(ids),
        "ids_with_add_special_true": engine.tokenize(text, True, parse_special),
        "pieces_utf8_lossy": [p.decode("utf-8", errors="replace") for p in pieces],
        "pieces_hex": [p.hex() for p in pieces],
        "detokenized_roundtrip_equal": engine.detokenize(ids) == text,
    }


def tokenization_json(engine, model_path):
    add_bos = bool(L.llama_vocab_get_add_bos(engine.vocab))
    return {
        "settings": {
            "tokenize_call": "llama_tokenize(add_special=False, parse_special=<per case>); "
            f"ids_with_add_special_true uses add_special=True (add_bos_token={str(add_bos).lower()})",
            "engine": f"llama.cpp via llama-cpp-python {SDIST_VERSION}",
            "llama_cpp_commit": LLAMA_CPP_COMMIT,
            "model_file": Path(model_path).name,
            "n_vocab": engine.n_vocab,
            "bos": L.llama_vocab_bos(engine.vocab),
            "eos": L.llama_vocab_eos(engine.vocab),
        },
        "cases": [tokenization_case(engine, *c) for c in TOKENIZATION_CASES],
        "extra_cases": [tokenization_case(engine, *c) for c in EXTRA_TOKENIZATION_CASES],
    }


def logsumexp(row):
    row = row.astype(np.float64)
    top = row.max()
    return float(top + math.log(np.exp(row - top).sum()))


def top20(row):
    order = np.lexsort((np.arange(len(row)), -row))[:20]  # by logit descending, ties by lower id
    return [[int(i), float(row[i])] for i in order]


def position_entry(pos, sequence, row):
    lse = logsumexp(row)
    greedy = int(np.argmax(row))
    following = None
    if pos + 1 < len(sequence):
        nxt = sequence[pos + 1]
        following = [nxt, float(row[nxt]), float(row[nxt]) - lse]
    return {
        "pos": pos,
        "token_at_pos": sequence[pos],
        "top20": top20(row),
        "logsumexp": lse,
        "greedy": [greedy, float(row[greedy])],
        "next_in_seq": following,
    }


def max_diff(a_rows, b_rows):
    return float(max(np.abs(a - b).max() for a, b in zip(a_rows, b_rows)))


def argmax_agreement(a_rows, b_rows):
    same = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(a_rows, b_rows))
    return f"{same}/{len(a_rows)}"


def logits_checks(engine, flash, prompt_ids, generated, rows):
    sequence = prompt_ids + generated
    n_prompt = len(prompt_ids)
    one_batch = (engine.clear(), engine.eval(sequence, 0, range(len(sequence))))[1]
    lp = [float(r[sequence[i + 1]]) - logsumexp(r) for i, r in enumerate(rows[:-1])]
    flash_generated, _, flash_rows = greedy_rows(flash, prompt_ids)
    flash_forced = greedy_rows(flash, prompt_ids, forced=generated)[2]
    return {
        "n_positions": len(rows),
        "distinct_rows": len({r.tobytes() for r in rows}),
        "argmax_of_row[n_prompt-1+k]_equals_generated[k]_for_all_k": all(
            int(np.argmax(rows[n_prompt - 1 + k])) == t for k, t in enumerate(generated)
        ),
        "full_sequence_single_batch_reeval": {
            "max_abs_logit_diff_overall": max_diff(rows, one_batch),
            "max_abs_logit_diff_prompt_positions": max_diff(rows[:n_prompt], one_batch[:n_prompt]),
            "max_abs_logit_diff_generated_positions": max_diff(rows[n_prompt:], one_batch[n_prompt:]),
            "argmax_agreement": argmax_agreement(rows, one_batch),
        },
        "mean_teacher_forced_logprob_prompt": float(np.mean(lp[: n_prompt - 1])),
        "mean_teacher_forced_logprob_generated": float(np.mean(lp[n_prompt - 1 :])),
        "flash_attn_on_same_path": {
            "max_abs_logit_diff_overall": max_diff(rows, flash_forced),
            "argmax_agreement": argmax_agreement(rows, flash_forced),
            "greedy_tokens_identical": flash_generated == generated,
        },
    }


def logits_json(engine, flash, model_path):
    results = []
    for question, templated in LOGITS_PROMPTS:
        _, prompt_ids = prompt_for(engine, question, templated)
        generated, _, rows = greedy_rows(engine, prompt_ids)
        sequence = prompt_ids + generated
        results.append(
            {
                "question": question,
                "chat_template_applied": templated,
                "prompt_ids": prompt_ids,
                "generated_ids": generated,
                "text": text_of(engine, generated),
                "checks": logits_checks(engine, flash, prompt_ids, generated, rows),
                "positions": [position_entry(p, sequence, r) for p, r in enumerate(rows)],
            }
        )
    layout = (
        "positions[i] describes the logits row produced at sequence position i (0-based) of "
        "prompt_ids+generated_ids, i.e. the distribution for the token at position i+1. Rows for prompt "
        "positions come from the single prompt batch; rows for generated positions come from one-token decode "
        "steps (the normal generation path). top20 = [[token_id, logit], ...] sorted by logit descending (ties "
        "by lower id). logsumexp over the full vocab (float64). greedy = argmax token and its logit; next_in_seq "
        "= the token actually at position i+1 (teacher forced) with its logit and log-prob (null for the last "
        "position)."
    )
    return {"settings": {**settings(engine, model_path), "layout": layout}, "results": results}


def write_json(path, value, indent):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=indent, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {path}", file=sys.stderr)


def kld_summary(model_path, text_path, n_ctx, out):
    """llama.cpp's own float logits over the chunks that
    `llama-perplexity -c n_ctx -b n_ctx --kl-divergence-base` scores: per scored
    position its argmax, the top-2 log-probs and the target token's log-prob, so
    a test can hold the decoded uint16 file against them."""
    engine = Engine(model_path, n_ctx=n_ctx, n_batch=n_ctx)
    text = Path(text_path).read_text(encoding="utf-8")
    # llama.cpp's -f drops one trailing newline from the file
    tokens = engine.tokenize(text[:-1] if text.endswith("\n") else text, True, False)
    n_chunk, first = len(tokens) // n_ctx, n_ctx // 2
    positions = []
    for chunk in range(n_chunk):
        ids = tokens[chunk * n_ctx : (chunk + 1) * n_ctx]
        engine.clear()
        rows = engine.eval(ids, 0, range(first, n_ctx - 1))
        for offset, row in enumerate(rows):
            lse = logsumexp(row)
            best = top20(row)[:2]
            target = ids[first + offset + 1]
            positions.append(
                {
                    "chunk": chunk,
                    "pos": first + offset,
                    "argmax": best[0][0],
                    "top2_logprob": [best[0][1] - lse, best[1][1] - lse],
                    "target": target,
                    "target_logprob": float(row[target]) - lse,
                }
            )
    summary = {
        "settings": {
            "engine": f"llama.cpp via llama-cpp-python {SDIST_VERSION}",
            "llama_cpp_commit": LLAMA_CPP_COMMIT,
            "model_file": Path(model_path).name,
            "text": Path(text_path).name,
            "n_ctx": n_ctx,
            "n_batch": n_ctx,
            "n_threads": N_THREADS,
            "flash_attn": "disabled",
            "kv_cache_type": "f16",
            "add_bos": bool(L.llama_vocab_get_add_bos(engine.vocab)),
            "tokenize_call": "llama_tokenize(add_special=true, parse_special=false) of the text less one trailing "
            "newline, as llama-perplexity -f",
            "layout": "one entry per scored position: chunk c, pos p in the chunk (n_ctx/2 .. n_ctx-2); the row "
            "predicts the token at p+1. Log-probs from float logits (float64 logsumexp).",
        },
        "n_tokens": len(tokens),
        "n_chunk": n_chunk,
        "positions": positions,
    }
    write_json(out, summary, None)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--kld-summary", metavar="TEXT", help="write the KLD summary of TEXT to OUT (a .json)")
    parser.add_argument("--ctx", type=int, default=128, help="chunk size for --kld-summary")
    args = parser.parse_args()
    if args.kld_summary:
        kld_summary(args.model, args.kld_summary, args.ctx, args.out)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engine = Engine(args.model)
    write_json(out / "tokenization.json", tokenization_json(engine, args.model), 1)
    write_json(out / "greedy.json", greedy_json(engine, args.model), 1)
    flash = Engine(args.model, flash_attn=True)
    write_json(out / "logits_top20.json", logits_json(engine, flash, args.model), None)


if __name__ == "__main__":
    main()
