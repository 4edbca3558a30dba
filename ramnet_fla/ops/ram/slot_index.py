"""Slot indexes: int64 slot keys -> int64 row ids, for SparseRAMState (and the tiered cache's directory).

A sparse state stores a row per written slot and needs, per decoding step, the row ids of a few
hundred keys (B * H * 2K) among up to millions. Two implementations, one interface
(`lookup`, `insert`, `items`, `copy`, `nbytes`, `len`), chosen by `slot_index_for(device)`:

- `HashSlotIndex` (CPU, NumPy): a two-choice hash table over buckets of 8 keys (one 64-byte line
  of keys each), with a small overflow stash. A lookup reads the key's two buckets, once, hit or
  miss: its cost does not grow with the number of keys stored, whereas a binary search over 2M
  sorted keys makes ~21 dependent loads, most of them cache misses. An insert writes a few entries
  instead of merging sorted arrays. Load kept in [0.47, 0.7] (grown x1.5, in place of a doubling,
  for the state's bytes target): 12.6 bytes an entry, at most 27 bytes per key.
- `SortedSlotIndex` (any device, PyTorch): sorted keys with their ids plus a small sorted buffer
  of recent inserts (LSM-style): lookups are `searchsorted`, which suits a GPU's many threads.

Keys are never deleted (a state only gains slots). On CPU the work runs in NumPy on the tensors'
memory, because a decoding step's few hundred keys make PyTorch's per-operation dispatch (several
microseconds) cost more than the work; `NUMPY_ON_CPU = False` gives a CPU state the sorted index
in PyTorch (the tests compare both: the same row ids).
"""

from __future__ import annotations

import math

import numpy as np
import torch

# CPU index work in NumPy (hash index, sorted-array helpers); False runs the PyTorch code of other
# devices everywhere
NUMPY_ON_CPU = True


def numpy_on(*tensors: torch.Tensor) -> bool:
    """Whether the NumPy fast path applies: the flag is on and every tensor is on the CPU."""
    return NUMPY_ON_CPU and all(t.device.type == 'cpu' for t in tensors)


# ---------------------------------------------------------------------- sorted arrays
def merge_sorted(keys_a: torch.Tensor, ids_a: torch.Tensor, keys_b: torch.Tensor, ids_b: torch.Tensor):
    """Merge two sorted key arrays with disjoint keys (and their ids) in O(len a + len b)."""
    if keys_b.numel() == 0:
        return keys_a, ids_a
    if keys_a.numel() == 0:
        return keys_b, ids_b
    if numpy_on(keys_a, ids_a, keys_b, ids_b):
        a, b = keys_a.numpy(), keys_b.numpy()
        at_b = np.searchsorted(a, b)
        at_b += np.arange(b.size)
        keep_a = np.ones(a.size + b.size, dtype=bool)
        keep_a[at_b] = False
        keys, ids = np.empty(keep_a.size, dtype=a.dtype), np.empty(keep_a.size, dtype=ids_a.numpy().dtype)
        keys[at_b], ids[at_b] = b, ids_b.numpy()
        keys[keep_a], ids[keep_a] = a, ids_a.numpy()
        return torch.from_numpy(keys), torch.from_numpy(ids)
    at_b = torch.searchsorted(keys_a, keys_b) + torch.arange(keys_b.numel(), device=keys_b.device)
    keep_a = torch.ones(keys_a.numel() + keys_b.numel(), dtype=torch.bool, device=keys_a.device)
    keep_a[at_b] = False
    keys = torch.empty(keep_a.numel(), dtype=keys_a.dtype, device=keys_a.device)
    ids = torch.empty(keep_a.numel(), dtype=ids_a.dtype, device=ids_a.device)
    keys[at_b], ids[at_b] = keys_b, ids_b
    keys[keep_a], ids[keep_a] = keys_a, ids_a
    return keys, ids


def lookup_sorted(sorted_keys: torch.Tensor, sorted_ids: torch.Tensor, keys: torch.Tensor, missing: torch.Tensor):
    """The ids of `keys` [n] in a sorted key array, `missing` [n] where a key is not there."""
    if sorted_keys.numel() == 0:
        return missing
    if numpy_on(sorted_keys, sorted_ids, keys, missing):
        table, wanted = sorted_keys.numpy(), keys.numpy()
        at = np.searchsorted(table, wanted)
        np.minimum(at, table.size - 1, out=at)
        return torch.from_numpy(np.where(table[at] == wanted, sorted_ids.numpy()[at], missing.numpy()))
    at = torch.searchsorted(sorted_keys, keys).clamp_(max=sorted_keys.numel() - 1)
    return torch.where(sorted_keys[at] == keys, sorted_ids[at], missing)


