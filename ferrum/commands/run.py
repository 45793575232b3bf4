"""`ferrum run`: chat in the terminal, or answer one prompt for a script.

One-shot mode (`--prompt`, or text piped on stdin) writes nothing but the answer to stdout, streamed
as it is generated; load messages and errors go to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from ferrum.commands import app
from ferrum.commands.options import (
    AsyncScheduling,
    Device,
    Dtype,
    EnforceEager,
    GpuMemoryUtilization,
    KvCacheMemory,
    MaxBatchedTokens,
    MaxModelLen,
    MaxNumSeqs,
    Model,
    PrefixCaching,
    Quantization,
    TensorParallelSize,
    engine_options,
)

HELP = """commands:
  /exit            leave (Ctrl-D works too)
  /clear           forget the conversation
  /system TEXT     set the system prompt (and clear the conversation)
  /help            this text
Ctrl-C stops the answer being written."""


@app.command("run")
def run(
    model: Model = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Answer once and exit.")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt.")] = None,
    raw: Annotated[
        bool, typer.Option("--raw", help="Send the prompt as is, no chat template.")
    ] = False,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Tokens to generate at most.")
    ] = None,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.")] = 0.7,
    top_k: Annotated[int, typer.Option("--top-k")] = 0,
    top_p: Annotated[float, typer.Option("--top-p")] = 1.0,
    min_p: Annotated[float, typer.Option("--min-p")] = 0.0,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty")] = 1.0,
    presence_penalty: Annotated[float, typer.Option("--presence-penalty")] = 0.0,
    frequency_penalty: Annotated[float, typer.Option("--frequency-penalty")] = 0.0,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="Stop string (repeatable).")
    ] = None,
    output_format: Annotated[str, typer.Option("--output-format", help="text | jsonl")] = "text",
    device: Device = "auto",
    dtype: Dtype = "auto",
    max_num_seqs: MaxNumSeqs = 16,
    max_num_batched_tokens: MaxBatchedTokens = 2048,
    max_model_len: MaxModelLen = None,
    kv_cache_memory: KvCacheMemory = None,
    gpu_memory_utilization: GpuMemoryUtilization = 0.9,
    prefix_caching: PrefixCaching = True,
    enforce_eager: EnforceEager = False,
    async_scheduling: AsyncScheduling = None,
    quantization: Quantization = None,
    tensor_parallel_size: TensorParallelSize = 1,
) -> None:
    """Chat with an LLM in the terminal, or answer one prompt (--prompt, or stdin) for a script."""
    from rich.console import Console

    from ferrum.errors import InvalidInputError
    from ferrum.sampling_params import SamplingParams

    if output_format not in ("text", "jsonl"):
        raise InvalidInputError("--output-format must be text or jsonl")
    if prompt is None and not sys.stdin.isatty():
        prompt = sys.stdin.read()
        if not prompt.strip():
            raise InvalidInputError("stdin was empty: nothing to answer")
    params = SamplingParams(
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        seed=seed,
        stop=stop or None,
        max_tokens=max_tokens,
    )
    err = Console(stderr=True)
    interactive = prompt is None
    llm = _load(
        model,
        device,
        dtype,
        err,
        interactive,
        engine_options(
            max_num_seqs,
            max_num_batched_tokens,
            max_model_len,
            kv_cache_memory,
            gpu_memory_utilization,
            prefix_caching,
            enforce_eager=enforce_eager,
            async_scheduling=async_scheduling,
            quantization=quantization,
            tensor_parallel_size=tensor_parallel_size,
        ),
    )
    with llm:  # stops tensor-parallel workers, however the command ends
        if interactive:
            _chat_loop(llm, params, system, err)
        else:
            _answer_once(llm, prompt, params, system, raw, output_format)


def _load(model, device, dtype, err, interactive: bool, options: dict):
    from ferrum.llm import LLM

    if interactive:
        with err.status(f"loading {model or 'the default model'}…"):
            llm = LLM(model, device=device, dtype=dtype, **options)
        r = llm.load_report
        dev = llm.engine.backend
        err.print(
            f"[bold]{r.spec}[/] on {dev.device} ({str(dev.dtype).removeprefix('torch.')}), "
            f"loaded in {r.seconds:.1f} s, context {llm.engine.max_model_len} tokens. "
            "Type /help for commands."
        )
        return llm
    return LLM(model, device=device, dtype=dtype, **options)


def _prompt_ids(llm, text: str, system: str | None, raw: bool, history=None):
    if raw or llm.tokenizer.chat_template is None:
        return text if not system else f"{system}\n\n{text}"
    messages = ([{"role": "system", "content": system}] if system else []) + (history or [])
    messages.append({"role": "user", "content": text})
    return llm.render_chat(messages)


def _answer_once(llm, text: str, params, system, raw: bool, output_format: str) -> None:
    prompt = _prompt_ids(llm, text.strip(), system, raw)
    final = None
    for out in llm.stream(prompt, params):
        if output_format == "text":
            sys.stdout.write(out.outputs[0].delta_text)
            sys.stdout.flush()
        final = out
    if output_format == "text":
        sys.stdout.write("\n")
        return
    comp, m = final.outputs[0], final.metrics
    print(
        json.dumps(
            {
                "text": comp.text,
                "finish_reason": comp.finish_reason,
                "prompt_tokens": m.num_prompt_tokens,
                "completion_tokens": len(comp.token_ids),
                "time_to_first_token": m.time_to_first_token,
                "decode_tokens_per_second": m.decode_tokens_per_second,
            }
        )
    )


def _chat_loop(llm, params, system: str | None, err) -> None:
    from ferrum.errors import FerrumError

    history: list[dict] = []
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            err.print()
            return
        except KeyboardInterrupt:
            err.print()
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            command, _, arg = text.partition(" ")
            if command in ("/exit", "/quit", "/bye"):
                return
            if command == "/clear":
                history.clear()
                err.print("[dim]conversation cleared[/]")
            elif command == "/system":
                system = arg.strip() or None
                history.clear()
                err.print(
                    f"[dim]system prompt {'set' if system else 'removed'}; conversation cleared[/]"
                )
            elif command == "/help":
                err.print(HELP, markup=False)
            else:
                err.print(f"unknown command {command}; /help lists them", markup=False)
            continue
        try:
            reply, final = _stream_reply(
                llm, _prompt_ids(llm, text, system, False, history), params
            )
        except FerrumError as e:
            err.print(f"[red]error:[/] {e}. /clear starts a fresh conversation.")
            continue
        history += [{"role": "user", "content": text}, {"role": "assistant", "content": reply}]
        if final is not None:
            m = final.metrics
            rate = m.decode_tokens_per_second
            err.print(
                f"[dim]{m.num_generated_tokens} tokens"
                + (f", {rate:.1f} tok/s" if rate else "")
                + (" (stopped: length)" if final.outputs[0].finish_reason == "length" else "")
                + "[/]"
            )


def _stream_reply(llm, prompt, params):
    """Stream one answer to stdout; Ctrl-C stops it (the request is aborted, blocks freed)."""
    text, final = "", None
    stream = llm.stream(prompt, params)
    try:
        for out in stream:
            delta = out.outputs[0].delta_text
            sys.stdout.write(delta)
            sys.stdout.flush()
            text += delta
            final = out
    except KeyboardInterrupt:
        stream.close()
        final = None
    sys.stdout.write("\n")
    return text, final
