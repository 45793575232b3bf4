"""Chooses, each step, which sequences run and how many tokens each computes.

Design: there is no prefill or decode phase. Each running sequence has tokens whose KV is not yet
computed (a whole prompt, the rest of a prompt, or the one token sampled last step); a step gives
each as many as fit in the token budget. Running sequences go first, in arrival order (so decodes
are never starved by new prompts, and a long prompt is computed in chunks across steps); then
waiting sequences are admitted while the budget, `max_num_seqs` and free blocks allow. When a
running sequence cannot get a block, the latest-arrived running sequence is preempted: its blocks
are freed and it goes back to the front of the queue to be recomputed later (prompt and generated
tokens together), so nothing is lost and greedy output is unchanged. Plain Python.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ferrum.engine.block_manager import BlockManager
from ferrum.engine.sequence import Sequence, SequenceStatus


@dataclass
class ScheduledSeq:
    seq: Sequence
    num_tokens: int  # tokens computed for it this step
    samples: bool = False  # this step reaches the sequence's last token: sample a new one

    def __post_init__(self) -> None:
        self.samples = self.seq.num_computed_tokens + self.num_tokens == len(self.seq)


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq]
    preempted: list[Sequence]

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledSeq] = []
        preempted: list[Sequence] = []
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            if seq.hold:  # its last token is in flight and ends it: nothing more to compute
                i += 1
                continue
            num = min(seq.num_uncomputed_tokens, budget)
            while not self.block_manager.allocate_slots(seq, num):
                victim = self.running.pop()  # latest arrival
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            else:
                scheduled.append(ScheduledSeq(seq, num))
                budget -= num
                i += 1
        if not preempted:
            self._admit(scheduled, budget)
        return SchedulerOutput(scheduled, preempted)

    def _admit(self, scheduled: list[ScheduledSeq], budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            num = min(seq.num_uncomputed_tokens, budget)
            if not self.block_manager.allocate_slots(seq, num):
                break
            num = min(num, seq.num_uncomputed_tokens)  # prefix-cache hits computed some
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            scheduled.append(ScheduledSeq(seq, num))
            budget -= num

    def _preempt(self, seq: Sequence) -> None:
        self.block_manager.free(seq)
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def finish_step(self, out: SchedulerOutput) -> None:
        """Count the scheduled tokens as computed and publish newly full blocks to the cache."""
        for item in out.scheduled:
            if item.seq.is_finished:  # ended (and freed) while its step was in flight
                continue
            item.seq.num_computed_tokens += item.num_tokens
            self.block_manager.cache_full_blocks(item.seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        """End a sequence (stopped, length, aborted) and free its blocks at once."""
        seq.status = SequenceStatus.FINISHED
        if seq.finish_reason is None:
            seq.finish_reason = reason
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
