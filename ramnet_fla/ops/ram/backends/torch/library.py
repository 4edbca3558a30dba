"""The PyTorch backend's host functions as `torch.library` custom ops, so `torch.compile` sees them
as opaque kernels with static output shapes.

Inside the backend, shapes depend on the data (the number of write chains and their depths are
Python ints, reads use `nonzero`, decoding loops over the longest sequence); a compiler tracing
that code would guard on, or break the graph at, every one of them. Registered as custom ops with
fake implementations, each op is one node whose outputs have shapes known from the input shapes:

- `ramnet::torch_address(logits [R, U*d_p], U, K)` -> log_prob [R, K], index [R, K], and the
  per-factor log-softmax [U, d_p, R] its backward `ramnet::torch_address_backward` needs;
- `ramnet::torch_chunk(...)` -> o, the final memory and mass ([0] when not asked for) and the
  tensors its backward `ramnet::torch_chunk_backward` needs, all of static shape [E, ...] with
  E = Ntok*H*K. The chain layout's Python ints are saved as one tensor (`widths`, padded to E + 1)
  and rebuilt inside the backward;
- `ramnet::torch_fused_recurrent(...)` -> o, advancing memory and mass in place (declared mutated).

`torch.library.register_autograd` ties each forward to its backward. The host functions at the bottom
have the signatures of the backend package's (`backends/__init__`): while torch.compile traces they
call the custom ops; eagerly they call the autograd Functions directly, the same computation
without the custom ops' dispatch (about 0.3 ms a call on one CPU core, 20% of a small decoding step),
so eager speed is unchanged and every compiled-vs-eager test checks the ops against the Functions.
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.backends.torch.address import address_bwd, beam_topk, factor_log_probs
from ramnet_fla.ops.ram.backends.torch.address import address_topk as _address_topk
from ramnet_fla.ops.ram.backends.torch.chunk import (
    WriteChains,
    final_table,
    find_reads,
    grad_chain_states,
    grad_initial_state,
    grad_through_reads,
    grad_writes,
    read_slots,
    scan_write_chains,
    sort_write_chains,
)
from ramnet_fla.ops.ram.backends.torch.chunk import chunk_read_write as _chunk_read_write
from ramnet_fla.ops.ram.backends.torch.fused_recurrent import fused_recurrent_inplace as _fused_recurrent_inplace
from ramnet_fla.ops.ram.backends.torch.scan import ChainLayout
from ramnet_fla.ops.ram.checks import RAMShape, check_gamma_values
from ramnet_fla.ops.ram.common import RAMCall
from ramnet_fla.ops.ram.state import RAMState


def _log_prob_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------- address

@torch.library.custom_op('ramnet::torch_address', mutates_args=())
def torch_address(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits [R, U*d_p] -> (log_prob [R, K], index [R, K] int64, factor log-probs [U, d_p, R])."""
    log_probs = factor_log_probs(logits, num_factors)                      # [U, d_p, R]
    indices, scores = beam_topk(log_probs, topk)                           # [K, R]
    return scores.t().contiguous(), indices.t().contiguous(), log_probs


