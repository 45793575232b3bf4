"""The projections of a 64-sequence decode step (Llama-3.1-8B shapes, 64 rows) on cuBLAS,
cuBLASLt and a Triton tile sweep, and the chip's read bandwidth: is there room under cuBLAS?

    python -m ferrum.bench.gpu_gemm64 [--out DIR]

Each candidate runs REPEAT times back to back in one CUDA graph, cycling through weight copies
that together overflow L2 (a decode step streams every weight from DRAM once), and the replay
is timed: a figure is the in-graph time of one call. Prints microseconds and TB/s of weight read
per shape; DIR/gpu_gemm64.json holds every figure.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ferrum.bench.gpu_skinny import L2_BYTES, REPEAT, graph_us
from ferrum.bench.report import write_json

ROWS = 64
# name -> (N, K): Llama-3.1-8B's projections and its lm_head
SHAPES = {
    "qkv": (6144, 4096),
    "o": (4096, 4096),
    "gate_up": (28672, 4096),
    "down": (4096, 14336),
    "lm_head": (128256, 4096),
}
# (BLOCK_N, BLOCK_K, stages, warps)
GRID = list(itertools.product((64, 128, 256), (64, 128), (3, 4, 5), (4, 8)))


@triton.jit
def _gemm_kernel(a_ptr, w_ptr, c_ptr, M, N, K, stride_am, stride_wn, stride_cm,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):  # fmt: skip
    """c (M, N) = a (M, K) @ w (N, K)^T, one BLOCK_N column strip per program, all M rows."""
    pid = tl.program_id(0)
    rm = tl.arange(0, BLOCK_M)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :]
    w_ptrs = w_ptr + rn[None, :].to(tl.int64) * stride_wn + rk[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for _ in range(0, K, BLOCK_K):
        a = tl.load(a_ptrs, mask=rm[:, None] < M, other=0.0)
        w = tl.load(w_ptrs, mask=rn[None, :] < N, other=0.0)
        acc = tl.dot(a, w, acc)
        a_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    tl.store(c_ptr + rm[:, None] * stride_cm + rn[None, :], acc.to(c_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))  # fmt: skip


def triton_linear(a, w, out, block_n, block_k, stages, warps):
    n, k = w.shape
    _gemm_kernel[(triton.cdiv(n, block_n),)](
        a, w, out, a.shape[0], n, k, a.stride(0), w.stride(0), out.stride(0),
        BLOCK_M=64, BLOCK_N=block_n, BLOCK_K=block_k, num_stages=stages, num_warps=warps,
    )  # fmt: skip


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


def measure(name: str, n: int, k: int, a: torch.Tensor) -> dict:
    """cuBLAS, cuBLASLt and the best Triton tile for (ROWS, k) @ (n, k)^T."""
    count = min(REPEAT, -(-3 * L2_BYTES // (n * k * 2)))
    ws = [torch.randn(n, k, device="cuda", dtype=a.dtype) * 0.02 for _ in range(count)]
    x = a[:, :k].contiguous()
    out = torch.empty(ROWS, n, device="cuda", dtype=a.dtype)
    gb = n * k * 2 / 1e9
    entry = {"cublas_us": graph_us(lambda i: F.linear(x, ws[i % count]))}
    torch.backends.cuda.preferred_blas_library("cublaslt")
    entry["cublaslt_us"] = graph_us(lambda i: F.linear(x, ws[i % count]))
    torch.backends.cuda.preferred_blas_library("cublas")
    ref = F.linear(x, ws[0]).float()
    tried = []
    for cfg in GRID:
        try:
            triton_linear(x, ws[0], out, *cfg)
            err = (out.float() - ref).abs().max().item()
            us = graph_us(lambda i, c=cfg: triton_linear(x, ws[i % count], out, *c))
        except Exception as exc:  # out of shared memory for the bigger tiles
            print(f"  {name} {cfg}: {type(exc).__name__}", flush=True)
            continue
        tried.append((us, cfg, err))
    best_us, best_cfg, best_err = min(tried)
    entry.update(triton_us=best_us, triton_cfg=best_cfg, triton_err=best_err,
                 all=[(round(t, 2), c) for t, c, _ in tried])  # fmt: skip
    print(
        f"{name:<8} N {n:>6} K {k:>5}: cublas {entry['cublas_us']:7.1f} us "
        f"({gb * 1e3 / entry['cublas_us']:.2f} TB/s)  cublaslt {entry['cublaslt_us']:7.1f}  "
        f"triton {best_us:7.1f} ({gb * 1e3 / best_us:.2f} TB/s) {best_cfg} err {best_err:.3g}",
        flush=True,
    )
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    results: dict = {"gpu": torch.cuda.get_device_name(0), "read_GBps": read_bandwidth()}
    print(f"read bandwidth {results['read_GBps']:.0f} GB/s", flush=True)
    a = torch.randn(ROWS, 14336, device="cuda", dtype=torch.bfloat16)
    for name, (n, k) in SHAPES.items():
        results[name] = measure(name, n, k, a)
        torch.cuda.empty_cache()
    write_json(results, Path(args.out) / "gpu_gemm64.json")


if __name__ == "__main__":
    main()
