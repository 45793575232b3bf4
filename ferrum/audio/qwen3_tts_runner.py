"""The device side of the Qwen3-TTS engine: owns the talker's paged KV cache and turns one
scheduled step into one batched talker forward plus, for every request that reaches the end of
its inputs, one speech frame (codebook 0 from the talker, the residual codebooks from the code
predictor, both batched across requests).

What a step does for a request is what one iteration of `generate_codes` does for it: draw
codebook 0 from the last hidden state; stop at EOS or the frame limit; otherwise complete the
frame and append the talker's next input row (frame embedding + next text row).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ferrum.audio.qwen3_tts_sequence import SpeechSequence
from ferrum.kernels import triton_available
from ferrum.layers.attention import build_metadata
from ferrum.models.qwen3_tts.model import Qwen3TTS
from ferrum.models.qwen3_tts.paged_talker import PagedDecoder
from ferrum.models.qwen3_tts.row_sampling import first_codebook_scores, pick_rows

ScheduledRows = list[tuple[SpeechSequence, int]]  # (request, input rows computed this step)


class TalkerRunner:
    def __init__(self, tts: Qwen3TTS, block_size: int) -> None:
        self.talker = tts.model.talker
        self.device, self.dtype = tts.device, tts.dtype
        self.block_size = block_size
        self.eos = self.talker.config.codec.eos
        self.num_groups = self.talker.config.num_code_groups
        self.paged = PagedDecoder(self.talker.model)
        self.kv_cache: Tensor | None = None
        if self.device.type == "cuda" and triton_available():
            from ferrum.layers.triton_attention import TritonPagedAttention

            for attention in self.paged.attention:
                attention.backend = TritonPagedAttention()

    @property
    def kv_bytes_per_token(self) -> int:
        c = self.talker.config.decoder
        per_token = c.num_layers * 2 * c.num_kv_heads * c.head_dim
        return per_token * torch.empty((), dtype=self.dtype).element_size()

    def allocate_kv_cache(self, num_blocks: int) -> None:
        c = self.talker.config.decoder
        # (layers, K/V, blocks, block_size, kv_heads, head_dim); uninitialized: every slot is
        # written before it is read
        self.kv_cache = torch.empty(
            c.num_layers, 2, num_blocks, self.block_size, c.num_kv_heads, c.head_dim,
            dtype=self.dtype, device=self.device,
        )  # fmt: skip
        for layer, attention in enumerate(self.paged.attention):
            attention.kv_cache = self.kv_cache[layer]

    def close(self) -> None:
        for attention in self.paged.attention:
            attention.kv_cache = None
        self.kv_cache = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def step(self, scheduled: ScheduledRows) -> list[SpeechSequence]:
        """One forward over every scheduled input row; returns the requests that finished."""
        rows: list[Tensor] = []
        positions: list[int] = []
        query_lens, context_lens, tables = [], [], []
        last_rows: list[int] = []
        sampling: list[SpeechSequence] = []
        for state, num in scheduled:
            start = state.seq.num_computed_tokens
            end = start + num
            rows.append(state.input_rows(start, end))
            positions.extend(range(start, end))
            query_lens.append(num)
            context_lens.append(end)
            tables.append(state.seq.block_table)
            if end == len(state.seq):  # its last input: the next frame is due
                last_rows.append(len(positions) - 1)
                sampling.append(state)
        meta = build_metadata(query_lens, context_lens, tables, self.block_size, self.device)
        x = torch.cat(rows).to(self.dtype)  # (T, hidden)
        pos = torch.tensor(positions, dtype=torch.long).to(self.device, non_blocking=True)
        hidden = self.paged(x, pos, meta)  # (T, hidden)
        if not sampling:
            return []
        index = torch.tensor(last_rows, dtype=torch.long).to(self.device, non_blocking=True)
        return self._next_frames(sampling, hidden[index])

    def _next_frames(self, states: list[SpeechSequence], last: Tensor) -> list[SpeechSequence]:
        """last (S, hidden): each request's final hidden state -> its next frame, or its end."""
        talker = self.talker
        scores = first_codebook_scores(
            talker.codec_head(last),
            [s.seen for s in states],
            [s.options.repetition_penalty for s in states],
            [s.may_stop for s in states],
            self.eos,
        )
        tokens = pick_rows(scores, [s.talker_sampling for s in states])  # (S,)
        done = [s.record_token(t, self.eos) for s, t in zip(states, tokens.tolist(), strict=True)]
        going = [i for i, d in enumerate(done) if not d]
        if going:
            kept = [states[i] for i in going]
            index = torch.tensor(going, dtype=torch.long).to(self.device, non_blocking=True)
            first = tokens[index]  # (C,)
            residual = talker.code_predictor.predict(
                last[index],
                talker.embed_codec(first),
                lambda logits: pick_rows(logits, [s.predictor_sampling for s in kept]),
            )  # (C, Q-1)
            frames = torch.cat((first[:, None], residual), dim=1)  # (C, Q)
            text = torch.cat([s.next_text() for s in kept])  # (C, hidden)
            inputs = talker.embed_frame(frames) + text  # (C, hidden)
            for i, state in enumerate(kept):
                state.add_frame(frames[i], inputs[i : i + 1])
        return [s for s, d in zip(states, done, strict=True) if d]
