"""The engine loop: requests in, one scheduled batched step at a time, outputs out.

`add_request` validates and queues; `step` schedules, runs the model once, samples, detokenizes,
applies the stopping rules and returns the outputs of every request that changed. `abort_request`
frees a request's blocks at once. Single-threaded; `AsyncLLMEngine` drives it from a thread for
the server. On CUDA the steps overlap (`EngineConfig.async_scheduling`): `step` launches step k
before it reads step k-1's tokens, so the host's scheduling and bookkeeping run while the device
computes, and each call returns the outputs of the step before.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import torch

from ferrum.config import DEFAULT_CPU_KV_CACHE_BYTES, EngineConfig
from ferrum.device import Backend
from ferrum.engine.block_manager import BlockManager
from ferrum.engine.detokenizer import IncrementalDetokenizer
from ferrum.engine.model_runner import ModelRunner
from ferrum.engine.request import Request, SeqState
from ferrum.engine.sampler import SamplingRow
from ferrum.engine.scheduler import Scheduler, SchedulerOutput
from ferrum.engine.sequence import Sequence
from ferrum.errors import InvalidInputError, PromptTooLongError
from ferrum.outputs import RequestOutput, TokenLogprob
from ferrum.sampling_params import SamplingParams

log = logging.getLogger("ferrum.engine")


@dataclass
class EngineStats:
    """A snapshot for /health, /metrics and the bench."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float  # fraction of blocks in use
    num_blocks: int
    num_free_blocks: int
    prefix_cache_queries: int  # prompt tokens looked up
    prefix_cache_hits: int  # of which served from cache
    num_preemptions: int
    prompt_tokens_total: int
    generation_tokens_total: int


