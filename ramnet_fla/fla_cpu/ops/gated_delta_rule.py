"""The gated delta rule (fla's `chunk_gated_delta_rule`) in chunked PyTorch.

The delta rule with a per-head log-decay g_t <= 0 applied to the state before each write
(see `delta_rule.py` for the recurrence and its chunked form; g = 0 is the plain delta rule).
"""

from __future__ import annotations

import torch

from ramnet_fla.fla_cpu.ops.delta_rule import delta_rule
from ramnet_fla.utils.checks import check_tensor


def torch_chunk_gated_delta_rule(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    beta: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    use_qk_l2norm_in_kernel: bool = False,
    state_v_first: bool = False,
    cu_seqlens: torch.LongTensor | None = None,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gated delta rule, the math of fla's `chunk_gated_delta_rule`, in PyTorch.

    Args:
        q, k: [B, T, H, K]; v: [B, T, HV, V] (HV a multiple of H: grouped value heads).
        g: [B, T, HV] log-decay (<= 0, already activated, e.g. -exp(A_log) * softplus(a + dt_bias)).
        beta: [B, T, HV] write strengths (already activated, e.g. sigmoid(b)).
        initial_state: [N, HV, K, V] float32 (or [N, HV, V, K] if `state_v_first`).
        state_v_first: states in fla's V-first layout.

    Returns:
        o [B, T, HV, V] in v's dtype, and the final state (float32; float64 for float64 inputs) or None.
    """
    check_tensor('g', g, 3, '[B, T, HV]')
    return delta_rule(q, k, v, g, beta, scale, initial_state, output_final_state, state_v_first,
                      cu_seqlens, use_qk_l2norm_in_kernel, chunk_size)
