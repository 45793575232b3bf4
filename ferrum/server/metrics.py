"""`GET /metrics`: Prometheus metrics of the server and its engines.

Each app has its own `CollectorRegistry` (several apps in one process, as in tests, never clash).
Latency histograms are observed by the routers when a request finishes; engine figures (queue
depths, KV usage, prefix-cache hits, token counters) are read from each engine when scraped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from ferrum.engine.llm_engine import EngineStats
from ferrum.errors import FerrumError
from ferrum.outputs import RequestOutput
from ferrum.server.registry import LLM_KIND
from ferrum.server.state import server_state

STATS_TIMEOUT_S = 10.0  # a scrape waits at most this long for an engine between steps

# Buckets in seconds, spanning CPU (slow) to GPU (fast) serving.
TTFT_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80)
TPOT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
E2E_BUCKETS_S = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)

router = APIRouter()


class ServerMetrics:
    """The metrics of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ["model_name"]
        self.time_to_first_token = Histogram(
            "ferrum_time_to_first_token_seconds",
            "Time from arrival to the first generated token.",
            labels,
            buckets=TTFT_BUCKETS_S,
            registry=self.registry,
        )
        self.time_per_output_token = Histogram(
            "ferrum_time_per_output_token_seconds",
            "Mean time between generated tokens after the first, per request.",
            labels,
            buckets=TPOT_BUCKETS_S,
            registry=self.registry,
        )
        self.e2e_latency = Histogram(
            "ferrum_e2e_request_latency_seconds",
            "Time from arrival to the last token.",
            labels,
            buckets=E2E_BUCKETS_S,
            registry=self.registry,
        )
        self.requests_finished = Counter(
            "ferrum_request_success",
            "Requests that ran to completion, by finish reason.",
            ["model_name", "finished_reason"],
            registry=self.registry,
        )
        self.engine_stats: dict[str, EngineStats] = {}
        self.registry.register(_EngineCollector(self.engine_stats))

    def observe(self, model_name: str, output: RequestOutput) -> None:
        """Record a finished request."""
        m = output.metrics
        if m.time_to_first_token is not None:
            self.time_to_first_token.labels(model_name).observe(m.time_to_first_token)
        if m.first_token_time is not None and m.finished_time is not None:
            self.e2e_latency.labels(model_name).observe(m.finished_time - m.arrival_time)
            per_seq = max((len(c.token_ids) for c in output.outputs), default=0)
            if per_seq > 1:
                tpot = (m.finished_time - m.first_token_time) / (per_seq - 1)
                self.time_per_output_token.labels(model_name).observe(tpot)
        for completion in output.outputs:
            reason = completion.finish_reason or "abort"
            self.requests_finished.labels(model_name, reason).inc()


class _EngineCollector(Collector):
    """Engine figures from the latest snapshots (refreshed before each scrape)."""

    def __init__(self, snapshots: dict[str, EngineStats]):
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        gauges = {
            "ferrum_num_requests_running": "Sequences scheduled (prefilling or decoding).",
            "ferrum_num_requests_waiting": "Sequences waiting to be scheduled.",
            "ferrum_kv_cache_usage_perc": "Fraction of KV cache blocks in use (1 = full).",
            "ferrum_prefix_cache_hit_rate": "Prompt tokens served from the prefix cache / "
            "prompt tokens looked up, since start.",
        }
        counters = {
            "ferrum_num_preemptions": "Sequences preempted (KV cache full) since start.",
            "ferrum_prompt_tokens": "Prompt tokens submitted since start.",
            "ferrum_generation_tokens": "Tokens generated since start.",
            "ferrum_prefix_cache_queries": "Prompt tokens looked up in the prefix cache.",
            "ferrum_prefix_cache_hits": "Prompt tokens found in the prefix cache.",
        }
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            **{n: GaugeMetricFamily(n, h, labels=["model_name"]) for n, h in gauges.items()},
            **{n: CounterMetricFamily(n, h, labels=["model_name"]) for n, h in counters.items()},
        }
        for name, s in self.snapshots.items():
            hit_rate = s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0
            values = {
                "ferrum_num_requests_running": s.num_running,
                "ferrum_num_requests_waiting": s.num_waiting,
                "ferrum_kv_cache_usage_perc": s.kv_cache_usage,
                "ferrum_prefix_cache_hit_rate": hit_rate,
                "ferrum_num_preemptions": s.num_preemptions,
                "ferrum_prompt_tokens": s.prompt_tokens_total,
                "ferrum_generation_tokens": s.generation_tokens_total,
                "ferrum_prefix_cache_queries": s.prefix_cache_queries,
                "ferrum_prefix_cache_hits": s.prefix_cache_hits,
            }
            for metric, value in values.items():
                families[metric].add_metric([name], float(value))
        yield from families.values()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    app_metrics: ServerMetrics = request.app.state.metrics
    for model in server_state(request).models.models(LLM_KIND):
        if not model.handle.is_alive:
            continue
        try:
            stats = await asyncio.wait_for(model.handle.stats(), STATS_TIMEOUT_S)
        except (TimeoutError, asyncio.TimeoutError, FerrumError):
            continue  # keep the previous snapshot rather than fail the scrape
        app_metrics.engine_stats[model.name] = stats
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)
