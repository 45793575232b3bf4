"""What the HTTP server costs over the engine: the same workload both ways, in one run.

    python -m ferrum.bench.server_overhead [--model smollm2] [--requests 32] [--max-tokens 64]

Workload: `--requests` fixed prompts, greedy, EOS ignored, `--max-tokens` each. Direct: one
`LLM.generate` of all of them, run on a worker thread as the server runs its engine (on a busy
CPU, torch's intra-op threading behaves very differently on the main thread, which would be
measured instead of the server). HTTP: `ferrum serve` (a subprocess, same engine options) with
all requests sent at once as streamed /v1/completions from this process, timed from the first
send to the last `[DONE]`. Prefix caching is off on both sides, so neither profits from the
other's prompts. The two alternate `--repeats` times after a warm-up; each figure is the median.
Overhead = HTTP wall / direct wall - 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from ferrum.bench.environment import describe

TOPICS = (
    "lighthouses", "volcanoes", "bees", "glaciers", "comets", "rivers", "deserts", "owls",
    "tides", "bridges", "coral reefs", "thunderstorms", "maple trees", "salmon", "canyons",
    "fireflies", "windmills", "octopuses", "auroras", "bamboo", "caves", "penguins", "geysers",
    "mushrooms", "sand dunes", "whales", "lightning", "ferns", "icebergs", "wolves", "moss",
    "meteors",
)  # fmt: skip
START_TIMEOUT_S = 300.0  # loading the model in the server process
BANNER = re.compile(r"on (http://[^\s]+)/v1")


def prompts(n: int) -> list[str]:
    return [
        f"Write a short, factual paragraph about {TOPICS[i % len(TOPICS)]} for a school "
        f"textbook (part {i // len(TOPICS) + 1})."
        for i in range(n)
    ]


@dataclass
class Figures:
    wall_s: float
    tokens: int

    @property
    def tok_s(self) -> float:
        return self.tokens / self.wall_s


def engine_options(args: argparse.Namespace) -> dict:
    return {"max_num_seqs": args.requests, "enable_prefix_caching": False}


def load_direct(args: argparse.Namespace):
    from ferrum import LLM, SamplingParams

    llm = LLM(args.model, device="cpu", dtype=args.dtype, **engine_options(args))
    llm.generate(prompts(4), SamplingParams(temperature=0, max_tokens=4))  # warm-up
    return llm


def direct_run(llm, args: argparse.Namespace) -> Figures:
    from ferrum import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=args.max_tokens, ignore_eos=True)
    result: list[Figures] = []

    def work() -> None:
        start = time.perf_counter()
        outs = llm.generate(prompts(args.requests), params)
        wall = time.perf_counter() - start
        result.append(Figures(wall, sum(len(o.outputs[0].token_ids) for o in outs)))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    return result[0]


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "ferrum", "serve", args.model, "--port", "0"]
    command += ["--device", "cpu", "--dtype", args.dtype, "--log-level", "warning"]
    command += ["--max-num-seqs", str(args.requests), "--no-prefix-caching"]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stderr is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in proc.stderr:
        match = BANNER.search(line)
        if match:
            return proc, match.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"ferrum serve did not start (exit {proc.wait()})")


async def _stream_one(client, prompt: str, max_tokens: int) -> int:
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[6:]).get("usage")
                if usage:
                    tokens = usage["completion_tokens"]
    return tokens


async def _http_run(url: str, work: list[str], max_tokens: int) -> Figures:
    import httpx

    limits = httpx.Limits(max_connections=len(work))
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        start = time.perf_counter()
        tokens = await asyncio.gather(*(_stream_one(client, p, max_tokens) for p in work))
        return Figures(time.perf_counter() - start, sum(tokens))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # both processes, before torch loads
    llm = load_direct(args)
    proc, url = start_server(args)
    direct_runs, http_runs = [], []
    try:
        asyncio.run(_http_run(url, prompts(4), 4))  # warm-up
        for _ in range(args.repeats):
            direct_runs.append(direct_run(llm, args))
            http_runs.append(asyncio.run(_http_run(url, prompts(args.requests), args.max_tokens)))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    d = Figures(statistics.median(r.wall_s for r in direct_runs), direct_runs[0].tokens)
    h = Figures(statistics.median(r.wall_s for r in http_runs), http_runs[0].tokens)
    if h.tokens != d.tokens:
        raise SystemExit(f"token counts differ: direct {d.tokens}, HTTP {h.tokens}")
    overhead = (h.wall_s / d.wall_s - 1) * 100
    result = {
        "workload": f"{args.requests} requests x {args.max_tokens} tokens, greedy, "
        f"ignore_eos, {args.model}",
        "direct_wall_s": round(d.wall_s, 3),
        "direct_tok_s": round(d.tok_s, 1),
        "http_wall_s": round(h.wall_s, 3),
        "http_tok_s": round(h.tok_s, 1),
        "overhead_percent": round(overhead, 1),
        "threads": args.threads or "default",
        "direct_runs_s": [round(r.wall_s, 3) for r in direct_runs],
        "http_runs_s": [round(r.wall_s, 3) for r in http_runs],
        "environment": describe().as_dict(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"workload: {result['workload']}")
    print(f"direct (LLM.generate): {d.wall_s:7.2f} s  {d.tok_s:7.1f} tok/s")
    print(f"HTTP ({args.requests} streamed):    {h.wall_s:7.2f} s  {h.tok_s:7.1f} tok/s")
    print(f"server overhead:       {overhead:+6.1f} %")
    print(f"runs (s): direct {result['direct_runs_s']}, HTTP {result['http_runs_s']}")
    print(f"machine: {result['environment']}")


if __name__ == "__main__":
    main()
