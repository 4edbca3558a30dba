"""State accounting: how much recurrent state a model keeps, and how much a decoding step touches.

Each mixer reports its own numbers through the `state_size` it registered (SPEC section 4); the
built-in mixers' formulas live here, each reading the sizes off the layer built on the meta device:
RAM total H*M*(V+1), active 2*K*H*V; GLA and DeltaNet H*d_k*d_v for both (Gated DeltaNet with its
HV value heads); softmax attention 2*T*num_kv_heads*head_dim for both, T being the cached tokens.
A model's numbers are the sums over its layers.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ramnet_fla.fla_cpu.layers import DeltaNet, GatedDeltaNet, GatedLinearAttention
from ramnet_fla.layers import RAMAttention, SoftmaxAttention
from ramnet_fla.plugin import get_mixer, layer_mixer_spec, normalize_spec


def check_seq_len(seq_len) -> int:
    """`seq_len` (tokens seen) must be an int >= 0; returned unchanged."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
        raise ValueError(f"`seq_len` must be an int >= 0, got {seq_len!r}")
    return seq_len


def build_on_meta(factory, hidden_size: int, **kwargs) -> nn.Module:
    """The layer `factory` would build, on the meta device (no memory, no compute): for its sizes."""
    with torch.device('meta'), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return factory(hidden_size=hidden_size, layer_idx=None, **kwargs)


def ram_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """Total H * M * (V + 1) (slot values and masses); active 2 * K * H * V (K slots read, K written)."""
    check_seq_len(seq_len)
    layer = build_on_meta(RAMAttention, hidden_size, **kwargs)
    heads, slots, value_dim, topk = layer.num_heads, layer.num_slots, layer.head_dim, layer.topk
    return {'total': heads * slots * (value_dim + 1), 'active': 2 * topk * heads * value_dim}


def _matrix_state(factory, hidden_size: int, seq_len: int, kwargs: dict, heads: str = 'num_heads') -> dict:
    """One [d_k, d_v] matrix per head (`heads` names the layer's head count), all read and written
    by every decoding step."""
    check_seq_len(seq_len)
    layer = build_on_meta(factory, hidden_size, **kwargs)
    size = getattr(layer, heads) * layer.head_k_dim * layer.head_v_dim
    return {'total': size, 'active': size}


def gla_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """H * d_k * d_v entries, all read and written by every decoding step."""
    return _matrix_state(GatedLinearAttention, hidden_size, seq_len, kwargs)


def deltanet_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """H * d_k * d_v entries, all read and written by every decoding step."""
    return _matrix_state(DeltaNet, hidden_size, seq_len, kwargs)


def gated_deltanet_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """HV * d_k * d_v entries (one matrix per value head), all read and written by every decoding step."""
    return _matrix_state(GatedDeltaNet, hidden_size, seq_len, kwargs, heads='num_v_heads')


def attention_state_size(hidden_size: int, seq_len: int, **kwargs) -> dict:
    """Keys and values of every cached token: 2 * T * num_kv_heads * head_dim, all read by a decoding step."""
    check_seq_len(seq_len)
    layer = build_on_meta(SoftmaxAttention, hidden_size, **kwargs)
    size = 2 * seq_len * layer.num_kv_heads * layer.head_dim
    return {'total': size, 'active': size}


def mixer_state_size(spec, hidden_size: int, seq_len: int) -> dict | None:
    """{'total': int, 'active': int} of the registered mixer `spec` (a name or a spec dict) after
    `seq_len` tokens, or None if its plugin registered no `state_size`."""
    spec = normalize_spec(spec)
    name = spec.pop('name')
    info = get_mixer(name)
    if info.state_size is None:
        return None
    sizes = info.state_size(hidden_size=hidden_size, seq_len=seq_len, **spec)
    if not isinstance(sizes, dict) or not {'total', 'active'} <= set(sizes):
        raise TypeError(f"state_size of mixer {name!r} must return {{'total': int, 'active': int}}, got {sizes!r}")
    values = sizes['total'], sizes['active']
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise TypeError(f"state_size of mixer {name!r} must return non-negative ints, got {sizes!r}")
    return {'total': values[0], 'active': values[1]}


def state_size(config, seq_len: int) -> dict:
    """Per-sequence state of the model `config` describes, after `seq_len` tokens.

    Args:
        config: anything with `hidden_size`, `num_hidden_layers` and `mixers` (e.g. a RAMNetConfig);
            plugins' `ramnet_fla_select_mixer` hooks are honoured as when the model is built.
        seq_len: tokens seen (what attention caches; recurrent mixers do not depend on it).

    Returns:
        {"total": int, "active": int, "layers": [{"layer", "mixer", "total", "active"}, ...]}:
        "total" counts every state entry one sequence keeps, "active" the entries one decoding
        step reads or writes, both summed over layers. If a mixer registered no `state_size`, its
        layer reports None and so do the sums.
    """
    check_seq_len(seq_len)
    for attribute in ('hidden_size', 'num_hidden_layers'):
        value = getattr(config, attribute, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`config.{attribute}` must be a positive int, got {value!r}")
    layers = []
    for layer_idx in range(config.num_hidden_layers):
        spec = layer_mixer_spec(config, layer_idx)
        sizes = mixer_state_size(spec, config.hidden_size, seq_len)
        total, active = (None, None) if sizes is None else (sizes['total'], sizes['active'])
        layers.append({'layer': layer_idx, 'mixer': spec['name'], 'total': total, 'active': active})
    known = all(layer['total'] is not None for layer in layers)
    return {
        'total': sum(layer['total'] for layer in layers) if known else None,
        'active': sum(layer['active'] for layer in layers) if known else None,
        'layers': layers,
    }