class LLMEngine:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        backend: Backend,
        config: EngineConfig,
        eos_token_ids: list[int] | None = None,
        runner: ModelRunner | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.backend = backend
        self.config = config
        self.eos_token_ids = set(eos_token_ids or [])
        self.vocab_size: int = model.config.vocab_size
        # a tensor-parallel engine passes its own runner, which drives the other ranks
        self.runner = runner or ModelRunner(
            model, backend.device, backend.dtype, config.block_size, config
        )
        num_blocks, self.max_model_len = self._plan_kv_cache(model.config.max_position_embeddings)
        self.runner.allocate_kv_cache(num_blocks)
        self.block_manager = BlockManager(
            num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(
            self.block_manager, config.max_num_seqs, config.max_num_batched_tokens
        )
        self.requests: dict[str, Request] = {}
        self._seq_to_state: dict[int, tuple[Request, SeqState]] = {}
        self._arrivals = itertools.count()
        self._ids = itertools.count()
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        overlap = config.async_scheduling
        if overlap is None:  # on CUDA, tensor parallel too (rank 0 broadcasts the tokens)
            overlap = backend.device.type == "cuda"
        self.overlap = bool(overlap)
        # overlapped steps: the launched step whose tokens the host has not read yet
        self._in_flight: tuple | None = None
        torch.manual_seed(config.seed)

    # ---- set-up -------------------------------------------------------------------------------

    def _plan_kv_cache(self, model_max_len: int) -> tuple[int, int]:
        """Number of KV blocks from the memory budget, and the context length they allow."""
        cfg = self.config
        if cfg.max_model_len is not None and cfg.max_model_len > model_max_len:
            raise InvalidInputError(
                f"--max-model-len {cfg.max_model_len} exceeds the model's context "
                f"({model_max_len} tokens)"
            )
        max_len = cfg.max_model_len or model_max_len
        per_block = self.runner.kv_bytes_per_block
        blocks_per_seq = (max_len + cfg.block_size - 1) // cfg.block_size
        if self.backend.device.type == "cuda":
            num_blocks = self.runner.kv_cache_budget() // per_block
        else:
            budget = cfg.kv_cache_memory or DEFAULT_CPU_KV_CACHE_BYTES
            # never more than the running sequences could fill
            num_blocks = min(budget // per_block, cfg.max_num_seqs * blocks_per_seq)
        if num_blocks < 1:
            raise InvalidInputError(
                "not enough memory for a KV cache: raise --kv-cache-memory / "
                "--gpu-memory-utilization or lower --max-num-batched-tokens"
            )
        capacity = num_blocks * cfg.block_size
        if capacity < max_len:
            if cfg.max_model_len is not None:
                raise InvalidInputError(
                    f"--max-model-len {max_len} needs {blocks_per_seq} KV blocks but the memory "
                    f"budget holds {num_blocks}; raise --kv-cache-memory or lower --max-model-len"
                )
            log.info("context capped at %d tokens by the KV cache budget", capacity)
            max_len = capacity
        return int(num_blocks), int(max_len)

    # ---- requests -----------------------------------------------------------------------------

    def new_request_id(self) -> str:
        return f"req-{next(self._ids)}"

    def add_request(
        self,
        request_id: str | None,
        prompt: str | list[int],
        params: SamplingParams | None = None,
        stream: bool = True,
    ) -> str:
        """Validate and queue a request (text, or token ids used as they are). With
        `stream=False` the request is reported only when it finishes, and its text is decoded
        once at the end when no stop string needs it earlier (less host work per step)."""
        params = params or SamplingParams()
        request_id = request_id or self.new_request_id()
        if request_id in self.requests:
            raise InvalidInputError(f"request id {request_id!r} is already in use")
        if isinstance(prompt, str):
            text: str | None = prompt
            ids = self.tokenizer.encode(prompt)
        else:
            text, ids = None, list(prompt)
            bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidInputError(
                    f"prompt token ids must be integers in [0, {self.vocab_size}); got {bad[0]!r}"
                )
        if not ids:
            raise InvalidInputError("the prompt is empty")
        self._check_length(len(ids), params)
        request = Request(request_id, text, ids, params, stream=stream)
        deferred = not stream and not params.stop_list
        request.metrics.num_prompt_tokens = len(ids)
        arrival = next(self._arrivals)
        for i in range(params.n):
            seq = Sequence(ids, params, request_id, index=i, arrival=arrival)
            generator = None
            if params.seed is not None:
                generator = torch.Generator(device=self.backend.device)
                generator.manual_seed(params.seed + i)
            state = SeqState(
                seq=seq,
                detok=IncrementalDetokenizer(self.tokenizer, ids, params),
                generator=generator,
                logprobs=[] if params.logprobs is not None else None,
                deferred_text=deferred,
            )
            request.states.append(state)
            self._seq_to_state[seq.seq_id] = (request, state)
            self.scheduler.add(seq)
        self.requests[request_id] = request
        self.prompt_tokens_total += len(ids)
        return request_id

    def _check_length(self, num_prompt: int, params: SamplingParams) -> None:
        limit = self.max_model_len
        if num_prompt >= limit:
            raise PromptTooLongError(
                f"the prompt has {num_prompt} tokens; this model's context is {limit} tokens "
                f"(prompt plus at least one generated token)"
            )
        if params.max_tokens is not None and num_prompt + params.max_tokens > limit:
            raise PromptTooLongError(
                f"this model's context is {limit} tokens, but {num_prompt + params.max_tokens} "
                f"were requested ({num_prompt} in the prompt, {params.max_tokens} to generate)"
            )

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its KV blocks; returns its final output."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        for state in request.states:
            if not state.seq.is_finished:
                self.scheduler.finish(state.seq, "abort")
            self._seq_to_state.pop(state.seq.seq_id, None)
        request.metrics.finished_time = time.perf_counter()
        if not self.requests:
            self._in_flight = None  # only finished sequences' tokens were left to read
        return request.output()

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished() or self._in_flight is not None

    # ---- the loop -----------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        if self.overlap:
            return self._step_overlapped()
        out = self.scheduler.schedule()
        if not out.scheduled:
            return []
        now = time.perf_counter()
        sampling = [item for item in out.scheduled if item.samples]
        rows = [self._sampling_row(item.seq) for item in sampling]
        result = self.runner.run(out.scheduled, rows)
        self.scheduler.finish_step(out)
        self._note_scheduled(out, now)
        touched: dict[str, Request] = {}
        if result is not None:
            done = time.perf_counter()  # when this step's tokens exist
            for i, item in enumerate(sampling):
                request, state = self._seq_to_state[item.seq.seq_id]
                item.seq.append_token(result.token_ids[i])
                self._accept(request, state, len(item.seq) - 1, result.logprobs[i], done)
                touched[request.request_id] = request
        return self._collect(touched)

    def _step_overlapped(self) -> list[RequestOutput]:
        """Schedule and launch step k, then read step k-1's tokens while the device computes.

        Step k's decode inputs are step k-1's samples, read on the device; each sampled
        sequence gets a PENDING token whose value is written in a step later. A sequence that
        step k-1 ended (EOS, stop string) was already in step k: that token is dropped. One
        that reaches its length limit with a pending token is held out of scheduling. Requests
        whose sampling reads earlier outputs on the host (penalties) make the engine wait."""
        outputs: list[RequestOutput] = []
        if self._in_flight is not None and self._needs_host_tokens():
            outputs = self._finish_in_flight()
        out = self.scheduler.schedule()
        launched = None
        now = time.perf_counter()
        if out.scheduled:
            sampling = [item for item in out.scheduled if item.samples]
            rows = [self._sampling_row(item.seq) for item in sampling]
            pending = self.runner.launch(out.scheduled, rows)
            slots = []
            for item in sampling:
                seq = item.seq
                slots.append(seq.append_pending())
                limit = seq.params.max_tokens
                seq.hold = len(seq) >= self.max_model_len or (
                    limit is not None and len(seq) - seq.num_prompt_tokens >= limit
                )
            launched = (out, sampling, slots, pending, now)
        if self._in_flight is not None:
            outputs += self._finish_in_flight()
        if launched is not None:
            # after the previous step's tokens are in: the blocks this step fills hold no
            # PENDING token when they are hashed for the prefix cache
            self.scheduler.finish_step(out)
            # with no request left, the step only computed tokens past their sequences' ends
            self._in_flight = launched if self.requests else None
        return outputs

    def _finish_in_flight(self) -> list[RequestOutput]:
        assert self._in_flight is not None
        out, sampling, slots, pending, started = self._in_flight
        self._in_flight = None
        self._note_scheduled(out, started)
        touched: dict[str, Request] = {}
        if pending is None:
            return self._collect(touched)
        result = pending.result()
        done = time.perf_counter()
        for i, item in enumerate(sampling):
            found = self._seq_to_state.get(item.seq.seq_id)
            if found is None or item.seq.is_finished:
                continue  # aborted, or ended by the step before: this token is past its end
            request, state = found
            item.seq.resolve_pending(slots[i], result.token_ids[i])
            self._accept(request, state, slots[i], result.logprobs[i], done)
            touched[request.request_id] = request
        return self._collect(touched)

    def _needs_host_tokens(self) -> bool:
        return any(seq.params.has_penalties for seq in self.scheduler.running)

    def _note_scheduled(self, out: SchedulerOutput, now: float) -> None:
        """First-scheduled time and prefix-cache hits of requests seen for the first time."""
        for item in out.scheduled:
            found = self._seq_to_state.get(item.seq.seq_id)
            if found is not None and found[0].metrics.first_scheduled_time is None:
                found[0].metrics.first_scheduled_time = now
                found[0].metrics.num_cached_tokens = item.seq.num_cached_tokens

    def _sampling_row(self, seq: Sequence) -> SamplingRow:
        _, state = self._seq_to_state[seq.seq_id]
        return SamplingRow(seq.params, seq.token_ids, seq.num_prompt_tokens, state.generator)

    def _accept(self, request: Request, state: SeqState, index: int, logprob, now: float) -> None:
        """Token `index` of the sequence has its value: record it and apply the stop rules."""
        seq, params = state.seq, state.seq.params
        token = seq.token_ids[index]
        self.generation_tokens_total += 1
        if request.metrics.first_token_time is None:
            request.metrics.first_token_time = now
        if state.logprobs is not None and logprob is not None:
            state.logprobs.append(TokenLogprob(token, logprob[0], logprob[1]))
        reason: str | None = None
        is_eos = not params.ignore_eos and token in self.eos_token_ids
        if is_eos or token in params.stop_token_ids:
            reason, seq.stop_reason = "stop", token  # the stopping token adds no text
        else:
            if state.deferred_text:
                state.detok.defer(token)
            else:
                state.detok.add(token)
            produced = index + 1 - seq.num_prompt_tokens
            out_of_budget = params.max_tokens is not None and produced >= params.max_tokens
            if state.detok.stop_string is not None:
                reason, seq.stop_reason = "stop", state.detok.stop_string
            elif out_of_budget or index + 1 >= self.max_model_len:
                reason = "length"
        if reason is not None:
            seq.drop_pending()
            if reason == "length" or state.deferred_text:
                state.detok.flush()
            self.scheduler.finish(seq, reason)
            request.metrics.num_generated_tokens = sum(
                s.seq.num_output_tokens for s in request.states
            )
            if request.finished:
                request.metrics.finished_time = now

    def _collect(self, touched: dict[str, Request]) -> list[RequestOutput]:
        outputs = []
        for request in touched.values():
            if not request.stream and not request.finished:
                continue
            request.metrics.num_generated_tokens = sum(
                s.seq.num_output_tokens for s in request.states
            )
            outputs.append(request.output())
            if request.finished:
                self.requests.pop(request.request_id, None)
                for state in request.states:
                    self._seq_to_state.pop(state.seq.seq_id, None)
        return outputs

    def close(self) -> None:
        """Stop the tensor-parallel workers, if any (a one-process engine holds only memory)."""
        self.runner.close()

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            num_running=len(self.scheduler.running),
            num_waiting=len(self.scheduler.waiting),
            kv_cache_usage=bm.usage,
            num_blocks=bm.num_blocks,
            num_free_blocks=bm.num_free_blocks,
            prefix_cache_queries=bm.num_cache_queries,
            prefix_cache_hits=bm.num_cache_hits,
            num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens_total=self.prompt_tokens_total,
            generation_tokens_total=self.generation_tokens_total,
        )
