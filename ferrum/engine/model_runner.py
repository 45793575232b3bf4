"""The one part of the engine that touches the device: owns the model and the KV cache tensors,
turns a scheduled step into one batched forward, and samples."""

from __future__ import annotations

import torch
from torch import nn

from ferrum.engine.sampler import Sampler, SamplerOutput, SamplingRow
from ferrum.engine.scheduler import ScheduledSeq
from ferrum.layers.attention import Attention, build_metadata


class ModelRunner:
    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype, block_size: int):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.block_size = block_size
        self.sampler = Sampler()
        self.attention_layers = [m for m in model.modules() if isinstance(m, Attention)]
        self.kv_cache: torch.Tensor | None = None

    @property
    def kv_bytes_per_block(self) -> int:
        """K and V of every layer for one block of tokens."""
        per_token = sum(2 * a.num_kv_heads * a.head_dim for a in self.attention_layers)
        return per_token * self.block_size * torch.empty((), dtype=self.dtype).element_size()

    def allocate_kv_cache(self, num_blocks: int) -> None:
        first = self.attention_layers[0]
        # (layers, K/V, blocks, block_size, kv_heads, head_dim); uninitialized: every slot is
        # written before it is read
        self.kv_cache = torch.empty(
            len(self.attention_layers),
            2,
            num_blocks,
            self.block_size,
            first.num_kv_heads,
            first.head_dim,
            dtype=self.dtype,
            device=self.device,
        )
        for layer, attn in enumerate(self.attention_layers):
            attn.kv_cache = self.kv_cache[layer]

    def profile_peak_memory(self, num_tokens: int) -> int:
        """Peak bytes of activations for one forward of `num_tokens` (CUDA only), measured with a
        throwaway cache just big enough for it."""
        blocks = (num_tokens + self.block_size - 1) // self.block_size
        self.allocate_kv_cache(blocks)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        ids = torch.zeros(num_tokens, dtype=torch.long, device=self.device)
        pos = torch.arange(num_tokens, device=self.device)
        meta = build_metadata(
            [num_tokens], [num_tokens], [list(range(blocks))], self.block_size, self.device
        )
        with torch.inference_mode():
            hidden = self.model(ids, pos, meta)
            self.model.compute_logits(hidden[-1:])
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device) - before
        for attn in self.attention_layers:
            attn.kv_cache = None
        self.kv_cache = None
        torch.cuda.empty_cache()
        return peak

    @torch.inference_mode()
    def run(self, scheduled: list[ScheduledSeq], rows: list[SamplingRow]) -> SamplerOutput | None:
        """One forward over every scheduled token; samples one token for each scheduled sequence
        that reaches its last token this step (`rows` lists those, in order)."""
        input_ids: list[int] = []
        positions: list[int] = []
        query_lens: list[int] = []
        context_lens: list[int] = []
        tables: list[list[int]] = []
        sample_rows: list[int] = []
        for item in scheduled:
            seq = item.seq
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + item.num_tokens
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            query_lens.append(item.num_tokens)
            context_lens.append(end)
            tables.append(seq.block_table)
            if item.samples:
                sample_rows.append(len(input_ids) - 1)
        meta = build_metadata(query_lens, context_lens, tables, self.block_size, self.device)
        ids = torch.tensor(input_ids, dtype=torch.long).to(self.device, non_blocking=True)
        pos = torch.tensor(positions, dtype=torch.long).to(self.device, non_blocking=True)
        hidden = self.model(ids, pos, meta)  # (T, hidden)
        if not sample_rows:
            return None
        logits = self.model.compute_logits(hidden[sample_rows])  # (S, vocab)
        return self.sampler(logits, rows)
