"""The skinny GEMM (ferrum.kernels.skinny_gemm) against what a decode step runs today, at the
shapes of real models, inside CUDA graphs (as decode steps run).

    python -m ferrum.bench.gpu_skinny [--out DIR] [--rows 1,8]

For each model's four projections of one decoder layer, at a few rows (sequences in the step):
- today: the RMSNorm kernel then cuBLAS for qkv and gate-up, cuBLAS for o, the SiLU-and-mul
  kernel then cuBLAS for down;
- skinny: one kernel each, the norm or activation folded in, for every launch shape of a small
  grid (BLOCK_N, BLOCK_K, warps, stages).
Each candidate is captured REPEAT times back to back in one CUDA graph (cycling through copies of
the weight that together overflow L2) and the replay is timed, so a figure is the in-graph time
of one call (launch gaps included, host excluded); both ways are timed again with programmatic
dependent launch (ferrum.kernels.launch). Prints the best shape per projection and the layer
totals; DIR/gpu_skinny.json holds every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

REPEAT = 20  # calls per captured graph
REPLAYS = 10
L2_BYTES = 50 * 2**20  # an H100's L2: the calls of one graph cycle through more weight than this
# model -> (hidden, q width, kv width, intermediate)
MODELS = {"qwen3:0.6b": (1024, 2048, 1024, 3072), "llama3.1:8b": (4096, 4096, 1024, 14336)}
# (BLOCK_N, BLOCK_K, warps, stages); BLOCK_N 4 and 8: one row only
GRIDS = {
    1: list(itertools.product((4, 8, 16), (512, 1024), (4, 8), (3, 4))),
    16: list(itertools.product((16, 32, 64), (128, 256), (4,), (3, 4))),
}


@contextmanager
def launch_shape(module, config):
    """Inside the block, every launch of a kernel module (paged_decode, paged_prefill) uses
    `config` as its CONFIG."""
    saved = module.CONFIG
    module.CONFIG = config
    try:
        yield
    finally:
        module.CONFIG = saved


def graph_us(fn) -> float:
    """In-graph microseconds of one call: fn(i) for i in range(REPEAT), captured in one graph."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(3):
            fn(i)  # compile and warm up outside the graph
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(REPEAT):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(REPLAYS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / REPEAT)
    del graph
    return statistics.median(times)


def layer_ops(hidden: int, q: int, kv: int, inter: int, rows: int) -> dict:
    """One decoder layer's four projections: name -> (today(i), skinny(i, **launch), bytes).
    Call i uses weight copy i % copies, with enough copies that a graph's calls stream from
    DRAM, not from L2, as a decode step through the layers does."""
    from ferrum.kernels.activation import silu_and_mul
    from ferrum.kernels.norm import rms_norm
    from ferrum.kernels.skinny_gemm import skinny_linear

    dev, dt = "cuda", torch.bfloat16

    def rand(*shape):
        return torch.randn(*shape, device=dev, dtype=dt) * 0.05

    def copies(n: int, k: int) -> list[torch.Tensor]:
        count = min(REPEAT, -(-3 * L2_BYTES // (n * k * 2)))
        return [rand(n, k) for _ in range(count)]

    x, res, nw = rand(rows, hidden), rand(rows, hidden), rand(hidden) + 1
    attn_out, gate_up = rand(rows, q), rand(rows, 2 * inter)
    w_qkv, w_o = copies(q + 2 * kv, hidden), copies(hidden, q)
    w_gu, w_down = copies(2 * inter, hidden), copies(hidden, inter)

    def pick(ws: list[torch.Tensor], i: int) -> torch.Tensor:
        return ws[i % len(ws)]

    def nbytes(ws: list[torch.Tensor]) -> int:
        return ws[0].numel() * ws[0].element_size()

    return {
        "qkv (norm+)": (
            lambda i: F.linear(rms_norm(x, nw, 1e-6, res)[0], pick(w_qkv, i)),
            lambda i, **c: skinny_linear(
                x, pick(w_qkv, i), prologue="rmsnorm", norm_weight=nw, residual=res, **c
            ),
            nbytes(w_qkv),
        ),
        "o": (
            lambda i: F.linear(attn_out, pick(w_o, i)),
            lambda i, **c: skinny_linear(attn_out, pick(w_o, i), **c),
            nbytes(w_o),
        ),
        "gate_up (norm+)": (
            lambda i: F.linear(rms_norm(x, nw, 1e-6, res)[0], pick(w_gu, i)),
            lambda i, **c: skinny_linear(
                x, pick(w_gu, i), prologue="rmsnorm", norm_weight=nw, residual=res, **c
            ),
            nbytes(w_gu),
        ),
        "down (silu+)": (
            lambda i: F.linear(silu_and_mul(gate_up), pick(w_down, i)),
            lambda i, **c: skinny_linear(gate_up, pick(w_down, i), prologue="silu_mul", **c),
            nbytes(w_down),
        ),
    }


def with_pdl(fn):
    """fn, its Triton kernels launched with programmatic dependent launch (where supported)."""
    from ferrum.kernels.launch import set_pdl

    def call(i: int) -> None:
        set_pdl(True)
        try:
            fn(i)
        finally:
            set_pdl(False)

    return call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--rows", default="1,8")
    args = ap.parse_args()
    results: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for model, dims in MODELS.items():
        for rows in (int(r) for r in args.rows.split(",")):
            entry: dict = {}
            for name, (today, skinny, nbytes) in layer_ops(*dims, rows).items():
                base = graph_us(today)
                tried = []
                for bn, bk, warps, stages in GRIDS[1 if rows == 1 else 16]:
                    cfg = {"block_n": bn, "block_k": bk, "num_warps": warps, "num_stages": stages}
                    tried.append((graph_us(lambda i, cfg=cfg, fn=skinny: fn(i, **cfg)), cfg))
                best_us, best = min(tried, key=lambda t: t[0])
                default_us = graph_us(skinny)
                base_pdl = graph_us(with_pdl(today))
                best_pdl = {
                    prefetch: graph_us(
                        with_pdl(lambda i, fn=skinny, c=best, p=prefetch: fn(i, **c, prefetch=p))
                    )
                    for prefetch in (False, True)
                }
                gb = nbytes / 1e9
                entry[name] = {
                    "today_us": base, "today_pdl_us": base_pdl, "skinny_us": best_us,
                    "skinny_pdl_us": min(best_pdl.values()),
                    "skinny_pdl_no_prefetch_us": best_pdl[False],
                    "skinny_pdl_prefetch_us": best_pdl[True],
                    "skinny_default_us": default_us, "best": best,
                    "skinny_TBps": gb * 1e3 / best_us,
                    "all": [(round(t, 2), c) for t, c in tried],
                }  # fmt: skip
                print(
                    f"{model:<12} rows {rows:>2} {name:<16} today {base:7.2f} us (pdl "
                    f"{base_pdl:7.2f})  skinny {best_us:7.2f} us (pdl {best_pdl[False]:7.2f}, "
                    f"pdl+prefetch {best_pdl[True]:7.2f}, default shape {default_us:7.2f}; "
                    f"{gb * 1e3 / best_us:5.2f} TB/s) {best}",
                    flush=True,
                )
            totals = {
                key: sum(e[key] for e in entry.values())
                for key in ("today_us", "today_pdl_us", "skinny_us", "skinny_pdl_us")
            }
            print(f"{model:<12} rows {rows:>2} layer (us): {totals}")
            results[f"{model}:rows{rows}"] = entry
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu_skinny.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
