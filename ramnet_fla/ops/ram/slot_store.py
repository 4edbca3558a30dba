"""`chunk_ram` and `fused_recurrent_ram` over a slot store: a SparseRAMState or a TieredRAMState.

Both stores expose the same interface: `locate(keys, create)` -> row ids in `table` (decoding),
`read_rows(keys)` / `write_rows(keys, rows)` (bulk), and `position` [N]; a slot key is
(sequence * H + head) * M + slot. Two algorithms use it, whatever the store:

- Parallel (`store_chunk`): the call's write keys, plus the read keys the store holds, are
  renumbered 0..R-1 (R <= 2*T*K per head, so never M-sized), and every (token, head) becomes one
  pseudo-token of a single-head, single-sequence problem over a compact table of R + 1 rows (the
  last a zero row for reads of slots nobody wrote). The backend's `chunk_read_write` then runs
  unchanged: a compact row belongs to one (sequence, head), and pseudo-token t*H + h orders its
  writes and reads exactly as token t does. The written rows go back into the store. Peak memory is
  proportional to the touched slots; no dense table is built. Gradients reach q, k, v and gamma
  through o as on the dense path.
- Token by token (`store_decode`): per step, the K write slots of every (sequence, head) are located
  (created when new), updated with PDMA in the store's table, then the K read slots are read;
  O(U*K*d_p + K*V) work plus the store's lookups, the same arithmetic as the dense PyTorch path.

Inference only for the state itself: a store is updated in place and grown, which autograd cannot
track, so it carries no gradient. Asking for a sparse or tiered final state while q, k, v or gamma
require grad raises a ValueError (the dense path would differentiate through the final state, and
dropping that silently would give wrong gradients); an initial store is a constant.
"""

from __future__ import annotations

import dataclasses

import torch

from ramnet_fla.ops.ram.backends import backend_for
from ramnet_fla.ops.ram.backends import torch as torch_backend
from ramnet_fla.ops.ram.backends.torch.chunk import chunk_final_rows
from ramnet_fla.ops.ram.cape import cape_shift
from ramnet_fla.ops.ram.common import READ_EPS, RAMCall, compute_dtype, pdma_decay, prepare_call
from ramnet_fla.ops.ram.sparse_state import SparseRAMState
from ramnet_fla.ops.ram.state import RAMState
from ramnet_fla.ops.ram.tiered_state import TieredRAMState

STATE_FORMATS = ('dense', 'sparse', 'tiered')
SLOT_STORES = (SparseRAMState, TieredRAMState)


def state_format_of(state) -> str:
    """'sparse', 'tiered' or 'dense' (a RAMState, a 3-tuple or None)."""
    if isinstance(state, SparseRAMState):
        return 'sparse'
    if isinstance(state, TieredRAMState):
        return 'tiered'
    return 'dense'


def resolve_state_format(initial_state, state_format) -> tuple[object, str]:
    """The initial state to run with and the format of the result (see `chunk_ram`'s `state_format`).

    A sparse initial state with state_format='dense' is converted to the dense table; a dense one
    with 'sparse' is converted by the store path after its checks.
    """
    if state_format is None:
        return initial_state, state_format_of(initial_state)
    if state_format not in STATE_FORMATS:
        raise ValueError(f"`state_format` must be None or one of {STATE_FORMATS}, got {state_format!r}")
    given = state_format_of(initial_state)
    if given == 'tiered' and state_format != 'tiered':
        raise ValueError(f"`state_format={state_format!r}` cannot take a TieredRAMState `initial_state` (it is "
                         "advanced in place): pass state_format='tiered' or None, or convert it with .to_dense()")
    if state_format == 'tiered' and given != 'tiered':
        raise ValueError("`state_format='tiered'` needs a TieredRAMState as `initial_state` (its table lives in "
                         "host memory or a file: build one with TieredRAMState.create(...) or .open(...))")
    if state_format == 'dense' and given == 'sparse':
        return initial_state.to_dense(), 'dense'
    return initial_state, state_format


