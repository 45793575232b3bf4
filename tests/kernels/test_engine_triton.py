"""The Triton backend inside the whole engine: greedy tokens of a tiny model equal the torch
backend's (CPU interpreter), and on a GPU CUDA graphs equal eager mode and a batch equals its
requests one by one."""

from __future__ import annotations

import pytest
import torch

from ferrum import LLM, SamplingParams
from tests.kernels.conftest import DEVICE

PROMPTS = ["The quick brown fox", "def main():\n    return 42 and more tokens"]
GREEDY = SamplingParams(temperature=0, max_tokens=5, ignore_eos=True)


@pytest.mark.parametrize("arch", ["tiny_qwen3", "tiny_llama"])  # with and without q/k norm
def test_triton_backend_engine_matches_torch_backend(arch, request):
    from ferrum.layers.attention import TorchPagedAttention
    from ferrum.layers.triton_attention import TritonPagedAttention

    options = {"gpu_memory_utilization": 0.2} if DEVICE.type == "cuda" else {}
    llm = LLM(
        str(request.getfixturevalue(arch)),
        device=DEVICE.type,
        dtype="float32",
        block_size=16,
        max_num_batched_tokens=12,
        enforce_eager=True,
        **options,
    )
    layers = llm.engine.runner.attention_layers
    for attn in layers:
        attn.backend = TorchPagedAttention()
    ref = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, GREEDY)]
    for attn in layers:
        attn.backend = TritonPagedAttention()
    # prompt chunks of 12 tokens (prefill kernel over cached context), mixed and decode steps
    got = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, GREEDY)]
    llm.close()
    assert got == ref


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
def test_cuda_graphs_equal_eager_and_batch_equals_single(tiny_qwen3):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    prompts = PROMPTS * 3
    results = []
    for eager in (False, True):
        llm = LLM(
            str(tiny_qwen3),
            device="cuda",
            dtype="float32",
            max_num_seqs=8,
            gpu_memory_utilization=0.2,
            enforce_eager=eager,
        )
        assert (llm.engine.runner.graphs is None) == eager
        batched = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
        single = [llm.generate([p], params)[0].outputs[0].token_ids for p in prompts]
        llm.close()
        assert batched == single
        results.append(batched)
        del llm
        torch.cuda.empty_cache()
    assert results[0] == results[1]


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
def test_overlapped_graph_steps_with_a_shrinking_batch_equal_sync(tiny_llama):
    """Sequences ending at different steps: the graph batch shrinks and its padding rows must
    not keep an earlier step's PENDING token ids."""
    params = [
        SamplingParams(temperature=0, max_tokens=n, ignore_eos=True) for n in (3, 9, 17, 30, 5)
    ]
    prompts = [f"{PROMPTS[i % 2]} {i}" for i in range(5)]
    results = []
    for overlap in (False, True):
        llm = LLM(
            str(tiny_llama), device="cuda", dtype="float32", max_num_seqs=8,
            gpu_memory_utilization=0.2, async_scheduling=overlap,
        )  # fmt: skip
        assert llm.engine.overlap == overlap and llm.engine.runner.graphs is not None
        results.append([o.outputs[0].token_ids for o in llm.generate(prompts, params)])
        llm.close()
    assert results[0] == results[1]


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
@pytest.mark.parametrize("skinny", [False, True])
def test_programmatic_dependent_launch_keeps_the_tokens(tiny_qwen3, skinny):
    """Kernels launched with PDL (each may start before the one ahead ends, and waits for its
    writes) give the same greedy tokens in CUDA graphs, batched and one by one."""
    from ferrum.kernels import launch

    prompts = [f"{PROMPTS[i % 2]} {i}" for i in range(4)]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    results = []
    for pdl in (False, True):
        llm = LLM(
            str(tiny_qwen3), device="cuda", dtype="float32", max_num_seqs=8,
            gpu_memory_utilization=0.2, pdl=pdl, skinny_gemm=skinny,
        )  # fmt: skip
        assert launch.pdl_enabled() == (pdl and launch.pdl_supported())
        batched = [o.outputs[0].token_ids for o in llm.generate(prompts, params)]
        single = [llm.generate([p], params)[0].outputs[0].token_ids for p in prompts]
        results.append((batched, single))
        llm.close()
    launch.set_pdl(False)
    assert results[0] == results[1]


