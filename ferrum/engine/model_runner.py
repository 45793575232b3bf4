"""The one part of the engine that touches the device: owns the model and the KV cache tensors,
turns a scheduled step into one batched forward, and samples.

On CUDA with triton installed the attention layers use the Triton backend, and decode steps
(every sequence computing one token) replay a captured CUDA graph unless the engine config says
`enforce_eager`; everything else (prompt chunks, mixed steps, CPU) runs eagerly.
"""

from __future__ import annotations

import itertools
import logging
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from ferrum.config import EngineConfig
from ferrum.device import to_device
from ferrum.engine.cuda_graphs import DecodeGraphs
from ferrum.engine.sampler import DeviceSample, Sampler, SamplerOutput, SamplingRow
from ferrum.engine.scheduler import ScheduledSeq
from ferrum.kernels import triton_available
from ferrum.layers.attention import Attention, build_metadata
from ferrum.sampling_params import SamplingParams

HALF_DTYPES = (torch.float16, torch.bfloat16)  # the tile GEMM's: float32 keeps cuBLAS
log = logging.getLogger("ferrum.engine")
GIB = 1 << 30
# GPU memory kept free beyond the measured activation peak (CUDA graphs, allocator slack).
GPU_HEADROOM_BYTES = 512 << 20
# blocks of the throwaway cache that the first steps' kernels are compiled over, at the least
FIRST_STEPS_BLOCKS = 4


def _plain_greedy(params: SamplingParams) -> bool:
    """Greedy with nothing that changes or reports the logits: the argmax is the whole answer."""
    return params.greedy and not params.has_penalties and params.logprobs is None


@dataclass
class StepInput:
    """One step's inputs as plain lists: the flat batch of new tokens and where they go."""

    use_graph: bool = False  # a decode step that replays a captured CUDA graph
    input_ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    query_lens: list[int] = field(default_factory=list)  # new tokens of each sequence
    context_lens: list[int] = field(default_factory=list)  # its KV length after the step
    block_tables: list[list[int]] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)  # token rows whose logits are sampled
    # overlapped steps: input rows whose token is still on the device, and the row of the
    # previous step's sampled tokens that holds it
    pending_rows: list[int] = field(default_factory=list)
    pending_src: list[int] = field(default_factory=list)
    # overlapped tensor-parallel steps: rank 0 sends its sampled tokens to the other ranks
    share_samples: bool = False


@dataclass
class PendingStep:
    """A launched step whose sampled tokens are on their way to the host."""

    sample: DeviceSample
    host: list[torch.Tensor]  # host copies of sample.tensors(), filled asynchronously
    copied: torch.cuda.Event | None  # recorded after the copies (None on CPU: already done)

    def result(self) -> SamplerOutput:
        if self.copied is not None:
            self.copied.synchronize()
        return self.sample.to_host(self.host)


