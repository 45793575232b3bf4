"""The skinny GEMM (ferrum.kernels.skinny_gemm) against what a decode step runs today, at the
shapes of real models, inside CUDA graphs (as decode steps run).

    python -m ferrum.bench.gpu_skinny [--out DIR] [--rows 1,8]

For each model's four projections of one decoder layer, at a few rows (sequences in the step):
- today: the RMSNorm kernel then cuBLAS for qkv and gate-up, cuBLAS for o, the SiLU-and-mul
  kernel then cuBLAS for down;
- skinny: one kernel each, the norm or activation folded in, for every launch shape of a small
  grid (BLOCK_N, BLOCK_K, warps, stages).
Each candidate is captured REPEAT times back to back in one CUDA graph and the replay is timed,
so a figure is the in-graph time of one call (launch gaps included, host excluded). Prints the
best shape per projection and the layer totals; DIR/gpu_skinny.json holds every figure.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

REPEAT = 20  # calls per captured graph
REPLAYS = 10
# model -> (hidden, q width, kv width, intermediate)
MODELS = {"qwen3:0.6b": (1024, 2048, 1024, 3072), "llama3.1:8b": (4096, 4096, 1024, 14336)}
GRID = list(itertools.product((8, 16, 32, 64), (128, 256), (4,), (3, 4)))  # 8: one row only


def graph_us(fn) -> float:
    """In-graph microseconds of one fn() call."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()  # compile and warm up outside the graph
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(REPEAT):
            fn()
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
    """Inputs and weights of one decoder layer's four projections, and both ways to run each."""
    from ferrum.kernels.activation import silu_and_mul
    from ferrum.kernels.norm import rms_norm
    from ferrum.kernels.skinny_gemm import skinny_linear

    dev, dt = "cuda", torch.bfloat16

    def rand(*shape):
        return torch.randn(*shape, device=dev, dtype=dt) * 0.05

    x, res, nw = rand(rows, hidden), rand(rows, hidden), rand(hidden) + 1
    attn_out, gate_up = rand(rows, q), rand(rows, 2 * inter)
    w_qkv, w_o = rand(q + 2 * kv, hidden), rand(hidden, q)
    w_gu, w_down = rand(2 * inter, hidden), rand(hidden, inter)
    return {
        "qkv (norm+)": (
            lambda: F.linear(rms_norm(x, nw, 1e-6, res)[0], w_qkv),
            lambda **c: skinny_linear(
                x, w_qkv, prologue="rmsnorm", norm_weight=nw, residual=res, **c
            ),
            w_qkv,
        ),
        "o": (lambda: F.linear(attn_out, w_o), lambda **c: skinny_linear(attn_out, w_o, **c), w_o),
        "gate_up (norm+)": (
            lambda: F.linear(rms_norm(x, nw, 1e-6, res)[0], w_gu),
            lambda **c: skinny_linear(
                x, w_gu, prologue="rmsnorm", norm_weight=nw, residual=res, **c
            ),
            w_gu,
        ),
        "down (silu+)": (
            lambda: F.linear(silu_and_mul(gate_up), w_down),
            lambda **c: skinny_linear(gate_up, w_down, prologue="silu_mul", **c),
            w_down,
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--rows", default="1,8")
    args = ap.parse_args()
    results: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for model, dims in MODELS.items():
        for rows in (int(r) for r in args.rows.split(",")):
            entry: dict = {}
            for name, (today, skinny, weight) in layer_ops(*dims, rows).items():
                base = graph_us(today)
                tried = []
                for bn, bk, warps, stages in GRID:
                    cfg = {"block_n": bn, "block_k": bk, "num_warps": warps, "num_stages": stages}
                    tried.append((graph_us(lambda cfg=cfg, fn=skinny: fn(**cfg)), cfg))
                best_us, best = min(tried, key=lambda t: t[0])
                gb = weight.numel() * weight.element_size() / 1e9
                entry[name] = {
                    "today_us": base, "skinny_us": best_us, "best": best,
                    "skinny_TBps": gb * 1e3 / best_us,
                    "all": [(round(t, 2), c) for t, c in tried],
                }  # fmt: skip
                print(
                    f"{model:<12} rows {rows:>2} {name:<16} today {base:7.2f} us  skinny "
                    f"{best_us:7.2f} us ({gb * 1e3 / best_us:5.2f} TB/s) {best}",
                    flush=True,
                )
            today = sum(e["today_us"] for e in entry.values())
            skinny = sum(e["skinny_us"] for e in entry.values())
            print(f"{model:<12} rows {rows:>2} layer: today {today:.1f} us, skinny {skinny:.1f} us")
            results[f"{model}:rows{rows}"] = entry
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "gpu_skinny.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
