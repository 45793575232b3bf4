"""How many parts a small decode batch's context should be cut into: the fused decode kernel
(`paged_decode_qkv`, with its split combine) timed in CUDA graphs over batch size, context length
and split count, at the head shapes of Qwen3-0.6B and Llama-3.1-8B.

    python -m ferrum.bench.gpu_splits [--out DIR] [--batches 1,2,4,8,16] [--shapes 32x4x4,...]

Each (batch, context, splits) is captured REPEAT times back to back in one graph, launched with
programmatic dependent launch as decode steps run (a chain of layers), cycling through copies of
the KV cache that together overflow L2; the figure is the in-graph time of one call. Prints, per
shape, the time of every split count and the best; DIR/gpu_splits.json holds every figure.
--shapes also sweeps the kernel's launch shape (tile tokens x warps x stages, the DecodeConfig
fields; default: the configured one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ferrum.bench.gpu_skinny import L2_BYTES, REPEAT, graph_us
from ferrum.bench.report import write_json

BLOCK = 16
CONTEXTS = [128, 256, 384, 512, 768, 1024, 2048, 4096, 8192]
SPLITS = [1, 2, 4, 8, 16, 32]
# model -> (query heads, kv heads, head dim, q/k norm)
SHAPES = {"qwen3:0.6b": (16, 8, 128, True), "llama3.1:8b": (32, 8, 128, False)}


def time_shape(heads: int, kv: int, dim: int, qk_norm: bool, batch: int, ctx: int) -> dict:
    """In-graph microseconds of one fused decode call for every split count."""
    from ferrum.kernels.paged_decode import paged_decode_qkv

    dev, dt = "cuda", torch.bfloat16
    per_seq = -(-ctx // BLOCK)
    cache_bytes = 2 * batch * per_seq * BLOCK * kv * dim * 2
    copies = max(1, min(REPEAT, -(-3 * L2_BYTES // cache_bytes)))
    caches = [
        torch.randn(2, batch * per_seq, BLOCK, kv, dim, device=dev, dtype=dt) for _ in range(copies)
    ]
    tables = torch.arange(batch * per_seq, device=dev, dtype=torch.int32).view(batch, per_seq)
    qkv = torch.randn(batch, heads + 2 * kv, dim, device=dev, dtype=dt)
    cos = torch.randn(batch, dim, device=dev, dtype=dt)
    sin = torch.randn(batch, dim, device=dev, dtype=dt)
    qw = kw = torch.ones(dim, device=dev, dtype=dt) if qk_norm else None
    cu = torch.arange(batch + 1, device=dev, dtype=torch.int32)
    lens = torch.full((batch,), ctx, device=dev, dtype=torch.int32)
    slots = (tables[:, -1].long() * BLOCK + (ctx - 1) % BLOCK).contiguous()
    figures = {}
    for splits in SPLITS:

        def call(i: int, splits: int = splits) -> None:
            paged_decode_qkv(qkv, cos, sin, qw, kw, 1e-6, heads, caches[i % copies], slots, cu,
                             lens, tables, dim**-0.5, splits)  # fmt: skip

        figures[splits] = graph_us(call)
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--batches", default="1,2,4,8,16")
    ap.add_argument("--shapes", default="", help="launch shapes: tile x warps x stages, ...")
    ap.add_argument("--max-context", type=int, default=CONTEXTS[-1])
    args = ap.parse_args()
    from ferrum.kernels import paged_decode as pd
    from ferrum.kernels.launch import set_pdl

    set_pdl(True)
    default = pd.CONFIG
    shapes = [
        pd.DecodeConfig(*(int(v) for v in shape.split("x")), default.programs_per_sm)
        for shape in args.shapes.split(",")
        if shape
    ] or [default]
    results = []
    for model, (heads, kv, dim, qk_norm) in SHAPES.items():
        for batch in (int(b) for b in args.batches.split(",")):
            for ctx in (c for c in CONTEXTS if c <= args.max_context):
                for shape in shapes:
                    pd.CONFIG = shape
                    us = time_shape(heads, kv, dim, qk_norm, batch, ctx)
                    torch.cuda.empty_cache()  # the cache copies of this shape
                    best = min(us, key=us.__getitem__)
                    label = f"{shape.block_n}x{shape.num_warps}x{shape.num_stages}"
                    results.append({"model": model, "batch": batch, "context": ctx,
                                    "shape": label, "us": us, "best": best})  # fmt: skip
                    row = " ".join(f"{s}:{t:6.2f}" for s, t in us.items())
                    print(f"{model:<12} batch {batch:>2} ctx {ctx:>5} {label:<8} {row}  "
                          f"best {best}", flush=True)  # fmt: skip
    pd.CONFIG = default
    write_json({"cases": results}, Path(args.out) / "gpu_splits.json")


if __name__ == "__main__":
    main()
