"""CUDA graphs for decode steps: the whole forward (and the logits) replayed as one launch.

A decode step of n sequences runs the graph captured for the smallest batch size >= n (the ladder
1, 2, 4, 8, 16, 24, ... up to max_num_seqs); the extra rows are padding: no cache slot (slot -1:
nothing stored) and context length 0 (zero attention output), and their logits are ignored. A graph
reads its inputs from static device buffers that every step overwrites from pinned staging: token
ids, positions, slots, context lengths and token sources share one (6, max_batch) int64 buffer,
filled by a small kernel that reads the staging directly (an async copy would idle the GPU about
9 us per step, ferrum.kernels.step_io) and also gathers each row's input token; the block
tables live in a (max_batch, max_blocks_per_seq) buffer of which one host-to-device copy
refreshes only the used columns (the kernels never read past a sequence's context), and only on
a step where some table changed (a small batch gets a new block every block_size steps). Graphs
are captured largest first so the smaller ones reuse its memory pool, and the logits land in one
shared static buffer.

A graph of a few rows also ends with every row's greedy token (in `tokens`, the input buffer's
last row), so an all-greedy step needs no sampling kernels after it; every graph begins from
`ids`, each row's input token: its own id, or the token the step in flight sampled (the _SOURCE
row says which), gathered by the input kernel, so overlapped steps need no copies of their own
between graphs.

Only the Triton attention backend is captured: its decode path launches a fixed grid and reads
nothing from the host.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from ferrum.layers.attention import AttentionMetadata

log = logging.getLogger("ferrum.engine")

GRAPH_BATCH_STEP = 8  # beyond 4, captured batch sizes are multiples of this
# rows of the per-token input buffer. _SOURCE: where in the flattened buffer each row's input
# token is: its own _IDS entry, or a _TOKENS entry when the step in flight sampled it (still on
# the device). _TOKENS: the last step's sampled tokens (the graph's greedy ones, or what the
# runner copied there); the host copies every row but that one.
_IDS, _POSITIONS, _SLOTS, _CONTEXT, _SOURCE, _TOKENS = range(6)
_HOST_ROWS = 5
# graphs of at most this many rows end with the greedy tokens: a decode step of a few sequences
# is a latency chain that the sampler's kernels lengthen; a large batch often samples (its
# argmax would then read the whole logits for nothing) and its step is long anyway. Batches
# whose logits product folds the argmax in (the tile GEMM's, 17-64 rows) have them at no cost.
GREEDY_MAX_BATCH = 8


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """argmax over the last dim (the first index of the largest value, as torch.argmax), in two
    stages: one whole-vocabulary row is a single-block reduction for torch (9 us on an H100 for
    152k logits); the maxima of up to 256 chunks first, then the best chunk, take about half."""
    rows, vocab = logits.shape
    chunks = 256
    while chunks > 1 and vocab % chunks:
        chunks //= 2
    if chunks == 1:
        return logits.argmax(-1)
    values, within = logits.view(rows, chunks, vocab // chunks).max(-1)  # (rows, chunks)
    best = values.argmax(-1, keepdim=True)  # the first chunk holding the maximum
    return (best * (vocab // chunks) + within.gather(1, best))[:, 0]


def graph_batch_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, then multiples of 8 up to the first that holds max_num_seqs."""
    sizes = [b for b in (1, 2, 4) if b < max_num_seqs]
    b = GRAPH_BATCH_STEP
    while not sizes or sizes[-1] < max_num_seqs:
        sizes.append(min(b, max_num_seqs) if max_num_seqs <= 4 else b)
        b += GRAPH_BATCH_STEP
    return sorted(set(sizes))


