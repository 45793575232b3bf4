"""The paged KV cache's bookkeeping: which blocks are free, which hold which sequence's tokens,
and which full blocks can be shared between sequences with the same prefix.

Design: a full block is identified by the hash of (hash of the previous block, its token ids), so a
block's hash names the whole prefix up to it. When a sequence first asks for slots, its prompt's
full blocks are looked up by hash; hits are shared (ref-counted) and count as computed tokens.
A block whose ref count drops to zero goes back to the free queue but keeps its hash: it can be
revived by a later hit until it is handed out again (oldest freed first, so recently used prefixes
survive longest). Plain Python; tests assert exact block ids.
"""

from __future__ import annotations

from collections import OrderedDict

from ferrum.engine.sequence import Sequence


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "token_ids")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0
        self.hash: int | None = None
        self.token_ids: tuple[int, ...] = ()


def block_hash(prev_hash: int | None, token_ids: tuple[int, ...]) -> int:
    return hash((prev_hash, token_ids))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_ids: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.hash_to_block: dict[int, int] = {}
        self.num_cache_queries = 0  # prompt tokens looked up in the prefix cache
        self.num_cache_hits = 0  # of which found

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_ids)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / max(self.num_blocks, 1)

    def blocks_needed(self, num_tokens: int) -> int:
        return (num_tokens + self.block_size - 1) // self.block_size

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Block ids holding this sequence's leading full blocks. The last token is never
        served from cache: its logits must be computed."""
        hits: list[int] = []
        h: int | None = None
        for i in range((len(seq) - 1) // self.block_size):
            tokens = tuple(seq.block_tokens(i, self.block_size))
            h = block_hash(h, tokens)
            block_id = self.hash_to_block.get(h)
            if block_id is None or self.blocks[block_id].token_ids != tokens:
                break
            hits.append(block_id)
        return hits

    def allocate_slots(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make room for `num_new_tokens` more computed tokens; False (and no change) if the free
        blocks do not suffice. A sequence with no blocks first takes its cached prefix."""
        if seq.block_table:  # a running sequence (every decode step): at most fresh blocks
            fresh = self.blocks_needed(seq.num_computed_tokens + num_new_tokens)
            fresh -= len(seq.block_table)
            if fresh > self.num_free_blocks:
                return False
            for _ in range(fresh):
                self._append_fresh(seq)
            return True
        # a sequence with no blocks yet (new, or preempted): its cached prefix first
        hits = self._cached_prefix(seq) if self.enable_prefix_caching else []
        num_computed = seq.num_computed_tokens + len(hits) * self.block_size
        if hits:
            num_new_tokens = min(num_new_tokens, len(seq) - num_computed)
        fresh = self.blocks_needed(num_computed + num_new_tokens) - len(hits)
        # hits that sit in the free queue are taken out of it, so they count against it too
        revived = sum(1 for b in hits if self.blocks[b].ref_count == 0)
        if fresh + revived > self.num_free_blocks:
            return False
        self.num_cache_queries += len(seq) - seq.num_computed_tokens
        self.num_cache_hits += len(hits) * self.block_size
        for block_id in hits:
            self._take(block_id)
            seq.block_table.append(block_id)
        for _ in range(fresh):
            self._append_fresh(seq)
        if hits:
            seq.num_computed_tokens = num_computed
            seq.num_cached_tokens = num_computed
        return True

    def _append_fresh(self, seq: Sequence) -> None:
        """Give the sequence the next free block, forgetting what it cached."""
        block_id = next(iter(self.free_ids))
        self._take(block_id)
        self._forget(block_id)
        seq.block_table.append(block_id)

    def _take(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_ids[block_id]
        block.ref_count += 1

    def _forget(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.hash is not None and self.hash_to_block.get(block.hash) == block_id:
            del self.hash_to_block[block.hash]
        block.hash, block.token_ids = None, ()

    def cache_full_blocks(self, seq: Sequence) -> None:
        """Register the sequence's computed full blocks in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        h = seq.last_block_hash
        full = seq.num_computed_tokens // self.block_size
        for i in range(seq.num_hashed_blocks, full):
            block = self.blocks[seq.block_table[i]]
            if block.hash is not None:
                h = block.hash
                continue
            tokens = tuple(seq.block_tokens(i, self.block_size))
            h = block_hash(h, tokens)
            block.hash, block.token_ids = h, tokens
            self.hash_to_block.setdefault(h, block.block_id)
        if full > seq.num_hashed_blocks:
            seq.num_hashed_blocks, seq.last_block_hash = full, h

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks (last first, so a prefix's tail is reused first)."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free_ids[block_id] = None
                if block.hash is None:
                    # nothing to revive: hand it out before blocks that hold a cached prefix
                    self.free_ids.move_to_end(block_id, last=False)
        seq.block_table = []
        seq.num_computed_tokens = 0
        seq.num_hashed_blocks, seq.last_block_hash = 0, None

    def reset_prefix_cache(self) -> None:
        for block_id in list(self.free_ids):
            self._forget(block_id)
