"""Compile every Triton kernel for sm_90 (H100) on a machine without a GPU.

Triton's CPU interpreter runs the kernels in CI but accepts programs its compiler refuses (a
name re-bound with a new shape inside a branch, say), so each kernel is also put through the
real compiler (front end, LLVM and the ptxas bundled with triton) for Hopper, at the shapes and
dtypes the engine launches. Run as a script, without TRITON_INTERPRET:

    python -m tests.kernels.hopper_compile
"""

from __future__ import annotations

import importlib
import sys

# (module, kernel, argument types by name (the rest are i32), constexpr values[, launch options])
PTR_BF16 = "*bf16"
CASES = [
    ("norm", "_rms_norm_kernel",
     {"x_ptr": PTR_BF16, "res_ptr": PTR_BF16, "w_ptr": PTR_BF16, "out_ptr": PTR_BF16,
      "res_out_ptr": PTR_BF16, "stride_xa": "i64", "stride_xb": "i64", "eps": "fp32"},
     {"D": 1024, "BLOCK_D": 1024, "HAS_RESIDUAL": True, "ROUND": True}),
    ("rotary", "_rotary_kernel",
     {"x_ptr": PTR_BF16, "cos_ptr": PTR_BF16, "sin_ptr": PTR_BF16, "out_ptr": PTR_BF16,
      "stride_xt": "i64", "stride_xh": "i64", "stride_ct": "i64"},
     {"HALF": 64, "BLOCK_H": 16, "BLOCK_HALF": 64, "ROUND": True}),
    ("store_kv", "_store_kv_kernel",
     {"k_ptr": PTR_BF16, "v_ptr": PTR_BF16, "cache_ptr": PTR_BF16, "slot_ptr": "*i64",
      "stride_kt": "i64", "stride_vt": "i64", "plane": "i64"},
     {"HD": 1024, "BLOCK": 1024}),
    ("activation", "_silu_and_mul_kernel",
     {"x_ptr": PTR_BF16, "out_ptr": PTR_BF16, "stride_xt": "i64"},
     {"BLOCK": 1024, "ROUND": True}),
    *[
        ("qk_rope_store", "_qk_rope_store_kernel",
         {"qkv_ptr": PTR_BF16, "cos_ptr": PTR_BF16, "sin_ptr": PTR_BF16, "qw_ptr": PTR_BF16,
          "kw_ptr": PTR_BF16, "q_out": PTR_BF16, "cache_ptr": PTR_BF16, "slot_ptr": "*i64",
          "stride_t": "i64", "stride_h": "i64", "stride_ct": "i64", "plane": "i64",
          "eps": "fp32"},
         {"D": 128, "HALF": 64, "BLOCK_H": 16, "BLOCK_KV": 8, "BLOCK_HALF": 64,
          "QK_NORM": qk_norm, "ROUND": True})
        for qk_norm in (True, False)
    ],
    *[
        ("paged_decode", "_decode_kernel",
         {"q_ptr": PTR_BF16, "k_cache": PTR_BF16, "v_cache": PTR_BF16, "out_ptr": PTR_BF16,
          "part_o": "*fp32", "part_lse": "*fp32", "cu_q": "*i32",
          "ctx_lens": "*i32", "tables": "*i32", "seq_ids": "*i32", "cos_ptr": PTR_BF16,
          "sin_ptr": PTR_BF16, "qw_ptr": PTR_BF16, "kw_ptr": PTR_BF16, "slot_ptr": "*i64",
          "scale_log2": "fp32", "eps": "fp32"},
         {"G": 4, "D": 128, "BLOCK_G": 16, "BLOCK_D": 128, "BLOCK_N": 32,
          "HAS_SEQ_IDS": seq_ids, "DOT_PRECISION": "tf32", "FUSED": fused,
          "QK_NORM": qk_norm, "ROUND": True, "PREFETCH_TILES": prefetch, "LINE": 64,
          "PRELOAD_TILE": fused}, {"num_warps": 8 if fused else 4})
        for seq_ids, fused, qk_norm, prefetch in
        ((False, False, False, 2), (True, False, False, 0), (False, True, False, 0),
         (False, True, True, 2))
    ],
    *[
    ("paged_decode", "_reduce_kernel",
     {"out_ptr": PTR_BF16, "part_o": "*fp32", "part_lse": "*fp32", "cu_q": "*i32",
      "ctx_lens": "*i32", "seq_ids": "*i32"},
     {"D": 128, "BLOCK_D": 128, "BLOCK_N": 32, "LANES": 8, "HAS_SEQ_IDS": False,
      "EARLY_TRIGGER": early})
    for early in (False, True)
    ],
    *[
        ("logits", "_logits_kernel",
         {"x_ptr": PTR_BF16, "w_ptr": PTR_BF16, "out_ptr": "*fp32", "word_ptr": "*i64",
          "res_ptr": PTR_BF16, "nw_ptr": PTR_BF16, "eps": "fp32"},
         {"NORM": norm, "ROUND": True, "BLOCK_N": block_n, "BLOCK_K": 512, "ROTATE": norm,
          "PRELOAD": preload})
        for norm in (False, True)
        for block_n, preload in ((8, 0), (16, 4))
    ],
    *[
        ("logits", "_token_kernel", {"word_ptr": "*i64", "token_ptr": "*i64"},
         {"EMPTY": -(2**63), "BLOCK": block}, {"num_warps": 1})
        for block in (1, 64)
    ],
    ("step_io", "_inputs_kernel", {"host_ptr": "*i64", "dev_ptr": "*i64", "ids_ptr": "*i64"},
     {"ROWS": 5, "BLOCK_R": 8, "BLOCK": 256}),
    ("step_io", "_to_host_kernel", {"src_ptr": "*i64", "dst_ptr": "*i64"}, {"BLOCK": 256}),
    ("paged_prefill", "_prefill_kernel",
     {"q_ptr": PTR_BF16, "k_cache": PTR_BF16, "v_cache": PTR_BF16, "out_ptr": PTR_BF16,
      "cu_q": "*i32", "ctx_lens": "*i32", "tables": "*i32", "seq_ids": "*i32",
      "scale_log2": "fp32"},
     {"G": 4, "D": 128, "BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_D": 128,
      "DOT_PRECISION": "tf32"}, {"num_warps": 8, "num_stages": 2}),
    *[
        ("skinny_gemm", "_skinny_gemm_kernel",
         {"x_ptr": PTR_BF16, "w_ptr": PTR_BF16, "b_ptr": PTR_BF16, "out_ptr": PTR_BF16,
          "res_ptr": PTR_BF16, "res_out_ptr": PTR_BF16, "nw_ptr": PTR_BF16, "stride_xm": "i64",
          "stride_wn": "i64", "stride_om": "i64", "eps": "fp32"},
         {"PROLOGUE": prologue, "HAS_RESIDUAL": prologue == 1, "HAS_BIAS": prologue == 2,
          "ROUND": True, "BLOCK_M": block_m, "BLOCK_N": 8 if block_m == 1 else 32, "BLOCK_K": 512,
          "DOT_PRECISION": "tf32", "PREFETCH": 2048 if block_m == 1 else 0,
          "ROTATE": block_m == 1,
          "LOOP_STAGES": stages, "PRELOAD": preload, "EARLY_TRIGGER": preload > 0,
          "NORM_UNROLL": 8 if preload else 1, "PRELOAD_LAST": prologue == 2})
        for prologue in (0, 1, 2)
        for block_m, stages, preload in ((1, 1, 0), (1, 3, 0), (1, 3, 4), (16, 4, 0))
    ],
    *[
        ("tile_gemm", "_tile_gemm_kernel",
         {"x_ptr": PTR_BF16, "w_ptr": PTR_BF16, "b_ptr": PTR_BF16, "out_ptr": PTR_BF16,
          "part_ptr": "*fp32", "ticket_ptr": "*i32", "word_ptr": "*i64", "stride_xm": "i64",
          "stride_wn": "i64",
          "stride_om": "i64"},
         {"HAS_BIAS": split, "SPLIT": split, "ARGMAX": not split, "EVEN_K": True, "BLOCK_M": 64,
          "BLOCK_N": block_n, "BLOCK_K": 128, "DOT_PRECISION": "tf32",
          "PREFETCH_K": 32768 // (2 * block_n), "LINE": 64},
         {"num_warps": 8 if block_n == 256 else 4, "num_stages": 4})
        for split in (False, True)
        for block_n in (64, 256)
    ],
]  # fmt: skip


def compile_all() -> list[str]:
    """Names of the kernels compiled; raises on the first one that does not compile.

    Each case compiles twice: with no integer or address known to divide by 16 (odd test
    shapes), and with every one of them dividing by 16, as a launch specializes a real model's
    (16-byte aligned tensors, widths in multiples of 16): only then do the vector loads and
    async copies compile."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    target = GPUTarget("cuda", 90, 32)
    done = []
    for module, name, types, constexprs, *options in CASES:
        kernel = getattr(importlib.import_module(f"ferrum.kernels.{module}"), name)
        pdl = "USE_PDL" in kernel.arg_names  # the launch-ordering waits compile for Hopper too
        constexprs = {**constexprs, "USE_PDL": True} if pdl else constexprs
        signature = {arg: types.get(arg, "i32") for arg in kernel.arg_names}
        signature.update({arg: "constexpr" for arg in constexprs})
        divisible = {
            (kernel.arg_names.index(arg),): [["tt.divisibility", 16]]
            for arg, kind in signature.items()
            if kind.startswith(("*", "i"))
        }
        for attrs, shapes in ((None, "any shape"), (divisible, "aligned")):
            source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
            triton.compile(source, target=target, options={"launch_pdl": pdl, **dict(*options)})
            done.append(f"{module}.{name} ({shapes}){sorted(constexprs.items())}")
    return done


if __name__ == "__main__":
    for line in compile_all():
        print("compiled", line)
    sys.exit(0)
