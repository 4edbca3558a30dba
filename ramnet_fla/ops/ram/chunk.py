"""`chunk_ram`: RAM-Net over whole sequences in parallel (training and prefill).

The op is shared by both backends up to the slot table: the addresses of every token (one
`address_topk` over reads and writes together), CAPE, and the weights w = exp(log w). The backend
then applies every write and read to the table (`chunk_read_write`, an autograd Function whose
activations are O(B*T*H*K*V), independent of M).
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.backends import backend_for
from ramnet_fla.ops.ram.cape import cape_shift
from ramnet_fla.ops.ram.common import RAMCall, prepare_call
from ramnet_fla.ops.ram.slot_store import resolve_state_format, store_chunk_ram
from ramnet_fla.ops.ram.state import RAMState


def chunk_forward(q, k, v, gamma, call: RAMCall, output_final_state: bool) -> tuple[torch.Tensor, RAMState | None]:
    """`chunk_ram` on checked arguments (also `fused_recurrent_ram`'s path when gradients are needed)."""
    shape, dtype, state = call.shape, call.dtype, call.initial_state
    B, T, H, V, M, N, K = (shape.batch, shape.seq_len, shape.num_heads, shape.value_dim, shape.num_slots,
                           shape.num_sequences, shape.topk)
    if B * T == 0:                                                                   # nothing to read or write
        o = v.new_zeros(B, T, H, V)
        if not output_final_state:
            return o, None
        if state is None:
            return o, RAMState.zeros(N, H, M, V, device=call.device, dtype=dtype)._replace(position=call.start)
        return o, RAMState(state.memory.to(dtype).clone(), state.mass.to(dtype).clone(), call.start)

    backend = backend_for(q)
    # both address sets in one beam search: [2, B*T, H, K]
    index, log_prob = backend.address_topk(torch.stack([q, k]).reshape(-1, q.shape[-1]), shape.num_factors, K)
    (read_index, write_index), (read_log_prob, write_log_prob) = index.view(2, B * T, H, K), log_prob.view(2, B * T, H, K)
    read_slot = cape_shift(read_index, call.positions, call.cape_heads, M)
    write_slot = cape_shift(write_index, call.positions, call.cape_heads, M)

    memory0 = mass0 = None
    if state is not None:
        memory0, mass0 = state.memory.to(dtype).contiguous(), state.mass.to(dtype).contiguous()   # rows are viewed flat
    o, memory, mass = backend.chunk_read_write(
        read_log_prob.exp().to(dtype), write_log_prob.exp().to(dtype), v.flatten(0, 1), gamma.flatten(0, 1),
        memory0, mass0, read_slot, write_slot, call.sequence_ids, N, M, output_final_state,
    )
    o = o.view(B, T, H, V)
    if not output_final_state:
        return o, None
    return o, RAMState(memory, mass, call.final_position)


def chunk_ram(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gamma: torch.Tensor,
    num_factors: int,
    topk: int,
    cape: bool | list[bool] = False,
    initial_state: RAMState | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    state_format: str | None = None,
) -> tuple[torch.Tensor, RAMState | None]:
    """RAM-Net over whole sequences in parallel (training and prefill).

    Args:
        q: [B, T, H, U*d_p] read logits.
        k: [B, T, H, U*d_p] write logits.
        v: [B, T, H, V] values.
        gamma: [B, T, H] PDMA decay exponents (>= 0).
        num_factors: U; M = d_p ** U slots per head.
        topk: K slots read and written per token.
        cape: CAPE on every head (bool) or per head ([H] bools).
        initial_state: RAMState with memory [N, H, M, V], mass [N, H, M], position [N], or a
            SparseRAMState / TieredRAMState of those sizes.
        output_final_state: return the state after the last token (a new table; the initial one is
            not modified, except a TieredRAMState, which is advanced in place and returned).
        cu_seqlens: [N+1] offsets of packed sequences (then B == 1); positions restart at 0 (plus the
            initial state's position) for every sequence.
        state_format: the final state's format: None (that of `initial_state`, dense without one),
            'dense' (RAMState), 'sparse' (SparseRAMState: only the written slots, built without any
            dense table) or 'tiered' (needs a TieredRAMState `initial_state`). Sparse and tiered
            final states are inference-only (see `slot_store.py`).

    Returns:
        o: [B, T, H, V] in v's dtype; the final state (float32; float64 for float64 inputs) or None.
    """
    initial_state, state_format = resolve_state_format(initial_state, state_format)
    if state_format != 'dense':
        return store_chunk_ram(q, k, v, gamma, num_factors, topk, cape, initial_state, output_final_state,
                               cu_seqlens, state_format)
    call = prepare_call(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens)
    return chunk_forward(q, k, v, gamma, call, output_final_state)
