#!/usr/bin/env python3
"""Serving benchmark: llama.cpp's `llama-server` and `cargo apr serve`, one
after the other, on the same model and machine, under the same client load
(N concurrent streaming clients, the same prompts, greedy, a fixed number of
tokens each). Prints aggregate decode tok/s, time to first token p50/p99 and
peak RSS (VmHWM) of each server, as a Markdown table for the README.

    scripts/bench_serve.py [--model PATH] [--parallel 8] [--clients 8] [--tokens 64] [--backend cpu|cuda]

llama-server comes from the llama.cpp that scripts/build-llama-cpp.sh builds
(APR_LLAMA_SERVER=1 scripts/build-llama-cpp.sh adds it); --skip-llama runs
apr alone. With --backend cuda, both servers run every layer on the GPU
(llama-server -ngl 99, from the CUDA build of scripts/bench-cuda-vs-llama.sh
with APR_LLAMA_SERVER=1; apr --backend cuda). Only the standard library is used.
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

HOME = os.path.expanduser("~")
MODEL_DIR = os.environ.get("APR_MODEL_DIR", f"{HOME}/.cache/apr/models")
LLAMA_DIR = os.environ.get("APR_LLAMA_DIR", f"{HOME}/.cache/apr/llama.cpp")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = [
    "Write a Python function that reverses a string.",
    "Explain what a hash map is in two sentences.",
    "What is the difference between a list and a tuple?",
    "Write a haiku about compilers.",
    "How do I read a file line by line in Rust?",
    "Name three sorting algorithms and their complexity.",
    "What does the `yield` keyword do in Python?",
    "Write a SQL query counting rows per day.",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, process, timeout=600):
    started = time.time()
    while time.time() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before it was ready")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become healthy")


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def stream_one(port, prompt, tokens):
    """One streamed greedy chat request: (time to first token, completion tokens)."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    started = time.time()
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}: {response.read()[:200]!r}")
    first, count, usage = None, 0, None
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        if chunk.get("usage"):
            usage = chunk["usage"]["completion_tokens"]
        for choice in chunk.get("choices", []):
            if choice.get("delta", {}).get("content"):
                first = first or time.time() - started
                count += 1
    return first or float("nan"), usage if usage is not None else count


def load(port, clients, tokens, rounds):
    """`clients` threads, each streaming `rounds` requests; returns (ttfts, tokens, seconds)."""
    ttfts, total, lock = [], [0], threading.Lock()

    def client(i):
        for r in range(rounds):
            ttft, n = stream_one(port, PROMPTS[(i + r) % len(PROMPTS)], tokens)
            with lock:
                ttfts.append(ttft)
                total[0] += n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ttfts, total[0], time.time() - started


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


def bench(name, command, port, args):
    print(f"[{name}] {' '.join(command)}", file=sys.stderr)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, process)
        stream_one(port, PROMPTS[0], 4)  # warm-up
        ttfts, tokens, seconds = load(port, args.clients, args.tokens, args.rounds)
        rss = peak_rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return {"server": name, "tok_s": tokens / seconds, "ttft_p50": percentile(ttfts, 0.5),
            "ttft_p99": percentile(ttfts, 0.99), "rss_mib": rss, "tokens": tokens}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=f"{MODEL_DIR}/qwen2.5-coder-0.5b-instruct.gguf")
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="requests per client")
    parser.add_argument("--ctx-size", type=int, default=1024, help="positions per sequence")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--apr", default=f"{ROOT}/target/release/cargo-apr")
    parser.add_argument("--llama-server", default=f"{LLAMA_DIR}/build/bin/llama-server")
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--backend", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    gpu = args.backend == "cuda"

    results = []
    if not args.skip_llama:
        if not os.access(args.llama_server, os.X_OK):
            raise SystemExit(f"{args.llama_server} missing: APR_LLAMA_SERVER=1 scripts/build-llama-cpp.sh "
                             "(or --skip-llama)")
        port = free_port()
        results.append(bench("llama-server", [args.llama_server, "-m", args.model, "--host", "127.0.0.1",
                                              "--port", str(port), "--parallel", str(args.parallel),
                                              "-c", str(args.ctx_size * args.parallel), "-t", str(args.threads)]
                             + (["-ngl", "99"] if gpu else []),
                             port, args))
    port = free_port()
    results.append(bench("cargo apr serve", [args.apr, "apr", "serve", args.model, "--port", str(port),
                                             "--parallel", str(args.parallel), "--ctx-size", str(args.ctx_size),
                                             "--threads", str(args.threads), "--backend", args.backend],
                         port, args))

    print(f"{args.clients} concurrent streams x {args.rounds}, {args.tokens} tokens each, greedy, "
          f"--parallel {args.parallel}, {os.path.basename(args.model)}, {args.backend}")
    print("| server | aggregate tok/s | TTFT p50 (s) | TTFT p99 (s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['server']} | {r['tok_s']:.1f} | {r['ttft_p50']:.2f} | {r['ttft_p99']:.2f} | {r['rss_mib']:.0f} |")


if __name__ == "__main__":
    main()
