"""Built-in plugin `gla`: fla's GatedLinearAttention, on CUDA with fla's kernels, on the CPU in PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from fla.layers import GatedLinearAttention as FlaGatedLinearAttention
from fla.layers.utils import get_layer_cache, repad_hidden_states, unpad_hidden_states, update_layer_cache

from ramnet_fla.modules import use_fla_kernels
from ramnet_fla.ops.fla_torch import torch_chunk_gla
from ramnet_fla.plugin import hookimpl
from ramnet_fla.plugins._common import (
    build_on_meta,
    check_attention_mask,
    check_seq_len,
    cpu_capable_init,
    short_conv_qkv,
)


class GatedLinearAttention(FlaGatedLinearAttention):
    """fla's `GatedLinearAttention` (same arguments, parameters, state_dict and cache layout) that
    also runs on the CPU.

    CUDA tensors run fla's forward unchanged. CPU tensors run the same steps in PyTorch: unpad,
    projections, short convolutions, gates logsigmoid(gk) / gate_logit_normalizer, the recurrence
    (`torch_chunk_gla`, state [N, H, V, K] as fla stores it), cache update, norm and gate, o_proj.
    """

    __init__ = cpu_capable_init(FlaGatedLinearAttention)

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False,
                output_attentions=False, **kwargs):
        """hidden_states: [B, T, hidden_size] -> (o [B, T, hidden_size], None, past_key_values)."""
        if use_fla_kernels(hidden_states):
            return super().forward(hidden_states, attention_mask=attention_mask, past_key_values=past_key_values,
                                   use_cache=use_cache, output_attentions=output_attentions, **kwargs)
        if self.mode == 'fused_chunk':
            raise ValueError("mode 'fused_chunk' is gone from fla 0.6 (fused_chunk_gla); use 'chunk'")
        check_attention_mask(attention_mask)
        batch_size, q_len, _ = hidden_states.shape
        last_state = get_layer_cache(self, past_key_values)
        hidden_states, indices, cu_seqlens = unpad_hidden_states(hidden_states, kwargs.get('cu_seqlens'),
                                                                 attention_mask, q_len)
        if self.use_short_conv:
            q, k, v, conv_state = short_conv_qkv(self, hidden_states, last_state, use_cache, cu_seqlens)
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
        update_layer_cache(self, past_key_values, recurrent_state=recurrent_state,
                           conv_state=conv_state if self.use_short_conv else None, offset=q_len)

        if self.use_output_gate:
            g = self.g_proj(hidden_states)
            if self.fuse_norm_and_gate:
                o = self.g_norm_swish_gate(o, rearrange(g, '... (h d) -> ... h d', d=self.head_v_dim))
                o = rearrange(o, '... h d -> ... (h d)')
            else:
                o = rearrange(self.g_norm(o), '... h d -> ... (h d)') * self.gate_fn(g)
        else:
            o = rearrange(self.g_norm(o), '... h d -> ... (h d)')
        o = self.o_proj(o)
        return repad_hidden_states(o, indices, batch_size, q_len), None, past_key_values


def gla_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """H * d_k * d_v entries, all read and written by every decoding step."""
    check_seq_len(seq_len)
    layer = build_on_meta(GatedLinearAttention, hidden_size, **kwargs)
    size = layer.num_heads * layer.head_k_dim * layer.head_v_dim
    return {'total': size, 'active': size}


@hookimpl
def ramnet_fla_register_mixers(register):
    register('gla', GatedLinearAttention, state_size=gla_state_size,
             description="fla's GatedLinearAttention (GLA); PyTorch chunked path on the CPU")
