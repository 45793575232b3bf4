"""How fast a decode step could go if its kernels did nothing but read their weights.

    python -m ferrum.bench.gpu_stream [--models llama3.1:8b,qwen3:0.6b] [--out DIR]

A decode step of one sequence streams every weight once. Before a kernel is blamed for a gap to
the ceiling, this measures what reading alone reaches on this GPU:

1. read bandwidth: torch's sum over 4 GiB, and a Triton kernel that only loads and adds (a few
   launch shapes, best kept): the most any kernel here streams from device memory.
2. the step's speed of light, per model: the weights of a decode-1 step (random, real shapes)
   read by a chain of such read-only kernels, one per projection in the engine's order (qkv, o,
   gate_up, down per layer, then the lm_head), in one CUDA graph: launched plainly, and with
   PDL (each kernel waits for the one ahead before its first load, as the engine's kernels
   wait for their input); and the same bytes in one kernel. Step time -> tok/s: no engine
   built of one kernel per projection on this card beats the chain's figure.
3. the KV cache of a 64-sequence decode step (1280 tokens each, Llama-3.1-8B's 8 KV heads of
   128, blocks of 16 tokens) read by a kernel cut as the decode-attention kernel is (a program
   per sequence, KV head and context split, 32-token tiles through the block table) that only
   adds what it loads, against the decode-attention kernel itself on the same cache, and the
   cache read flat: is the attention kernel's bandwidth its access pattern's or its own?

Prints GB/s and tok/s; DIR/gpu_stream.json holds every figure.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
import triton
import triton.language as tl

from ferrum.bench.gpu_skinny import graph_us
from ferrum.bench.report import write_json
from ferrum.kernels import launch
from ferrum.kernels.launch import gdc_launch_dependents, gdc_wait
from ferrum.kernels.paged_decode import device_sms

# model -> (layers, hidden, qkv width, intermediate, vocab)
MODELS = {
    "llama3.1:8b": (32, 4096, 6144, 14336, 128256),
    "qwen3:0.6b": (28, 1024, 4096, 3072, 151936),
}
SHAPES = [(4, 512), (8, 512), (4, 1024), (8, 1024)]  # (programs per SM, 16-byte loads a slice)
QUEUE_UNITS_KIB = (16, 64, 256)  # work units of the queued read chain
KV_CASE = (64, 1280, 8, 4, 128, 16)  # sequences, context, KV heads, group, head dim, block size


@triton.jit
def _read_kernel(x_ptr, out_ptr, n, per_program, BLOCK: tl.constexpr, USE_PDL: tl.constexpr):
    if USE_PDL:  # as the engine's kernels: wait for the one ahead before the first load
        gdc_wait()
        gdc_launch_dependents()
    pid = tl.program_id(0)
    start = pid.to(tl.int64) * per_program
    acc = tl.zeros([BLOCK], tl.float32)
    for off in range(start, tl.minimum(start + per_program, n), BLOCK):
        idx = off + tl.arange(0, BLOCK)
        acc += tl.load(x_ptr + idx, mask=idx < n, other=0.0).to(tl.float32)
    tl.store(out_ptr + pid, tl.sum(acc))


@triton.jit
def _read_queue_kernel(
    x_ptr, out_ptr, counter_ptr, n, unit, units, BLOCK: tl.constexpr, USE_PDL: tl.constexpr
):
    """The same sum, the work handed out UNIT elements at a time from a counter (programs that
    stream faster take more units, so all finish within about one unit of each other)."""
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
    acc = tl.zeros([BLOCK], tl.float32)
    u = tl.atomic_add(counter_ptr, 1)
    while u < units:
        start = u.to(tl.int64) * unit
        for off in range(start, tl.minimum(start + unit, n), BLOCK):
            idx = off + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + idx, mask=idx < n, other=0.0).to(tl.float32)
        u = tl.atomic_add(counter_ptr, 1)
    tl.store(out_ptr + tl.program_id(0), tl.sum(acc))


def read_queue(
    x: torch.Tensor, out: torch.Tensor, counter: torch.Tensor, per_sm: int, block: int, unit: int
) -> None:
    """read() with the work in units of `unit` elements taken from `counter` (zero before)."""
    sms = device_sms(x.device)
    n = x.numel()
    units = triton.cdiv(n, unit)
    grid = min(units, sms * per_sm)
    _read_queue_kernel[(grid,)](
        x, out, counter, n, unit, units, BLOCK=block * 8, num_warps=4, **launch.options()
    )


@triton.jit
def _kv_read_kernel(
    k_ptr, v_ptr, tables, out_ptr, ctx, num_splits, stride_tab, stride_cb, stride_cs, stride_ch,
    block_size, BLOCK_N: tl.constexpr, D: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    s = tl.program_id(0)
    h = tl.program_id(1)
    split = tl.program_id(2)
    chunk = tl.cdiv(tl.cdiv(ctx, num_splits), BLOCK_N) * BLOCK_N
    start = split * chunk
    end = tl.minimum(start + chunk, ctx)
    d = tl.arange(0, D)
    acc = tl.zeros([BLOCK_N, D], tl.float32)
    for n in tl.range(start, end, BLOCK_N, num_stages=STAGES):
        pos = n + tl.arange(0, BLOCK_N)
        pmask = pos < end
        blk = tl.load(tables + s * stride_tab + pos // block_size, mask=pmask, other=0)
        off = blk.to(tl.int64) * stride_cb + (pos % block_size) * stride_cs + h * stride_ch
        ptrs = off[:, None] + d[None, :]
        acc += tl.load(k_ptr + ptrs, mask=pmask[:, None], other=0.0).to(tl.float32)
        acc += tl.load(v_ptr + ptrs, mask=pmask[:, None], other=0.0).to(tl.float32)
    pid = (s * tl.num_programs(1) + h) * tl.num_programs(2) + split
    tl.store(out_ptr + pid, tl.sum(acc))


def kv_read(cache: torch.Tensor, tables: torch.Tensor, ctx: int, splits: int, stages: int,
            out: torch.Tensor) -> None:  # fmt: skip
    """Sum a (2, blocks, block_size, heads, D) cache's first `ctx` tokens of each table row."""
    k, v = cache[0], cache[1]
    _kv_read_kernel[(tables.shape[0], k.shape[2], splits)](
        k, v, tables, out, ctx, splits, tables.stride(0), k.stride(0), k.stride(1), k.stride(2),
        k.shape[1], BLOCK_N=32, D=k.shape[3], STAGES=stages, num_warps=4, num_stages=stages,
    )  # fmt: skip


