"""The Triton backend's host functions as `torch.library` custom ops, so `torch.compile` sees them
as opaque kernels with static output shapes (see backends/torch/library.py for why).

- `ramnet::triton_address(logits [R, U*d_p], U, K)` -> log_prob [R, K], index [R, K]; its backward
  `ramnet::triton_address_backward` re-reads the logits;
- `ramnet::triton_chunk(...)` -> o, the final memory and mass ([0] when not asked for) and the slot
  states its backward `ramnet::triton_chunk_backward` needs ([E, V] and [E], E = Ntok*H*K). The
  segments (whose counts depend on the addresses) are rebuilt inside the backward by one sort;
- `ramnet::triton_fused_recurrent(...)` -> o, advancing memory and mass in place (declared mutated).

As in the PyTorch backend, the host functions at the bottom call the custom ops while torch.compile
traces and the autograd Functions / kernel launchers directly in eager mode.
"""

from __future__ import annotations

import torch
from fla.utils import input_guard

from ramnet_fla.ops.ram.backends.triton.address import address_topk as _address_topk
from ramnet_fla.ops.ram.backends.triton.address import ram_address_bwd, ram_address_fwd
from ramnet_fla.ops.ram.backends.triton.chunk import build_segments, chunk_ram_bwd, chunk_ram_fwd
from ramnet_fla.ops.ram.backends.triton.chunk import chunk_read_write as _chunk_read_write
from ramnet_fla.ops.ram.backends.triton.fused_recurrent import fused_recurrent_inplace as _fused_recurrent_inplace
from ramnet_fla.ops.ram.checks import RAMShape, check_gamma_values
from ramnet_fla.ops.ram.common import RAMCall, compute_dtype
from ramnet_fla.ops.ram.state import RAMState

# ---------------------------------------------------------------------------------------- address