class DecodeGraphs:
    """The captured decode graphs of one model and KV cache, and their static inputs."""

    def __init__(
        self,
        model: nn.Module,
        block_size: int,
        max_num_seqs: int,
        max_blocks_per_seq: int,
        device: torch.device,
        kernel_io: bool = False,  # whether kernels move the step's inputs and tokens (step_io)
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.sizes = graph_batch_sizes(max_num_seqs)
        self.max_batch = self.sizes[-1]
        self.inputs = torch.zeros(_TOKENS + 1, self.max_batch, dtype=torch.int64, device=device)
        self.tokens = self.inputs[_TOKENS]
        self.ids = torch.zeros(self.max_batch, dtype=torch.int64, device=device)  # input tokens
        self.tables = torch.zeros(
            self.max_batch, max_blocks_per_seq, dtype=torch.int32, device=device
        )
        self.cu_seqlens = torch.arange(self.max_batch + 1, dtype=torch.int32, device=device)
        vocab = model.config.vocab_size
        self.logits = torch.empty(self.max_batch, vocab, dtype=torch.float32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._greedy_batches: set[int] = set()  # graphs that end with their greedy tokens
        # pinned staging for the two host-to-device copies of a step, filled through numpy;
        # `_copied` says when the last copies have read them (a worker rank never waits for
        # its step's results, so the next step could otherwise overwrite them in flight)
        self._host_inputs = torch.zeros(_HOST_ROWS, self.max_batch, dtype=torch.int64)
        self._host_inputs = self._host_inputs.pin_memory()
        self._own_ids = np.arange(self.max_batch) + _IDS * self.max_batch  # _SOURCE default
        self._host_tables = torch.zeros(
            self.max_batch * max_blocks_per_seq, dtype=torch.int32
        ).pin_memory()
        self._copied = torch.cuda.Event()
        self._tables_copied: list[tuple[list[int], int]] = []  # what self.tables holds
        self._kernel_io = kernel_io

    def _metadata(self, batch: int) -> AttentionMetadata:
        return AttentionMetadata(
            slot_mapping=self.inputs[_SLOTS, :batch],
            cu_seqlens_q=self.cu_seqlens[: batch + 1],
            context_lens=self.inputs[_CONTEXT, :batch],
            block_tables=self.tables[:batch],
            query_lens=[1] * batch,
            context_lens_host=[0] * batch,
            max_context_len=self.tables.shape[1] * self.block_size,
        )

    def tables_written(self) -> None:
        """Someone wrote `tables` directly (a benchmark): the next step copies its own."""
        self._tables_copied = []

    def has_greedy(self, n: int) -> bool:
        """Whether the graph that runs a step of n sequences leaves their greedy tokens."""
        return self._graph_batch(n) in self._greedy_batches

    def _graph_batch(self, n: int) -> int:
        return next(b for b in self.sizes if b >= n)

    def _forward(self, batch: int, meta: AttentionMetadata) -> bool:
        """The step's forward into `logits`; True where it also leaves the greedy tokens."""
        ids, positions = self.ids[:batch], self.inputs[_POSITIONS, :batch]
        logits, tokens = self.logits[:batch], self.tokens[:batch]
        greedy = batch <= GREEDY_MAX_BATCH
        fused = getattr(self.model, "forward_greedy", None) if greedy else None
        if fused is not None and fused(ids, positions, meta, logits, tokens):
            return True
        hidden = self.model(ids, positions, meta)
        # a decode batch whose logits product folds their argmax in: greedy at no extra pass
        fused = getattr(self.model, "compute_logits_greedy", None)
        if fused is not None and fused(hidden, logits, tokens):
            return True
        logits.copy_(self.model.compute_logits(hidden))
        if greedy:
            tokens.copy_(greedy_tokens(logits))
        return greedy

    def _pad_everywhere(self) -> None:
        """Every row a padding row: nothing is written to the cache."""
        self.inputs[_SLOTS].fill_(-1)
        self.inputs[_CONTEXT].zero_()

    @torch.inference_mode()
    def compile_steps(self) -> None:
        """Inside `compile_only`: the decode step of every graph batch size and the kernels
        that move a step's inputs and tokens, launched only to compile them."""
        self._pad_everywhere()
        # batch 1's kernels are the most, and the largest batch's (the tile GEMM's) next: the
        # host walks these forwards slowly beside the compiles, so they start first
        for batch in [self.sizes[0], *reversed(self.sizes[1:])]:
            self._forward(batch, self._metadata(batch))
        # imported here: the kernel modules' helpers are decorated when first imported, and the
        # CPU tests choose Triton's interpreter only after this module is loaded
        from ferrum.kernels.step_io import inputs_from_host, to_host

        inputs_from_host(self._host_inputs, self.inputs, self.ids, _IDS, _SOURCE, self.max_batch)
        for tokens in (self.tokens[:1], torch.empty_like(self.tokens[:1])):  # as aligned either way
            to_host(tokens, torch.empty(1, dtype=torch.int64).pin_memory())

    @torch.inference_mode()
    def capture(self, precompiled: bool = False) -> None:
        """Capture a graph for every batch size; `precompiled`: `compile_steps` already ran
        (in the runner's pass over the first steps' kernels)."""
        start = time.perf_counter()
        self._pad_everywhere()
        from ferrum.kernels.launch import compile_only

        if not precompiled:
            with compile_only() as compiling:  # every step's Triton kernels at once, in parallel
                if compiling:  # (else: the warm-ups compile them)
                    self.compile_steps()
        torch.cuda.synchronize()
        compiled = time.perf_counter()
        pool = None
        for batch in reversed(self.sizes):
            meta = self._metadata(batch)
            self._forward(batch, meta)  # warm-up outside the graph: allocates
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                if self._forward(batch, meta):
                    self._greedy_batches.add(batch)
            pool = graph.pool()
            self.graphs[batch] = graph
        torch.cuda.synchronize()
        log.info(
            "captured %d decode CUDA graphs (batch 1..%d) in %.1f s (compiles %.1f s)",
            len(self.graphs), self.max_batch, time.perf_counter() - start, compiled - start,
        )  # fmt: skip

    def run(
        self,
        token_ids: list[int],
        positions: list[int],
        slots: list[int],
        block_tables: list[list[int]],
        pending: tuple[list[int], list[int], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Logits (n, vocab) of one decode step of n <= max_batch sequences (their greedy
        tokens land in `tokens[:n]`). `pending` (rows, sources, sampled): those rows' input
        tokens are `sampled[sources]`, the last step's tokens, still on the device."""
        n = len(token_ids)
        batch = self._graph_batch(n)
        self._copied.synchronize()
        host = self._host_inputs.numpy()
        host[_IDS, :n] = token_ids
        host[_POSITIONS, :n] = positions
        host[_SLOTS, :n] = slots
        host[_CONTEXT, :n] = positions
        host[_CONTEXT, :n] += 1
        # every row past n (the padding and beyond): token 0 at position 0 (the staging may
        # hold an earlier step's PENDING id), no slot (nothing stored), context 0 (zero output)
        host[_IDS, n:] = 0
        host[_POSITIONS, n:] = 0
        host[_SLOTS, n:] = -1
        host[_CONTEXT, n:] = 0
        host[_SOURCE] = self._own_ids
        if pending is not None:
            pending_rows, sources, sampled = pending
            host[_SOURCE, pending_rows] = np.asarray(sources) + _TOKENS * self.max_batch
            if sampled.data_ptr() != self.tokens.data_ptr():  # sampled outside this graph
                self.tokens[: sampled.shape[0]].copy_(sampled)
        # every row but _TOKENS, and each row's input token, by a kernel reading the staging
        # (or, where the GPU cannot address it, a copy and a gather)
        if self._kernel_io:
            from ferrum.kernels.step_io import inputs_from_host

            inputs_from_host(self._host_inputs, self.inputs, self.ids, _IDS, _SOURCE, batch)
        else:
            self.inputs[:_HOST_ROWS].copy_(self._host_inputs, non_blocking=True)
            torch.index_select(
                self.inputs.view(-1), 0, self.inputs[_SOURCE, :batch], out=self.ids[:batch]
            )
        # the block tables only when one changed: a table list is only ever appended to (a
        # sequence that gives its blocks back gets a new list), so the same lists at the same
        # lengths hold what the device has (kept referenced here, so no new list takes an id)
        tables_now = [(table, len(table)) for table in block_tables]
        if len(tables_now) != len(self._tables_copied) or any(
            a is not b or m != k for (a, m), (b, k) in zip(tables_now, self._tables_copied)
        ):
            width = max(k for _, k in tables_now)
            tables = self._host_tables[: n * width].view(n, width)
            rows = tables.numpy()
            for row, table in zip(rows, block_tables):
                row[: len(table)] = table  # the rest of a row is never read (past its context)
            self.tables[:n, :width].copy_(tables, non_blocking=True)
            self._tables_copied = tables_now
        self._copied.record()
        self.graphs[batch].replay()
        return self.logits[:n]
