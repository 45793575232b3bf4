"""Block manager: exact block ids, prefix sharing, revival of freed cached blocks."""

from __future__ import annotations

from ferrum.engine.block_manager import BlockManager
from ferrum.engine.sequence import Sequence
from ferrum.sampling_params import SamplingParams


def seq(tokens):
    return Sequence(list(tokens), SamplingParams())


def compute(bm: BlockManager, s: Sequence, n: int) -> None:
    assert bm.allocate_slots(s, n)
    s.num_computed_tokens += n
    bm.cache_full_blocks(s)


def test_allocates_lowest_free_blocks_in_order():
    bm = BlockManager(8, 4)
    a = seq(range(10))
    assert bm.allocate_slots(a, 10)
    assert a.block_table == [0, 1, 2]
    assert bm.num_free_blocks == 5


def test_refuses_without_change_when_blocks_run_out():
    bm = BlockManager(2, 4)
    a = seq(range(9))
    assert not bm.allocate_slots(a, 9)
    assert a.block_table == [] and bm.num_free_blocks == 2


def test_decode_takes_a_new_block_only_at_a_boundary():
    bm = BlockManager(4, 4)
    a = seq(range(4))
    compute(bm, a, 4)
    a.append_token(99)
    assert bm.allocate_slots(a, 1)
    assert a.block_table == [0, 1]
    a.num_computed_tokens += 1
    a.append_token(100)
    assert bm.allocate_slots(a, 1)
    assert a.block_table == [0, 1]


def test_shared_prefix_reuses_full_blocks_and_leaves_last_token_uncached():
    bm = BlockManager(16, 4)
    a = seq(range(12))
    compute(bm, a, 12)
    b = seq(list(range(8)) + [50, 51, 52])
    assert bm.allocate_slots(b, len(b))
    assert b.block_table[:2] == a.block_table[:2]  # blocks 0, 1 shared
    assert b.block_table[2] == 3  # fresh
    assert b.num_computed_tokens == 8 and b.num_cached_tokens == 8
    assert bm.blocks[0].ref_count == 2
    # identical prompt: the last full block is not served from cache (its last token computes)
    c = seq(range(12))
    assert bm.allocate_slots(c, 12)
    assert c.num_computed_tokens == 8
    assert c.block_table[:2] == [0, 1] and c.block_table[2] not in (2,)


def test_freed_cached_blocks_are_revived_and_evicted_last():
    bm = BlockManager(6, 4)
    a = seq(range(9))
    compute(bm, a, 9)  # blocks 0,1 full and cached, 2 partial
    bm.free(a)
    assert bm.num_free_blocks == 6
    # the partial block (no hash) is handed out first; cached 0 and 1 stay revivable
    b = seq([70, 71])
    assert bm.allocate_slots(b, 2)
    assert b.block_table == [2]
    c = seq(list(range(8)) + [5])
    assert bm.allocate_slots(c, 9)
    assert c.block_table[:2] == [0, 1] and c.num_computed_tokens == 8
    assert bm.num_cache_hits == 8


def test_prefix_caching_off_shares_nothing():
    bm = BlockManager(8, 4, enable_prefix_caching=False)
    a = seq(range(8))
    compute(bm, a, 8)
    b = seq(range(9))
    assert bm.allocate_slots(b, 9)
    assert b.num_computed_tokens == 0 and set(b.block_table).isdisjoint(a.block_table)


def test_same_hash_with_different_tokens_is_not_a_hit():
    bm = BlockManager(8, 2)
    a = seq([1, 2, 3])
    compute(bm, a, 3)
    block = bm.blocks[a.block_table[0]]
    block.token_ids = (9, 9)  # simulate a hash collision
    b = seq([1, 2, 3])
    assert bm.allocate_slots(b, 3)
    assert b.num_computed_tokens == 0
