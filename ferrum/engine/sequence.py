"""One sequence being generated: its tokens, how many have KV in the cache, and its blocks.

Plain Python (no torch): the scheduler and block manager reason over these counters alone.
"""

from __future__ import annotations

from enum import Enum, auto
from itertools import count

from ferrum.sampling_params import SamplingParams

# A token sampled on the device whose value the host has not read yet (overlapped steps): the
# next step's input reads it on the device, and the engine writes the value in when it arrives.
PENDING = -1


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


class Sequence:
    """Tokens whose KV is cached (`num_computed_tokens`) catch up with `token_ids` each step."""

    _ids = count()

    def __init__(
        self,
        token_ids: list[int],
        params: SamplingParams,
        request_id: str = "",
        index: int = 0,
        arrival: int = 0,
    ):
        self.seq_id = next(Sequence._ids)
        self.request_id = request_id
        self.index = index  # which of the request's n completions
        self.arrival = arrival  # admission order: later arrivals are preempted first
        self.token_ids = list(token_ids)
        self.num_prompt_tokens = len(token_ids)
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0  # prompt tokens found in the prefix cache
        self.block_table: list[int] = []
        # the leading blocks already published to the prefix cache, and the hash of the last:
        # each step hashes only the blocks that became full since
        self.num_hashed_blocks = 0
        self.last_block_hash: int | None = None
        self.status = SequenceStatus.WAITING
        self.params = params
        self.finish_reason: str | None = None
        self.stop_reason: str | int | None = None
        # overlapped steps: trailing PENDING tokens, and whether the last of them ends the
        # sequence for sure (length), so it must not be scheduled again
        self.num_pending = 0
        self.hold = False

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        """Generated tokens whose values are known (pending ones not counted)."""
        return len(self.token_ids) - self.num_prompt_tokens - self.num_pending

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens : len(self.token_ids) - self.num_pending]

    @property
    def num_uncomputed_tokens(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)

    def append_pending(self) -> int:
        """Reserve the next token's place (its value is still on the device); its index."""
        self.token_ids.append(PENDING)
        self.num_pending += 1
        return len(self.token_ids) - 1

    def resolve_pending(self, index: int, token_id: int) -> None:
        """The oldest pending token's value has arrived."""
        self.token_ids[index] = token_id
        self.num_pending -= 1

    def drop_pending(self) -> None:
        """The sequence ended: forget tokens sampled after its end."""
        if self.num_pending:
            del self.token_ids[len(self.token_ids) - self.num_pending :]
            self.num_pending = 0

    def block_tokens(self, i: int, block_size: int) -> list[int]:
        return self.token_ids[i * block_size : (i + 1) * block_size]
