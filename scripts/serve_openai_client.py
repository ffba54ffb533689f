#!/usr/bin/env python3
"""Drives `cargo apr serve` with the official `openai` package, as any OpenAI
client would: chat and completions, streamed and not, log-probabilities, and
the greedy answer to "What is 2+2?" against `cargo apr run`'s.

Usage: serve_openai_client.py BASE_URL EXPECTED_GREEDY_TEXT
(BASE_URL like http://127.0.0.1:8080/v1; cargo-apr/tests/serve.rs runs it.)
"""
import math
import sys

import openai

PROMPT = "What is 2+2?"


def check(condition, what):
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def main(base_url, expected):
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    model = client.models.list().data[0].id
    messages = [{"role": "user", "content": PROMPT}]

    chat = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
    check(chat.choices[0].message.content == expected, f"greedy chat answer equals cargo apr run's: {expected!r}")
    check(chat.usage.prompt_tokens > 0 and chat.usage.completion_tokens > 0, "chat usage counts")

    chunks = list(client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24,
                                                 stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    check(streamed == expected, "streamed chat equals the non-streamed answer")
    check(chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == chat.usage.completion_tokens,
          "the streamed usage chunk")

    with_logprobs = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=5,
                                                   logprobs=True, top_logprobs=2)
    content = with_logprobs.choices[0].logprobs.content
    check(len(content) >= 1 and all(c.logprob <= 0 and len(c.top_logprobs) == 2 for c in content),
          "chat logprobs with two alternatives each")
    check(all(math.isclose(c.logprob, c.top_logprobs[0].logprob, abs_tol=1e-4) for c in content),
          "greedy tokens are the most likely alternative")

    completion = client.completions.create(model=model, prompt="def fibonacci(n):", temperature=0, max_tokens=12,
                                           logprobs=1)
    text = completion.choices[0].text
    check(len(text) > 0 and len(completion.choices[0].logprobs.tokens) == completion.usage.completion_tokens,
          "a completion with one log-probability per token")
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=model, prompt="def fibonacci(n):", temperature=0, max_tokens=12, stream=True) if c.choices)
    check(streamed == text, "streamed completion equals the non-streamed one")

    stopped = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24, stop=["4"])
    check("4" not in stopped.choices[0].message.content and stopped.choices[0].finish_reason == "stop",
          "a stop sequence ends the answer before it")

    seeded = [client.chat.completions.create(model=model, messages=messages, temperature=0.9, seed=7, max_tokens=8)
              .choices[0].message.content for _ in range(2)]
    check(seeded[0] == seeded[1], "the same seed samples the same answer")

    try:
        client.chat.completions.create(model="no-such-model", messages=messages)
        check(False, "an unknown model is refused")
    except openai.NotFoundError as e:
        check(e.status_code == 404, "an unknown model is refused with 404")
    try:
        client.chat.completions.create(model=model, messages=[])
        check(False, "empty messages are refused")
    except openai.BadRequestError as e:
        check(e.body.get("param") == "messages" or "messages" in str(e), "empty messages are refused with 400")
    print("all checks passed")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
