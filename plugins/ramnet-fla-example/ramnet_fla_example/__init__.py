"""Example ramnet_fla plugin: `causal_conv`, a gated causal depthwise convolution as a token mixer.

    y_t = o_proj( silu(g_t) * sum_{s < W} weight[:, W-1-s] * x_{t-s} ),   [x, g] = in_proj(h_t)

It follows fla's layer contract: 2-D padding masks, packed `cu_seqlens`, and a decoding state
(the last W-1 inputs of each sequence) in fla's `Cache` under its `layer_idx`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import ramnet_fla


class CausalConvMixer(nn.Module):
    """Gated causal depthwise convolution over the last `kernel_size` tokens.

    Args:
        hidden_size: model width D.
        kernel_size: tokens W each output sees (itself and W-1 before it). Default 4.
        layer_idx: this layer's index in fla's Cache.
    """

    def __init__(self, hidden_size: int, kernel_size: int = 4, layer_idx: int | None = None) -> None:
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"`kernel_size` must be a positive int, got {kernel_size!r}")
        self.hidden_size, self.kernel_size, self.layer_idx = hidden_size, kernel_size, layer_idx
        self.in_proj = nn.Linear(hidden_size, 2 * hidden_size, bias=False)
        self.weight = nn.Parameter(torch.randn(hidden_size, kernel_size) / kernel_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False,
                output_attentions=False, **kwargs):
        """hidden_states: [B, T, D] -> (o [B, T, D], None, past_key_values)."""
        batch, seq_len, width = hidden_states.shape
        x, gate = self.in_proj(hidden_states).chunk(2, dim=-1)                # [B, T, D] each
        cu_seqlens = kwargs.get('cu_seqlens')
        if cu_seqlens is None and attention_mask is not None:
            x = x * attention_mask[:, -seq_len:, None].to(x.dtype)           # padding writes nothing
        # position of each token inside its sequence (packed input restarts at every boundary)
        position = torch.arange(seq_len, device=x.device).expand(batch, seq_len)
        if cu_seqlens is not None:
            starts = cu_seqlens[:-1].repeat_interleave(cu_seqlens.diff())
            position = (torch.arange(seq_len, device=x.device) - starts)[None]

        W, history = self.kernel_size, self.kernel_size - 1
        state = None
        if past_key_values is not None and len(past_key_values) > self.layer_idx:
            state = past_key_values[self.layer_idx]['conv_state']             # [B, W-1, D]
        if state is None:
            state = x.new_zeros(batch, history, width)                        # nothing before the start
        elif cu_seqlens is not None:
            raise ValueError("packed input (`cu_seqlens`) cannot continue a cache")
        inputs = torch.cat([state.to(x.dtype), x], dim=1)                      # [B, W-1+T, D]
        y = torch.zeros_like(x)
        for shift in range(W):                                                 # the input `shift` tokens back
            tap = inputs[:, history - shift: history - shift + seq_len]
            if cu_seqlens is not None:                                         # never across a sequence start
                tap = tap * (position >= shift)[..., None].to(tap.dtype)
            y = y + tap * self.weight[:, W - 1 - shift]
        if past_key_values is not None:
            past_key_values.update(conv_state=inputs[:, seq_len:], layer_idx=self.layer_idx, offset=seq_len)
        return self.o_proj(y * F.silu(gate)), None, past_key_values


def causal_conv_state_size(hidden_size: int, seq_len: int, kernel_size: int = 4) -> dict:
    """The last W-1 inputs per sequence, all read by a decoding step."""
    size = (kernel_size - 1) * hidden_size
    return {'total': size, 'active': size}


@ramnet_fla.hookimpl
def ramnet_fla_register_mixers(register):
    register('causal_conv', CausalConvMixer, state_size=causal_conv_state_size,
             description='gated causal depthwise convolution (example third-party plugin)')
