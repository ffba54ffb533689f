#!/usr/bin/env python3
"""Benchmarks apr against llama.cpp on the same machine, in one run, and
prints the ratios (apr / llama.cpp) the speed targets are stated in.

Usage: scripts/bench_vs_llama.py [--threads 2] [--reps 3] [--backend cpu|cuda] [MODEL.gguf ...]
Needs: llama.cpp built by scripts/build-llama-cpp.sh (CPU; run first by
scripts/bench-vs-llama.sh) or scripts/bench-cuda-vs-llama.sh (CUDA, in
$APR_LLAMA_DIR), and a release build of cargo-apr ($APR_BIN to name another).
With --backend cuda, llama.cpp runs every layer on the GPU with flash
attention (-ngl 99 -fa 1) and apr with --backend cuda.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = Path(os.environ.get("APR_MODEL_DIR", Path.home() / ".cache/apr/models"))
LLAMA = Path(os.environ.get("APR_LLAMA_DIR", Path.home() / ".cache/apr/llama.cpp")) / "build/bin"
# The release build of cargo-apr, wherever cargo puts it.
APR = Path(os.environ.get("APR_BIN") or Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release/cargo-apr")
DEFAULT_MODELS = ["qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "qwen2.5-coder-0.5b-instruct.gguf"]


def run_measured(cmd):
    """Runs cmd; returns stdout and the child's peak RSS in bytes (its own, measured by a fresh wrapper)."""
    wrapper = (
        "import resource,subprocess,sys,json;"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "sys.stderr.write(p.stderr);"
        "print(json.dumps({'rc':p.returncode,'out':p.stdout,"
        "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss*1024}))"
    )
    p = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(p.stdout)
    if result["rc"] != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{p.stderr[-3000:]}")
    return result["out"], result["rss"]


def llama_bench(model, threads, reps, prompt_sizes, gen, backend):
    cmd = [LLAMA / "llama-bench", "-m", model, "-t", str(threads), "-r", str(reps),
           "-p", ",".join(map(str, prompt_sizes)), "-n", str(gen), "-o", "json"]
    if backend == "cuda":
        cmd += ["-ngl", "99", "-fa", "1"]
    out, rss = run_measured(cmd)
    rows = json.loads(out)
    result = {"rss": rss}
    for r in rows:
        key = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
        result[key] = (r["avg_ts"], r["stddev_ts"])
    return result


def apr_bench(model, threads, reps, prompt_sizes, gen, backend):
    exe = APR
    result = {"rss": 0}
    for i, pp in enumerate(prompt_sizes):
        cmd = [exe, "bench", model, "--threads", str(threads), "--reps", str(reps), "--backend", backend,
               "--prompt-tokens", str(pp), "--gen-tokens", str(gen if i == 0 else 0), "--json"]
        out, rss = run_measured(cmd)
        r = json.loads(out)
        for row in r["results"]:
            result[row["test"]] = (row["tok_s"], row["tok_s_std"])
        result["rss"] = max(result["rss"], r.get("peak_rss_bytes") or rss)
    return result


def open_time(model):
    exe = APR
    subprocess.run([exe, "inspect", model], capture_output=True, check=True)  # warm the page cache
    started = time.perf_counter()
    subprocess.run([exe, "inspect", model], capture_output=True, check=True)
    return time.perf_counter() - started


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def gpu_name():
    query = ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown GPU"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--prompt-sizes", default="64,512")
    ap.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("models", nargs="*")
    a = ap.parse_args()
    models = [Path(m) for m in a.models] or [MODELS / m for m in DEFAULT_MODELS]
    prompt_sizes = [int(p) for p in a.prompt_sizes.split(",")]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; threads {a.threads}; reps {a.reps}")
    if a.backend == "cuda":
        print(f"GPU: {gpu_name()} (driver); llama.cpp -ngl 99 -fa 1, apr --backend cuda")
    print(f"| {'model':<40} | {'test':<6} | {'llama.cpp t/s':>16} | {'apr t/s':>16} | {'ratio':>6} |")
    print(f"|{'-' * 42}|{'-' * 8}|{'-' * 18}|{'-' * 18}|{'-' * 8}|")
    for model in models:
        ref = llama_bench(model, a.threads, a.reps, prompt_sizes, a.gen, a.backend)
        ours = apr_bench(model, a.threads, a.reps, prompt_sizes, a.gen, a.backend)
        for test in [f"pp{p}" for p in prompt_sizes] + [f"tg{a.gen}"]:
            (rm, rs), (om, os_) = ref[test], ours[test]
            print(f"| {model.name:<40} | {test:<6} | {rm:>9.2f} ± {rs:>4.2f} | {om:>9.2f} ± {os_:>4.2f} | {om / rm:>5.2f}x |")
        size = model.stat().st_size
        print(f"| {model.name:<40} | {'RSS':<6} | {ref['rss'] / 2**20:>13.0f} MiB | {ours['rss'] / 2**20:>13.0f} MiB | "
              f"{ours['rss'] / ref['rss']:>5.2f}x |  apr RSS / file size {ours['rss'] / size:.2f}x")
        print(f"| {model.name:<40} | {'open':<6} | {'':>16} | {open_time(model):>14.3f} s | {'':>6} |")


if __name__ == "__main__":
    main()
