"""`ferrum bench --url http://HOST:PORT/v1`: any OpenAI-compatible server, over HTTP.

Each request is a streaming `POST /completions` (SSE) with `ignore_eos` (a vLLM extension that
ferrum, vLLM and SGLang honour) and greedy sampling, so it generates exactly its output length;
token-id prompts (the random datasets) are another such extension, text prompts (jsonl) are
plain OpenAI. Time to first token is the first chunk that carries text; inter-token latency is
the gap between such chunks; time per output token uses the server's own token count
(`stream_options.include_usage`) when it sends one, else the number of chunks.

Two ways to load the server:
- closed loop at each `--concurrency` level: c clients, each sending its next request when its
  previous one finished;
- open loop at each `--request-rate`: requests sent at Poisson arrival times whatever the server
  does (optionally capped at `--max-concurrency` in flight), the way real users arrive.
A request that fails (connection refused, HTTP error, an error event in the stream, no tokens)
is counted, never retried. Every phase gets fresh prompts (see workload.py): a server's prefix
cache cannot serve one phase from another.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from ferrum.bench.stats import LevelFigures, LevelResult, RequestTiming
from ferrum.bench.workload import BenchRequest, WorkloadSpec, poisson_arrivals, sweep_size
from ferrum.errors import InvalidInputError

DEFAULT_REQUEST_TIMEOUT_S = 300.0  # one request, connect to last token
MODELS_TIMEOUT_S = 10.0  # listing the server's models
WARMUP_OUTPUT_TOKENS = 8
ERROR_TEXT_CHARS = 200  # how much of an error body is kept

Progress = Callable[[str], None]


@dataclass
class OnlineOptions:
    """What to send where. `concurrency` and `request_rates` are the load levels."""

    url: str
    model: str | None = None  # the served model name (default: the server's first model)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    num_prompts: int = 256  # requests per open-loop level and repeat
    sweep_prompts: int | None = None  # requests per closed-loop level (default: see sweep_size)
    concurrency: list[int] = field(default_factory=list)
    request_rates: list[float] = field(default_factory=list)  # requests/s; inf: all at once
    max_concurrency: int | None = None  # cap on requests in flight in the open loop
    warmup: int = 0  # requests sent (and not counted) before measuring
    repeats: int = 1
    timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        checks = [
            (self.url.startswith(("http://", "https://")), "--url must start with http(s)://"),
            (self.num_prompts >= 1, "--num-prompts must be at least 1"),
            (self.sweep_prompts is None or self.sweep_prompts >= 1, "--sweep-prompts >= 1"),
            (all(c >= 1 for c in self.concurrency), "--concurrency levels must be at least 1"),
            (all(r > 0 for r in self.request_rates), "--request-rate must be positive"),
            (self.concurrency or self.request_rates, "give --concurrency or --request-rate"),
            (self.max_concurrency is None or self.max_concurrency >= 1, "--max-concurrency >= 1"),
            (self.warmup >= 0, "--warmup must be >= 0"),
            (self.repeats >= 1, "--repeats must be at least 1"),
            (self.timeout_s > 0, "--timeout must be positive"),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)

    def sweep_size(self, concurrency: int) -> int:
        return sweep_size(concurrency, self.num_prompts, self.sweep_prompts)


@dataclass
class OnlineResult:
    options: OnlineOptions
    model: str
    levels: list[LevelResult]
    warmup_errors: int

    @property
    def num_requests(self) -> int:
        return sum(level.num_requests for level in self.levels)

    @property
    def num_errors(self) -> int:
        return sum(level.num_errors for level in self.levels)

    @property
    def error_rate(self) -> float:
        return self.num_errors / self.num_requests if self.num_requests else 0.0


def run_online(opts: OnlineOptions, progress: Progress | None = None) -> OnlineResult:
    """Measure the server at every level; see the module docstring."""
    return asyncio.run(_run(opts, progress or (lambda _msg: None)))


async def _run(opts: OnlineOptions, say: Progress) -> OnlineResult:
    open_peak = (opts.max_concurrency or opts.num_prompts) if opts.request_rates else 1
    peak = max([*opts.concurrency, open_peak, opts.warmup, 1])
    limits = httpx.Limits(max_connections=peak + 1, max_keepalive_connections=peak + 1)
    timeout = httpx.Timeout(opts.timeout_s)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        model = opts.model or await served_model(client, opts.url)
        sender = _Sender(client, f"{opts.url}/completions", model)
        warm_errors = 0
        if opts.warmup:
            say(f"warm-up: {opts.warmup} requests")
            warm = [
                BenchRequest(r.prompt, min(r.output_len, WARMUP_OUTPUT_TOKENS))
                for r in opts.workload.requests(opts.warmup, "warmup")
            ]
            figures = await closed_loop(sender, warm, opts.warmup)
            warm_errors = figures.num_errors
        levels = []
        for c in opts.concurrency:
            say(f"closed loop, concurrency {c}")
            level = LevelResult("concurrency", c, [])
            for r in range(opts.repeats):
                reqs = opts.workload.requests(opts.sweep_size(c), f"c{c}/{r}")
                level.runs.append(await closed_loop(sender, reqs, c))
            levels.append(level)
        for rate in opts.request_rates:
            say(f"open loop, {rate:g} requests/s")
            level = LevelResult("request_rate", rate, [])
            for r in range(opts.repeats):
                reqs = opts.workload.requests(opts.num_prompts, f"r{rate:g}/{r}")
                arrivals = poisson_arrivals(len(reqs), rate, opts.workload.seed + r)
                level.runs.append(await open_loop(sender, reqs, arrivals, opts.max_concurrency))
            levels.append(level)
    return OnlineResult(opts, model, levels, warm_errors)


async def served_model(client: httpx.AsyncClient, url: str) -> str:
    """The first model the server lists at GET /models."""
    try:
        resp = await client.get(f"{url}/models", timeout=MODELS_TIMEOUT_S)
        resp.raise_for_status()
        return resp.json()["data"][0]["id"]
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
        raise InvalidInputError(
            f"cannot list the models at {url}/models ({type(e).__name__}: {e}); is the server "
            "up? Name the model (ferrum bench NAME --url URL) to skip the lookup"
        ) from None


@dataclass
class _Sender:
    client: httpx.AsyncClient
    endpoint: str
    model: str

    async def send(self, req: BenchRequest) -> RequestTiming:
        """Stream one completion; never raises for a failed request (it is counted)."""
        body = {
            "model": self.model,
            "prompt": req.prompt,
            "max_tokens": req.output_len,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        timing = RequestTiming(start=time.perf_counter(), input_tokens=req.input_len)
        try:
            async with self.client.stream("POST", self.endpoint, json=body) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode(errors="replace")[:ERROR_TEXT_CHARS]
                    timing.error = f"HTTP {resp.status_code}: {text}"
                    return timing
                chunks = await _read_stream(resp, timing)
        except httpx.HTTPError as e:
            timing.error = f"{type(e).__name__}: {e}"[:ERROR_TEXT_CHARS]
            return timing
        timing.end = time.perf_counter()
        if timing.error is None:
            timing.output_tokens = timing.output_tokens or chunks
            if timing.output_tokens == 0:
                timing.error = "the stream carried no tokens"
        return timing


async def _read_stream(resp: httpx.Response, timing: RequestTiming) -> int:
    """Read SSE events into `timing`; returns the number of chunks that carried text."""
    chunks = 0
    async for line in resp.aiter_lines():
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            break
        try:
            event = json.loads(payload)
        except json.JSONDecodeError:
            timing.error = f"not JSON in the stream: {payload[:ERROR_TEXT_CHARS]}"
            continue
        if "error" in event:
            timing.error = f"error event: {json.dumps(event['error'])[:ERROR_TEXT_CHARS]}"
            continue
        if any(choice.get("text") for choice in event.get("choices") or []):
            timing.token_times.append(time.perf_counter())
            chunks += 1
        usage = event.get("usage")
        if usage:
            timing.output_tokens = usage.get("completion_tokens") or 0
            timing.input_tokens = usage.get("prompt_tokens", timing.input_tokens)
    return chunks


async def closed_loop(
    sender: _Sender, requests: list[BenchRequest], concurrency: int
) -> LevelFigures:
    """`concurrency` clients, each sending its next request when its previous one ends."""
    queue = list(reversed(requests))
    timings: list[RequestTiming] = []

    async def client() -> None:
        while queue:
            timings.append(await sender.send(queue.pop()))

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(min(concurrency, len(requests)))))
    return LevelFigures.of(timings, time.perf_counter() - start)


async def open_loop(
    sender: _Sender,
    requests: list[BenchRequest],
    arrivals: list[float],
    max_concurrency: int | None,
) -> LevelFigures:
    """Send request i at `arrivals[i]` seconds from the start, waiting for nothing (but a free
    slot, when `max_concurrency` caps the requests in flight)."""
    slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None

    async def one(req: BenchRequest) -> RequestTiming:
        if slots is None:
            return await sender.send(req)
        async with slots:
            return await sender.send(req)

    start = time.perf_counter()
    tasks = []
    for req, at in zip(requests, arrivals):
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(req)))
    timings = await asyncio.gather(*tasks)
    return LevelFigures.of(list(timings), time.perf_counter() - start)
