"""RAM-Net for decoding: `fused_recurrent_ram` updates the K touched slots of the state in place.

A decoding step reads and writes K slots per head, O(U*K*d_p + K*V) work, so it must never copy
the M x V table. The PyTorch path walks the tokens of each sequence in order (all sequences and
heads at once), gathering and scattering only the touched rows of `initial_state`, which thereby
becomes the final state. When gradients are needed, or no final state is asked for, it runs the
exact autograd path of `chunk_ram` instead, which leaves `initial_state` untouched.
CUDA tensors take the Triton kernel (`RAMNET_FLA_BACKEND` overrides, see backend.py).
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.address import ram_address_torch
from ramnet_fla.utils.backend import select_backend
from ramnet_fla.ops.ram.chunk import chunk_ram_torch
from ramnet_fla.ops.ram.common import (
    READ_EPS,
    RAMShape,
    cape_shift,
    check_ram_inputs,
    compute_dtype,
    final_positions,
    pdma_decay,
    token_layout,
)
from ramnet_fla.ops.ram.state import RAMState


def _steps(shape: RAMShape, cu_seqlens: torch.Tensor | None, device: torch.device) -> list[torch.Tensor]:
    """Flat token indices to process at each step: the i-th token of every sequence long enough."""
    if cu_seqlens is None:
        starts = torch.arange(shape.batch, device=device) * shape.seq_len
        return [starts + i for i in range(shape.seq_len)]
    bounds = cu_seqlens.tolist()
    lengths = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    starts = torch.tensor(bounds[:-1], device=device)
    steps = []
    for i in range(max(lengths, default=0)):
        active = torch.tensor([length > i for length in lengths], device=device)
        steps.append(starts[active] + i)
    return steps


def _writable_state(state: RAMState | None, shape: RAMShape, dtype: torch.dtype, device: torch.device) -> RAMState:
    """The state to update in place: `state` itself when its layout allows, else a converted copy."""
    N, H, M, V = shape.num_sequences, shape.num_heads, shape.num_slots, shape.value_dim
    if state is None:
        return RAMState.zeros(N, H, M, V, device=device, dtype=dtype)
    memory, mass, position = state
    if memory.dtype != dtype or not memory.is_contiguous():
        memory = memory.to(dtype).contiguous()
    if mass.dtype != dtype or not mass.is_contiguous():
        mass = mass.to(dtype).contiguous()
    if position.dtype != torch.long:
        position = position.long()
    return RAMState(memory, mass, position)


@torch.no_grad()
def fused_recurrent_ram_torch_inplace(q, k, v, gamma, shape: RAMShape, cape_heads, state, cu_seqlens) -> tuple[torch.Tensor, RAMState]:
    """Token-by-token PyTorch decoding on checked arguments; returns o and the updated state."""
    B, T, H, V, M, K = shape.batch, shape.seq_len, shape.num_heads, shape.value_dim, shape.num_slots, shape.topk
    device = q.device
    dtype = compute_dtype(q, k, v, gamma, *(state or ()))
    state = _writable_state(state, shape, dtype, device)
    memory = state.memory.view(-1, V)                 # [N*H*M, V]: rows are (sequence, head, slot)
    mass = state.mass.view(-1)                        # [N*H*M]

    sequence_ids, positions = token_layout(shape, cu_seqlens, device)
    start = state.position.clone()
    absolute = positions + start[sequence_ids]
    (read_index, write_index), (read_log_prob, write_log_prob) = ram_address_torch(
        torch.stack([q, k]).flatten(1, 2), shape.num_factors, K)                                # [2, Ntok, H, K]
    base = (sequence_ids[:, None] * H + torch.arange(H, device=device)) * M                      # [Ntok, H]
    read_row = base[..., None] + cape_shift(read_index, absolute, cape_heads, M)
    write_row = base[..., None] + cape_shift(write_index, absolute, cape_heads, M)
    read_weight, write_weight = read_log_prob.exp().to(dtype), write_log_prob.exp().to(dtype)
    retain = pdma_decay(write_weight, gamma.flatten(0, 1).to(dtype)[..., None])                  # [Ntok, H, K]
    v_flat = v.flatten(0, 1).to(dtype)

    o = v_flat.new_empty(B * T, H, V)
    for tokens in _steps(shape, cu_seqlens, device):
        rows, w, lam = write_row[tokens], write_weight[tokens], retain[tokens]                   # [n, H, K]
        memory[rows] = lam[..., None] * memory[rows] + w[..., None] * v_flat[tokens][:, :, None]
        mass[rows] = lam * mass[rows] + w
        rows = read_row[tokens]
        value = memory[rows] / (mass[rows][..., None] + READ_EPS)                                # [n, H, K, V]
        o[tokens] = torch.einsum('nhk,nhkv->nhv', read_weight[tokens], value)
    state.position.copy_(final_positions(shape, cu_seqlens, start))
    return o.view(B, T, H, V).to(v.dtype), state


def fused_recurrent_ram(
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
    """RAM-Net token by token, for decoding (same arguments and results as `chunk_ram`).

    With `output_final_state=True` and no gradient to track, the state is advanced in place:
    the returned RAMState holds the tensors of `initial_state` (memory, mass and position updated),
    unless they had to be converted (another dtype, non-contiguous), when it holds the converted
    copies. Pass `initial_state.clone()` to keep the old state. The M x V table is never copied.

    Args:
        q, k: [B, T, H, U*d_p] read and write logits; v: [B, T, H, V]; gamma: [B, T, H] (>= 0).
        num_factors: U; topk: K; cape: bool or [H] bools.
        initial_state: RAMState ([N, H, M, V], [N, H, M], [N]) or None (a zero table is allocated).
        output_final_state: return the state after the last token.
        cu_seqlens: [N+1] offsets of packed sequences (then B == 1).

    Returns:
        o: [B, T, H, V] in v's dtype; the final RAMState or None.
    """
    shape, cape_heads, state = check_ram_inputs(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens)
    if select_backend(q) == 'triton':
        from ramnet_fla.ops.ram.triton.fused_recurrent import fused_recurrent_ram_triton
        return fused_recurrent_ram_triton(q, k, v, gamma, shape, cape_heads, state, output_final_state, cu_seqlens)
    tracked = (q, k, v, gamma) + ((state.memory, state.mass) if state is not None else ())
    if not output_final_state or (torch.is_grad_enabled() and any(x.requires_grad for x in tracked)):
        return chunk_ram_torch(q, k, v, gamma, shape, cape_heads, state, output_final_state, cu_seqlens)
    return fused_recurrent_ram_torch_inplace(q, k, v, gamma, shape, cape_heads, state, cu_seqlens)
