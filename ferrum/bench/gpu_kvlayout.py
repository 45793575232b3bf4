"""Which KV cache layout the decode kernel reads fastest: token-major blocks (block, token,
head, dim: what the engine allocates) against head-major ones (block, head, token, dim: each
head's run of a block contiguous), at a few block sizes and launch shapes.

    python -m ferrum.bench.gpu_kvlayout [--out DIR]

The decode kernel takes the cache's strides, so a head-major cache is passed as a permuted view
of the same logical shape; blocks are scattered (a random permutation), as in a long-running
engine. Prints the median time and the KV read bandwidth of each case; DIR/gpu_kvlayout.json
holds every figure.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch

from ferrum.bench.gpu_skinny import launch_shape
from ferrum.bench.report import write_json

# (batch, context, kv heads, query heads per kv head): 64-concurrent and offline-256 shapes of
# Llama-3.1-8B and Qwen3-0.6B, and decode-1
CASES = [(64, 1280, 8, 4), (256, 800, 8, 2), (1, 256, 8, 4)]
LAYOUTS = ["token-major", "head-major"]
BLOCK_SIZES = [16, 32, 64]
DIM = 128


def decode_ms(
    case: tuple[int, ...], layout: str, block: int, config, splits: int | None = None
) -> float:
    from triton.testing import do_bench

    from ferrum.kernels import paged_decode as pd

    batch, ctx, kv, group = case
    per_seq = -(-ctx // block)
    blocks = batch * per_seq
    dt, dev = torch.bfloat16, "cuda"
    if layout == "token-major":
        cache = torch.randn(2, blocks, block, kv, DIM, device=dev, dtype=dt)
    else:
        cache = torch.randn(2, blocks, kv, block, DIM, device=dev, dtype=dt).transpose(2, 3)
    tables = torch.randperm(blocks, device=dev).view(batch, per_seq).int()
    q = torch.randn(batch, kv * group, DIM, device=dev, dtype=dt)
    out = torch.empty_like(q)
    cu = torch.arange(batch + 1, device=dev, dtype=torch.int32)
    lens = torch.full((batch,), ctx, device=dev, dtype=torch.int32)
    with launch_shape(pd, config):
        if splits is None:
            splits = pd.num_splits_for(batch, kv, pd.device_sms(torch.device(dev)))
        return do_bench(
            lambda: pd.paged_decode_attention(q, cache, out, cu, lens, tables, DIM**-0.5, splits),
            warmup=10, rep=50, return_mode="median",
        )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--splits", action="store_true", help="token-major, block 16: split counts")
    ap.add_argument("--split-counts", type=lambda v: [int(x) for x in v.split(",")],
                    default=[1, 2, 4])  # fmt: skip
    ap.add_argument("--shapes", default="32x4x4,32x4x3,32x8x4,16x4x4,64x4x4,32x2x4",
                    help="with --splits: launch shapes, tile x warps x stages")  # fmt: skip
    args = ap.parse_args()
    from ferrum.kernels import paged_decode as pd

    if args.splits:
        shapes = [(int(v) for v in shape.split("x")) for shape in args.shapes.split(",")]
        shapes = [tuple(shape) for shape in shapes]
        for case, splits, shape in itertools.product(CASES[:2], args.split_counts, shapes):
            ms = decode_ms(case, "token-major", 16, pd.DecodeConfig(*shape), splits)
            batch, ctx, kv, _ = case
            gbps = 2 * batch * ctx * kv * DIM * 2 / ms / 1e6
            print(f"batch {batch:>3} ctx {ctx:>5} splits {splits} {shape}: {ms * 1e3:7.1f} us "
                  f"{gbps:6.0f} GB/s", flush=True)  # fmt: skip
        return

    configs = [pd.CONFIG, pd.DecodeConfig(64, 4, 3), pd.DecodeConfig(64, 8, 3)]
    results = []
    for case in CASES:
        batch, ctx, kv, _ = case
        kv_bytes = 2 * batch * ctx * kv * DIM * 2
        for layout, block, config in itertools.product(LAYOUTS, BLOCK_SIZES, configs):
            ms = decode_ms(case, layout, block, config)
            shape = f"{config.block_n}x{config.num_warps}x{config.num_stages}"
            results.append({"case": case, "layout": layout, "block_size": block, "shape": shape,
                            "ms": ms, "GBps": kv_bytes / ms / 1e6})  # fmt: skip
            print(f"batch {batch:>3} ctx {ctx:>5}  {layout:<11} block {block:>2} {shape:<8} "
                  f"{ms * 1e3:8.1f} us  {kv_bytes / ms / 1e6:7.0f} GB/s", flush=True)  # fmt: skip
            torch.cuda.empty_cache()
    write_json({"cases": results}, Path(args.out) / "gpu_kvlayout.json")


if __name__ == "__main__":
    main()