class SortedSlotIndex:
    """Sorted keys and ids plus a sorted buffer of recent inserts, merged into them when it holds
    more than about sqrt(256 n) keys: a lookup is two `searchsorted`, an insert O(buffer), a merge
    O(n) every sqrt(n / 256) inserts' worth of keys. PyTorch on any device."""

    def __init__(self, device: torch.device) -> None:
        empty = torch.empty(0, dtype=torch.long, device=device)
        self._keys, self._ids, self._buffer_keys, self._buffer_ids = empty, empty, empty, empty

    @classmethod
    def from_sorted(cls, keys: torch.Tensor, ids: torch.Tensor) -> SortedSlotIndex:
        """An index over sorted, unique keys [n] and their ids [n] (taken, not copied)."""
        index = cls(keys.device)
        index._keys, index._ids = keys, ids
        return index

    def __len__(self) -> int:
        return self._keys.numel() + self._buffer_keys.numel()

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self._keys, self._ids, self._buffer_keys, self._buffer_ids))

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        """Row ids [n] of keys [n]; -1 where a key is not stored."""
        ids = lookup_sorted(self._keys, self._ids, keys, torch.full_like(keys, -1))
        return lookup_sorted(self._buffer_keys, self._buffer_ids, keys, ids)

    def insert(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Add sorted, unique keys [n] not stored yet, with their ids [n]."""
        self._buffer_keys, self._buffer_ids = merge_sorted(self._buffer_keys, self._buffer_ids, keys, ids)
        if self._buffer_keys.numel() > max(4096, math.isqrt(256 * self._keys.numel())):
            self._keys, self._ids = merge_sorted(self._keys, self._ids, self._buffer_keys, self._buffer_ids)
            self._buffer_keys = self._buffer_ids = self._keys.new_empty(0)

    def items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys [n] ascending, their ids [n])."""
        return merge_sorted(self._keys, self._ids, self._buffer_keys, self._buffer_ids)

    def copy(self) -> SortedSlotIndex:
        return SortedSlotIndex.from_sorted(*(t.clone() for t in self.items()))


# ---------------------------------------------------------------------- hash
# two odd 64-bit multipliers (2**64 / golden ratio, and a splitmix64 constant): bijective scrambles
# whose high 32 bits pick a key's two candidate buckets independently
_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9], dtype=np.uint64)
_EMPTY = -1                                         # key of a free entry (slot keys are >= 0)


