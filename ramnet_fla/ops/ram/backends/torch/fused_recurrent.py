"""PyTorch `fused_recurrent_ram` (decoding): the touched rows of the state updated in place.

A decoding step reads and writes K slots per head, O(U*K*d_p + K*V) work, so it must never copy
the M x V table. This path computes every token's addresses at once, then walks the tokens of each
sequence in order (all sequences and heads at once), gathering and scattering only the touched
rows of the state.
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.backends.torch.address import address_topk
from ramnet_fla.ops.ram.cape import cape_shift
from ramnet_fla.ops.ram.common import READ_EPS, RAMCall, pdma_decay
from ramnet_fla.ops.ram.state import RAMState


def _steps(call: RAMCall) -> list[torch.Tensor]:
    """Flat token indices to process at each step: the i-th token of every sequence long enough.

    Data-dependent: the number of steps is the longest sequence's length.
    """
    shape, device = call.shape, call.device
    if call.cu_seqlens is None:
        starts = torch.arange(shape.batch, device=device) * shape.seq_len
        return [starts + i for i in range(shape.seq_len)]
    lengths = call.lengths.tolist()
    starts = call.cu_seqlens[:-1]
    return [starts[call.lengths > i] + i for i in range(max(lengths, default=0))]


@torch.no_grad()
def fused_recurrent_inplace(q, k, v, gamma, call: RAMCall, state: RAMState) -> torch.Tensor:
    """Token-by-token decoding on checked arguments.

    q, k: [B, T, H, U*d_p]; v: [B, T, H, V]; gamma: [B, T, H]; state: contiguous, in the compute
    dtype, its memory and mass advanced in place (not its position). Returns o [B, T, H, V] in v's dtype.
    """
    shape = call.shape
    B, T, H, V, M, K = shape.batch, shape.seq_len, shape.num_heads, shape.value_dim, shape.num_slots, shape.topk
    dtype, device = call.dtype, call.device
    memory = state.memory.view(-1, V)                 # [N*H*M, V]: rows are (sequence, head, slot)
    mass = state.mass.view(-1)                        # [N*H*M]

    width = q.shape[-1]
    index, log_prob = address_topk(torch.stack([q, k]).reshape(-1, width), shape.num_factors, K)
    (read_index, write_index), (read_log_prob, write_log_prob) = (index.view(2, B * T, H, K),
                                                                  log_prob.view(2, B * T, H, K))
    base = (call.sequence_ids[:, None] * H + torch.arange(H, device=device)) * M               # [Ntok, H]
    read_row = base[..., None] + cape_shift(read_index, call.positions, call.cape_heads, M)
    write_row = base[..., None] + cape_shift(write_index, call.positions, call.cape_heads, M)
    read_weight, write_weight = read_log_prob.exp().to(dtype), write_log_prob.exp().to(dtype)
    retain = pdma_decay(write_weight, gamma.flatten(0, 1).to(dtype)[..., None])                # [Ntok, H, K]
    v_flat = v.flatten(0, 1).to(dtype)

    o = v_flat.new_empty(B * T, H, V)
    for tokens in _steps(call):
        rows, w, lam = write_row[tokens], write_weight[tokens], retain[tokens]                 # [n, H, K]
        memory[rows] = lam[..., None] * memory[rows] + w[..., None] * v_flat[tokens][:, :, None]
        mass[rows] = lam * mass[rows] + w
        rows = read_row[tokens]
        value = memory[rows] / (mass[rows][..., None] + READ_EPS)                              # [n, H, K, V]
        o[tokens] = torch.einsum('nhk,nhkv->nhv', read_weight[tokens], value)
    return o.view(B, T, H, V).to(v.dtype)
