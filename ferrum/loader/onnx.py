"""Read the weights of an ONNX graph: its initializers, as named tensors.

An ONNX file exported from PyTorch keeps most parameters under their PyTorch names
(`dec.ups.0.weight`). Some lose them: a weight-normalized convolution's weight is computed in
the graph, so the exporter folds it into a constant named `onnx::Conv_8168`, and a tensor can be
renamed after a graph input. Those names are recovered from the node that consumes the tensor:
the node `/flow/flows.6/enc/in_layers.0/Conv` holds the module path, and the tensor's slot in it
(a Conv's input 1, a Gather's input 0) says it is that module's `weight`.

The consuming node's attributes (strides, dilations, pads, groups) come along: they are part of
the architecture and are not in any tensor's shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ferrum.errors import CheckpointError

# op type -> the input slot that holds a module's weight
_WEIGHT_SLOTS: dict[str, int] = {"Conv": 1, "ConvTranspose": 1, "Gather": 0, "Gemm": 1}


@dataclass(frozen=True)
class OnnxWeights:
    """The initializers of one ONNX graph under their recovered PyTorch names."""

    tensors: dict[str, torch.Tensor]  # name -> tensor (graph constants keep their ONNX names)
    attributes: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> its node's attrs

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.tensors.items())

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of tensor `name`; CheckpointError if the graph has no such tensor."""
        tensor = self.tensors.get(name)
        if tensor is None:
            raise CheckpointError(f"the ONNX graph has no tensor {name!r}")
        return tuple(tensor.shape)


def read_onnx_weights(path: Path) -> OnnxWeights:
    """Every initializer of the ONNX file at `path`, named as PyTorch named it where recoverable."""
    onnx = _import_onnx()
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError and friends for non-ONNX bytes
        raise CheckpointError(f"{path}: not a readable ONNX model ({e})") from e
    graph = model.graph
    if not graph.initializer:
        raise CheckpointError(f"{path}: the ONNX graph has no initializers (no weights)")
    consumers = _weight_consumers(graph, {t.name for t in graph.initializer})
    tensors: dict[str, torch.Tensor] = {}
    attributes: dict[str, dict[str, Any]] = {}
    for initializer in graph.initializer:
        name = initializer.name
        node = consumers.get(name)
        if node is not None:
            recovered = _module_path(node.name) + ".weight"
            if name != recovered and not name.endswith(".weight"):
                name = recovered
            attributes[name] = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        array = onnx.numpy_helper.to_array(initializer)
        tensors[name] = torch.from_numpy(array.copy())
    return OnnxWeights(tensors, attributes)


def _weight_consumers(graph: Any, initializers: set[str]) -> dict[str, Any]:
    """For each initializer used as a module weight by exactly one node, that node."""
    uses: dict[str, list[Any]] = {}
    for node in graph.node:
        slot = _WEIGHT_SLOTS.get(node.op_type)
        if slot is None or len(node.input) <= slot or not node.name.startswith("/"):
            continue
        name = node.input[slot]
        if name in initializers:
            uses.setdefault(name, []).append(node)
    return {name: nodes[0] for name, nodes in uses.items() if len(nodes) == 1}


def _module_path(node_name: str) -> str:
    """'/flow/flows.6/enc/in_layers.0/Conv' -> 'flow.flows.6.enc.in_layers.0'."""
    return ".".join(node_name.strip("/").split("/")[:-1])


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as e:
        raise CheckpointError(
            "reading .onnx weights needs the `onnx` package: pip install onnx"
        ) from e
    return onnx
