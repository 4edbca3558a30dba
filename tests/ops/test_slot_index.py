"""Slot indexes (hash on CPU, sorted arrays elsewhere): exact lookups against a dict, growth, the
overflow stash, copies, bytes and bad ids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ramnet_fla.ops.ram.slot_index import HashSlotIndex, SortedSlotIndex


def random_batches(seed: int, sizes: list[int], universe: int) -> list[torch.Tensor]:
    """Disjoint batches of unique keys, each sorted (as SparseRAMState inserts them)."""
    rng = np.random.default_rng(seed)
    keys = torch.from_numpy(rng.choice(universe, sum(sizes), replace=False) if universe < 1 << 20 else
                            np.unique(rng.integers(0, universe, 2 * sum(sizes)))[:sum(sizes)])
    keys = keys[torch.from_numpy(rng.permutation(keys.numel()))]
    return [part.sort().values for part in keys.split(sizes)]


def make_index(kind: str):
    return HashSlotIndex() if kind == 'hash' else SortedSlotIndex(torch.device('cpu'))


@pytest.mark.parametrize('kind', ['hash', 'sorted'])
def test_lookups_match_a_dict_through_growth(kind):
    index, reference, next_id = make_index(kind), {}, 0
    batches = random_batches(3, [1, 7, 512, 5000, 3, 20000, 640], universe=1 << 40)
    for batch in batches:
        ids = torch.arange(next_id, next_id + batch.numel())
        index.insert(batch, ids)
        reference.update(zip(batch.tolist(), ids.tolist()))
        next_id += batch.numel()
        probe = torch.cat([batch[:50], torch.tensor(list(reference)[:50]), torch.randint(1 << 40, 1 << 41, (60,))])
        expected = torch.tensor([reference.get(k, -1) for k in probe.tolist()])
        assert torch.equal(index.lookup(probe), expected)
        assert len(index) == len(reference)
    keys, ids = index.items()
    assert torch.equal(keys, torch.tensor(sorted(reference)))
    assert torch.equal(ids, torch.tensor([reference[k] for k in sorted(reference)]))
    if kind == 'hash':
        assert len(index) <= HashSlotIndex.MAX_LOAD * HashSlotIndex.WIDTH * index.num_buckets
        assert index.nbytes() <= 28 * len(index) + 4096


def test_empty_indexes_and_empty_batches():
    for index in (HashSlotIndex(), SortedSlotIndex(torch.device('cpu'))):
        index.insert(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
        assert torch.equal(index.lookup(torch.tensor([0, 5])), torch.tensor([-1, -1]))
        assert len(index) == 0 and index.items()[0].numel() == 0


def test_a_bulk_build_needs_no_stash_and_keeps_the_load():
    keys = random_batches(8, [200_000], universe=1 << 50)[0]
    index = HashSlotIndex.from_sorted(keys, torch.arange(keys.numel()))
    assert index.stash_size == 0
    assert 0.4 < len(index) / (index.WIDTH * index.num_buckets) <= index.MAX_LOAD
    sample = torch.randperm(keys.numel())[:1000]
    assert torch.equal(index.lookup(keys[sample]), sample)


class FewBuckets(HashSlotIndex):
    """Every key's two candidates are buckets 0 and 1, so all but 16 keys overflow into the stash."""

    def _candidates(self, keys: np.ndarray) -> np.ndarray:
        return np.stack([keys % 2, 1 - keys % 2]).astype(np.intp)


def test_the_stash_keeps_lookups_exact_when_both_buckets_are_full():
    index = FewBuckets()
    batches = random_batches(5, [10, 30, 100], universe=10_000)
    next_id = 0
    for batch in batches:
        index.insert(batch, torch.arange(next_id, next_id + batch.numel()))
        next_id += batch.numel()
    assert index.stash_size == 140 - 16                       # two buckets of 8 hold the rest
    everything = torch.cat(batches)
    assert torch.equal(index.lookup(everything), torch.arange(140))
    assert torch.equal(index.lookup(torch.tensor([10_001, 10_002])), torch.tensor([-1, -1]))
    assert torch.equal(index.items()[0], everything.sort().values)
    # growing cannot help such a hash: the table grows a bounded number of times, not forever
    assert index.num_buckets <= HashSlotIndex.MIN_BUCKETS * HashSlotIndex.GROWTH ** 12


@pytest.mark.parametrize('kind', ['hash', 'sorted'])
def test_a_copy_shares_nothing(kind):
    index = make_index(kind)
    first, second = random_batches(11, [300, 300], universe=1 << 30)
    index.insert(first, torch.arange(300))
    copy = index.copy()
    copy.insert(second, torch.arange(300, 600))
    assert len(index) == 300 and len(copy) == 600
    assert bool((index.lookup(second) == -1).all())
    assert torch.equal(copy.lookup(first), torch.arange(300))


def test_row_ids_past_int32_are_refused():
    index = HashSlotIndex()
    with pytest.raises(ValueError, match='int32 row ids'):
        index.insert(torch.tensor([4]), torch.tensor([2 ** 31]))
