"""Rank 0's model runner: the ModelRunner whose device work every worker repeats in lockstep."""

from __future__ import annotations

import torch
from torch import nn

from ferrum.config import EngineConfig
from ferrum.engine.model_runner import ModelRunner, StepInput
from ferrum.errors import DeviceError
from ferrum.parallel.comm import broadcast_from_first, destroy_group
from ferrum.parallel.workers import WorkerGroup


class ParallelModelRunner(ModelRunner):
    """Sends each device-side call to the workers before making it here."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        dtype: torch.dtype,
        block_size: int,
        config: EngineConfig,
        workers: WorkerGroup,
    ) -> None:
        super().__init__(model, device, dtype, block_size, config)
        self.workers = workers

    def kv_cache_budget(self) -> int:
        # every rank profiles the same forward (its collectives need all of them); the
        # smallest budget decides, since all ranks hold the same number of blocks
        self.workers.send("kv_cache_budget")
        own = super().kv_cache_budget()
        return min([own, *self.workers.gather()])

    def allocate_kv_cache(self, num_blocks: int) -> None:
        self.workers.send("allocate_kv_cache", num_blocks)
        super().allocate_kv_cache(num_blocks)
        self.workers.gather()

    def execute(self, step: StepInput) -> torch.Tensor | None:
        self.workers.send("execute_shard", step)
        try:
            return super().execute(step)
        except RuntimeError as exc:  # a collective failed: say which rank went away
            self.workers.check_alive()
            raise DeviceError(f"a tensor-parallel step failed: {exc}") from exc

    def share_samples(self, tokens: torch.Tensor) -> None:
        broadcast_from_first(tokens)  # the workers' `execute_shard` receives them

    def close(self) -> None:
        super().close()  # captured collectives must go before the communicator
        self.workers.close()
        destroy_group()