class HashSlotIndex:
    """A two-choice bucketed hash table with a small overflow stash, in NumPy. CPU only.

    Arrays: keys [buckets, WIDTH] int64 (-1: free), ids [buckets, WIDTH] int32, fill [buckets]
    uint8 (entries used in each bucket, which fill from the left), and the stash: sorted keys and
    ids of the rare keys whose two buckets were both full. A key's candidate buckets are
    hi32(key * c_i) * buckets >> 32 for two multipliers c_i; it goes into the emptier one. A lookup
    reads both buckets (two cache lines) and, when the stash is not empty, searches it too: exact,
    with no probing chains. Two choices keep the fills close to the mean (at the 0.7 load cap, 1 in
    ~10**4 buckets full), so the stash holds a handful of keys; past STASH_FRACTION of them the
    table grows.
    """

    WIDTH = 8
    MAX_LOAD = 0.7                   # grow past this fraction of entries used ...
    GROWTH = 1.5                     # ... by this factor: the load after growing is 0.47
    MIN_BUCKETS = 16
    STASH_FRACTION = 1e-3            # grow when the stash holds more than this fraction of the keys (or 16)
    MAX_ROWS = 2 ** 31 - 1           # row ids are int32 (2**31 rows of V=64 float32 would be 558 GB)

    def __init__(self, expected: int = 0) -> None:
        self._size = 0
        self._allocate(self._buckets_for(expected))

    @classmethod
    def from_sorted(cls, keys: torch.Tensor, ids: torch.Tensor) -> HashSlotIndex:
        """An index over unique keys [n] and their ids [n] (CPU tensors; sorted or not)."""
        index = cls(keys.numel())
        index.insert(keys, ids)
        return index

    def _buckets_for(self, entries: int) -> int:
        return max(self.MIN_BUCKETS, math.ceil(entries / (self.MAX_LOAD * self.WIDTH) * self.GROWTH))

    def _allocate(self, buckets: int) -> None:
        self._keys = np.full((buckets, self.WIDTH), _EMPTY, dtype=np.int64)
        self._ids = np.zeros((buckets, self.WIDTH), dtype=np.int32)
        self._fill = np.zeros(buckets, dtype=np.uint8)
        self._owner = np.zeros(buckets, dtype=np.int32)          # scratch of `_place_batch`
        self._stash_keys = np.empty(0, dtype=np.int64)
        self._stash_ids = np.empty(0, dtype=np.int64)
        self._stash_limit = 16                    # stash size that makes the table grow

    @property
    def num_buckets(self) -> int:
        return self._fill.size

    @property
    def stash_size(self) -> int:
        """Keys in the overflow stash (both of their buckets were full)."""
        return self._stash_keys.size

    def __len__(self) -> int:
        return self._size

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self._keys, self._ids, self._fill, self._owner, self._stash_keys,
                                            self._stash_ids))

    def _candidates(self, keys: np.ndarray) -> np.ndarray:
        """The two candidate buckets of each key: keys [n] int64 -> [2, n] intp."""
        buckets = np.multiply(_MULTIPLIERS[:, None], keys.view(np.uint64))           # wraps mod 2**64
        buckets >>= np.uint64(32)
        buckets *= np.uint64(self.num_buckets)
        buckets >>= np.uint64(32)
        return buckets.view(np.intp)

    def lookup_numpy(self, keys: np.ndarray) -> np.ndarray:
        """Row ids [n] int64 of keys [n] int64; -1 where a key is not stored."""
        found_ids = np.full(keys.shape, -1, dtype=np.int64)
        if self._size == 0 or keys.size == 0:
            return found_ids
        buckets = self._candidates(keys).reshape(-1)                                  # [2n]
        # np.take: about 3x faster than indexing for a few hundred rows
        entries = np.take(self._keys, buckets, axis=0).reshape(2, keys.size, self.WIDTH)
        match = np.flatnonzero(entries == keys[:, None])                              # at most one per key
        candidate, entry = np.divmod(match, self.WIDTH)                               # candidate = choice*n + key
        found_ids[candidate % keys.size] = np.take(self._ids, buckets[candidate] * self.WIDTH + entry)
        if self._stash_keys.size:
            at = np.minimum(np.searchsorted(self._stash_keys, keys), self._stash_keys.size - 1)
            stashed = self._stash_keys[at] == keys
            found_ids[stashed] = self._stash_ids[at[stashed]]
        return found_ids

    def lookup(self, keys: torch.Tensor) -> torch.Tensor:
        """`lookup_numpy` on a CPU tensor [n] int64."""
        return torch.from_numpy(self.lookup_numpy(keys.numpy()))

    def _place(self, keys: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Write unique keys [n] not stored yet and their ids [n] into free entries, each in the
        emptier of its buckets. Returns the positions of the keys left out (both buckets full).

        Keys are placed in batches of one per 32 buckets: the keys of a batch choose on the fills
        before it, so a far larger batch would act as one choice (most keys of a bulk build would
        pick the same, then equally empty, bucket) and fill some buckets up."""
        candidates = self._candidates(keys)
        batch = max(1, self.num_buckets // 32)
        left = [self._place_batch(keys, ids, candidates, np.arange(start, min(start + batch, keys.size)))
                for start in range(0, keys.size, batch)]
        return np.concatenate(left) if left else np.arange(0)

    def _place_batch(self, keys: np.ndarray, ids: np.ndarray, candidates: np.ndarray, pending: np.ndarray):
        """`_place` for the keys at positions `pending`, choosing on the fills before them. Each
        round places one key per chosen bucket (the others choose again on the new fills)."""
        left = []
        while pending.size:
            choices = candidates[:, pending]                                          # [2, m]
            fills = np.take(self._fill, choices)
            second = fills[1] < fills[0]
            bucket, fill = np.where(second, choices[1], choices[0]), np.where(second, fills[1], fills[0])
            stuck = fill == self.WIDTH
            if stuck.any():
                left.append(pending[stuck])
                pending, bucket, fill = pending[~stuck], bucket[~stuck], fill[~stuck]
            order = np.arange(pending.size, dtype=np.int32)
            self._owner[bucket] = order                     # one writer per bucket survives
            won = np.take(self._owner, bucket) == order
            if not won.all():                               # rare for a step's few hundred keys
                bucket, fill, placed, pending = bucket[won], fill[won], pending[won], pending[~won]
            else:
                placed, pending = pending, pending[:0]
            flat = bucket * self.WIDTH + fill
            self._keys.reshape(-1)[flat] = keys[placed]
            self._ids.reshape(-1)[flat] = ids[placed]
            self._fill[bucket] = fill + 1
        return np.concatenate(left) if left else np.arange(0)

    def _stash(self, keys: np.ndarray, ids: np.ndarray) -> None:
        keys = np.concatenate([self._stash_keys, keys])
        order = np.argsort(keys)
        self._stash_keys, self._stash_ids = keys[order], np.concatenate([self._stash_ids, ids])[order]

    def insert(self, keys: torch.Tensor, ids: torch.Tensor) -> None:
        """Add unique keys [n] not stored yet, with their ids [n] (CPU tensors)."""
        if keys.numel() == 0:
            return
        keys_np, ids_np = keys.numpy().astype(np.int64, copy=False), ids.numpy().astype(np.int64, copy=False)
        if int(ids_np.max()) > self.MAX_ROWS:
            raise ValueError(f"a SparseRAMState holds at most {self.MAX_ROWS} slots on the CPU (int32 row ids)")
        total = self._size + keys_np.size
        if total > self.MAX_LOAD * self.WIDTH * self.num_buckets:
            self._rebuild(self._buckets_for(total), keys_np, ids_np)
        else:
            left = self._place(keys_np, ids_np)
            if left.size:
                self._stash(keys_np[left], ids_np[left])
                if self.stash_size > self._stash_limit:
                    self._rebuild(math.ceil(self.num_buckets * self.GROWTH), keys_np[:0], ids_np[:0])
        self._size = total

    def _rebuild(self, buckets: int, keys: np.ndarray, ids: np.ndarray) -> None:
        """A table of at least `buckets` buckets holding the stored keys plus `keys` [n] (ids [n]).

        Grows further (up to 3 times) while more than STASH_FRACTION of the keys find both buckets
        full, then stashes what is left: always exact, and a bad hash cannot grow the table forever."""
        used = self._keys != _EMPTY
        keys = np.concatenate([self._keys[used], self._stash_keys, keys])
        ids = np.concatenate([self._ids[used], self._stash_ids, ids])
        for attempt in range(4):
            self._allocate(buckets)
            left = self._place(keys, ids)
            if left.size <= max(16, self.STASH_FRACTION * keys.size):
                break
            buckets = math.ceil(buckets * self.GROWTH)
        self._stash(keys[left], ids[left])
        self._stash_limit = max(16, self.STASH_FRACTION * keys.size, 2 * self.stash_size)

    def items(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys [n] ascending, their ids [n] int64)."""
        used = self._keys != _EMPTY
        keys = np.concatenate([self._keys[used], self._stash_keys])
        ids = np.concatenate([self._ids[used], self._stash_ids])
        order = np.argsort(keys)
        return torch.from_numpy(keys[order]), torch.from_numpy(ids[order])

    def copy(self) -> HashSlotIndex:
        index = HashSlotIndex.__new__(HashSlotIndex)
        index._size, index._stash_limit = self._size, self._stash_limit
        for name in ('_keys', '_ids', '_fill', '_owner', '_stash_keys', '_stash_ids'):
            setattr(index, name, getattr(self, name).copy())
        return index


def slot_index_for(device: torch.device) -> HashSlotIndex | SortedSlotIndex:
    """An empty index for a state on `device`: the hash index on CPU (with NumPy), sorted arrays elsewhere."""
    if NUMPY_ON_CPU and torch.device(device).type == 'cpu':
        return HashSlotIndex()
    return SortedSlotIndex(torch.device(device))


def slot_index_from_sorted(keys: torch.Tensor, ids: torch.Tensor) -> HashSlotIndex | SortedSlotIndex:
    """An index over sorted, unique keys [n] and their ids [n], of the kind `slot_index_for` picks."""
    if NUMPY_ON_CPU and keys.device.type == 'cpu':
        return HashSlotIndex.from_sorted(keys, ids)
    return SortedSlotIndex.from_sorted(keys, ids)