class ModelRunner:
    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        block_size: int,
        config: EngineConfig | None = None,
    ):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.block_size = block_size
        self.config = config or EngineConfig(block_size=block_size)
        self.sampler = Sampler()
        self.attention_layers = [m for m in model.modules() if isinstance(m, Attention)]
        self.kv_cache: torch.Tensor | None = None
        self.graphs: DecodeGraphs | None = None
        self.use_triton = device.type == "cuda" and triton_available()
        # whether the sampled tokens go to the host by a kernel (it can address host memory):
        # probed once the first steps' kernels are compiled (allocate_kv_cache)
        self._kernel_io = False
        self._decode_compiled = False  # the decode graphs' kernels compiled ahead
        self._prev_tokens: torch.Tensor | None = None  # the last launched step's samples
        self._prev_rows: dict[int, int] = {}  # seq_id -> its row in them
        if self.use_triton:
            from ferrum.layers.triton_attention import TritonPagedAttention

            for attn in self.attention_layers:
                attn.backend = TritonPagedAttention()
            from ferrum.kernels.launch import set_pdl

            set_pdl(self.config.pdl is not False, device.index or 0)
            # tensor parallel shards keep the plain layers: the skinny path has no all-reduce
            skinny = self.config.skinny_gemm is not False
            if skinny and self.config.tensor_parallel_size == 1:
                for module in model.modules():
                    if hasattr(module, "skinny"):
                        module.skinny = True
            if self._tile_gemm(device):
                for module in model.modules():
                    if hasattr(module, "tile_gemm"):
                        module.tile_gemm = True

    def _tile_gemm(self, device: torch.device) -> bool:
        """Whether decode batches take the tile GEMM (EngineConfig.tile_gemm)."""
        if self.config.tensor_parallel_size != 1 or self.dtype not in HALF_DTYPES:
            return False
        if self.config.tile_gemm is None:  # measured on Hopper only
            return torch.cuda.get_device_capability(device)[0] == 9
        return self.config.tile_gemm

    @property
    def kv_bytes_per_block(self) -> int:
        """K and V of every layer for one block of tokens."""
        per_token = sum(2 * a.num_kv_heads * a.head_dim for a in self.attention_layers)
        return per_token * self.block_size * torch.empty((), dtype=self.dtype).element_size()

    def allocate_kv_cache(self, num_blocks: int) -> None:
        """Allocate the cache; on CUDA, then capture the decode graphs over it."""
        self._allocate(num_blocks)
        log.info(
            "KV cache: %d blocks of %d tokens (%d tokens), %.2f GiB on %s",
            num_blocks, self.block_size, num_blocks * self.block_size,
            num_blocks * self.kv_bytes_per_block / GIB, self.device,
        )  # fmt: skip
        if self.use_triton:
            from ferrum.kernels.step_io import reaches_host

            self._kernel_io = reaches_host(self.device.index or 0)
        if self._captures_graphs():
            self.graphs = self._decode_graphs(min(num_blocks, self._max_blocks_per_seq()))
            self.graphs.capture(precompiled=self._decode_compiled)

    def _captures_graphs(self) -> bool:
        return self.use_triton and not self.config.enforce_eager

    def _max_blocks_per_seq(self) -> int:
        max_len = self.config.max_model_len or self.model.config.max_position_embeddings
        return -(-max_len // self.block_size)

    def _decode_graphs(self, max_blocks: int) -> DecodeGraphs:
        return DecodeGraphs(
            self.model, self.block_size, self.config.max_num_seqs, max_blocks, self.device,
            kernel_io=self._kernel_io,
        )  # fmt: skip

    def _allocate(self, num_blocks: int) -> None:
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
        throwaway cache just big enough for it.

        With Triton, that forward's kernels are only compiled, not run (they allocate nothing,
        so the peak is the same), in one parallel pass with the kernels of the steps to come:
        a short prompt, a prompt chunk beside decodes, and every decode graph. Compiled one at a
        time as each was first launched, they were most of a cold start (H100, Llama-3.1-8B,
        empty Triton cache, runs interleaved: to the first token 14.4 / 15.3 s before, 11.1 /
        10.7 s with the pass)."""
        blocks = max(-(-num_tokens // self.block_size), FIRST_STEPS_BLOCKS)
        self._allocate(blocks)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        table = list(range(blocks))
        if self.use_triton:
            from ferrum.kernels.launch import compile_only

            compiling = compile_only()
        else:
            compiling = nullcontext(False)
        with torch.inference_mode(), compiling as compile_pass:
            self._forward_for([num_tokens], [num_tokens], table)
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - before
            if compile_pass:
                self._compile_first_steps(table)
        for attn in self.attention_layers:
            attn.kv_cache = None
        self.kv_cache = None
        torch.cuda.empty_cache()
        return peak

    def _forward_for(
        self, query_lens: list[int], context_lens: list[int], table: list[int]
    ) -> None:
        """A throwaway step over the cache's first blocks (every sequence shares them): each
        sequence's new tokens, and the logits of its last one."""
        meta = build_metadata(
            query_lens, context_lens, [table] * len(query_lens), self.block_size, self.device
        )
        # positions wrap at the rope table's end (a budget may exceed a small model's context)
        max_positions = self.model.config.max_position_embeddings
        pos = [p % max_positions for q, c in zip(query_lens, context_lens) for p in range(c - q, c)]
        ids = torch.zeros(len(pos), dtype=torch.long, device=self.device)
        hidden = self.model(ids, to_device(pos, torch.long, self.device), meta)
        last = [end - 1 for end in itertools.accumulate(query_lens)]
        self.model.compute_logits(hidden[self._index(last)])

    def _compile_first_steps(self, table: list[int]) -> None:
        """Inside `compile_only`: the kernels of a short prompt, of a prompt chunk beside two
        decodes (a mixed step), and of every decode graph. Odd token counts: triton compiles
        apart for integers that are 1 or multiples of 16, and prompts come in any length."""
        span = len(table) * self.block_size
        self._forward_for([9, 1, 1], [9, min(5, span), min(33, span)], table)
        if self._captures_graphs():
            # the graphs' own buffers, as the real ones will be but for the table width
            self._decode_graphs(self._max_blocks_per_seq()).compile_steps()
            self._decode_compiled = True
        self._forward_for([17], [17], table)

    def kv_cache_budget(self) -> int:
        """CUDA: bytes this device can give the KV cache, after the weights, the activation
        peak of the largest step and some headroom."""
        cfg = self.config
        free, total = torch.cuda.mem_get_info(self.device)
        peak = self.profile_peak_memory(cfg.max_num_batched_tokens)
        used = total - free
        return int(total * cfg.gpu_memory_utilization) - used - peak - GPU_HEADROOM_BYTES

    def run(self, scheduled: list[ScheduledSeq], rows: list[SamplingRow]) -> SamplerOutput | None:
        """One forward over every scheduled token; samples one token for each scheduled sequence
        that reaches its last token this step (`rows` lists those, in order)."""
        step = self.prepare(scheduled)
        logits = self.execute(step)
        return None if logits is None else self._sample(step, logits, rows).to_host()

    def launch(self, scheduled: list[ScheduledSeq], rows: list[SamplingRow]) -> PendingStep | None:
        """`run` without waiting: forward and sampling are queued on the device, the sampled
        tokens stay there for the next step's inputs (a tensor-parallel worker gets them from
        rank 0 by broadcast), and their host copy is started."""
        step = self.prepare(scheduled)
        step.share_samples = True
        logits = self.execute(step)
        if logits is None:
            return None
        sample = self._sample(step, logits, rows)
        self.share_samples(sample.tokens)
        self._prev_tokens = sample.tokens
        sampling = (item for item in scheduled if item.samples)
        self._prev_rows = {item.seq.seq_id: i for i, item in enumerate(sampling)}
        tensors = sample.tensors()
        if self.device.type != "cuda":
            return PendingStep(sample, tensors, None)
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        if self._kernel_io and len(tensors) == 1 and tensors[0].dtype == torch.int64:
            from ferrum.kernels.step_io import to_host

            to_host(tensors[0].contiguous(), host[0])  # the tokens: a kernel, not a copy engine
        else:
            for dst, src in zip(host, tensors):
                dst.copy_(src, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        return PendingStep(sample, host, copied)

    def _sample(
        self, step: StepInput, logits: torch.Tensor, rows: list[SamplingRow]
    ) -> DeviceSample:
        """The step's tokens: a graph step whose every row is plain greedy takes the tokens the
        graph already picked; anything else goes through the sampler."""
        graphs = self.graphs
        if (
            step.use_graph
            and graphs is not None
            and graphs.has_greedy(len(step.input_ids))
            and len(step.sample_rows) == len(step.input_ids)
            and all(_plain_greedy(row.params) for row in rows)
        ):
            return DeviceSample(graphs.tokens[: len(rows)])
        return self.sampler.sample(logits, rows)

    def share_samples(self, tokens: torch.Tensor) -> None:
        """Give the other tensor-parallel ranks this step's sampled tokens (none here)."""

    def execute_shard(self, step: StepInput) -> None:
        """A tensor-parallel worker's step: the forward, then, when rank 0 overlaps its steps,
        the sampled tokens that the next step's pending rows read."""
        self.execute(step)
        if step.share_samples and step.sample_rows:
            from ferrum.parallel.comm import broadcast_from_first

            tokens = torch.empty(len(step.sample_rows), dtype=torch.long, device=self.device)
            self._prev_tokens = broadcast_from_first(tokens)

    def prepare(self, scheduled: list[ScheduledSeq]) -> StepInput:
        """The step's inputs as host lists (what rank 0 sends every tensor-parallel worker)."""
        step = StepInput(use_graph=self._graph_fits(scheduled))
        for item in scheduled:
            seq = item.seq
            start, end = seq.num_computed_tokens, seq.num_computed_tokens + item.num_tokens
            if item.num_tokens == 1:  # a decode: skip the slice and range objects
                if seq.num_pending and start >= len(seq) - seq.num_pending:
                    # sampled by the step still in flight: read it on the device
                    step.pending_rows.append(len(step.input_ids))
                    step.pending_src.append(self._prev_rows[seq.seq_id])
                step.input_ids.append(seq.token_ids[start])
                step.positions.append(start)
            else:
                step.input_ids.extend(seq.token_ids[start:end])
                step.positions.extend(range(start, end))
            step.query_lens.append(item.num_tokens)
            step.context_lens.append(end)
            step.block_tables.append(seq.block_table)
            if item.samples:
                step.sample_rows.append(len(step.input_ids) - 1)
        return step

    @torch.inference_mode()
    def execute(self, step: StepInput) -> torch.Tensor | None:
        """The forward of one step: logits (S, vocab) of its sampled rows, or None."""
        if step.use_graph:
            return self._run_graph(step)
        meta = build_metadata(
            step.query_lens, step.context_lens, step.block_tables, self.block_size, self.device
        )
        ids = to_device(step.input_ids, torch.long, self.device)
        pos = to_device(step.positions, torch.long, self.device)
        if step.pending_rows:
            ids[self._index(step.pending_rows)] = self._pending_tokens(step)
        hidden = self.model(ids, pos, meta)  # (T, hidden)
        if not step.sample_rows:
            return None
        if len(step.sample_rows) != hidden.shape[0]:  # a Python-list index copies pageably
            hidden = hidden[self._index(step.sample_rows)]
        return self.model.compute_logits(hidden)  # (S, vocab)

    def _index(self, rows: list[int]) -> torch.Tensor:
        return to_device(rows, torch.long, self.device)

    def _pending_tokens(self, step: StepInput) -> torch.Tensor:
        """The previous step's sampled tokens that this step's pending rows read."""
        if self._prev_tokens is None:
            raise RuntimeError("a pending input token but no step in flight")
        return self._prev_tokens[self._index(step.pending_src)]

    def close(self) -> None:
        """Free the KV cache and the decode graphs now rather than when the engine is collected
        (the parallel runner also stops its workers)."""
        self.graphs = None
        for attn in self.attention_layers:
            attn.kv_cache = None
        self.kv_cache = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _graph_fits(self, scheduled: list[ScheduledSeq]) -> bool:
        graphs = self.graphs
        return (
            graphs is not None
            and len(scheduled) <= graphs.max_batch
            and all(item.num_tokens == 1 for item in scheduled)
            and all(len(item.seq.block_table) <= graphs.tables.shape[1] for item in scheduled)
        )

    def _run_graph(self, step: StepInput) -> torch.Tensor:
        """A decode step (one token per sequence) through the captured graphs."""
        assert self.graphs is not None
        bs = self.block_size
        slots = [
            table[pos // bs] * bs + pos % bs
            for pos, table in zip(step.positions, step.block_tables)
        ]
        pending = None
        if step.pending_rows:
            if self._prev_tokens is None:
                raise RuntimeError("a pending input token but no step in flight")
            pending = (step.pending_rows, step.pending_src, self._prev_tokens)
        logits = self.graphs.run(step.input_ids, step.positions, slots, step.block_tables, pending)
        if len(step.sample_rows) != len(step.input_ids):  # a one-token chunk that does not sample
            logits = logits[self._index(step.sample_rows)]
        return logits