def _grad_tracked(*tensors: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def prepare_store_call(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens, output_final_state,
                       state_format: str) -> tuple[RAMCall, SparseRAMState | TieredRAMState | None]:
    """Check a call whose state is a store (or becomes one); return the call and the store (None:
    an empty sparse state)."""
    if output_final_state and _grad_tracked(q, k, v, gamma):
        raise ValueError(
            f"a {state_format} final state is inference-only: the store is updated in place, which autograd cannot "
            "track, so no gradient could flow back through it. Use output_final_state=False (gradients reach q, k, "
            "v, gamma through o), run under torch.no_grad(), or use state_format='dense' to differentiate through "
            "the state")
    dense = None if isinstance(initial_state, SLOT_STORES) else initial_state
    call = prepare_call(q, k, v, gamma, num_factors, topk, cape, dense, cu_seqlens)
    store = initial_state if isinstance(initial_state, SLOT_STORES) else None
    if dense is not None:                           # checked dense state, wanted sparse
        store = SparseRAMState.from_dense(call.initial_state, dtype=call.dtype)
    if store is None:
        return call, None
    shape, name = call.shape, type(store).__name__
    expected = (shape.num_sequences, shape.num_heads, shape.num_slots, shape.value_dim)
    if store.shape != expected:
        raise ValueError(f"`initial_state` ({name}) holds (N, H, M, V) = {store.shape}, but the inputs give "
                         f"{expected} (N sequences, H heads, M = d_p**U slots, value width V)")
    if store.device != call.device:
        raise ValueError(f"`initial_state` ({name}) lives on {store.device}, the inputs on {call.device}")
    dtype = compute_dtype(q, k, v, gamma, store.table)
    if store.dtype != dtype:
        raise TypeError(f"`initial_state` ({name}) holds {store.dtype} but the inputs compute in {dtype}; a store "
                        "is updated in place, so it must already have the compute dtype (float64 inputs need a "
                        "float64 SparseRAMState, e.g. state.to(torch.float64))")
    return dataclasses.replace(call, initial_state=store, dtype=dtype), store


# rows of one address search in a parallel call without autograd: the search's transient memory
# (about 1.6 KB per row at U=12) stays bounded whatever the length; every row is searched alike
ADDRESS_ROWS = 16384


def token_slots(q, k, call: RAMCall):
    """Addresses of every token as slot keys: (read_key, write_key [Ntok, H, K] int64 after CAPE,
    read_weight, write_weight [Ntok, H, K] in the compute dtype)."""
    shape = call.shape
    H, M, K = shape.num_heads, shape.num_slots, shape.topk
    num_tokens = shape.batch * shape.seq_len
    logits = torch.stack([q, k]).reshape(-1, q.shape[-1])
    address_topk = backend_for(q).address_topk
    if logits.shape[0] > ADDRESS_ROWS and not _grad_tracked(q, k) and not torch.compiler.is_compiling():
        pieces = [address_topk(part, shape.num_factors, K) for part in logits.split(ADDRESS_ROWS)]
        index, log_prob = torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])
        del pieces
    else:
        index, log_prob = address_topk(logits, shape.num_factors, K)
    (read_index, write_index) = index.view(2, num_tokens, H, K)
    (read_log_prob, write_log_prob) = log_prob.view(2, num_tokens, H, K)
    base = ((call.sequence_ids[:, None] * H + torch.arange(H, device=call.device)) * M)[..., None]   # [Ntok, H, 1]
    read_key = base + cape_shift(read_index, call.positions, call.cape_heads, M)
    write_key = base + cape_shift(write_index, call.positions, call.cape_heads, M)
    return read_key, write_key, read_log_prob.exp().to(call.dtype), write_log_prob.exp().to(call.dtype)


def _final_store(call: RAMCall, store, keys: torch.Tensor | None, rows: torch.Tensor | None):
    """The store after a parallel call: written rows (sorted unique keys) stored, position advanced.
    A sparse store is copied (as the dense `chunk_ram` returns a new table), a tiered one advanced in place."""
    shape = call.shape
    if store is None:
        if keys is None:
            return SparseRAMState(shape.num_sequences, shape.num_heads, shape.num_slots, shape.value_dim,
                                  device=call.device, dtype=call.dtype, position=call.final_position)
        return SparseRAMState.from_rows(shape.num_sequences, shape.num_heads, shape.num_slots, shape.value_dim,
                                        keys, rows, call.final_position)
    final = store.clone() if isinstance(store, SparseRAMState) else store
    if keys is not None:
        final.write_rows(keys, rows)
    final.position = call.final_position.clone()
    return final


def store_chunk(q, k, v, gamma, call: RAMCall, store, output_final_state: bool):
    """`chunk_ram` over a store (None: an empty sparse state) on checked arguments (module docstring)."""
    shape = call.shape
    B, T, H, V, K = shape.batch, shape.seq_len, shape.num_heads, shape.value_dim, shape.topk
    num_tokens = B * T
    if num_tokens == 0:
        o = v.new_zeros(B, T, H, V)
        return o, (_final_store(call, store, None, None) if output_final_state else None)

    read_key, write_key, read_weight, write_weight = token_slots(q, k, call)
    write_flat, read_flat = write_key.flatten(), read_key.flatten()
    stored_reads = read_flat[:0]
    if isinstance(store, TieredRAMState):
        stored_reads = read_flat
    elif store is not None and store.num_touched:
        stored_reads = read_flat[store.locate(read_flat, create=False) >= 0]
    rows = torch.unique(torch.cat([write_flat, stored_reads]))                            # [R] sorted keys
    dummy = rows.numel()                                                                  # the zero row
    write_local = torch.searchsorted(rows, write_flat)
    at = torch.searchsorted(rows, read_flat).clamp_(max=dummy - 1)
    read_local = torch.where(rows[at] == read_flat, at, dummy)

    memory0 = mass0 = None
    if isinstance(store, TieredRAMState) or (store is not None and store.num_touched):
        table0 = torch.cat([store.read_rows(rows), rows.new_zeros(1, V + 1, dtype=call.dtype)])   # [R+1, V+1]
        memory0, mass0 = table0[:, :V].reshape(1, 1, dummy + 1, V), table0[:, V].reshape(1, 1, dummy + 1)

    # every (token, head) is a pseudo-token of one head of one sequence over R + 1 compact slots
    pseudo = num_tokens * H
    args = (read_weight.reshape(pseudo, 1, K), write_weight.reshape(pseudo, 1, K), v.reshape(pseudo, 1, V),
            gamma.reshape(pseudo, 1))
    local = (read_local.view(pseudo, 1, K), write_local.view(pseudo, 1, K))
    if output_final_state and backend_for(q) is torch_backend and not torch.compiler.is_compiling():
        # no autograd here (checked): only the written rows of the final table are built
        table0 = None if memory0 is None else (memory0.reshape(-1, V), mass0.reshape(-1))
        o, local_rows, new_rows = chunk_final_rows(*args, table0, *local, dummy + 1)
        del args, local, table0, memory0, mass0
        return o.view(B, T, H, V), _final_store(call, store, rows[local_rows], new_rows)
    o, memory, mass = backend_for(q).chunk_read_write(
        *args, memory0, mass0, *local, torch.zeros(pseudo, dtype=torch.long, device=call.device), 1, dummy + 1,
        output_final_state)
    o = o.view(B, T, H, V)
    if not output_final_state:
        return o, None
    written = torch.unique(write_flat)
    at = torch.searchsorted(rows, written)
    new_rows = torch.cat([memory.reshape(-1, V)[at], mass.reshape(-1)[at, None]], dim=1)
    return o, _final_store(call, store, written, new_rows)


