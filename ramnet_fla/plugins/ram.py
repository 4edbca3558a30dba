"""Built-in plugin `ram`: RAM-Net (`ramnet_fla.layers.RAMAttention`)."""

from __future__ import annotations

from ramnet_fla.layers import RAMAttention
from ramnet_fla.plugin import hookimpl
from ramnet_fla.plugins._common import build_on_meta, check_seq_len


def ram_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """Total H * M * (V + 1) (slot values and masses); active 2 * K * H * V (K slots read, K written)."""
    check_seq_len(seq_len)
    layer = build_on_meta(RAMAttention, hidden_size, **kwargs)
    heads, slots, value_dim, topk = layer.num_heads, layer.num_slots, layer.head_dim, layer.topk
    return {'total': heads * slots * (value_dim + 1), 'active': 2 * topk * heads * value_dim}


@hookimpl
def ramnet_fla_register_mixers(register):
    register('ram', RAMAttention, state_size=ram_state_size,
             description='RAM-Net: K-hot reads and writes into M = d_p**U memory slots per head (arXiv 2602.11958)')
