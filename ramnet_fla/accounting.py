"""State accounting: how much recurrent state a model keeps, and how much a decoding step touches.

Each mixer reports its own numbers through the `state_size` it registered (SPEC section 4):
RAM total H*M*(V+1), active 2*K*H*V; GLA and DeltaNet H*d_k*d_v for both; softmax attention
2*T*d_model for both, T being the cached tokens. A model's numbers are the sums over its layers.
"""

from __future__ import annotations

from ramnet_fla.plugin import get_mixer, layer_mixer_spec


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
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
        raise ValueError(f"`seq_len` must be an int >= 0, got {seq_len!r}")
    for attribute in ('hidden_size', 'num_hidden_layers'):
        value = getattr(config, attribute, None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`config.{attribute}` must be a positive int, got {value!r}")
    layers = []
    for layer_idx in range(config.num_hidden_layers):
        spec = layer_mixer_spec(config, layer_idx)
        name = spec.pop('name')
        info = get_mixer(name)
        if info.state_size is None:
            total = active = None
        else:
            sizes = info.state_size(hidden_size=config.hidden_size, seq_len=seq_len, **spec)
            total, active = _check_sizes(name, sizes)
        layers.append({'layer': layer_idx, 'mixer': name, 'total': total, 'active': active})
    known = all(layer['total'] is not None for layer in layers)
    return {
        'total': sum(layer['total'] for layer in layers) if known else None,
        'active': sum(layer['active'] for layer in layers) if known else None,
        'layers': layers,
    }


def _check_sizes(name: str, sizes) -> tuple[int, int]:
    if not isinstance(sizes, dict) or not {'total', 'active'} <= set(sizes):
        raise TypeError(f"state_size of mixer {name!r} must return {{'total': int, 'active': int}}, got {sizes!r}")
    values = sizes['total'], sizes['active']
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise TypeError(f"state_size of mixer {name!r} must return non-negative ints, got {sizes!r}")
    return values
