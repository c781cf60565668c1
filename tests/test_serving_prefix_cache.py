"""`PrefixCache` bookkeeping (tensor-free): longest block-aligned match, verification, LRU recycling, counters."""

from __future__ import annotations

import pytest

from redraft.serving.prefix_cache import PrefixCache

L = 4
SYSTEM = list(range(100, 112))  # three whole blocks


def test_longest_block_aligned_prefix_is_found_and_counted():
    pc = PrefixCache(num_slots=4)
    assert pc.lookup(SYSTEM + [1, 2], L, max_blocks=3) is None
    slot = pc.insert(SYSTEM + [1, 2], L, num_blocks=3)
    assert slot is not None
    # same system prompt, different user turn: all three blocks
    assert pc.lookup(SYSTEM + [7, 8, 9], L, max_blocks=3) == (slot, 3)
    # diverging inside block 3: the first two blocks only
    assert pc.lookup(SYSTEM[:10] + [0, 0, 5], L, max_blocks=3) == (slot, 2)
    # capped by max_blocks (the caller's whole prompt blocks)
    assert pc.lookup(SYSTEM + [7], L, max_blocks=1) == (slot, 1)
    # diverging in block 1: nothing
    assert pc.lookup([0] + SYSTEM[1:], L, max_blocks=3) is None
    assert (pc.lookups, pc.hits, pc.reused_tokens) == (5, 3, 12 + 8 + 4)


def test_block_length_is_part_of_the_key():
    pc = PrefixCache(num_slots=2)
    pc.insert(SYSTEM, L, 3)
    assert pc.lookup(SYSTEM, 2 * L, max_blocks=1) is None
    assert pc.lookup(SYSTEM, 2, max_blocks=6) is None


def test_already_stored_prefix_is_not_stored_twice_but_a_longer_one_is():
    pc = PrefixCache(num_slots=4)
    first = pc.insert(SYSTEM, L, 3)
    assert pc.insert(SYSTEM + [5], L, 3) is None
    assert pc.insert(SYSTEM[:8], L, 2) is None  # a prefix of a stored entry
    longer = pc.insert(SYSTEM + [1, 2, 3, 4], L, 4)
    assert longer not in (None, first)
    assert pc.lookup(SYSTEM + [1, 2, 3, 4, 9], L, 4) == (longer, 4)
    assert pc.inserts == 2 and len(pc) == 2


def test_least_recently_used_slot_is_recycled_and_shared_prefixes_survive():
    pc = PrefixCache(num_slots=2)
    a = pc.insert(SYSTEM + [1, 1, 1, 1], L, 4)
    b = pc.insert(SYSTEM + [2, 2, 2, 2], L, 4)
    assert pc.lookup(SYSTEM + [1, 1, 1, 1], L, 4) == (a, 4)  # a is now the most recently used
    c = pc.insert([9] * 8, L, 2)
    assert c == b and pc.evictions == 1
    assert pc.lookup(SYSTEM + [2, 2, 2, 2], L, 4) == (a, 3)  # b's own last block is gone, the shared part is not
    d = pc.insert([8] * 8, L, 2)  # evicts c (a was used more recently)
    assert d == c and pc.evictions == 2
    assert pc.lookup([9] * 8, L, 2) is None
    assert pc.lookup(SYSTEM, L, 3) == (a, 3)
    assert pc.lookup([8] * 8, L, 2) == (d, 2)


def test_hash_collision_never_reuses_wrong_tokens(monkeypatch):
    import redraft.serving.prefix_cache as mod

    monkeypatch.setattr(mod, "_chain", lambda tokens, block_length, n: list(range(n)))  # every prefix collides
    pc = PrefixCache(num_slots=2)
    pc.insert([1] * 8, L, 2)
    assert pc.lookup([2] * 8, L, 2) is None
    assert pc.lookup([1] * 4 + [2] * 4, L, 2)[1] == 1


def test_min_blocks_and_short_prompts():
    pc = PrefixCache(num_slots=2, min_blocks=2)
    assert pc.insert(SYSTEM[:4], L, 1) is None
    assert pc.insert(SYSTEM[:3], L, 5) is None  # shorter than one block
    slot = pc.insert(SYSTEM, L, 3)
    assert pc.lookup(SYSTEM[:4] + [0] * 8, L, 3) is None  # a one-block match is below min_blocks
    assert pc.lookup(SYSTEM[:8] + [0] * 4, L, 3) == (slot, 2)


@pytest.mark.parametrize("kwargs, field", [({"num_slots": 0}, "num_slots"), ({"num_slots": 2.0}, "num_slots"),
                                           ({"num_slots": 2, "min_blocks": 0}, "min_blocks")])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PrefixCache(**kwargs)


def test_bad_arguments_name_the_value():
    pc = PrefixCache(num_slots=1)
    with pytest.raises(ValueError, match="block_length"):
        pc.lookup([1, 2], 0, 1)
    with pytest.raises(ValueError, match="-1"):
        pc.insert([1, 2], L, -1)
