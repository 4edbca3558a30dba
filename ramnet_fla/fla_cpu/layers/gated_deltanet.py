"""fla's GatedDeltaNet on the CPU: fla's kernels on accelerators, PyTorch on the CPU."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from fla.layers import GatedDeltaNet as FlaGatedDeltaNet

from ramnet_fla.fla_cpu.layers.base import CPUCapableLayer, cpu_capable_init, delta_rule_gate
from ramnet_fla.fla_cpu.ops import torch_chunk_gated_delta_rule


class GatedDeltaNet(CPUCapableLayer, FlaGatedDeltaNet):
    """fla's `GatedDeltaNet` (same arguments, parameters, state_dict and cache layout) that also runs on the CPU.

    CPU tensors run fla's steps in PyTorch: projections, short convolutions, the gate
    g = -exp(A_log) * softplus(a_proj + dt_bias) and beta = sigmoid(b_proj) (x2 with
    allow_neg_eigval) that fla's kernel computes inside, the gated delta rule with L2-normalised
    q, k (`torch_chunk_gated_delta_rule`, state [N, HV, V, K]), then output norm (and gate).
    """

    __init__ = cpu_capable_init(FlaGatedDeltaNet)

    def mix_torch(self, hidden_states, last_state, use_cache, cu_seqlens):
        if self.use_short_conv:
            q, k, v, conv_state = self.short_conv_qkv(hidden_states, last_state, use_cache, cu_seqlens)
        else:
            q, k, v = (F.silu(proj(hidden_states)) for proj in (self.q_proj, self.k_proj, self.v_proj))
            conv_state = None
        q, k = (rearrange(x, '... (h d) -> ... h d', d=self.head_k_dim) for x in (q, k))   # [B, T, H, K]
        v = rearrange(v, '... (h d) -> ... h d', d=self.head_v_dim)                       # [B, T, HV, V]

        beta = self.b_proj(hidden_states).float().sigmoid()                               # [B, T, HV]
        if self.allow_neg_eigval:
            beta = beta * 2.
        g = -self.A_log.float().exp() * F.softplus(self.a_proj(hidden_states).float() + self.dt_bias.float())

        recurrent_state = last_state['recurrent_state'] if last_state is not None else None
        o, recurrent_state = torch_chunk_gated_delta_rule(q, k, v, g, beta, initial_state=recurrent_state,
                                                          output_final_state=use_cache, use_qk_l2norm_in_kernel=True,
                                                          state_v_first=True, cu_seqlens=cu_seqlens)
        return o, recurrent_state, conv_state

    def gate_torch(self, o, hidden_states):
        return delta_rule_gate(self, o, hidden_states)
