"""The projections of a 64-sequence decode step on cuBLAS, cuBLASLt and ferrum's tile GEMM
(`ferrum.kernels.tile_gemm`: its default launch shape and a sweep of shapes and K splits), and
the chip's read bandwidth: is there room under cuBLAS, and does the default shape take it?

    python -m ferrum.bench.gpu_gemm64 [--out DIR] [--models llama3.1:8b,qwen3:0.6b] [--rows 64,32]
                                      [--names qkv,o]

Each candidate runs REPEAT times back to back in one CUDA graph (launched with PDL, as the engine
does), cycling through weight copies that together overflow L2 (a decode step streams every
weight from DRAM once), and the replay is timed: a figure is the in-graph time of one call. The
full sweep runs at the first row count; the others time cuBLAS, the default and the five best
shapes of the first. Prints microseconds and TB/s of weight read per shape; DIR/gpu_gemm64.json
holds every figure.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F

from ferrum.bench.gpu_skinny import L2_BYTES, REPEAT, graph_us
from ferrum.bench.report import write_json
from ferrum.kernels.tile_gemm import TileConfig, default_config, tile_linear

# model -> name -> (N, K): the four projections of a decoder layer and the lm_head
SHAPES = {
    "llama3.1:8b": {
        "qkv": (6144, 4096),
        "o": (4096, 4096),
        "gate_up": (28672, 4096),
        "down": (4096, 14336),
        "lm_head": (128256, 4096),
    },
    "qwen3:0.6b": {
        "qkv": (4096, 1024),
        "o": (1024, 2048),
        "gate_up": (6144, 1024),
        "down": (1024, 3072),
        "lm_head": (151936, 1024),
    },
}
SHARED_BYTES = 200 * 2**10  # what a program's pipeline stages may hold (an H100 SM has 228 KiB)
KEEP = 5  # shapes of the full sweep re-timed at the other row counts


def sweep(n: int, k: int, rows: int, sms: int) -> list[TileConfig]:
    """Tile shapes and K splits worth timing for an (rows, k) @ (n, k)^T product."""
    configs = []
    block_m = max(16, 1 << (rows - 1).bit_length())
    for bn, bk, stages, split in itertools.product(
        (32, 64, 128, 256), (64, 128, 256), (3, 4, 5), (1, 2, 3, 4, 6, 8)
    ):
        programs = -(-n // bn) * split
        if not sms // 2 <= programs <= 10 * sms or k // (split * bk) < 2:
            continue
        if stages * (block_m + bn) * bk * 2 > SHARED_BYTES:
            continue
        configs.append(TileConfig(bn, bk, split, stages, 8 if bn == 256 else 4))
    return configs


def read_bandwidth(gib: float = 4.0) -> float:
    """GB/s of a pure read (a sum over a big bf16 tensor), best of a few."""
    x = torch.ones(int(gib * 2**30) // 2, dtype=torch.bfloat16, device="cuda")
    best = 0.0
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        x.sum(dtype=torch.float32)
        end.record()
        end.synchronize()
        best = max(best, x.numel() * 2 / start.elapsed_time(end) / 1e6)
    return best


def measure(name: str, n: int, k: int, rows: int, configs: list[TileConfig] | None) -> dict:
    """cuBLAS, cuBLASLt, the default tile shape and each of `configs` (None: the sweep) for
    (rows, k) @ (n, k)^T."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    count = min(REPEAT, -(-3 * L2_BYTES // (n * k * 2)))
    ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(count)]
    x = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
    gb = n * k * 2 / 1e9
    entry: dict = {"cublas_us": graph_us(lambda i: F.linear(x, ws[i % count]))}
    torch.backends.cuda.preferred_blas_library("cublaslt")
    entry["cublaslt_us"] = graph_us(lambda i: F.linear(x, ws[i % count]))
    torch.backends.cuda.preferred_blas_library("cublas")
    ref = F.linear(x.float(), ws[0].float())
    default = default_config(rows, n, k, sms)

    def timed(cfg: TileConfig) -> tuple[float, float]:
        err = (tile_linear(x, ws[0], None, cfg).float() - ref).abs().max().item()
        return graph_us(lambda i: tile_linear(x, ws[i % count], None, cfg)), err

    entry["default"], entry["default_us"] = vars(default), timed(default)[0]
    tried = []
    for cfg in configs if configs is not None else sweep(n, k, rows, sms):
        try:
            us, err = timed(cfg)
        except Exception as exc:  # out of shared memory or registers
            print(f"  {name} {cfg}: {type(exc).__name__}", flush=True)
            continue
        if err > 0.05:
            raise AssertionError(f"{name} {cfg}: max error {err} against float32")
        tried.append((us, cfg))
    tried.sort(key=lambda t: t[0])
    best_us, best = tried[0]
    entry.update(best_us=best_us, best=vars(best),
                 all=[(round(t, 2), vars(c)) for t, c in tried])  # fmt: skip
    print(
        f"{name:<22} N {n:>6} K {k:>5}: cublas {entry['cublas_us']:7.1f} us "
        f"({gb * 1e3 / entry['cublas_us']:.2f} TB/s)  cublaslt {entry['cublaslt_us']:7.1f}  "
        f"default {entry['default_us']:7.1f} ({gb * 1e3 / entry['default_us']:.2f} TB/s)  "
        f"best {best_us:7.1f} ({gb * 1e3 / best_us:.2f} TB/s) {tuple(vars(best).values())}",
        flush=True,
    )
    entry["_top"] = [c for _, c in tried[:KEEP]]
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--models", default=",".join(SHAPES))
    ap.add_argument("--rows", default="64,32")
    ap.add_argument("--names", default=None, help="projections to time (default: all)")
    args = ap.parse_args()
    from ferrum.kernels.launch import set_pdl

    set_pdl(True)
    results: dict = {"gpu": torch.cuda.get_device_name(0), "read_GBps": read_bandwidth()}
    print(f"read bandwidth {results['read_GBps']:.0f} GB/s", flush=True)
    rows_list = [int(r) for r in args.rows.split(",")]
    for model in args.models.split(","):
        for name, (n, k) in SHAPES[model].items():
            if args.names and name not in args.names.split(","):
                continue
            top = None
            for rows in rows_list:
                entry = measure(f"{model} {name} x{rows}", n, k, rows, top)
                top = entry.pop("_top")
                results[f"{model} {name} x{rows}"] = entry
                torch.cuda.empty_cache()
    write_json(results, Path(args.out) / "gpu_gemm64.json")


if __name__ == "__main__":
    main()
