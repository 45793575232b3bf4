"""Continuous batching for Qwen3-TTS: concurrent requests share the talker's decoding steps.

Design: the talker is a Qwen3-style decoder, so it runs through the LLM engine's machinery: the
torch-free `Scheduler` and `BlockManager` over a paged KV cache, with embeddings in place of token
ids (see `qwen3_tts_sequence.py`). Requests join between steps: a new prompt is prefilled (in
chunks when it exceeds the step's token budget) alongside the other requests' decodes; each step
gives every running request that has caught up with its inputs one frame (talker step, then the
code predictor's residual codebooks, batched across requests); a request leaves at its codec EOS
or its frame limit and its blocks are freed at once. When blocks run out, the scheduler preempts
the latest arrival and later recomputes it from its kept input rows.

Each request samples with its own options and, when seeded, its own generator, so a seeded
request's codes do not depend on what else shares the batch. `submit` is thread-safe: a
background thread steps while there is work; cancelling a request's future frees its blocks at
the next step boundary.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future

import torch
from torch import Tensor

from ferrum.audio.qwen3_tts_runner import TalkerRunner
from ferrum.audio.qwen3_tts_sequence import SpeechSequence
from ferrum.config import DEFAULT_CPU_KV_CACHE_BYTES
from ferrum.engine.block_manager import BlockManager
from ferrum.engine.scheduler import Scheduler
from ferrum.errors import InvalidInputError, PromptTooLongError
from ferrum.models.qwen3_tts.generate import DEFAULT_MAX_NEW_TOKENS, GenerationOptions
from ferrum.models.qwen3_tts.model import Qwen3TTS
from ferrum.models.qwen3_tts.prompt import SpeechRequest

BLOCK_SIZE = 16  # input rows (talker positions) per KV cache block
STEP_TOKEN_BUDGET = 2048  # input rows computed in one step (prompt chunks plus decodes)
PROMPT_ALLOWANCE = 512  # prompt rows planned per request when sizing the default cache
GPU_KV_FRACTION = 0.5  # of the free GPU memory, at most, for the default cache


class Qwen3TTSEngine:
    """Speech codes for many concurrent requests of one Qwen3-TTS model."""

    def __init__(
        self,
        model: Qwen3TTS,
        max_batch: int = 16,
        kv_cache_memory: int | None = None,
        max_num_batched_tokens: int = STEP_TOKEN_BUDGET,
        block_size: int = BLOCK_SIZE,
    ) -> None:
        """`max_batch` requests run at once; `kv_cache_memory` bytes hold their keys and values
        (None: room for `max_batch` full-length requests, capped on CPU and by free GPU memory)."""
        if max_batch < 1 or max_num_batched_tokens < 1 or block_size < 1:
            raise InvalidInputError("max_batch, max_num_batched_tokens and block_size must be >= 1")
        self.tts = model
        self.runner = TalkerRunner(model, block_size)
        budget = kv_cache_memory or self._default_kv_bytes(max_batch)
        num_blocks = budget // (self.runner.kv_bytes_per_token * block_size)
        if num_blocks < 1:
            raise InvalidInputError(f"kv_cache_memory={budget} bytes holds no KV block")
        self.runner.allocate_kv_cache(num_blocks)
        self.block_manager = BlockManager(num_blocks, block_size, enable_prefix_caching=False)
        self.scheduler = Scheduler(self.block_manager, max_batch, max_num_batched_tokens)
        self._tts_pad = model.prompts.special_text()[2].detach()
        self._states: dict[int, SpeechSequence] = {}
        self._incoming: list[SpeechSequence] = []
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def _default_kv_bytes(self, max_batch: int) -> int:
        per_request = (PROMPT_ALLOWANCE + DEFAULT_MAX_NEW_TOKENS) * self.runner.kv_bytes_per_token
        if self.tts.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.tts.device)
            return min(max_batch * per_request, int(free * GPU_KV_FRACTION))
        return min(max_batch * per_request, DEFAULT_CPU_KV_CACHE_BYTES)

    @property
    def capacity(self) -> int:
        """Talker positions the whole cache holds (one request can use at most this many)."""
        return self.block_manager.num_blocks * self.block_manager.block_size

    @property
    def num_free_blocks(self) -> int:
        return self.block_manager.num_free_blocks

    def generate(self, requests: list[SpeechRequest], options: GenerationOptions) -> list[Tensor]:
        """Codec codes (frames, Q) int64 of each request, in order, batched continuously. With a
        seed, every request samples from its own generator seeded with it."""
        futures: list[Future[Tensor]] = []
        try:
            for request in requests:
                futures.append(self.submit(request, options))
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def submit(self, request: SpeechRequest, options: GenerationOptions) -> Future[Tensor]:
        """Queue one request (thread-safe); its future resolves to codes (frames, Q) int64.
        Bad input raises InvalidInputError here; `cancel()` on the future frees its blocks."""
        if self._closed:
            raise InvalidInputError("this Qwen3-TTS engine is closed")
        with torch.inference_mode():
            prompt = self.tts.prompts.build(request)
        state = SpeechSequence.create(prompt, self._tts_pad, options)
        if state.num_kv_slots > self.capacity:
            raise PromptTooLongError(
                f"this request needs up to {state.num_kv_slots} talker positions (prompt "
                f"{state.prompt_len} + max_new_tokens {options.max_new_tokens}), the KV cache "
                f"holds {self.capacity}: lower max_new_tokens or give the engine more "
                "kv_cache_memory"
            )
        state.future.add_done_callback(lambda _: self._notify())
        with self._wake:
            self._incoming.append(state)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="qwen3-tts-engine", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return state.future

    def close(self) -> None:
        """Stop the background thread, cancel what is unfinished and free the KV cache."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        for state in [*self._incoming, *self._states.values()]:
            state.future.cancel()
        self._incoming.clear()
        self._states.clear()
        self.runner.close()

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._incoming or self.scheduler.has_unfinished()):
                    self._wake.wait()
                if self._closed:
                    return
                incoming, self._incoming = self._incoming, []
            for state in incoming:
                self._states[state.seq.seq_id] = state
                self.scheduler.add(state.seq)
            self._drop_cancelled()
            try:
                self.step()
            except Exception as error:  # fail the requests in flight, keep serving new ones
                self._fail_all(error)

    def step(self) -> None:
        """One scheduled step: a forward over every scheduled row, frames for those due, and
        the requests that finished resolved and their blocks freed."""
        out = self.scheduler.schedule()
        if not out.scheduled:
            return
        scheduled = [(self._states[s.seq.seq_id], s.num_tokens) for s in out.scheduled]
        finished = self.runner.step(scheduled)
        self.scheduler.finish_step(out)
        for state in finished:
            self._finish(state, "stop")
            if state.future.set_running_or_notify_cancel():
                state.future.set_result(state.codes(self.runner.num_groups))

    def _finish(self, state: SpeechSequence, reason: str) -> None:
        self.scheduler.finish(state.seq, reason)
        self._states.pop(state.seq.seq_id, None)

    def _drop_cancelled(self) -> None:
        for state in [s for s in self._states.values() if s.future.cancelled()]:
            self._finish(state, "aborted")

    def _fail_all(self, error: Exception) -> None:
        for state in list(self._states.values()):
            self._finish(state, "error")
            if state.future.set_running_or_notify_cancel():
                state.future.set_exception(error)
