"""A GGUF checkpoint runs through the engine with the same greedy tokens as transformers on the
original weights (catches a wrong Q/K un-permutation or name mapping end to end)."""

from __future__ import annotations

import pytest
import torch

from ferrum import LLM, SamplingParams


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_gguf_greedy_matches_transformers(tiny_ggufs, tiny_models, arch):
    import transformers

    llm = LLM(str(tiny_ggufs[(arch, "F32")]), device="cpu", dtype="float32", block_size=4)
    prompt = [5, 17, 42, 8, 99, 3, 64]
    ours = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_models[arch].dir).eval()
    ref = hf.generate(
        torch.tensor([prompt]),
        max_new_tokens=12,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert ours[0].outputs[0].token_ids == ref[0, len(prompt) :].tolist()