@torch.library.custom_op('ramnet::triton_address', mutates_args=())
@input_guard
def triton_address(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [R, U*d_p] -> (log_prob [R, K] float32, float64 for float64 logits; index [R, K] int64)."""
    index, log_prob = ram_address_fwd(logits, num_factors, topk)
    return log_prob, index


@triton_address.register_fake
def _(logits, num_factors, topk):
    rows = logits.shape[0]
    return (logits.new_empty(rows, topk, dtype=compute_dtype(logits)),
            logits.new_empty(rows, topk, dtype=torch.long))


@torch.library.custom_op('ramnet::triton_address_backward', mutates_args=())
@input_guard
def triton_address_backward(logits: torch.Tensor, index: torch.Tensor, grad_log_prob: torch.Tensor,
                            num_factors: int) -> torch.Tensor:
    """Gradient [R, U*d_p] (logits' dtype) of sum(grad_log_prob * log_prob), indices fixed."""
    return ram_address_bwd(logits, index, grad_log_prob, num_factors)


@triton_address_backward.register_fake
def _(logits, index, grad_log_prob, num_factors):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def _address_setup_context(ctx, inputs, output):
    logits, num_factors, _ = inputs
    ctx.save_for_backward(logits, output[1])
    ctx.num_factors = num_factors
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _address_backward(ctx, grad_log_prob, grad_index):
    logits, index = ctx.saved_tensors
    if grad_log_prob is None:
        return None, None, None
    return triton_address_backward(logits, index, grad_log_prob, ctx.num_factors), None, None


torch.library.register_autograd('ramnet::triton_address', _address_backward, setup_context=_address_setup_context)


# ------------------------------------------------------------------------------------------ chunk

@torch.library.custom_op('ramnet::triton_chunk', mutates_args=())
@input_guard
def triton_chunk(
    read_weight: torch.Tensor, write_weight: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor,
    memory0: torch.Tensor | None, mass0: torch.Tensor | None,
    read_slot: torch.Tensor, write_slot: torch.Tensor, sequence_ids: torch.Tensor,
    num_sequences: int, num_slots: int, output_final_state: bool, check_gamma: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward of `TritonChunkRAMFunction` (same inputs; `check_gamma`: run gamma's value checks here,
    for compiled callers that skip them). Returns o [Ntok, H, V] (v's dtype), memory [N, H, M, V] and
    mass [N, H, M] (or [0] each), then the saved prev_memory [E, V], prev_mass [E], read_memory
    [E, V], read_mass [E]."""
    if check_gamma:
        check_gamma_values(gamma)
    num_tokens, H, K = write_slot.shape
    V = v.shape[-1]
    dtype = read_weight.dtype
    num_rows = num_sequences * H * num_slots
    segments = build_segments(read_slot, write_slot, sequence_ids, num_sequences, num_slots)
    has_initial_state = memory0 is not None
    o, memory, mass, saved = chunk_ram_fwd(
        read_weight, write_weight, v, gamma,
        memory0.view(num_rows, V) if has_initial_state else None,
        mass0.view(num_rows) if has_initial_state else None,
        segments, num_rows, output_final_state, dtype,
    )
    if output_final_state:
        memory, mass = memory.view(num_sequences, H, num_slots, V), mass.view(num_sequences, H, num_slots)
    else:
        memory, mass = read_weight.new_empty(0), read_weight.new_empty(0)
    return (o, memory, mass, *saved)


@triton_chunk.register_fake
def _(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot, sequence_ids,
      num_sequences, num_slots, output_final_state, check_gamma):
    num_tokens, H, K = write_weight.shape
    V = v.shape[-1]
    E = num_tokens * H * K
    new = read_weight.new_empty
    if output_final_state:
        memory, mass = new(num_sequences, H, num_slots, V), new(num_sequences, H, num_slots)
    else:
        memory, mass = new(0), new(0)
    return v.new_empty(num_tokens, H, V), memory, mass, new(E, V), new(E), new(E, V), new(E)


@torch.library.custom_op('ramnet::triton_chunk_backward', mutates_args=())
@input_guard
def triton_chunk_backward(
    grad_o: torch.Tensor, grad_memory: torch.Tensor | None, grad_mass: torch.Tensor | None,
    read_weight: torch.Tensor, write_weight: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor,
    read_slot: torch.Tensor, write_slot: torch.Tensor, sequence_ids: torch.Tensor,
    prev_memory: torch.Tensor, prev_mass: torch.Tensor, read_memory: torch.Tensor, read_mass: torch.Tensor,
    num_sequences: int, num_slots: int, has_initial_state: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward of `triton_chunk`: gradients of read_weight, write_weight, v (v's dtype), gamma
    (gamma's dtype), memory0 and mass0 ([0] each without an initial state)."""
    num_tokens, H, K = write_weight.shape
    V = v.shape[-1]
    dtype = read_weight.dtype
    num_rows = num_sequences * H * num_slots
    segments = build_segments(read_slot, write_slot, sequence_ids, num_sequences, num_slots)
    dread_weight, dwrite_weight, dv, dgamma, dmemory0, dmass0 = chunk_ram_bwd(
        read_weight, write_weight, v, gamma, grad_o, (prev_memory, prev_mass, read_memory, read_mass), segments,
        grad_memory.reshape(num_rows, V) if grad_memory is not None else None,
        grad_mass.reshape(num_rows) if grad_mass is not None else None,
        has_initial_state, num_rows, dtype,
    )
    if has_initial_state:
        dmemory0, dmass0 = dmemory0.view(num_sequences, H, num_slots, V), dmass0.view(num_sequences, H, num_slots)
    else:
        dmemory0, dmass0 = read_weight.new_empty(0), read_weight.new_empty(0)
    return dread_weight, dwrite_weight, dv.to(v.dtype), dgamma.to(gamma.dtype), dmemory0, dmass0


@triton_chunk_backward.register_fake
def _(grad_o, grad_memory, grad_mass, read_weight, write_weight, v, gamma, read_slot, write_slot, sequence_ids,
      prev_memory, prev_mass, read_memory, read_mass, num_sequences, num_slots, has_initial_state):
    num_tokens, H, K = write_weight.shape
    V = v.shape[-1]
    new = read_weight.new_empty
    if has_initial_state:
        dmemory0, dmass0 = new(num_sequences, H, num_slots, V), new(num_sequences, H, num_slots)
    else:
        dmemory0, dmass0 = new(0), new(0)
    return new(num_tokens, H, K), new(num_tokens, H, K), torch.empty_like(v), torch.empty_like(gamma), dmemory0, dmass0


def _chunk_setup_context(ctx, inputs, output):
    (read_weight, write_weight, v, gamma, memory0, _, read_slot, write_slot, sequence_ids,
     num_sequences, num_slots, output_final_state, _) = inputs
    saved = output[3:]
    ctx.output_final_state = output_final_state
    ctx.save_for_backward(read_weight, write_weight, v, gamma, read_slot, write_slot, sequence_ids, *saved)
    ctx.sizes = (num_sequences, num_slots, memory0 is not None)
    ctx.mark_non_differentiable(*saved)
    ctx.set_materialize_grads(False)


def _chunk_backward(ctx, grad_o, grad_memory, grad_mass, *grad_saved):
    if not ctx.output_final_state:                     # the [0] placeholders carry no gradient
        grad_memory = grad_mass = None
    if grad_o is None and grad_memory is None and grad_mass is None:
        return (None,) * 13
    read_weight, write_weight, v, gamma, *rest = ctx.saved_tensors
    if grad_o is None:
        grad_o = v.new_zeros(write_weight.shape[0], write_weight.shape[1], v.shape[-1])
    grads = triton_chunk_backward(grad_o, grad_memory, grad_mass, read_weight, write_weight, v, gamma, *rest,
                                  *ctx.sizes)
    dread_weight, dwrite_weight, dv, dgamma, dmemory0, dmass0 = grads
    if not ctx.sizes[2]:
        dmemory0 = dmass0 = None
    return (dread_weight, dwrite_weight, dv, dgamma, dmemory0, dmass0) + (None,) * 7


torch.library.register_autograd('ramnet::triton_chunk', _chunk_backward, setup_context=_chunk_setup_context)


# -------------------------------------------------------------------------------- fused_recurrent

@torch.library.custom_op('ramnet::triton_fused_recurrent', mutates_args=('memory', 'mass'))
def triton_fused_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gamma: torch.Tensor,
    memory: torch.Tensor, mass: torch.Tensor, position: torch.Tensor,
    cape_heads: torch.Tensor, cu_seqlens: torch.Tensor | None,
    num_factors: int, topk: int, check_gamma: bool,
) -> torch.Tensor:
    """The decoding kernel on tensors: q, k [B, T, H, U*d_p], v [B, T, H, V], gamma [B, T, H];
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


@triton_fused_recurrent.register_fake
def _(q, k, v, gamma, memory, mass, position, cape_heads, cu_seqlens, num_factors, topk, check_gamma):
    return torch.empty_like(v, memory_format=torch.contiguous_format)


# ------------------------------------------------------------------------- the host functions

def address_topk(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """logits [R, U*d_p] -> (index [R, K] int64, log_prob [R, K]), differentiable in log_prob."""
    if not torch.compiler.is_compiling():
        return _address_topk(logits, num_factors, topk)
    log_prob, index = triton_address(logits, num_factors, topk)
    return index, log_prob


def chunk_read_write(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot, sequence_ids,
                     num_sequences: int, num_slots: int, output_final_state: bool):
    """The Triton read/write of `chunk_ram` through `ramnet::triton_chunk`. Returns o [Ntok, H, V] in
    v's dtype and the final memory [N, H, M, V] and mass [N, H, M] (None without `output_final_state`)."""
    if not torch.compiler.is_compiling():
        return _chunk_read_write(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot,
                                 sequence_ids, num_sequences, num_slots, output_final_state)
    o, memory, mass, *_ = triton_chunk(read_weight, write_weight, v, gamma, memory0, mass0, read_slot, write_slot,
                                       sequence_ids, num_sequences, num_slots, output_final_state,
                                       torch.compiler.is_compiling())
    if not output_final_state:
        memory = mass = None
    return o, memory, mass


def fused_recurrent_inplace(q, k, v, gamma, call: RAMCall, state: RAMState) -> torch.Tensor:
    """Decoding through `ramnet::triton_fused_recurrent`: state contiguous in the compute dtype, its
    memory and mass advanced in place (its position read, not advanced)."""
    if not torch.compiler.is_compiling():
        return _fused_recurrent_inplace(q, k, v, gamma, call, state)
    return triton_fused_recurrent(q, k, v, gamma, state.memory, state.mass, state.position, call.cape_heads,
                                  call.cu_seqlens, call.shape.num_factors, call.shape.topk,
                                  torch.compiler.is_compiling())
