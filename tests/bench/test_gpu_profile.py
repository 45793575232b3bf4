"""gpu_profile's layer view: what each kernel of a layer adds to a step whose kernels overlap."""

from __future__ import annotations

import pytest


def _step(layers: int) -> list[tuple[float, float, str]]:
    """An embedding kernel, `layers` x (A starts 1 us before the kernel ahead ends and runs 11,
    B starts inside A, C after B), then the logits and a token kernel."""
    kernels = [(0.0, 3.0, "embed")]
    t = 3.0
    for _ in range(layers):
        kernels += [(t - 1, t + 10, "A"), (t + 8, t + 12, "B"), (t + 12, t + 17, "C")]
        t += 17
    return kernels + [(t, t + 50, "logits"), (t + 49, t + 51, "token")]


def test_layer_advance():
    from ferrum.bench.gpu_profile import layer_advance

    rows = layer_advance(_step(8), 8)
    assert [r["kernel"] for r in rows] == ["A", "B", "C"]
    assert [r["advance_us"] for r in rows] == [10, 2, 5]  # 17 a layer, as the step grows
    assert [r["duration_us"] for r in rows] == [11, 4, 5]
    assert [r["starts_before_previous_ends_us"] for r in rows] == [1, 2, 0]


def test_layer_advance_needs_a_repeating_layer():
    from ferrum.bench.gpu_profile import layer_advance

    kernels = [(float(i), i + 1.0, f"k{i}") for i in range(30)]
    with pytest.raises(ValueError, match="repeating"):
        layer_advance(kernels, 8)