@torch_address.register_fake
def _(logits, num_factors, topk):
    rows, width = logits.shape
    dtype = _log_prob_dtype(logits)
    return (logits.new_empty(rows, topk, dtype=dtype), logits.new_empty(rows, topk, dtype=torch.long),
            logits.new_empty(num_factors, width // num_factors, rows, dtype=dtype))


@torch.library.custom_op('ramnet::torch_address_backward', mutates_args=())
def torch_address_backward(log_probs: torch.Tensor, index: torch.Tensor, grad_log_prob: torch.Tensor,
                           logits_dtype: torch.dtype) -> torch.Tensor:
    """Gradient [R, U*d_p] of the logits (see `address_bwd`); index, grad_log_prob: [R, K]."""
    return address_bwd(log_probs, index.t(), grad_log_prob).to(logits_dtype).contiguous()


@torch_address_backward.register_fake
def _(log_probs, index, grad_log_prob, logits_dtype):
    num_factors, factor_dim, rows = log_probs.shape
    return log_probs.new_empty(rows, num_factors * factor_dim, dtype=logits_dtype)


def _address_setup_context(ctx, inputs, output):
    _, index, log_probs = output
    ctx.save_for_backward(log_probs, index)
    ctx.logits_dtype = inputs[0].dtype
    ctx.mark_non_differentiable(index, log_probs)
    ctx.set_materialize_grads(False)


def _address_backward(ctx, grad_log_prob, grad_index, grad_factor_log_probs):
    log_probs, index = ctx.saved_tensors
    if grad_log_prob is None:
        return None, None, None
    return torch_address_backward(log_probs, index, grad_log_prob, ctx.logits_dtype), None, None


torch.library.register_autograd('ramnet::torch_address', _address_backward, setup_context=_address_setup_context)


# ------------------------------------------------------------------------------------------ chunk

def _pack_widths(widths: list[int], num_events: int, device: torch.device) -> torch.Tensor:
    """The chain layout's per-depth widths as a tensor of static shape [E + 1], zero beyond depth L."""
    packed = torch.zeros(num_events + 1, dtype=torch.long, device=device)
    packed[:len(widths)] = torch.tensor(widths, dtype=torch.long, device=device)
    return packed


def _unpack_layout(packed: torch.Tensor, need_ends: bool) -> ChainLayout:
    """The ChainLayout the backward scans use, rebuilt from `_pack_widths`' tensor (no position; the
    chain ends, in depth-major order, only when `need_ends`)."""
    depths = int(torch.count_nonzero(packed))
    widths = packed[:depths].tolist()
    offsets = [0]
    for width in widths[:-1]:
        offsets.append(offsets[-1] + width)
    ends = None
    if need_ends:
        # element r of depth d (r-th longest chain) ends its chain when fewer than r + 1 chains go deeper
        width_of = packed[:depths]
        depth = torch.repeat_interleave(torch.arange(depths, device=packed.device), width_of)
        start = torch.cumsum(width_of, 0) - width_of
        rank = torch.arange(depth.shape[0], device=packed.device) - start.index_select(0, depth)
        ends = (rank >= packed.index_select(0, depth + 1)).nonzero().squeeze(1)
    return ChainLayout(None, widths, offsets, ends)


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0)


@torch.library.custom_op('ramnet::torch_chunk', mutates_args=())
def torch_chunk(
    read_weight: torch.Tensor, write_weight: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor,
    memory0: torch.Tensor | None, mass0: torch.Tensor | None,
    read_slot: torch.Tensor, write_slot: torch.Tensor, sequence_ids: torch.Tensor,
    num_sequences: int, num_slots: int, output_final_state: bool, check_gamma: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward of `TorchChunkRAMFunction` (same inputs, compute dtype; `check_gamma`: run the value
    checks of gamma here, for compiled callers that skip them). Returns o [Ntok, H, V], memory
    [N, H, M, V] and mass [N, H, M] (or [0] each), then the saved tensors: in_token_order, row [E],
    widths [E+1], retain [E], chained [E, V+1], hit, found, read_row [E], read_value [E, V+1]."""
    if check_gamma:
        check_gamma_values(gamma)
    shape = (num_sequences, v.shape[1], num_slots, v.shape[2])                              # N, H, M, V
    table0 = None if memory0 is None else (memory0.reshape(-1, shape[3]), mass0.reshape(-1))
    chains = sort_write_chains(write_slot, sequence_ids, num_slots)
    retain, chained = scan_write_chains(write_weight, v, gamma, table0, chains)
    hit, found, read_row = find_reads(read_slot, sequence_ids, chains, num_slots)
    o, read_value = read_slots(read_weight, chained, hit, found, read_row, table0)
    memory, mass = _empty(chained), _empty(chained)
    if output_final_state:
        memory, mass = final_table(memory0, mass0, chained, chains, shape)
    widths = _pack_widths(chains.layout.widths, chained.shape[0], chained.device)
    return (o, memory, mass, chains.in_token_order, chains.row, widths, retain, chained, hit, found, read_row,
            read_value)


@torch_chunk.register_fake
def _(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot, sequence_ids,
      num_sequences, num_slots, output_final_state, check_gamma):
    num_tokens, H, K = write_weight.shape
    V = v.shape[-1]
    E = num_tokens * H * K
    dtype = read_weight.dtype
    o = v.new_empty(num_tokens, H, V, dtype=dtype)
    if output_final_state:
        memory, mass = v.new_empty(num_sequences, H, num_slots, V, dtype=dtype), v.new_empty(num_sequences, H, num_slots, dtype=dtype)
    else:
        memory, mass = v.new_empty(0, dtype=dtype), v.new_empty(0, dtype=dtype)
    index = write_slot.new_empty(E)
    return (o, memory, mass, index, write_slot.new_empty(E), write_slot.new_empty(E + 1), v.new_empty(E, dtype=dtype),
            v.new_empty(E, V + 1, dtype=dtype), write_slot.new_empty(E), write_slot.new_empty(E, dtype=torch.bool),
            write_slot.new_empty(E), v.new_empty(E, V + 1, dtype=dtype))


@torch.library.custom_op('ramnet::torch_chunk_backward', mutates_args=())
def torch_chunk_backward(
    grad_o: torch.Tensor | None, grad_memory: torch.Tensor | None, grad_mass: torch.Tensor | None,
    read_weight: torch.Tensor, write_weight: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor,
    memory0: torch.Tensor | None, mass0: torch.Tensor | None,
    in_token_order: torch.Tensor, row: torch.Tensor, widths: torch.Tensor, retain: torch.Tensor,
    chained: torch.Tensor, hit: torch.Tensor, found: torch.Tensor, read_row: torch.Tensor, read_value: torch.Tensor,
    num_sequences: int, num_slots: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of `torch_chunk` (as `TorchChunkRAMFunction.backward`): gradients of read_weight,
    write_weight, v, gamma, memory0 and mass0 ([0] each of the last two without an initial state)."""
    num_tokens, H, K = read_weight.shape
    V = v.shape[-1]
    shape = (num_sequences, H, num_slots, V)
    has_final_grad = grad_memory is not None or grad_mass is not None
    chains = WriteChains(None, None, _unpack_layout(widths, has_final_grad), None, in_token_order, row)
    table0 = None if memory0 is None else (memory0.reshape(-1, V), mass0.reshape(-1))

    if grad_o is None:
        grad_o = chained.new_zeros(num_tokens, H, V)
    grad_o = grad_o.to(chained.dtype).contiguous()
    grad_read_weight, grad_read_value = grad_through_reads(grad_o, read_weight, read_value)
    grad_chained = grad_chain_states(grad_read_value, grad_memory, grad_mass, retain, chained, hit, found, chains)
    if table0 is not None:                             # read before grad_writes reuses the buffer
        missed = (~found).nonzero().squeeze(1)
        missed_grad = grad_read_value.index_select(0, missed)
    grad_write_weight, grad_v, grad_gamma = grad_writes(
        grad_chained, grad_read_value, write_weight, v, gamma, retain, chained, table0, chains)
    grad_memory0, grad_mass0 = _empty(chained), _empty(chained)
    if table0 is not None:
        grad_memory0, grad_mass0 = grad_initial_state(grad_memory, grad_mass, grad_chained, read_row[missed],
                                                      missed_grad, retain, chains, shape)
    return grad_read_weight, grad_write_weight, grad_v, grad_gamma, grad_memory0, grad_mass0


@torch_chunk_backward.register_fake
def _(grad_o, grad_memory, grad_mass, read_weight, write_weight, v, gamma, memory0, mass0, in_token_order, row,
      widths, retain, chained, hit, found, read_row, read_value, num_sequences, num_slots):
    num_tokens, H, K = read_weight.shape
    V = v.shape[-1]
    dtype = chained.dtype
    if memory0 is not None:
        grad_memory0 = chained.new_empty(num_sequences, H, num_slots, V)
        grad_mass0 = chained.new_empty(num_sequences, H, num_slots)
    else:
        grad_memory0, grad_mass0 = chained.new_empty(0), chained.new_empty(0)
    return (read_weight.new_empty(num_tokens, H, K, dtype=dtype), write_weight.new_empty(num_tokens, H, K, dtype=dtype),
            v.new_empty(num_tokens, H, V, dtype=dtype), gamma.new_empty(num_tokens, H, dtype=dtype),
            grad_memory0, grad_mass0)


def _chunk_setup_context(ctx, inputs, output):
    read_weight, write_weight, v, gamma, memory0, mass0, _, _, _, num_sequences, num_slots, output_final_state, _ = inputs
    saved = output[3:]
    ctx.output_final_state = output_final_state
    ctx.save_for_backward(read_weight, write_weight, v, gamma, memory0, mass0, *saved)
    ctx.sizes = (num_sequences, num_slots)
    ctx.mark_non_differentiable(*saved)
    ctx.set_materialize_grads(False)


def _chunk_backward(ctx, grad_o, grad_memory, grad_mass, *grad_saved):
    if not ctx.output_final_state:                     # the [0] placeholders carry no gradient
        grad_memory = grad_mass = None
    read_weight, write_weight, v, gamma, memory0, mass0, *saved = ctx.saved_tensors
    if grad_o is None and grad_memory is None and grad_mass is None:
        return (None,) * 13
    grads = torch_chunk_backward(grad_o, grad_memory, grad_mass, read_weight, write_weight, v, gamma, memory0, mass0,
                                 *saved, *ctx.sizes)
    grad_read_weight, grad_write_weight, grad_v, grad_gamma, grad_memory0, grad_mass0 = grads
    if memory0 is None:
        grad_memory0 = grad_mass0 = None
    return (grad_read_weight, grad_write_weight, grad_v, grad_gamma, grad_memory0, grad_mass0) + (None,) * 7


torch.library.register_autograd('ramnet::torch_chunk', _chunk_backward, setup_context=_chunk_setup_context)


# -------------------------------------------------------------------------------- fused_recurrent

@torch.library.custom_op('ramnet::torch_fused_recurrent', mutates_args=('memory', 'mass'))
def torch_fused_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor,
    memory: torch.Tensor, mass: torch.Tensor, position: torch.Tensor,
    cape_heads: torch.Tensor, cu_seqlens: torch.Tensor | None,
    num_factors: int, topk: int, check_gamma: bool,
) -> torch.Tensor:
    """`fused_recurrent_inplace` on tensors: q, k [B, T, H, U*d_p], v [B, T, H, V], gamma [B, T, H];
    memory [N, H, M, V] and mass [N, H, M] (contiguous, compute dtype) advanced in place; position
    [N] the tokens before this call. Returns o [B, T, H, V] in v's dtype."""
    if check_gamma:
        check_gamma_values(gamma)
    B, T, H, width = q.shape
    N, _, M, V = memory.shape
    shape = RAMShape(batch=B, num_sequences=N, seq_len=T, num_heads=H, num_factors=num_factors,
                     factor_dim=width // num_factors, num_slots=M, topk=topk, value_dim=V)
    state = RAMState(memory, mass, position)
    call = RAMCall(shape, cape_heads, state, cu_seqlens, memory.dtype, q.device)
    return _fused_recurrent_inplace(q, k, v, gamma, call, state)


@torch_fused_recurrent.register_fake
def _(q, k, v, gamma, memory, mass, position, cape_heads, cu_seqlens, num_factors, topk, check_gamma):
    return torch.empty_like(v)


# ------------------------------------------------------------------------- the host functions

def _compiling() -> bool:
    return torch.compiler.is_compiling()


def address_topk(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [R, U*d_p] -> (index [R, K] int64, log_prob [R, K]), differentiable in log_prob."""
    if not _compiling():
        return _address_topk(logits, num_factors, topk)
    log_prob, index, _ = torch_address(logits, num_factors, topk)
    return index, log_prob


def chunk_read_write(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot, sequence_ids,
                     num_sequences: int, num_slots: int, output_final_state: bool):
    """The PyTorch read/write of `chunk_ram` through `ramnet::torch_chunk`; v and gamma in any float
    dtype, cast to the weights' compute dtype. Returns o [Ntok, H, V] in v's dtype, memory, mass
    (None without `output_final_state`)."""
    if not _compiling():
        return _chunk_read_write(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot,
                                 sequence_ids, num_sequences, num_slots, output_final_state)
    dtype = read_weight.dtype
    o, memory, mass, *_ = torch_chunk(read_weight, write_weight, v.to(dtype), gamma.to(dtype), memory0, mass0,
                                      read_slot, write_slot, sequence_ids, num_sequences, num_slots,
                                      output_final_state, _compiling())
    if not output_final_state:
        memory = mass = None
    return o.to(v.dtype), memory, mass


def fused_recurrent_inplace(q, k, v, gamma, call: RAMCall, state: RAMState) -> torch.Tensor:
    """Token-by-token decoding through `ramnet::torch_fused_recurrent` (see `fused_recurrent.py`):
    state contiguous in the compute dtype, its memory and mass advanced in place (not its position)."""
    if not _compiling():
        return _fused_recurrent_inplace(q, k, v, gamma, call, state)
    return torch_fused_recurrent(q, k, v, gamma, state.memory, state.mass, state.position, call.cape_heads,
                                 call.cu_seqlens, call.shape.num_factors, call.shape.topk, _compiling())
