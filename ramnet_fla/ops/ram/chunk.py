"""Parallel RAM-Net for training and prefill: `chunk_ram`.

PyTorch path ("slot chains", the segment batching of the paper): every write event (token t,
head h, j-th of K) touches one slot, and a slot's history only depends on the writes to that slot.
So the write events are sorted by (head, slot, time); each slot's writes become one contiguous
chain S_e = lambda_e * S_{e-1} + w_e * [v_e, 1] (the mass z rides along as value column V). The
chains are stored depth-major (scan.py), so that one fused multiply-add per depth scans them all
while each element is read and written once. A read (t, h, k)
finds its slot's latest write at or before t by binary search and reads that chain element, or
the initial state when the slot was not written yet. Work and activations are O(B*T*H*K*V) and
independent of M; the M x V table is touched only to read an initial state or build a final one.

The backward pass runs the adjoint chain scan in reverse; no decay is ever divided out.
CUDA tensors take the Triton kernels instead (`RAMNET_FLA_BACKEND` overrides, see backend.py).
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.address import ram_address_torch
from ramnet_fla.utils.backend import select_backend
from ramnet_fla.ops.ram.common import (
    READ_EPS,
    WEIGHT_CLAMP,
    RAMShape,
    cape_shift,
    check_ram_inputs,
    compute_dtype,
    final_positions,
    pdma_decay,
    token_layout,
)
from ramnet_fla.ops.ram.scan import chain_layout, chain_previous_dot, chain_scan_, chain_scan_reverse_
from ramnet_fla.ops.ram.state import RAMState


def _gather_rows(memory: torch.Tensor, mass: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows of the slot table with the mass as an extra column: [n, V+1]. memory: [R, V]; mass: [R]."""
    return torch.cat([memory.index_select(0, rows), mass.index_select(0, rows)[:, None]], dim=1)


