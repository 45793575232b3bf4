"""Scheduler: token budget, chunked prefill, admission limits, preemption by recompute."""

from __future__ import annotations

from ferrum.engine.block_manager import BlockManager
from ferrum.engine.scheduler import Scheduler
from ferrum.engine.sequence import Sequence, SequenceStatus
from ferrum.sampling_params import SamplingParams


def make(num_blocks=32, block_size=4, max_seqs=8, budget=64, prefix=True):
    bm = BlockManager(num_blocks, block_size, prefix)
    return Scheduler(bm, max_seqs, budget), bm


def seq(n, start=0):
    return Sequence(list(range(start, start + n)), SamplingParams())


def step(s: Scheduler, sample_token=7):
    """Run a schedule as the engine would, appending a token to sequences that sample."""
    out = s.schedule()
    samplers = [item.seq for item in out.scheduled if item.samples]
    s.finish_step(out)
    for q in samplers:
        q.append_token(sample_token)
    return out


def test_long_prompt_is_chunked_under_the_budget():
    s, _ = make(budget=10)
    a = seq(25)
    s.add(a)
    sizes = []
    for _ in range(3):
        out = step(s)
        sizes.append([(i.num_tokens, i.samples) for i in out.scheduled])
    assert sizes == [[(10, False)], [(10, False)], [(5, True)]]
    assert len(a) == 26
    assert step(s).scheduled[0].num_tokens == 1  # decode


def test_running_decodes_go_before_new_prompts():
    s, _ = make(budget=8)
    a = seq(6)
    s.add(a)
    step(s)
    b = seq(20, start=100)
    s.add(b)
    out = step(s)
    assert [(i.seq is a, i.num_tokens) for i in out.scheduled] == [(True, 1), (False, 7)]


def test_max_num_seqs_limits_admission():
    s, _ = make(max_seqs=2)
    seqs = [seq(3, start=10 * i) for i in range(3)]
    for q in seqs:
        s.add(q)
    out = step(s)
    assert [i.seq for i in out.scheduled] == seqs[:2]
    assert list(s.waiting) == [seqs[2]]


def test_preemption_frees_latest_and_requeues_it_first():
    # 4 blocks of 2 tokens: two sequences of 3 tokens take 2 blocks each; growing needs more
    s, bm = make(num_blocks=4, block_size=2, prefix=False)
    a, b = seq(3), seq(3, start=50)
    s.add(a)
    s.add(b)
    step(s)  # both prefilled: a=[0,1], b=[2,3]; each now 4 tokens, 3 computed
    assert (a.block_table, b.block_table) == ([0, 1], [2, 3])
    step(s)  # both decode their 4th token into their second block (still fits)
    out = s.schedule()  # a needs a 3rd block: b is preempted
    assert out.preempted == [b]
    assert b.status == SequenceStatus.WAITING and b.block_table == [] and b.num_computed_tokens == 0
    assert list(s.waiting) == [b]
    assert [i.seq for i in out.scheduled] == [a] and a.block_table == [0, 1, 2]
    assert s.num_preemptions == 1
    # b keeps its generated tokens: on readmission prompt and outputs are recomputed together
    assert len(b) == 5 and b.num_uncomputed_tokens == 5


def test_finish_frees_blocks_and_removes_sequence():
    s, bm = make()
    a = seq(9)
    s.add(a)
    step(s)
    s.finish(a, "abort")
    assert a.is_finished and a.finish_reason == "abort"
    assert bm.num_free_blocks == bm.num_blocks and not s.has_unfinished()


def test_prefix_hit_counts_as_computed_when_admitted():
    s, _ = make(block_size=4, budget=100)
    a = seq(12)
    s.add(a)
    step(s)
    b = seq(12)
    s.add(b)
    out = step(s)
    item = [i for i in out.scheduled if i.seq is b][0]
    assert item.num_tokens == 4 and item.samples  # 8 cached, last block computed
