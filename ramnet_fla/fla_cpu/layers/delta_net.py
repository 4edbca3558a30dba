"""fla's DeltaNet on the CPU: fla's kernels on accelerators, PyTorch on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from fla.layers import DeltaNet as FlaDeltaNet
from fla.layers.delta_net import sum_norm

from ramnet_fla.fla_cpu.layers.base import CPUCapableLayer, cpu_capable_init, delta_rule_gate
from ramnet_fla.fla_cpu.modules import elu_p1
from ramnet_fla.fla_cpu.ops import torch_chunk_delta_rule


class DeltaNet(CPUCapableLayer, FlaDeltaNet):
    """fla's `DeltaNet` (same arguments, parameters, state_dict and cache layout) that also runs on the CPU.

    CPU tensors run fla's steps in PyTorch: projections, short convolutions, q/k activation and
    normalisation, beta = sigmoid(b_proj) (x2 with allow_neg_eigval), the delta rule
    (`torch_chunk_delta_rule`, state [N, H, K, V]), then output norm (and gate).
    """

    __init__ = cpu_capable_init(FlaDeltaNet)

    def mix_torch(self, hidden_states, last_state, use_cache, cu_seqlens):
        if self.use_short_conv:
            q, k, v, conv_state = self.short_conv_qkv(hidden_states, last_state, use_cache, cu_seqlens)
        else:
            q, k, conv_state = self.q_proj(hidden_states), self.k_proj(hidden_states), None
            if self.qk_activation == 'silu':
                q, k = F.silu(q), F.silu(k)
            v = F.silu(self.v_proj(hidden_states))

        q, k = (rearrange(x, '... (h d) -> ... h d', d=self.head_k_dim) for x in (q, k))   # [B, T, H, K]
        v = rearrange(v, '... (h d) -> ... h d', d=self.head_v_dim)                       # [B, T, H, V]
        if self.qk_activation == 'relu':
            q, k = q.relu(), k.relu()
        elif self.qk_activation == 'elu':
            q, k = elu_p1(q), elu_p1(k)
        if self.qk_norm == 'sum':
            q, k = sum_norm(q).to(q), sum_norm(k).to(k)
        beta = self.b_proj(hidden_states).sigmoid() if self.use_beta else torch.ones_like(q[..., 0])
        if self.allow_neg_eigval:
            beta = beta * 2.

        recurrent_state = last_state['recurrent_state'] if last_state is not None else None
        o, recurrent_state = torch_chunk_delta_rule(q, k, v, beta, initial_state=recurrent_state,
                                                    output_final_state=use_cache, cu_seqlens=cu_seqlens,
                                                    use_qk_l2norm_in_kernel=(self.qk_norm == 'l2'))
        return o, recurrent_state, conv_state

    def gate_torch(self, o, hidden_states):
        return delta_rule_gate(self, o, hidden_states)
