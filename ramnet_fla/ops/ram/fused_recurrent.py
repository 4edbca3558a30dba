"""`fused_recurrent_ram`: RAM-Net token by token for decoding, the state updated in place.

A decoding step reads and writes K slots per head, O(U*K*d_p + K*V) work, so it must never copy
the M x V table: the backend (`fused_recurrent_inplace`) gathers and scatters only the touched rows
of `initial_state`, which thereby becomes the final state. When gradients are needed, or no final
state is asked for, the exact autograd path of `chunk_ram` runs instead and leaves `initial_state`
untouched.
"""

from __future__ import annotations

import torch

from ramnet_fla.ops.ram.backends import backend_for
from ramnet_fla.ops.ram.chunk import chunk_forward
from ramnet_fla.ops.ram.common import prepare_call
from ramnet_fla.ops.ram.slot_store import resolve_state_format, store_fused_recurrent_ram
from ramnet_fla.ops.ram.state import RAMState


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
    state_format: str | None = None,
) -> tuple[torch.Tensor, RAMState | None]:
    """RAM-Net token by token, for decoding (same arguments and results as `chunk_ram`).

    With `output_final_state=True` and no gradient to track, the state advances in place, as a
    whole or not at all: when memory and mass are contiguous in the compute dtype (float32, or
    float64 with float64 inputs) and position is int64, the returned RAMState holds the tensors of
    `initial_state`, all three updated (the M x V table is never copied); otherwise `initial_state`
    is left untouched and the returned RAMState holds converted copies. Pass
    `initial_state.clone()` to keep the old state. With gradients to track, or no final state
    asked for, `initial_state` is never modified.

    Args:
        q, k: [B, T, H, U*d_p] read and write logits; v: [B, T, H, V]; gamma: [B, T, H] (>= 0).
        num_factors: U; topk: K; cape: bool or [H] bools.
        initial_state: RAMState ([N, H, M, V], [N, H, M], [N]) or None (a zero table is allocated).
        output_final_state: return the state after the last token.
        cu_seqlens: [N+1] offsets of packed sequences (then B == 1).
        state_format: as for `chunk_ram`. A SparseRAMState or TieredRAMState is advanced in place
            (and grown as slots are first written) and returned; with 'sparse' and no
            `initial_state` an empty one is created.

    Returns:
        o: [B, T, H, V] in v's dtype; the final state or None.
    """
    initial_state, state_format = resolve_state_format(initial_state, state_format)
    if state_format != 'dense':
        return store_fused_recurrent_ram(q, k, v, gamma, num_factors, topk, cape, initial_state, output_final_state,
                                         cu_seqlens, state_format)
    call = prepare_call(q, k, v, gamma, num_factors, topk, cape, initial_state, cu_seqlens)
    state = call.initial_state
    tracked = (q, k, v, gamma) + ((state.memory, state.mass) if state is not None else ())
    if not output_final_state or (torch.is_grad_enabled() and any(x.requires_grad for x in tracked)):
        return chunk_forward(q, k, v, gamma, call, output_final_state)
    state = call.writable_state()
    o = backend_for(q).fused_recurrent_inplace(q, k, v, gamma, call, state)
    state.position.copy_(call.final_position)
    return o, state
