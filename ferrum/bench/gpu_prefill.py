"""The prefill attention kernel's launch shapes on prompt steps: 8 prompts of 1024 tokens (the
64-concurrent workload's prompt steps) and one of 8192, at Llama-3.1-8B's head shapes.

    python -m ferrum.bench.gpu_prefill [--out DIR] [--shapes 64x64x4x2,...]

Each shape (query rows x key tile x warps x stages, the PrefillConfig fields) is timed on each
case with triton's do_bench (median); the figure is TFLOP/s of causal attention (the visible
half of QK^T and PV). DIR/gpu_prefill.json holds every figure.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from ferrum.bench.gpu_skinny import launch_shape
from ferrum.bench.report import write_json

CASES = [(8, 1024), (1, 8192)]  # (prompts, tokens each)
HEADS, KV_HEADS, DIM, BLOCK = 32, 8, 128, 16
SHAPES = "64x64x4x2,64x64x4x3,128x64x8x2,128x64x8x3,128x64x4x3,128x32x4x3,64x32x4x3,128x128x8x2"


def prefill_ms(prompts: int, tokens: int, config) -> float:
    from triton.testing import do_bench

    from ferrum.kernels import paged_prefill as pp

    dev, dt = "cuda", torch.bfloat16
    per_seq = -(-tokens // BLOCK)
    cache = torch.randn(2, prompts * per_seq, BLOCK, KV_HEADS, DIM, device=dev, dtype=dt)
    tables = torch.randperm(prompts * per_seq, device=dev).view(prompts, per_seq).int()
    q = torch.randn(prompts * tokens, HEADS, DIM, device=dev, dtype=dt)
    out = torch.empty_like(q)
    cu = torch.arange(prompts + 1, device=dev, dtype=torch.int32) * tokens
    lens = torch.full((prompts,), tokens, device=dev, dtype=torch.int32)
    seqs = torch.arange(prompts, device=dev, dtype=torch.int32)
    with launch_shape(pp, config):
        return do_bench(
            lambda: pp.paged_prefill_attention(q, cache, out, cu, lens, tables, DIM**-0.5, seqs,
                                               tokens),  # fmt: skip
            warmup=5, rep=30, return_mode="median",
        )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--shapes", default=SHAPES)
    args = ap.parse_args()
    from ferrum.kernels import paged_prefill as pp

    shapes = [pp.PrefillConfig(*(int(v) for v in s.split("x"))) for s in args.shapes.split(",")]
    results = []
    for (prompts, tokens), config in itertools.product(CASES, shapes):
        flops = prompts * 2 * 2 * tokens * tokens / 2 * HEADS * DIM
        try:
            ms = prefill_ms(prompts, tokens, config)
        except Exception as err:  # a shape that does not fit the chip's shared memory
            print(f"{prompts} x {tokens}: {vars(config)} {type(err).__name__}", flush=True)
            continue
        results.append({"prompts": prompts, "tokens": tokens, "config": vars(config), "ms": ms,
                        "tflops": flops / ms / 1e9})  # fmt: skip
        print(f"{prompts} x {tokens:>5}: {vars(config)} {ms:7.3f} ms "
              f"{flops / ms / 1e9:6.1f} TFLOP/s", flush=True)  # fmt: skip
        torch.cuda.empty_cache()
    write_json({"cases": results}, Path(args.out) / "gpu_prefill.json")


if __name__ == "__main__":
    main()
