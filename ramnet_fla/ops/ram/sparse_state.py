"""SparseRAMState: the RAM-Net state holding only the slots ever written (for large M at inference).

A sequence of T tokens writes at most T*K of the M slots of a head, and a slot nobody wrote reads
as zero memory and zero mass. So instead of the dense table [N, H, M, V] + [N, H, M] this state
keeps one row [S | z] (width V+1) per written slot, addressed by the int64 key
(sequence * H + head) * M + slot.

Layout, chosen to fit PyTorch (vectorised ops only, no Python loop per slot, any device):
- rows: a slab [capacity, V+1] in insertion order. A new slot appends a zero row; rows never move,
  so decoding updates them in place. The slab grows geometrically (factor `growth`, 1.125 by
  default: still amortised O(1) copies per row, but at most 12.5% unused capacity, which keeps the
  bytes within 1.25x of the payload; doubling would allow 2x).
- index: slot key -> row id (`slot_index.py`): on CPU a hash table in NumPy (one cache line per
  lookup, a few entries written per insert), elsewhere sorted arrays with a small buffer of recent
  inserts (`searchsorted` lookups). Only the index moves when it grows, never the rows; both give
  the same row ids. On CPU the new keys of a step are also found and deduplicated in NumPy: a
  decoding step handles a few hundred keys, where PyTorch's dispatch per operation (several
  microseconds) would exceed the work.

The ops (`chunk_ram`, `fused_recurrent_ram`, see `slot_store.py`) read and write it through
`locate` / `table` (decoding) and `read_rows` / `write_rows` (bulk, prefill). It carries no
gradient: it is a store updated in place, which autograd cannot track (see `slot_store.py`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ramnet_fla.ops.ram.slot_index import HashSlotIndex, numpy_on, slot_index_for, slot_index_from_sorted
from ramnet_fla.ops.ram.state import RAMState
from ramnet_fla.utils.checks import check_int


class SparseRAMState:
    """The slots ever written of N sequences x H heads (M slots, value width V each), plus position [N].

    Build one empty (`SparseRAMState(N, H, M, V)`), from a dense RAMState (`from_dense`), or as the
    final state of `chunk_ram(..., output_final_state=True, state_format='sparse')`; pass it as
    `initial_state` to `chunk_ram` / `fused_recurrent_ram`. `to_dense()` gives the RAMState back.

    Attributes: num_sequences N, num_heads H, num_slots M, value_dim V (ints); position [N] int64;
    dtype (float32, or float64 for exactness checks); device.
    """

    def __init__(self, num_sequences: int, num_heads: int, num_slots: int, value_dim: int, *,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
                 position: torch.Tensor | None = None, capacity: int = 0, growth: float = 1.125) -> None:
        self.num_sequences = check_int('num_sequences', num_sequences, minimum=1)
        self.num_heads = check_int('num_heads', num_heads, minimum=1)
        self.num_slots = check_int('num_slots', num_slots, minimum=1)
        self.value_dim = check_int('value_dim', value_dim, minimum=1)
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"`dtype` of a SparseRAMState must be torch.float32 or torch.float64, got {dtype}")
        if not (isinstance(growth, (int, float)) and growth > 1):
            raise ValueError(f"`growth` must be a number > 1, got {growth!r}")
        if num_sequences * num_heads * num_slots >= 2 ** 63:
            raise ValueError(f"N*H*M = {num_sequences}*{num_heads}*{num_slots} slots overflow 64-bit keys")
        device = torch.device(device) if device is not None else torch.device('cpu')
        self.growth = float(growth)
        self._rows = torch.zeros(check_int('capacity', capacity, minimum=0), value_dim + 1, device=device, dtype=dtype)
        self._size = 0
        self._index = slot_index_for(device)                                # slot key -> row id
        if position is None:
            position = torch.zeros(num_sequences, dtype=torch.long, device=device)
        if not isinstance(position, torch.Tensor) or tuple(position.shape) != (num_sequences,):
            raise ValueError(f"`position` must be a tensor [N={num_sequences}], got "
                             f"{tuple(position.shape) if isinstance(position, torch.Tensor) else type(position).__name__}")
        if position.dtype.is_floating_point or position.dtype == torch.bool:
            raise TypeError(f"`position` must be an integer tensor, got {position.dtype}")
        self.position = position.to(device=device, dtype=torch.long)

    # ------------------------------------------------------------------ sizes
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, H, M, V), as the dense memory's shape."""
        return self.num_sequences, self.num_heads, self.num_slots, self.value_dim

    @property
    def dtype(self) -> torch.dtype:
        return self._rows.dtype

    @property
    def device(self) -> torch.device:
        return self._rows.device

    @property
    def num_touched(self) -> int:
        """Slots stored (ever written), over all sequences and heads."""
        return self._size

    @property
    def capacity(self) -> int:
        """Rows allocated in the slab (>= num_touched)."""
        return self._rows.shape[0]

    def nbytes(self) -> int:
        """Bytes held: the slab (capacity x (V+1)), the index (keys and row ids) and the positions."""
        return self._rows.numel() * self._rows.element_size() + self._index.nbytes() + self.position.numel() * 8

    def dense_nbytes(self) -> int:
        """Bytes the dense RAMState of the same sizes and dtype would hold."""
        N, H, M, V = self.shape
        return N * H * M * (V + 1) * self._rows.element_size() + N * 8

    def __repr__(self) -> str:
        N, H, M, V = self.shape
        return (f"SparseRAMState(N={N}, H={H}, M={M}, V={V}, touched={self._size}, capacity={self.capacity}, "
                f"dtype={self.dtype}, device={self.device})")

    # ------------------------------------------------------------------ the store interface
    @property
    def table(self) -> torch.Tensor:
        """[capacity, V+1] rows [S | z] addressed by the ids `locate` returns; may be reallocated by
        `locate(..., create=True)`, so read it after locating."""
        return self._rows

    def _reserve(self, rows: int) -> None:
        capacity = self._rows.shape[0]
        if rows <= capacity:
            return
        capacity = max(rows, math.ceil(capacity * self.growth), 64)
        grown = self._rows.new_zeros(capacity, self.value_dim + 1)
        grown[:self._size] = self._rows[:self._size]
        self._rows = grown

    def _insert(self, new_keys: torch.Tensor) -> torch.Tensor:
        """Create zero rows for sorted, unique keys that are not stored yet; return their ids."""
        start = self._size
        self._reserve(start + new_keys.numel())
        new_ids = torch.arange(start, start + new_keys.numel(), device=self.device)
        self._index.insert(new_keys, new_ids)
        self._size += new_keys.numel()
        return new_ids

    def check_keys(self, keys: torch.Tensor) -> None:
        """Keys must be int64 in [0, N*H*M) on the state's device."""
        if keys.dtype != torch.long or keys.device != self.device:
            raise TypeError(f"slot keys must be int64 on {self.device}, got {keys.dtype} on {keys.device}")
        if keys.numel() and (int(keys.min()) < 0 or int(keys.max()) >= self.num_sequences * self.num_heads * self.num_slots):
            raise ValueError(f"slot keys must lie in [0, N*H*M = {self.num_sequences * self.num_heads * self.num_slots})")

    def locate(self, keys: torch.Tensor, create: bool) -> torch.Tensor:
        """Row ids in `table` of slot keys (any shape, int64); -1 for slots not stored, unless
        `create`, which first gives each of them a zero row."""
        flat = keys.reshape(-1)
        if isinstance(self._index, HashSlotIndex) and numpy_on(flat):
            return self._locate_cpu(flat, create).view(keys.shape)
        ids = self._index.lookup(flat)
        if create:
            missing = ids < 0
            if bool(missing.any()):
                new_keys, inverse = torch.unique(flat[missing], return_inverse=True)
                ids[missing] = self._insert(new_keys)[inverse]
        return ids.view(keys.shape)

    def _locate_cpu(self, flat: torch.Tensor, create: bool) -> torch.Tensor:
        """`locate` on CPU in NumPy (the same ids): a decoding step locates a few keys, where each
        PyTorch operation's dispatch would cost more than its work."""
        keys = flat.numpy()
        ids = self._index.lookup_numpy(keys)
        if create:
            missing = ids < 0
            if missing.any():
                new_keys, inverse = np.unique(keys[missing], return_inverse=True)
                ids[missing] = self._insert(torch.from_numpy(new_keys)).numpy()[inverse]
        return torch.from_numpy(ids)

    def read_rows(self, keys: torch.Tensor) -> torch.Tensor:
        """[..., V+1] rows [S | z] of slot keys [...]: zeros for slots never written."""
        ids = self.locate(keys, create=False)
        rows = self._rows[ids.clamp(min=0)]
        return rows.masked_fill_((ids < 0)[..., None], 0)

    def write_rows(self, keys: torch.Tensor, rows: torch.Tensor) -> None:
        """Store rows [n, V+1] at unique slot keys [n] (creating the slots not stored yet)."""
        ids = self.locate(keys, create=True)
        self._rows[ids] = rows.to(self.dtype)

    def entries(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every stored slot in key order: (keys [n] int64, memory [n, V], mass [n])."""
        keys, ids = self._index.items()
        rows = self._rows[ids]
        return keys, rows[:, :-1], rows[:, -1]

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_rows(cls, num_sequences: int, num_heads: int, num_slots: int, value_dim: int,
                  keys: torch.Tensor, rows: torch.Tensor, position: torch.Tensor | None = None) -> SparseRAMState:
        """A state from sorted, unique slot keys [n] and their rows [n, V+1] (taken, not copied)."""
        state = cls(num_sequences, num_heads, num_slots, value_dim, device=rows.device, dtype=rows.dtype,
                    position=position)
        state._rows = rows.contiguous()
        state._size = rows.shape[0]
        state._index = slot_index_from_sorted(keys, torch.arange(rows.shape[0], device=rows.device))
        return state

    @classmethod
    def from_dense(cls, state: RAMState, dtype: torch.dtype | None = None) -> SparseRAMState:
        """The slots of a dense RAMState ([N, H, M, V], [N, H, M], [N]) whose memory or mass is nonzero
        (a zero slot reads exactly as an absent one)."""
        if not isinstance(state, tuple) or len(state) != 3 or not all(isinstance(x, torch.Tensor) for x in state):
            raise TypeError(f"`state` must be a RAMState(memory, mass, position), got {type(state).__name__}")
        memory, mass, position = state
        if memory.ndim != 4 or tuple(mass.shape) != tuple(memory.shape[:3]) or tuple(position.shape) != (memory.shape[0],):
            raise ValueError("`state` must hold memory [N, H, M, V], mass [N, H, M] and position [N], got "
                             f"{tuple(memory.shape)}, {tuple(mass.shape)}, {tuple(position.shape)}")
        N, H, M, V = memory.shape
        dtype = dtype or (torch.float64 if memory.dtype == torch.float64 else torch.float32)
        flat_memory, flat_mass = memory.reshape(-1, V), mass.reshape(-1)
        keys = ((flat_mass != 0) | (flat_memory != 0).any(1)).nonzero().squeeze(1)
        rows = torch.cat([flat_memory[keys], flat_mass[keys, None]], dim=1).to(dtype)
        return cls.from_rows(N, H, M, V, keys, rows, position.clone())

    def to_dense(self) -> RAMState:
        """The dense RAMState (memory [N, H, M, V], mass [N, H, M], position [N]) of the same content."""
        N, H, M, V = self.shape
        keys, memory_rows, mass_rows = self.entries()
        memory = self._rows.new_zeros(N, H, M, V)
        mass = self._rows.new_zeros(N, H, M)
        memory.view(-1, V)[keys] = memory_rows
        mass.view(-1)[keys] = mass_rows
        return RAMState(memory, mass, self.position.clone())

    def clone(self) -> SparseRAMState:
        """A copy sharing no storage, rows compacted to exactly `num_touched` (same row ids)."""
        N, H, M, V = self.shape
        copy = SparseRAMState(N, H, M, V, device=self.device, dtype=self.dtype, position=self.position.clone(),
                              growth=self.growth)
        copy._rows = self._rows[:self._size].clone()
        copy._size = self._size
        copy._index = self._index.copy()
        return copy

    def to(self, dtype: torch.dtype) -> SparseRAMState:
        """A copy in another dtype (float32 or float64)."""
        copy = self.clone()
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"`dtype` of a SparseRAMState must be torch.float32 or torch.float64, got {dtype}")
        copy._rows = copy._rows.to(dtype)
        return copy

    def index_select(self, index: torch.Tensor) -> SparseRAMState:
        """The states of the sequences `index` [N'] (repeats allowed), e.g. to reorder beams."""
        N, H, M, V = self.shape
        index = torch.as_tensor(index, device=self.device).long().reshape(-1)
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= N):
            raise ValueError(f"`index` must select sequences in [0, {N}), got {index.tolist()}")
        keys, memory_rows, mass_rows = self.entries()
        per_sequence = H * M
        sequence = torch.div(keys, per_sequence, rounding_mode='floor')
        counts = torch.bincount(sequence, minlength=N)
        starts = torch.cumsum(counts, 0) - counts
        take = counts[index]                                                  # entries of each new sequence
        new_sequence = torch.repeat_interleave(torch.arange(index.numel(), device=self.device), take)
        within = torch.arange(new_sequence.numel(), device=self.device) - (torch.cumsum(take, 0) - take)[new_sequence]
        source = starts[index][new_sequence] + within
        new_keys = keys[source] - sequence[source] * per_sequence + new_sequence * per_sequence
        rows = torch.cat([memory_rows, mass_rows[:, None]], dim=1)[source]
        return SparseRAMState.from_rows(index.numel(), H, M, V, new_keys, rows, self.position[index].clone())
