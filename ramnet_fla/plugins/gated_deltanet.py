"""Built-in plugin `gated_deltanet`: fla's GatedDeltaNet, on CUDA with fla's kernels, on the CPU in PyTorch."""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange
from fla.layers import GatedDeltaNet as FlaGatedDeltaNet
from fla.layers.utils import get_layer_cache, unpad_hidden_states

from ramnet_fla.modules import use_fla_kernels
from ramnet_fla.ops.fla_torch import torch_chunk_gated_delta_rule
from ramnet_fla.plugin import hookimpl
from ramnet_fla.plugins._common import (
    build_on_meta,
    check_attention_mask,
    check_seq_len,
    cpu_capable_init,
    finish_delta_rule_layer,
    short_conv_qkv,
)


class GatedDeltaNet(FlaGatedDeltaNet):
    """fla's `GatedDeltaNet` (same arguments, parameters, state_dict and cache layout) that also runs on the CPU.

    CUDA tensors run fla's forward unchanged. CPU tensors run the same steps in PyTorch: unpad,
    projections, short convolutions, the gate g = -exp(A_log) * softplus(a_proj + dt_bias) and
    beta = sigmoid(b_proj) (x2 with allow_neg_eigval) that fla's kernel computes inside, the gated
    delta rule with L2-normalised q, k (`torch_chunk_gated_delta_rule`, state [N, HV, V, K]),
    cache update, output norm (and gate), o_proj.
    """

    __init__ = cpu_capable_init(FlaGatedDeltaNet)

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False,
                output_attentions=False, **kwargs):
        """hidden_states: [B, T, hidden_size] -> (o [B, T, hidden_size], None, past_key_values)."""
        if use_fla_kernels(hidden_states):
            return super().forward(hidden_states, attention_mask=attention_mask, past_key_values=past_key_values,
                                   use_cache=use_cache, output_attentions=output_attentions, **kwargs)
        check_attention_mask(attention_mask)
        batch_size, q_len, _ = hidden_states.shape
        last_state = get_layer_cache(self, past_key_values)
        hidden_states, indices, cu_seqlens = unpad_hidden_states(hidden_states, kwargs.get('cu_seqlens'),
                                                                 attention_mask, q_len)
        if self.use_short_conv:
            q, k, v, conv_state = short_conv_qkv(self, hidden_states, last_state, use_cache, cu_seqlens)
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
        return finish_delta_rule_layer(self, o, hidden_states, past_key_values, recurrent_state, conv_state,
                                       indices, batch_size, q_len)


def gated_deltanet_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """HV * d_k * d_v entries, all read and written by every decoding step."""
    check_seq_len(seq_len)
    layer = build_on_meta(GatedDeltaNet, hidden_size, **kwargs)
    size = layer.num_v_heads * layer.head_k_dim * layer.head_v_dim
    return {'total': size, 'active': size}


@hookimpl
def ramnet_fla_register_mixers(register):
    register('gated_deltanet', GatedDeltaNet, state_size=gated_deltanet_state_size,
             description="fla's GatedDeltaNet (gated delta rule); PyTorch chunked path on the CPU")