def _steps(call: RAMCall) -> list[torch.Tensor]:
    """Flat token indices of each step: the i-th token of every sequence long enough."""
    shape, device = call.shape, call.device
    if call.cu_seqlens is None:
        starts = torch.arange(shape.batch, device=device) * shape.seq_len
        return [starts + i for i in range(shape.seq_len)]
    longest = int(call.lengths.max()) if call.lengths.numel() else 0
    return [call.cu_seqlens[:-1][call.lengths > i] + i for i in range(longest)]


@torch.no_grad()
def store_decode(q, k, v, gamma, call: RAMCall, store) -> torch.Tensor:
    """`fused_recurrent_ram` over a store, token by token, the store advanced in place (position too).

    q, k: [B, T, H, U*d_p]; v: [B, T, H, V]; gamma: [B, T, H]. Returns o [B, T, H, V] in v's dtype.
    """
    shape = call.shape
    B, T, H, V = shape.batch, shape.seq_len, shape.num_heads, shape.value_dim
    read_key, write_key, read_weight, write_weight = token_slots(q, k, call)
    retain = pdma_decay(write_weight, gamma.flatten(0, 1).to(call.dtype)[..., None])              # [Ntok, H, K]
    v_flat = v.flatten(0, 1).to(call.dtype)
    increment = torch.cat([v_flat, v_flat.new_ones(B * T, H, 1)], dim=-1)                          # [v | 1]
    may_miss = isinstance(store, SparseRAMState)

    o = v_flat.new_empty(B * T, H, V)
    for tokens in _steps(call):
        rows = store.locate(write_key[tokens], create=True)                                       # [n, H, K]
        table = store.table
        table[rows] = retain[tokens][..., None] * table[rows] + write_weight[tokens][..., None] * increment[tokens][:, :, None]
        rows = store.locate(read_key[tokens], create=False)
        read = table[rows.clamp(min=0)]                                                           # [n, H, K, V+1]
        if may_miss:
            read.masked_fill_((rows < 0)[..., None], 0)
        value = read[..., :V] / (read[..., V][..., None] + READ_EPS)
        o[tokens] = torch.einsum('nhk,nhkv->nhv', read_weight[tokens], value)
    store.position.copy_(call.final_position)
    return o.view(B, T, H, V).to(v.dtype)


def store_chunk_ram(q, k, v, gamma, num_factors, topk, cape, initial_state, output_final_state, cu_seqlens,
                    state_format: str):
    """`chunk_ram` with a sparse or tiered state (the public op routes here)."""
    call, store = prepare_store_call(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens,
                                     output_final_state, state_format)
    return store_chunk(q, k, v, gamma, call, store, output_final_state)


def store_fused_recurrent_ram(q, k, v, gamma, num_factors, topk, cape, initial_state, output_final_state, cu_seqlens,
                              state_format: str):
    """`fused_recurrent_ram` with a sparse or tiered state: advanced in place and returned (an empty
    SparseRAMState is created when there is none). Without a final state the parallel path runs and
    the store is left as it was."""
    call, store = prepare_store_call(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens,
                                     output_final_state, state_format)
    if not output_final_state:
        return store_chunk(q, k, v, gamma, call, store, False)
    if store is None:
        shape = call.shape
        store = SparseRAMState(shape.num_sequences, shape.num_heads, shape.num_slots, shape.value_dim,
                               device=call.device, dtype=call.dtype)
        call = dataclasses.replace(call, initial_state=store)
    o = store_decode(q, k, v, gamma, call, store)
    return o, store