def kv_section(out: torch.Tensor) -> dict:
    from ferrum.kernels.paged_decode import paged_decode_attention

    batch, ctx, heads, group, dim, block = KV_CASE
    per_seq = -(-ctx // block)
    blocks = batch * per_seq
    cache = torch.randn(2, blocks, block, heads, dim, device="cuda", dtype=torch.bfloat16)
    gb = 2 * batch * ctx * heads * dim * 2 / 1e9
    tables = {
        "random": torch.randperm(blocks, device="cuda").view(batch, per_seq).int(),
        "in order": torch.arange(blocks, device="cuda").view(batch, per_seq).int(),
    }
    q = torch.randn(batch, heads * group, dim, device="cuda", dtype=torch.bfloat16)
    att = torch.empty_like(q)
    cu = torch.arange(batch + 1, device="cuda", dtype=torch.int32)
    lens = torch.full((batch,), ctx, device="cuda", dtype=torch.int32)
    result = {"case": KV_CASE, "GB": gb}
    flat = cache.view(-1)
    result["flat read"] = gb / graph_ms(lambda: read(flat, out, 8, 512)) * 1e3
    for (name, table), splits in itertools.product(tables.items(), (1, 4, 16)):
        for stages in (1, 4):
            ms = graph_ms(lambda t=table, sp=splits, st=stages: kv_read(cache, t, ctx, sp, st, out))
            result[f"read {name} blocks, {splits} splits, {stages} stages"] = gb / ms * 1e3
        ms = graph_ms(lambda t=table, sp=splits: paged_decode_attention(
            q, cache, att, cu, lens, t, dim**-0.5, sp))  # fmt: skip
        result[f"attention {name} blocks, {splits} splits"] = gb / ms * 1e3
    return result


def read(x: torch.Tensor, out: torch.Tensor, per_sm: int, block: int) -> None:
    """Sum x's elements (8 bf16 a 16-byte load) in per_sm programs per multiprocessor."""
    sms = device_sms(x.device)
    n = x.numel()
    elems = block * 8
    per_program = triton.cdiv(triton.cdiv(n, sms * per_sm), elems) * elems
    grid = triton.cdiv(n, per_program)
    _read_kernel[(grid,)](x, out, n, per_program, BLOCK=elems, num_warps=4, **launch.options())


def graph_ms(fn) -> float:
    """In-graph milliseconds of one fn() (gpu_skinny's timing: back to back in one graph)."""
    return graph_us(lambda i: fn()) / 1e3


def read_ceiling(out: torch.Tensor) -> dict:
    x = torch.ones(2**31, dtype=torch.bfloat16, device="cuda")  # 4 GiB
    gb = x.numel() * 2 / 1e9
    result = {"torch_sum_GBps": gb / graph_ms(lambda: x.sum(dtype=torch.float32)) * 1e3}
    for per_sm, block in SHAPES:
        ms = graph_ms(lambda p=per_sm, b=block: read(x, out, p, b))
        result[f"triton_{per_sm}x{block}_GBps"] = gb / ms * 1e3
    return result


def step_chain(model: str, out: torch.Tensor, per_sm: int, block: int) -> dict:
    layers, hidden, qkv, inter, vocab = MODELS[model]
    shapes = [(qkv, hidden), (hidden, hidden), (2 * inter, hidden), (hidden, inter)]
    weights = [torch.ones(n * k, dtype=torch.bfloat16, device="cuda") for n, k in shapes * layers]
    weights.append(torch.ones(vocab * hidden, dtype=torch.bfloat16, device="cuda"))
    total = sum(w.numel() for w in weights) * 2
    flat = torch.ones(total // 2, dtype=torch.bfloat16, device="cuda")

    counters = torch.zeros(len(weights), dtype=torch.int32, device="cuda")

    def chain() -> None:
        for w in weights:
            read(w, out, per_sm, block)

    def chain_many() -> None:  # waves of small programs: the hardware hands out the work
        for w in weights:
            read(w, out, 8 * per_sm, block)

    def queued(unit: int):
        def run() -> None:
            counters.zero_()
            for i, w in enumerate(weights):
                read_queue(w, out, counters[i : i + 1], per_sm, block, unit)

        return run

    result = {"bytes": total}
    variants = {"chain_plain": (False, chain), "chain_pdl": (True, chain),
                "chain_many_pdl": (True, chain_many)}  # fmt: skip
    for unit_kib in QUEUE_UNITS_KIB:
        variants[f"queue{unit_kib}k_pdl"] = (True, queued(unit_kib * 512))
    for name, (pdl, fn) in variants.items():
        launch.set_pdl(pdl)
        result[f"{name}_ms"] = graph_ms(fn)
    launch.set_pdl(False)
    result["one_kernel_ms"] = graph_ms(lambda: read(flat, out, per_sm, block))
    for key in (*variants, "one_kernel"):
        ms = result[f"{key}_ms"]
        result[f"{key}_tok_s"] = 1e3 / ms
        result[f"{key}_GBps"] = total / ms / 1e6
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--skip", default="", help="sections to leave out: read,chain,kv")
    args = ap.parse_args()
    skip = set(args.skip.split(","))
    out = torch.empty(1 << 16, dtype=torch.float32, device="cuda")
    results: dict = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    best = SHAPES[1]
    if "read" not in skip:
        results["read"] = read_ceiling(out)
        torch.cuda.empty_cache()
        print("read GB/s:", {k: round(v) for k, v in results["read"].items()}, flush=True)
        best = max(SHAPES, key=lambda s: results["read"][f"triton_{s[0]}x{s[1]}_GBps"])
    results["shape"] = best
    if "kv" not in skip:
        results["kv"] = kv_section(out)
        torch.cuda.empty_cache()
        for key, value in results["kv"].items():
            print(f"kv {key}: {value if isinstance(value, tuple) else round(value, 2)}")
    for model in args.models.split(",") if "chain" not in skip else []:
        entry = step_chain(model, out, *best)
        results[model] = entry
        torch.cuda.empty_cache()
        print(
            f"{model}: {entry['bytes'] / 1e9:.2f} GB a step; one kernel per projection "
            f"{entry['chain_plain_ms']:.3f} ms ({entry['chain_plain_tok_s']:.1f} tok/s, "
            f"{entry['chain_plain_GBps']:.0f} GB/s), with PDL {entry['chain_pdl_ms']:.3f} ms "
            f"({entry['chain_pdl_tok_s']:.1f} tok/s); one kernel {entry['one_kernel_ms']:.3f} ms "
            f"({entry['one_kernel_tok_s']:.1f} tok/s, {entry['one_kernel_GBps']:.0f} GB/s)",
            flush=True,
        )
        others = [k[:-6] for k in entry if k.endswith("_tok_s")]
        print("  tok/s:", {k: round(entry[f"{k}_tok_s"], 1) for k in others}, flush=True)
    write_json(results, Path(args.out) / "gpu_stream.json")


if __name__ == "__main__":
    main()
