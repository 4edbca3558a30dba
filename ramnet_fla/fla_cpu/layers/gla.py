"""fla's GatedLinearAttention on the CPU: fla's kernels on accelerators, PyTorch on the CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from fla.layers import GatedLinearAttention as FlaGatedLinearAttention

from ramnet_fla.fla_cpu.layers.base import CPUCapableLayer, cpu_capable_init
from ramnet_fla.fla_cpu.ops import torch_chunk_gla


class GatedLinearAttention(CPUCapableLayer, FlaGatedLinearAttention):
    """fla's `GatedLinearAttention` (same arguments, parameters, state_dict and cache layout) that
    also runs on the CPU.

    CPU tensors run fla's steps in PyTorch: projections, short convolutions, gates
    logsigmoid(gk) / gate_logit_normalizer, the recurrence (`torch_chunk_gla`, state [N, H, V, K]
    as fla stores it), then norm and gate.
    """

    __init__ = cpu_capable_init(FlaGatedLinearAttention)

    def mix_torch(self, hidden_states, last_state, use_cache, cu_seqlens):
        if self.mode == 'fused_chunk':
            raise ValueError("mode 'fused_chunk' is gone from fla 0.6 (fused_chunk_gla); use 'chunk'")
        if self.use_short_conv:
            q, k, v, conv_state = self.short_conv_qkv(hidden_states, last_state, use_cache, cu_seqlens)
        else:
            q, k, v, conv_state = self.q_proj(hidden_states), self.k_proj(hidden_states), self.v_proj(hidden_states), None
        gk = self.gk_proj(hidden_states)

        q = rearrange(q, '... (h d) -> ... h d', d=self.head_k_dim)                  # [B, T, H, K]
        if self.num_kv_groups > 1:
            k, gk = (repeat(x, '... (h d) -> ... (h g) d', g=self.num_kv_groups, d=self.head_k_dim) for x in (k, gk))
            v = repeat(v, '... (h d) -> ... (h g) d', g=self.num_kv_groups, d=self.head_v_dim)
        else:
            k, gk = (rearrange(x, '... (h d) -> ... h d', d=self.head_k_dim) for x in (k, gk))
            v = rearrange(v, '... (h d) -> ... h d', d=self.head_v_dim)               # [B, T, H, V]
        gk = F.logsigmoid(gk) / self.gate_logit_normalizer                          # log-decay <= 0
        if self.clamp_min is not None:
            gk = torch.clamp_min(gk, self.clamp_min)
        if self.feature_map_fn is not None:
            q, k = map(self.feature_map_fn, (q, k))

        recurrent_state = last_state['recurrent_state'] if last_state is not None else None
        o, recurrent_state = torch_chunk_gla(q, k, v, gk, initial_state=recurrent_state, output_final_state=use_cache,
                                             state_v_first=True, cu_seqlens=cu_seqlens)
        return o, recurrent_state, conv_state

    def gate_torch(self, o, hidden_states):
        if not self.use_output_gate:
            return rearrange(self.g_norm(o), '... h d -> ... (h d)')
        g = self.g_proj(hidden_states)
        if self.fuse_norm_and_gate:
            o = self.g_norm_swish_gate(o, rearrange(g, '... (h d) -> ... h d', d=self.head_v_dim))
            return rearrange(o, '... h d -> ... (h d)')
        return rearrange(self.g_norm(o), '... h d -> ... (h d)') * self.gate_fn(g)
