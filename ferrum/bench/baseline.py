"""The baseline a user would pick instead of ferrum: transformers' `generate`, batched.

Same weights (or, with random weights, the same config built by transformers), same dtype and
device, SDPA attention and the dynamic KV cache — its fastest cache that works: the static,
compiled cache was slower (BENCH.md). `generate` batches statically: a batch of up to
`batch_size` requests (left-padded) runs until its longest request is done, then the next batch
starts. A request counts only the tokens it asked for; the extra steps its batch makes it wait
are the real cost of static batching. In the closed-loop sense, every request of a batch arrives
when the batch starts (the previous batch's answers all come back together at its end).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ferrum.bench.stats import LevelFigures, RequestTiming
from ferrum.bench.workload import BenchRequest

PAD_ID = 0  # left padding id; masked out, so any valid id will do
ATTENTION = "sdpa"
CACHE = "dynamic"


class _StepClock:
    """A `generate` streamer that only records when each decoding step's tokens exist."""

    def __init__(self, device: torch.device):
        self.device = device
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate pushes the prompt first
            self._prompt_seen = True
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the token is computed, not just queued
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


@dataclass
class TransformersBaseline:
    """A transformers causal LM ready to run benchmark batches."""

    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    load_seconds: float

    @classmethod
    def load(
        cls, spec: str, device: torch.device, dtype: torch.dtype, random_weights: bool
    ) -> TransformersBaseline:
        start = time.perf_counter()
        model = _random_model(spec, device, dtype) if random_weights else _pretrained(spec, dtype)
        model = model.to(device).eval()
        return cls(model, device, dtype, time.perf_counter() - start)

    def describe(self) -> dict:
        import transformers

        return {
            "name": "transformers",
            "version": transformers.__version__,
            "api": "AutoModelForCausalLM.generate, greedy, left-padded static batches",
            "attention": ATTENTION,
            "cache": CACHE,
            "dtype": str(self.dtype).removeprefix("torch."),
            "load_seconds": self.load_seconds,
        }

    def run(self, requests: list[BenchRequest], batch_size: int) -> LevelFigures:
        """Run `requests` in order, `batch_size` at a time; the figures of the whole run."""
        timings: list[RequestTiming] = []
        start = time.perf_counter()
        for i in range(0, len(requests), batch_size):
            timings += self._run_batch(requests[i : i + batch_size])
        return LevelFigures.of(timings, time.perf_counter() - start)

    @torch.inference_mode()
    def greedy_tokens(self, prompt: list[int], n: int) -> list[int]:
        """`n` greedy tokens after `prompt`, EOS ignored."""
        ids = torch.tensor([prompt], device=self.device)
        out = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=PAD_ID,
        )
        return out[0, len(prompt) :].tolist()

    @torch.inference_mode()
    def _run_batch(self, batch: list[BenchRequest]) -> list[RequestTiming]:
        prompts = [r.prompt for r in batch]
        if not all(isinstance(p, list) for p in prompts):
            raise TypeError("the transformers baseline takes token-id prompts")
        width = max(len(p) for p in prompts)
        ids = torch.full((len(batch), width), PAD_ID, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, p in enumerate(prompts):  # (B, T) left-padded
            ids[row, width - len(p) :] = torch.tensor(p)
            mask[row, width - len(p) :] = 1
        steps = max(r.output_len for r in batch)
        clock = _StepClock(self.device)
        t0 = time.perf_counter()
        self.model.generate(
            ids.to(self.device),
            attention_mask=mask.to(self.device),
            max_new_tokens=steps,
            min_new_tokens=steps,  # EOS ignored, as for ferrum
            do_sample=False,
            pad_token_id=PAD_ID,
            streamer=clock,
        )
        end = time.perf_counter()
        return [
            RequestTiming(
                start=t0,
                token_times=clock.times[: r.output_len],
                end=clock.times[r.output_len - 1] if len(clock.times) >= r.output_len else end,
                input_tokens=len(r.prompt),
                output_tokens=min(r.output_len, len(clock.times)),
            )
            for r in batch
        ]


def _random_model(spec: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The architecture of `spec` (alias or config.json) with transformers' random init."""
    import transformers

    from ferrum.engine.loading import random_config

    config = dict(random_config(spec))
    model_type = config.pop("model_type")
    hf_config = transformers.AutoConfig.for_model(model_type, **config)
    with torch.device(device):  # initialize in place: an 8B model is slow to init on the CPU
        return transformers.AutoModelForCausalLM.from_config(
            hf_config, dtype=dtype, attn_implementation=ATTENTION
        )


def _pretrained(spec: str, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint of `spec` through transformers' own loader (a GGUF is dequantized)."""
    import transformers

    from ferrum.loader.resolve import resolve_model

    source = resolve_model(spec)
    kwargs: dict = {"dtype": dtype, "attn_implementation": ATTENTION}
    if source.kind == "gguf":
        kwargs["gguf_file"] = source.path.name
        return transformers.AutoModelForCausalLM.from_pretrained(str(source.path.parent), **kwargs)
    return transformers.AutoModelForCausalLM.from_pretrained(str(source.path), **kwargs)