def _copy_rows_(memory: torch.Tensor, mass: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
    """memory[rows], mass[rows] = values[:, :V], values[:, V] in place. values: [n, V+1]."""
    memory.index_copy_(0, rows, values[:, :-1])
    mass.index_copy_(0, rows, values[:, -1])


class SlotChainFunction(torch.autograd.Function):
    """Sparse read/write with PDMA over flattened tokens, given the chosen slots.

    Differentiable inputs (compute dtype, tokens flattened to Ntok = B*T):
        read_weight, write_weight: [Ntok, H, K]; v: [Ntok, H, V]; gamma: [Ntok, H];
        memory0: [N, H, M, V] or None; mass0: [N, H, M] or None.
    Constant inputs: read_slot, write_slot [Ntok, H, K] int64 (after CAPE); sequence_ids [Ntok].
    Returns o [Ntok, H, V] and, if asked, the final memory [N, H, M, V] and mass [N, H, M].
    """

    @staticmethod
    def forward(ctx, read_weight, write_weight, v, gamma, memory0, mass0,
                read_slot, write_slot, sequence_ids, num_sequences, num_slots, output_final_state):
        num_tokens, H, K = write_slot.shape
        V, M, N = v.shape[-1], num_slots, num_sequences
        device = v.device
        if H * M * max(num_tokens, 1) >= 2 ** 62:
            raise ValueError(f"too many tokens x heads x slots for 64-bit event keys: {num_tokens} x {H} x {M}")
        has_initial = memory0 is not None

        # ---- sort the write events by (head, slot, time): each slot's writes become one chain ----
        token = torch.arange(num_tokens, device=device)[:, None, None]
        head = torch.arange(H, device=device)[None, :, None]
        write_key = ((head * M + write_slot) * num_tokens + token).flatten()          # [E]
        sorted_key, order = write_key.sort()
        slot_key = torch.div(sorted_key, num_tokens, rounding_mode='floor')           # head * M + slot
        token_of = torch.div(order, H * K, rounding_mode='floor')
        row = sequence_ids.index_select(0, token_of) * (H * M) + slot_key              # row of [N*H*M]
        chain_start = torch.ones_like(order, dtype=torch.bool)
        chain_start[1:] = row[1:] != row[:-1]
        # ---- and lay the chains out depth by depth (scan.py); events below are depth-major ----
        layout = chain_layout(chain_start)
        event = torch.empty_like(order).index_copy_(0, layout.position, order)        # flat (t, h, k)
        in_token_order = torch.empty_like(order).index_copy_(0, order, layout.position)   # its inverse
        ev_row = torch.empty_like(row).index_copy_(0, layout.position, row)
        ev_token_head = torch.div(event, K, rounding_mode='floor')                     # t * H + h
        num_chains = layout.widths[0]                                                  # chain starts: rows [0, C)

        ev_weight = write_weight.flatten().index_select(0, event)
        ev_retain = pdma_decay(ev_weight, gamma.flatten().index_select(0, ev_token_head))
        # increments w * [v, 1]: one gather of the token rows [v, 1], scaled in place
        chained = torch.cat([v.reshape(-1, V), v.new_ones(num_tokens * H, 1)], dim=1).index_select(0, ev_token_head)
        chained.mul_(ev_weight[:, None])                                                 # [E, V+1]
        if has_initial:
            memory0_rows, mass0_rows = memory0.reshape(N * H * M, V), mass0.reshape(N * H * M)
            chained[:num_chains].addcmul_(_gather_rows(memory0_rows, mass0_rows, ev_row[:num_chains]),
                                          ev_retain[:num_chains, None])
        chain_scan_(ev_retain, chained, layout)                                          # [E, V+1], in place

        # ---- reads: the slot's latest write at or before t, else the initial state ----
        read_key = ((head * M + read_slot) * num_tokens + token).flatten()             # [E]
        read_row = sequence_ids[:, None, None].expand(num_tokens, H, K).flatten() * (H * M) + torch.div(
            read_key, num_tokens, rounding_mode='floor')
        read_sorted, read_order = read_key.sort()                                        # sorted queries search faster
        hit = torch.empty_like(read_key).index_copy_(
            0, read_order, torch.searchsorted(sorted_key, read_sorted, right=True)) - 1
        hit_safe = hit.clamp(min=0)
        found = (hit >= 0) & (row.index_select(0, hit_safe) == read_row)
        hit = layout.position.index_select(0, hit_safe)                                  # depth-major
        read_value = chained.index_select(0, hit)
        missed = (~found).nonzero().squeeze(1)
        read_value.index_copy_(0, missed, _gather_rows(memory0_rows, mass0_rows, read_row[missed]) if has_initial
                               else read_value.new_zeros(missed.shape[0], V + 1))
        scale = read_weight.flatten() / (read_value[:, V] + READ_EPS)                    # r / (z + eps)
        o = torch.bmm(scale.view(-1, 1, K), read_value.view(-1, K, V + 1)[..., :V]).view(num_tokens, H, V)

        memory = mass = None
        if output_final_state:
            # two contiguous tensors, so that decoding can update them in place without a copy
            memory = memory0.clone() if has_initial else v.new_zeros(N, H, M, V)
            mass = mass0.clone() if has_initial else v.new_zeros(N, H, M)
            _copy_rows_(memory.view(-1, V), mass.view(-1), ev_row[layout.ends], chained.index_select(0, layout.ends))

        ctx.save_for_backward(read_weight, write_weight, v, gamma, memory0, mass0, in_token_order, ev_row,
                              ev_retain, chained, hit, found, read_row, read_value)
        ctx.layout = layout
        ctx.sizes = (num_tokens, H, K, V, M, N)
        return o, memory, mass

    @staticmethod
    def backward(ctx, grad_o, grad_memory, grad_mass):
        (read_weight, write_weight, v, gamma, memory0, mass0, in_token_order, ev_row,
         ev_retain, chained, hit, found, read_row, read_value) = ctx.saved_tensors
        layout = ctx.layout
        num_tokens, H, K, V, M, N = ctx.sizes
        has_initial = memory0 is not None
        dtype = chained.dtype
        num_events, num_chains = chained.shape[0], layout.widths[0]

        # ---- through the reads: o = sum_k r_k * num_k / (den_k + eps) ----
        grad_o = grad_o.to(dtype).contiguous()             # e.g. the expanded gradient of o.sum()
        r = read_weight.flatten()
        denominator = read_value[:, V] + READ_EPS
        dot = torch.bmm(grad_o.view(-1, 1, V), read_value.view(-1, K, V + 1)[..., :V].transpose(1, 2)).flatten()
        grad_read_weight = (dot / denominator).view(num_tokens, H, K)
        grad_read_value = chained.new_empty(num_tokens, H, K, V + 1)                      # [E, V+1]
        torch.mul(grad_o[:, :, None, :], (r / denominator).view(num_tokens, H, K, 1), out=grad_read_value[..., :V])
        grad_read_value[..., V] = (-r * dot / denominator ** 2).view(num_tokens, H, K)
        grad_read_value = grad_read_value.view(-1, V + 1)

        # ---- into the chains: direct gradient of every chain element, then the reverse scan ----
        # reads that found no write in this call go to a spare last row (the initial state's business)
        grad_chained = chained.new_zeros(num_events + 1, V + 1)
        grad_chained.index_add_(0, hit.masked_fill(~found, num_events), grad_read_value)
        grad_chained = grad_chained[:-1]
        # the final state's gradient enters each chain at its last element
        if grad_memory is not None or grad_mass is not None:
            grad_memory = grad_memory if grad_memory is not None else chained.new_zeros(N, H, M, V)
            grad_mass = grad_mass if grad_mass is not None else chained.new_zeros(N, H, M)
            grad_chained.index_add_(0, layout.ends, _gather_rows(grad_memory.reshape(-1, V).to(dtype),
                                                                 grad_mass.reshape(-1).to(dtype), ev_row[layout.ends]))
        chain_scan_reverse_(ev_retain, grad_chained, layout)                            # [E, V+1], in place

        # ---- to the write weights, decays, values ----
        # d lambda_e = <grad S_e, S before write e>: the previous chain element, or the initial state
        grad_retain = chain_previous_dot(grad_chained, chained, layout)
        if has_initial:
            grad_retain[:num_chains] = torch.linalg.vecdot(
                grad_chained[:num_chains],
                _gather_rows(memory0.reshape(-1, V), mass0.reshape(-1), ev_row[:num_chains]))
        # back to token order [Ntok*H, K]: one gather of the chain gradients, then small batched products
        # (into grad_read_value's buffer: a fresh one would cost as much in page faults as the gather)
        if has_initial:                                     # read before the buffer is reused
            missed = (~found).nonzero().squeeze(1)
            missed_grad = grad_read_value.index_select(0, missed)
        grad_event = torch.index_select(grad_chained, 0, in_token_order, out=grad_read_value).view(-1, K, V + 1)
        grad_retain = grad_retain.index_select(0, in_token_order).view(-1, K)
        retain = ev_retain.index_select(0, in_token_order).view(-1, K)
        weight, gamma = write_weight.reshape(-1, K), gamma.reshape(-1, 1)
        v = v.reshape(-1, 1, V)
        grad_v = torch.bmm(weight[:, None, :], grad_event[..., :V])                       # sum_k w_k grad S_k
        grad_weight = torch.bmm(v, grad_event[..., :V].transpose(1, 2)).squeeze(1) + grad_event[..., V]   # <grad, [v, 1]>
        clamped = weight.clamp(max=WEIGHT_CLAMP)
        grad_weight -= torch.where(weight < WEIGHT_CLAMP, grad_retain * retain * gamma / (1 - clamped), 0.0)
        grad_gamma = (grad_retain * retain * torch.log1p(-clamped)).sum(1)

        # ---- to the initial state: untouched slots pass the final-state gradient straight through ----
        grad_memory0 = grad_mass0 = None
        if has_initial:
            # written slots get it from their chain's first element instead; reads that found no
            # write in this call read the initial state directly
            grad_memory0 = grad_memory.to(dtype).clone() if grad_memory is not None else chained.new_zeros(N, H, M, V)
            grad_mass0 = grad_mass.to(dtype).clone() if grad_mass is not None else chained.new_zeros(N, H, M)
            memory_rows, mass_rows = grad_memory0.view(-1, V), grad_mass0.view(-1)
            _copy_rows_(memory_rows, mass_rows, ev_row[:num_chains],
                        ev_retain[:num_chains, None] * grad_chained[:num_chains])
            memory_rows.index_add_(0, read_row[missed], missed_grad[:, :V])
            mass_rows.index_add_(0, read_row[missed], missed_grad[:, V])

        return (grad_read_weight, grad_weight.view(num_tokens, H, K), grad_v.view(num_tokens, H, V),
                grad_gamma.view(num_tokens, H), grad_memory0, grad_mass0,
                None, None, None, None, None, None)


def chunk_ram_torch(q, k, v, gamma, shape: RAMShape, cape_heads, initial_state, output_final_state, cu_seqlens):
    """The PyTorch path of `chunk_ram` on checked arguments (see `chunk_ram`)."""
    B, T, H, V, M, N = shape.batch, shape.seq_len, shape.num_heads, shape.value_dim, shape.num_slots, shape.num_sequences
    dtype = compute_dtype(q, k, v, gamma, *(initial_state or ()))
    device = q.device
    sequence_ids, positions = token_layout(shape, cu_seqlens, device)
    start = initial_state.position.long() if initial_state is not None else torch.zeros(N, dtype=torch.long, device=device)
    absolute = positions + start[sequence_ids]                                      # [B*T]
    if B * T == 0:                                                                   # nothing to read or write
        o = v.new_zeros(B, T, H, V)
        if not output_final_state:
            return o, None
        state = initial_state.clone() if initial_state is not None else RAMState.zeros(N, H, M, V, device=device, dtype=dtype)
        return o, RAMState(state.memory.to(dtype), state.mass.to(dtype), start.clone())

    # both address sets in one beam search: [2, B*T, H, K]
    (read_index, write_index), (read_log_prob, write_log_prob) = ram_address_torch(
        torch.stack([q, k]).flatten(1, 2), shape.num_factors, shape.topk)
    read_slot = cape_shift(read_index, absolute, cape_heads, M)
    write_slot = cape_shift(write_index, absolute, cape_heads, M)

    memory0 = mass0 = None
    if initial_state is not None:
        memory0, mass0 = initial_state.memory.to(dtype), initial_state.mass.to(dtype)
    o, memory, mass = SlotChainFunction.apply(
        read_log_prob.exp().to(dtype), write_log_prob.exp().to(dtype),
        v.flatten(0, 1).to(dtype), gamma.flatten(0, 1).to(dtype), memory0, mass0,
        read_slot, write_slot, sequence_ids, N, M, output_final_state,
    )
    o = o.view(B, T, H, V).to(v.dtype)
    if not output_final_state:
        return o, None
    return o, RAMState(memory, mass, final_positions(shape, cu_seqlens, start))


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
        initial_state: RAMState with memory [N, H, M, V], mass [N, H, M], position [N].
        output_final_state: return the state after the last token (a new table; the initial one is
            not modified).
        cu_seqlens: [N+1] offsets of packed sequences (then B == 1); positions restart at 0 (plus the
            initial state's position) for every sequence.

    Returns:
        o: [B, T, H, V] in v's dtype; the final RAMState (float32) or None.
    """
    shape, cape_heads, state = check_ram_inputs(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens)
    if select_backend(q) == 'triton':
        from ramnet_fla.ops.ram.triton.chunk import chunk_ram_triton
        return chunk_ram_triton(q, k, v, gamma, shape, cape_heads, state, output_final_state, cu_seqlens)
    return chunk_ram_torch(q, k, v, gamma, shape, cape_heads, state, output_final_state, cu_seqlens)