@pytest.mark.parametrize("arch", ["tiny_qwen3", "tiny_llama"])
def test_skinny_gemm_layers_give_the_torch_path_tokens(arch, request, monkeypatch):
    """Decoder layers with their projections as skinny GEMMs (norms and activation folded in)
    give the greedy tokens of the plain layers: each request alone, so its decode steps are one
    row (the skinny path); prompts and batched steps keep the plain path."""
    from ferrum.layers.triton_attention import TritonPagedAttention
    from ferrum.models.llama import LlamaDecoderLayer

    options = {"gpu_memory_utilization": 0.2} if DEVICE.type == "cuda" else {}
    llm = LLM(
        str(request.getfixturevalue(arch)), device=DEVICE.type, dtype="float32",
        enforce_eager=True, skinny_gemm=True, **options,
    )  # fmt: skip
    layers = [m for m in llm.engine.model.modules() if isinstance(m, LlamaDecoderLayer)]
    for attn in llm.engine.runner.attention_layers:
        attn.backend = TritonPagedAttention()
    assert all(layer.skinny for layer in layers) == (DEVICE.type == "cuda")  # set on CUDA only
    prompts = [*PROMPTS, "a much longer prompt " * 3]
    for layer in layers:
        layer.skinny = False
    ref = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    for layer in layers:
        layer.skinny = True
    skinny_steps = []
    forward_skinny = LlamaDecoderLayer._forward_skinny

    def counted(self, x, *args):
        skinny_steps.append(x.shape[0])
        return forward_skinny(self, x, *args)

    monkeypatch.setattr(LlamaDecoderLayer, "_forward_skinny", counted)
    got = [llm.generate([p], GREEDY)[0].outputs[0].token_ids for p in prompts]
    assert skinny_steps and set(skinny_steps) == {1}  # every decode step, one row each
    got_batched = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    llm.close()
    assert got == ref
    assert got_batched == ref


