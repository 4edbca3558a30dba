"""Pieces shared by the built-in mixer plugins."""

from __future__ import annotations

import inspect
import warnings

import torch
import torch.nn as nn
from einops import rearrange
from fla.layers.utils import repad_hidden_states, update_layer_cache

from ramnet_fla.modules import make_cpu_capable


def cpu_capable_init(fla_class: type[nn.Module]):
    """An `__init__` for a subclass of fla layer `fla_class` that also runs on the CPU.

    It takes the fla layer's named arguments (unknown ones are a TypeError instead of being
    swallowed by a `**kwargs`), turns fla's failed asserts into ValueErrors, then switches the
    layer's fla modules to CPU-capable ones (`make_cpu_capable`; parameters unchanged).
    """
    signature = inspect.signature(fla_class.__init__)
    parameters = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    accepted = [p.name for p in parameters[1:]]

    def __init__(self, *args, **kwargs):
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected argument(s) {unknown}; it accepts: {', '.join(accepted)}")
        try:
            fla_class.__init__(self, *args, **kwargs)
        except AssertionError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from error
        make_cpu_capable(self)

    __init__.__signature__ = signature.replace(parameters=parameters)
    __init__.__doc__ = f"Same arguments as fla's `{fla_class.__name__}` (unknown ones are an error)."
    return __init__


def check_attention_mask(attention_mask) -> None:
    if attention_mask is not None and attention_mask.ndim != 2:
        raise ValueError(
            "attention_mask must be a [batch_size, seq_len] 0/1 padding mask (0 = padding), "
            f"got shape {tuple(attention_mask.shape)}"
        )


def short_conv_qkv(layer: nn.Module, hidden_states: torch.Tensor, last_state, use_cache: bool, cu_seqlens):
    """fla's q/k/v projections through the layer's short convolutions, with their cache.

    Returns q, k, v [B, T, *] and the new conv state (conv_q, conv_k, conv_v).
    """
    conv_q = conv_k = conv_v = None
    if last_state is not None:
        conv_q, conv_k, conv_v = last_state['conv_state']
    q, conv_q = layer.q_conv1d(x=layer.q_proj(hidden_states), cache=conv_q, output_final_state=use_cache,
                               cu_seqlens=cu_seqlens)
    k, conv_k = layer.k_conv1d(x=layer.k_proj(hidden_states), cache=conv_k, output_final_state=use_cache,
                               cu_seqlens=cu_seqlens)
    v, conv_v = layer.v_conv1d(x=layer.v_proj(hidden_states), cache=conv_v, output_final_state=use_cache,
                               cu_seqlens=cu_seqlens)
    return q, k, v, (conv_q, conv_k, conv_v)


def build_on_meta(factory, hidden_size: int, **kwargs) -> nn.Module:
    """The layer `factory` would build, on the meta device (no memory, no compute): for its sizes."""
    with torch.device('meta'), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return factory(hidden_size=hidden_size, layer_idx=None, **kwargs)


def check_seq_len(seq_len) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 0:
        raise ValueError(f"`seq_len` must be an int >= 0, got {seq_len!r}")
    return seq_len


def finish_delta_rule_layer(layer: nn.Module, o, hidden_states, past_key_values, recurrent_state, conv_state,
                            indices, batch_size: int, q_len: int):
    """The common tail of fla's DeltaNet and GatedDeltaNet forwards, on the CPU path.

    Cache update, output norm (gated by g_proj when `use_gate`), o_proj and repad. o: [B, T, HV, V].
    Returns fla's layer result (o [B, T, hidden], None, past_key_values).
    """
    update_layer_cache(layer, past_key_values, recurrent_state=recurrent_state,
                       conv_state=conv_state if layer.use_short_conv else None, offset=q_len)
    if layer.use_gate:
        o = layer.o_norm(o, rearrange(layer.g_proj(hidden_states), '... (h d) -> ... h d', d=layer.head_v_dim))
    else:
        o = layer.o_norm(o)
    o = layer.o_proj(rearrange(o, 'b t h d -> b t (h d)'))
    return repad_hidden_states(o, indices, batch_size, q_len), None, past_key_values
