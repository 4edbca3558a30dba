"""TieredRAMState: the full slot table in a cold tier, an exact LRU cache of hot slots on the device.

The paper keeps the state off the GPU and caches the slots in use: a decoding step touches 2*K
slots per head, and a slot nobody touches never changes, so only the touched rows need to be near
the compute. Here:
- cold tier: the dense table [N*H*M, V+1] (rows [S | z], float32, row = (sequence * H + head) * M
  + slot) in host memory, or in a memory-mapped file (`torch.from_file(shared=True)`: pages load
  on demand and a new file is sparse on disk, so the table may be larger than RAM). On CUDA the
  in-memory cold tier is pinned host memory, so that row transfers can overlap.
- hot tier: `cache_slots` rows on the compute device with their keys, a sorted directory (binary
  search, updated by merges, O(cache) per step with misses), a last-use clock per row and a dirty
  bit. A miss takes a free row or evicts the least recently used one, writing it back to the cold
  tier if it was written; rows used by the current request are never evicted.
Reads and writes are exact: every row is either hot (the only up-to-date copy when dirty) or cold.
`hits`, `misses`, `evictions`, `write_backs` and `hit_rate` count the decoding lookups.

The ops use it in place: `chunk_ram` and `fused_recurrent_ram` both advance it and return it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import weakref
from pathlib import Path

import torch

from ramnet_fla.ops.ram.slot_index import lookup_sorted, merge_sorted
from ramnet_fla.ops.ram.state import RAMState
from ramnet_fla.utils.checks import check_int


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _table_numel(num_sequences: int, num_heads: int, num_slots: int, value_dim: int) -> int:
    return num_sequences * num_heads * num_slots * (value_dim + 1)


class TieredRAMState:
    """N sequences x H heads x M slots (value width V) in a cold tier, with `cache_slots` hot rows on `device`.

    Build with `create` (a zero table in memory or in a new file), `open` (an existing table file)
    or `from_dense`. Attributes: num_sequences, num_heads, num_slots, value_dim, cache_slots;
    position [N] int64 on `device`; path (None for an in-memory cold tier).
    """

    def __init__(self, cold: torch.Tensor, num_sequences: int, num_heads: int, num_slots: int, value_dim: int,
                 cache_slots: int, device: torch.device | str | None = None, position: torch.Tensor | None = None,
                 path: str | os.PathLike | None = None) -> None:
        self.num_sequences = check_int('num_sequences', num_sequences, minimum=1)
        self.num_heads = check_int('num_heads', num_heads, minimum=1)
        self.num_slots = check_int('num_slots', num_slots, minimum=1)
        self.value_dim = check_int('value_dim', value_dim, minimum=1)
        self.cache_slots = check_int('cache_slots', cache_slots, minimum=1)
        self.path = None if path is None else Path(path)
        device = torch.device(device) if device is not None else torch.device('cpu')
        self.cold = cold.view(-1, value_dim + 1)                                  # [N*H*M, V+1], host
        C, V = cache_slots, value_dim
        self.hot = torch.zeros(C, V + 1, device=device, dtype=torch.float32)       # hot rows [S | z]
        self.hot_keys = torch.full((C,), -1, dtype=torch.long, device=device)     # -1: free
        self.last_used = torch.full((C,), -1, dtype=torch.long, device=device)    # -1: free (evicted first)
        self.dirty = torch.zeros(C, dtype=torch.bool, device=device)
        self._directory_keys = torch.empty(0, dtype=torch.long, device=device)    # sorted keys of hot rows
        self._directory_rows = torch.empty(0, dtype=torch.long, device=device)
        self._clock = 0
        self.reset_stats()
        if position is None:
            position = torch.zeros(num_sequences, dtype=torch.long)
        if not isinstance(position, torch.Tensor) or tuple(position.shape) != (num_sequences,):
            raise ValueError(f"`position` must be a tensor [N={num_sequences}]")
        self.position = position.to(device=device, dtype=torch.long)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def create(cls, num_sequences: int, num_heads: int, num_slots: int, value_dim: int, cache_slots: int,
               device: torch.device | str | None = None, path: str | os.PathLike | None = None,
               overwrite: bool = False) -> TieredRAMState:
        """A zero table: in host memory (pinned when `device` is CUDA) or, with `path`, in a new
        sparse file of N*H*M*(V+1)*4 bytes (no disk or RAM used until slots are written)."""
        numel = _table_numel(num_sequences, num_heads, num_slots, value_dim)
        device = torch.device(device) if device is not None else torch.device('cpu')
        if path is None:
            cold = torch.zeros(numel, dtype=torch.float32, pin_memory=device.type == 'cuda')
        else:
            path = Path(path)
            if path.exists() and not overwrite:
                raise FileExistsError(f"table file {str(path)!r} exists: open it with TieredRAMState.open(...) "
                                      "or pass overwrite=True")
            with open(path, 'wb') as handle:
                handle.truncate(numel * 4)
            cold = torch.from_file(str(path), shared=True, size=numel, dtype=torch.float32)
        return cls(cold, num_sequences, num_heads, num_slots, value_dim, cache_slots, device, path=path)

    @classmethod
    def create_temporary(cls, num_sequences: int, num_heads: int, num_slots: int, value_dim: int, cache_slots: int,
                         device: torch.device | str | None = None,
                         directory: str | os.PathLike | None = None) -> TieredRAMState:
        """`create` with a new, uniquely named table file in `directory` (the system's temporary
        directory if None), deleted when the state is garbage-collected (or at interpreter exit):
        the cold tier of a decoding cache that nobody reopens."""
        handle, name = tempfile.mkstemp(prefix='ramnet-tiered-', suffix='.f32', dir=directory)
        os.close(handle)
        try:
            state = cls.create(num_sequences, num_heads, num_slots, value_dim, cache_slots, device=device,
                               path=name, overwrite=True)
        except BaseException:
            os.remove(name)
            raise
        weakref.finalize(state, _remove_quietly, name)
        return state

    @classmethod
    def open(cls, path: str | os.PathLike, num_sequences: int, num_heads: int, num_slots: int, value_dim: int,
             cache_slots: int, device: torch.device | str | None = None,
             position: torch.Tensor | None = None) -> TieredRAMState:
        """An existing table file (float32 rows [S | z], N*H*M*(V+1)*4 bytes), memory-mapped and
        written back in place. `position` [N]: the tokens its sequences consumed (default 0)."""
        path = Path(path)
        numel = _table_numel(num_sequences, num_heads, num_slots, value_dim)
        if not path.is_file():
            raise FileNotFoundError(f"table file {str(path)!r} does not exist (create one with TieredRAMState.create)")
        size = path.stat().st_size
        if size != numel * 4:
            raise ValueError(f"table file {str(path)!r} holds {size} bytes, but N={num_sequences} x H={num_heads} x "
                             f"M={num_slots} x (V+1)={value_dim + 1} float32 need {numel * 4}: truncated or "
                             "of other sizes")
        cold = torch.from_file(str(path), shared=True, size=numel, dtype=torch.float32)
        return cls(cold, num_sequences, num_heads, num_slots, value_dim, cache_slots, device, position, path)

    @classmethod
    def from_dense(cls, state: RAMState, cache_slots: int, device: torch.device | str | None = None,
                   path: str | os.PathLike | None = None, overwrite: bool = False) -> TieredRAMState:
        """A tiered copy of a dense RAMState (memory [N, H, M, V], mass [N, H, M], position [N])."""
        memory, mass, position = state
        N, H, M, V = memory.shape
        tiered = cls.create(N, H, M, V, cache_slots, device=device, path=path, overwrite=overwrite)
        rows = tiered.cold.view(N, H, M, V + 1)
        rows[..., :V] = memory.detach().cpu()
        rows[..., V] = mass.detach().cpu()
        tiered.position.copy_(position)
        return tiered

    # ------------------------------------------------------------------ sizes and statistics
    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.num_sequences, self.num_heads, self.num_slots, self.value_dim

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return self.hot.device

    def nbytes(self) -> int:
        """Bytes on the compute device: hot rows, their keys, clocks, dirty bits, directory, positions."""
        parts = (self.hot, self.hot_keys, self.last_used, self.dirty, self._directory_keys, self._directory_rows,
                 self.position)
        return sum(t.numel() * t.element_size() for t in parts)

    def cold_nbytes(self) -> int:
        """Bytes of the cold tier's table (host memory or file; a new file is sparse on disk)."""
        return self.cold.numel() * self.cold.element_size()

    def reset_stats(self) -> None:
        self.hits = self.misses = self.evictions = self.write_backs = 0

    @property
    def hit_rate(self) -> float:
        """Share of the slot lookups of decoding served by the hot tier (nan before any)."""
        total = self.hits + self.misses
        return self.hits / total if total else float('nan')

    def __repr__(self) -> str:
        N, H, M, V = self.shape
        where = 'memory' if self.path is None else str(self.path)
        return (f"TieredRAMState(N={N}, H={H}, M={M}, V={V}, cache_slots={self.cache_slots}, cold={where}, "
                f"hit_rate={self.hit_rate:.3f}, evictions={self.evictions}, device={self.device})")

    # ------------------------------------------------------------------ the store interface
    @property
    def table(self) -> torch.Tensor:
        """[cache_slots, V+1] hot rows, addressed by the ids `locate` returns."""
        return self.hot

    def check_keys(self, keys: torch.Tensor) -> None:
        if keys.dtype != torch.long or keys.device != self.device:
            raise TypeError(f"slot keys must be int64 on {self.device}, got {keys.dtype} on {keys.device}")

    def _hot_rows_of(self, keys: torch.Tensor) -> torch.Tensor:
        return lookup_sorted(self._directory_keys, self._directory_rows, keys, torch.full_like(keys, -1))

    def _cold_read(self, keys: torch.Tensor) -> torch.Tensor:
        rows = self.cold.index_select(0, keys.cpu())
        if self.device.type == 'cuda':
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        return rows.to(self.device)

    def _cold_write(self, keys: torch.Tensor, rows: torch.Tensor) -> None:
        self.cold.index_copy_(0, keys.cpu(), rows.to(device='cpu', dtype=torch.float32))

    def locate(self, keys: torch.Tensor, create: bool) -> torch.Tensor:
        """Hot rows of slot keys (any shape, int64), loading the missing ones (evicting the least
        recently used rows, with write-back). `create` marks them written. Never -1: the cold table
        holds every slot."""
        flat = keys.reshape(-1)
        unique, inverse = torch.unique(flat, return_inverse=True)
        if unique.numel() > self.cache_slots:
            raise ValueError(f"a step touches {unique.numel()} slots but the hot tier holds cache_slots="
                             f"{self.cache_slots}: give it at least 2*K*H*(sequences per step) rows")
        self._clock += 1
        rows = self._hot_rows_of(unique)
        hit = rows >= 0
        self.last_used[rows[hit]] = self._clock
        missing = unique[~hit]
        num_hits = unique.numel() - missing.numel()
        self.hits += num_hits
        self.misses += missing.numel()
        if missing.numel():
            # free rows (-1) first, then the least recently used; this request's rows hold the newest clock
            victims = torch.topk(self.last_used, missing.numel(), largest=False).indices
            old_keys = self.hot_keys[victims]
            occupied = old_keys >= 0
            self.evictions += int(occupied.sum())
            back = occupied & self.dirty[victims]
            if bool(back.any()):
                self._cold_write(old_keys[back], self.hot[victims[back]])
                self.write_backs += int(back.sum())
            self.hot[victims] = self._cold_read(missing)
            self.hot_keys[victims] = missing
            self.last_used[victims] = self._clock
            self.dirty[victims] = False
            # directory: drop the evicted keys, merge in the loaded ones
            gone = old_keys[occupied]
            if gone.numel():
                keep = torch.ones_like(self._directory_keys, dtype=torch.bool)
                keep[torch.searchsorted(self._directory_keys, gone)] = False
                self._directory_keys, self._directory_rows = self._directory_keys[keep], self._directory_rows[keep]
            # `missing` is sorted (a subset of the sorted unique keys)
            self._directory_keys, self._directory_rows = merge_sorted(
                self._directory_keys, self._directory_rows, missing, victims)
            rows[~hit] = victims
        if create:
            self.dirty[rows] = True
        return rows[inverse].view(keys.shape)

    def read_rows(self, keys: torch.Tensor) -> torch.Tensor:
        """[..., V+1] rows of slot keys [...], from the hot tier where cached, else from the cold
        one (bulk access for prefill: nothing is loaded into the cache)."""
        flat = keys.reshape(-1)
        rows = self._hot_rows_of(flat)
        hot = rows >= 0
        out = self.hot.new_empty(flat.numel(), self.value_dim + 1)
        out[hot] = self.hot[rows[hot]]
        out[~hot] = self._cold_read(flat[~hot])
        return out.view(*keys.shape, self.value_dim + 1)

    def write_rows(self, keys: torch.Tensor, rows: torch.Tensor) -> None:
        """Store rows [n, V+1] at unique slot keys [n]: into the hot tier where cached (marked
        dirty), else straight into the cold one."""
        where = self._hot_rows_of(keys)
        hot = where >= 0
        self.hot[where[hot]] = rows[hot].to(torch.float32)
        self.dirty[where[hot]] = True
        if bool((~hot).any()):
            self._cold_write(keys[~hot], rows[~hot])

    def flush(self) -> None:
        """Write every dirty hot row back to the cold tier (the cache stays warm)."""
        back = self.dirty & (self.hot_keys >= 0)
        if bool(back.any()):
            self._cold_write(self.hot_keys[back], self.hot[back])
            self.write_backs += int(back.sum())
        self.dirty.zero_()

    def to_dense(self) -> RAMState:
        """The dense RAMState (on the compute device) of the same content; needs the table to fit."""
        self.flush()
        N, H, M, V = self.shape
        rows = self.cold.view(N, H, M, V + 1).to(self.device)
        return RAMState(rows[..., :V].clone(), rows[..., V].clone(), self.position.clone())