def test_tile_gemm_decode_batches_give_the_cublas_tokens(tiny_llama, monkeypatch):
    """Decode steps of 17-64 sequences with their projections and logits on the tile GEMM give
    the greedy tokens of the plain layers; prompt steps (more rows) keep the plain path."""
    from ferrum.kernels import tile_gemm

    options = {"gpu_memory_utilization": 0.2} if DEVICE.type == "cuda" else {}
    llm = LLM(
        str(tiny_llama), device=DEVICE.type, dtype="float32", enforce_eager=True,
        max_num_seqs=32, tile_gemm=False, **options,
    )  # fmt: skip
    modules = [m for m in llm.engine.model.modules() if hasattr(m, "tile_gemm")]
    assert len(modules) == 2 * llm.engine.model.config.num_layers + 1  # attention, MLP; logits
    assert not any(m.tile_gemm for m in modules)
    prompts = [f"{PROMPTS[i % 2]} {i}" for i in range(20)]
    ref = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    rows = []
    tile_linear = tile_gemm.tile_linear

    def counted(x, *args, **kwargs):
        rows.append(x.shape[0])
        return tile_linear(x, *args, **kwargs)

    monkeypatch.setattr(tile_gemm, "tile_linear", counted)
    for module in modules:
        module.tile_gemm = True
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, GREEDY)]
    llm.close()
    assert rows and set(rows) == {20}  # the decode steps: 20 rows each
    assert got == ref


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
def test_tile_gemm_graphs_leave_the_greedy_tokens_of_eager_steps(tiny_llama):
    """bf16 decode batches of 20 on the tile GEMM: the graph's logits product folds their
    argmax in (its tokens are the step's), and they equal eager steps' sampled argmax."""
    prompts = [f"{PROMPTS[i % 2]} {i}" for i in range(20)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    results = []
    for eager in (False, True):
        llm = LLM(
            str(tiny_llama), device="cuda", dtype="bfloat16", max_num_seqs=32,
            gpu_memory_utilization=0.2, enforce_eager=eager, tile_gemm=True,
        )  # fmt: skip
        if not eager:
            assert llm.engine.runner.graphs.has_greedy(20)
            assert not llm.engine.runner.graphs.has_greedy(12)  # 9-16 rows: cuBLAS
        results.append([o.outputs[0].token_ids for o in llm.generate(prompts, params)])
        llm.close()
    assert results[0] == results[1]


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
@pytest.mark.parametrize("kernel_io", [True, False])  # False: copies (host memory not mapped)
def test_graph_greedy_tokens_and_fed_back_inputs_equal_eager(tiny_qwen3, kernel_io, monkeypatch):
    """Greedy requests that outlive seeded sampled ones: steps go from mixed (the sampler's
    tokens, copied into the graph's token buffer for the next step) to all-greedy (the graph's
    own argmax, read back by the next graph) with overlapped steps; tokens equal eager steps."""
    from ferrum.kernels import step_io

    if not kernel_io:
        monkeypatch.setattr(step_io, "reaches_host", lambda device_index: False)
    greedy = SamplingParams(temperature=0, max_tokens=28, ignore_eos=True)
    sampled = [
        SamplingParams(temperature=0.9, top_p=0.9, seed=s, max_tokens=n, ignore_eos=True)
        for s, n in ((1, 7), (2, 13))
    ]
    prompts = [PROMPTS[0], PROMPTS[1], f"{PROMPTS[0]} again", f"{PROMPTS[1]} again"]
    params = [greedy, sampled[0], greedy, sampled[1]]
    results = []
    for eager in (False, True):
        llm = LLM(
            str(tiny_qwen3), device="cuda", dtype="float32", max_num_seqs=8,
            gpu_memory_utilization=0.2, enforce_eager=eager, async_scheduling=True,
        )  # fmt: skip
        assert llm.engine.overlap
        results.append([o.outputs[0].token_ids for o in llm.generate(prompts, params)])
        llm.close()
        del llm
        torch.cuda.empty_cache()
    assert results[0] == results[1]
    assert [len(t) for t in results[0]] == [28, 7, 28, 13]


@pytest.mark.parametrize("arch", ["tiny_qwen3", "tiny_llama"])
def test_forward_greedy_equals_forward_then_logits(arch, request):
    """The one-sequence decode step with the final norm folded into the logits product (what
    graphs of one row run) gives the logits and the argmax of the model's forward and head."""
    from ferrum.layers.attention import build_metadata
    from ferrum.layers.triton_attention import TritonPagedAttention

    options = {"gpu_memory_utilization": 0.2} if DEVICE.type == "cuda" else {}
    llm = LLM(
        str(request.getfixturevalue(arch)), device=DEVICE.type, dtype="float32",
        enforce_eager=True, **options,
    )  # fmt: skip
    model, runner = llm.engine.model, llm.engine.runner
    for attn in runner.attention_layers:
        attn.backend = TritonPagedAttention()
    for layer in model.model.layers:
        layer.skinny = True
    vocab = model.config.vocab_size
    ids = torch.tensor([11], device=DEVICE)
    positions = torch.tensor([0], device=DEVICE)

    def meta():
        return build_metadata([1], [1], [[0]], runner.block_size, DEVICE)

    with torch.inference_mode():
        ref = model.compute_logits(model(ids, positions, meta()))
        logits = torch.full((1, vocab), float("nan"), device=DEVICE)
        tokens = torch.full((1,), -1, dtype=torch.int64, device=DEVICE)
        assert model.forward_greedy(ids, positions, meta(), logits, tokens)
        assert not model.forward_greedy(ids.repeat(2), positions.repeat(2), meta(), logits, tokens)
    llm.close()
    torch.testing.assert_close(logits, ref, atol=1e-4, rtol=1e-4)
    assert tokens.item() == ref.argmax(-1).item()


def _compiled_kernels() -> int:
    """Compiled variants of every Triton kernel of ferrum on this device."""
    import importlib
    import pkgutil

    from triton.runtime.jit import JITFunction

    import ferrum.kernels

    device = torch.cuda.current_device()
    total = 0
    for info in pkgutil.iter_modules(ferrum.kernels.__path__):
        module = importlib.import_module(f"ferrum.kernels.{info.name}")
        for value in vars(module).values():
            if isinstance(value, JITFunction) and device in value.device_caches:
                total += len(value.device_caches[device][0])
    return total


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type != "cuda", reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["tiny_qwen3", "tiny_llama"])
def test_start_up_compiles_the_kernels_of_the_first_steps(arch, request):
    """The engine's start-up pass compiles what the first steps launch: prompts of odd and
    aligned lengths, prompt chunks beside decodes (a budget of 16 tokens a step) and graph
    decode steps then compile nothing more."""
    llm = LLM(
        str(request.getfixturevalue(arch)), device="cuda", dtype="bfloat16", max_num_seqs=4,
        max_num_batched_tokens=16, gpu_memory_utilization=0.2,
    )  # fmt: skip
    compiled = _compiled_kernels()
    assert compiled > 0
    prompts = [list(range(3, 3 + n)) for n in (5, 27, 16)]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    outputs = llm.generate(prompts, params)
    assert [len(o.outputs[0].token_ids) for o in outputs] == [12, 12, 12]
    assert _compiled_kernels() == compiled
    llm.close()
