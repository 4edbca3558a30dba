"""Built-in plugin `deltanet`: fla's DeltaNet, on CUDA with fla's kernels, on the CPU in PyTorch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from fla.layers import DeltaNet as FlaDeltaNet
from fla.layers.delta_net import sum_norm
from fla.layers.utils import get_layer_cache, unpad_hidden_states

from ramnet_fla.modules import use_fla_kernels
from ramnet_fla.ops.fla_torch import torch_chunk_delta_rule
from ramnet_fla.plugin import hookimpl
from ramnet_fla.plugins._common import (
    build_on_meta,
    check_attention_mask,
    check_seq_len,
    cpu_capable_init,
    finish_delta_rule_layer,
    short_conv_qkv,
)


def _elu_p1(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


class DeltaNet(FlaDeltaNet):
    """fla's `DeltaNet` (same arguments, parameters, state_dict and cache layout) that also runs on the CPU.

    CUDA tensors run fla's forward unchanged. CPU tensors run the same steps in PyTorch: unpad,
    projections, short convolutions, q/k activation and normalisation, beta = sigmoid(b_proj)
    (x2 with allow_neg_eigval), the delta rule (`torch_chunk_delta_rule`, state [N, H, K, V]),
    cache update, output norm (and gate), o_proj.
    """

    __init__ = cpu_capable_init(FlaDeltaNet)

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
            q, k, conv_state = self.q_proj(hidden_states), self.k_proj(hidden_states), None
            if self.qk_activation == 'silu':
                q, k = F.silu(q), F.silu(k)
            v = F.silu(self.v_proj(hidden_states))

        q, k = (rearrange(x, '... (h d) -> ... h d', d=self.head_k_dim) for x in (q, k))   # [B, T, H, K]
        v = rearrange(v, '... (h d) -> ... h d', d=self.head_v_dim)                       # [B, T, H, V]
        if self.qk_activation == 'relu':
            q, k = q.relu(), k.relu()
        elif self.qk_activation == 'elu':
            q, k = _elu_p1(q), _elu_p1(k)
        if self.qk_norm == 'sum':
            q, k = sum_norm(q).to(q), sum_norm(k).to(k)
        beta = self.b_proj(hidden_states).sigmoid() if self.use_beta else torch.ones_like(q[..., 0])
        if self.allow_neg_eigval:
            beta = beta * 2.

        recurrent_state = last_state['recurrent_state'] if last_state is not None else None
        o, recurrent_state = torch_chunk_delta_rule(q, k, v, beta, initial_state=recurrent_state,
                                                    output_final_state=use_cache, cu_seqlens=cu_seqlens,
                                                    use_qk_l2norm_in_kernel=(self.qk_norm == 'l2'))
        return finish_delta_rule_layer(self, o, hidden_states, past_key_values, recurrent_state, conv_state,
                                       indices, batch_size, q_len)


def deltanet_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """H * d_k * d_v entries, all read and written by every decoding step."""
    check_seq_len(seq_len)
    layer = build_on_meta(DeltaNet, hidden_size, **kwargs)
    size = layer.num_heads * layer.head_k_dim * layer.head_v_dim
    return {'total': size, 'active': size}


@hookimpl
def ramnet_fla_register_mixers(register):
    register('deltanet', DeltaNet, state_size=deltanet_state_size,
             description="fla's DeltaNet (delta rule); PyTorch chunked path on the CPU")
