"""Decode throughput of ferrum against transformers' `generate` on the same model, in one run.

    python -m ferrum.bench.llm_decode [--model smollm2] [--new-tokens 128] [--repeats 3]

Workload (BENCH.md decode-1, and the same with 8 concurrent requests): a fixed prompt, greedy,
EOS ignored, `--new-tokens` tokens per request. Decode tok/s = generated tokens after the first /
time after the first token (prefill excluded), median over repeats after a warm-up; the batch
figure is total generated tokens / wall time. transformers gets the same weights (for a GGUF,
its own dequantizing loader) in float32 with SDPA.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ferrum.bench.environment import describe

PROMPT = (
    "Write a long, detailed story about a lighthouse keeper who discovers a message in a "
    "bottle, describing the sea, the weather and the keeper's daily routine."
)


def ferrum_figures(
    spec: str, new_tokens: int, repeats: int, batch: int, quantization: str | None = None
) -> dict:
    from ferrum import LLM, SamplingParams

    llm = LLM(
        spec, device="cpu", dtype="float32", max_num_seqs=max(batch, 1), quantization=quantization
    )
    params = SamplingParams(temperature=0, max_tokens=new_tokens, ignore_eos=True)
    ids = llm.tokenizer.encode(PROMPT)
    llm.generate([ids], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))  # warm-up
    single, batched = [], []
    for _ in range(repeats):
        out = llm.generate([ids], params)[0]
        single.append(out.metrics.decode_tokens_per_second)
        start = time.perf_counter()
        outs = llm.generate([ids] * batch, params)
        batched.append(
            sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - start)
        )
    return {
        "decode_tok_s_1": statistics.median(single),
        f"output_tok_s_{batch}": statistics.median(batched),
        "load_s": llm.load_report.seconds,
        "tokens": out.outputs[0].token_ids,
    }


def transformers_figures(spec: str, new_tokens: int, repeats: int, batch: int) -> dict:
    import transformers

    from ferrum.loader.resolve import resolve_model

    source = resolve_model(spec)
    start = time.perf_counter()
    kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    if source.kind == "gguf":
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(source.path.parent), gguf_file=source.path.name, **kwargs
        )
        tok = transformers.AutoTokenizer.from_pretrained(
            str(source.path.parent), gguf_file=source.path.name
        )
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(source.path), **kwargs)
        tok = transformers.AutoTokenizer.from_pretrained(str(source.path))
    load = time.perf_counter() - start
    model.eval()
    ids = torch.tensor([tok(PROMPT)["input_ids"]])

    def run(n: int, tokens: int) -> tuple[float, list[int]]:
        inp = ids.repeat(n, 1)
        t0 = time.perf_counter()
        with torch.inference_mode():
            # prefill + 1 token, timed separately so that decode excludes the prompt
            model.generate(
                inp,
                max_new_tokens=1,
                min_new_tokens=1,
                do_sample=False,
                attention_mask=torch.ones_like(inp),
                pad_token_id=0,
            )
            t1 = time.perf_counter()
            out = model.generate(
                inp,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                attention_mask=torch.ones_like(inp),
                pad_token_id=0,
            )
        t2 = time.perf_counter()
        decode_time = (t2 - t1) - (t1 - t0)
        return (tokens - 1) * n / decode_time, out[0, ids.shape[1] :].tolist()

    run(1, 4)  # warm-up
    single, batched = [], []
    for _ in range(repeats):
        rate, tokens = run(1, new_tokens)
        single.append(rate)
        t0 = time.perf_counter()
        with torch.inference_mode():
            inp = ids.repeat(batch, 1)
            model.generate(
                inp,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                attention_mask=torch.ones_like(inp),
                pad_token_id=0,
            )
        batched.append(batch * new_tokens / (time.perf_counter() - t0))
    return {
        "decode_tok_s_1": statistics.median(single),
        f"output_tok_s_{batch}": statistics.median(batched),
        "load_s": load,
        "tokens": tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument(
        "--quantization",
        nargs="*",
        default=[],
        choices=["int8", "int4"],
        help="also measure ferrum with these weight-only modes",
    )
    args = ap.parse_args()
    env = describe()
    ours = ferrum_figures(args.model, args.new_tokens, args.repeats, args.batch)
    quantized = {
        q: ferrum_figures(args.model, args.new_tokens, args.repeats, args.batch, q)
        for q in args.quantization
    }
    base = transformers_figures(args.model, args.new_tokens, args.repeats, args.batch)
    base_tokens = base.pop("tokens")
    same = ours.pop("tokens") == base_tokens
    print(f"machine: {env.machine}; torch {env.torch}, transformers {env.transformers}")
    print(f"model: {args.model} (real weights), greedy, {args.new_tokens} new tokens, EOS ignored")
    print(f"greedy tokens identical to transformers (float32): {same}")
    for q, figures in quantized.items():
        agree = sum(a == b for a, b in zip(figures.pop("tokens"), base_tokens))
        print(f"{q}: {agree}/{len(base_tokens)} greedy tokens equal to float32")
    print(
        f"{'figure':<22}{'ferrum':>12}"
        + "".join(f"{q:>10}" for q in quantized)
        + f"{'transformers':>14}{'ratio':>8}"
    )
    for key in ours:
        row = f"{key:<22}{ours[key]:>12.1f}" + "".join(
            f"{f[key]:>10.1f}" for f in quantized.values()
        )
        print(row + f"{base[key]:>14.1f}{ours[key] / base[key]:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "environment": env.as_dict(),
                    "ferrum": ours,
                    "quantized": quantized,
                    "transformers": base,
                    "identical_greedy": same,
                    "args": vars(args),
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
