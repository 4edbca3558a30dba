"""The base of fla's layers on the CPU: fla's constructor, fla's forward on accelerators, and the
PyTorch forward's shared steps (unpad, cache, output projection, repad) written once."""

from __future__ import annotations

import inspect

import torch
import torch.nn as nn
from einops import rearrange
from fla.layers.utils import get_layer_cache, repad_hidden_states, unpad_hidden_states, update_layer_cache

from ramnet_fla.fla_cpu.dispatch import CPUDispatch
from ramnet_fla.fla_cpu.modules import make_cpu_capable
from ramnet_fla.utils.checks import check_attention_mask


def cpu_capable_init(fla_class: type[nn.Module]):
    """An `__init__` for a subclass of fla layer `fla_class` that also runs on the CPU.

    It takes the fla layer's named arguments (unknown ones are a TypeError instead of being
    swallowed by a `**kwargs`), turns fla's failed asserts into ValueErrors, then switches the
    modules fla's constructor just built (short convolutions, norms, gate activations) to the
    CPU-capable subclasses of `ramnet_fla.fla_cpu.modules`. Switching, rather than building our
    own, keeps fla's constructor the only one: same parameters, same initialisation, no copy.
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


class CPUCapableLayer(CPUDispatch):
    """Base for `class Layer(CPUCapableLayer, fla.layers.Layer)`: fla's forward on accelerators, on
    the CPU fla's steps in PyTorch. A subclass writes the two steps that differ per layer:

    - `mix_torch(hidden_states, last_state, use_cache, cu_seqlens)`: projections, short
      convolutions and the op; returns (o [B, T, H, V], recurrent_state, conv_state or None);
    - `gate_torch(o, hidden_states)`: output norm and gate; returns [B, T, H * V].
    """

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        """Checks the padding mask (on every device; fla's forward does not), then dispatches."""
        if kwargs.get('cu_seqlens') is None:                        # packed input ignores the mask
            check_attention_mask(attention_mask, hidden_states)
        return super().forward(hidden_states, attention_mask, *args, **kwargs)

    def forward_torch(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False,
                      output_attentions=False, **kwargs):
        """hidden_states: [B, T, hidden_size] -> (o [B, T, hidden_size], None, past_key_values)."""
        batch_size, q_len, _ = hidden_states.shape
        last_state = get_layer_cache(self, past_key_values)
        hidden_states, indices, cu_seqlens = unpad_hidden_states(hidden_states, kwargs.get('cu_seqlens'),
                                                                 attention_mask, q_len)
        o, recurrent_state, conv_state = self.mix_torch(hidden_states, last_state, use_cache, cu_seqlens)
        update_layer_cache(self, past_key_values, recurrent_state=recurrent_state, conv_state=conv_state, offset=q_len)
        o = self.o_proj(self.gate_torch(o, hidden_states))
        return repad_hidden_states(o, indices, batch_size, q_len), None, past_key_values

    def mix_torch(self, hidden_states, last_state, use_cache: bool, cu_seqlens):
        raise NotImplementedError

    def gate_torch(self, o: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def short_conv_qkv(self, hidden_states: torch.Tensor, last_state, use_cache: bool, cu_seqlens):
        """fla's q/k/v projections through the layer's short convolutions, with their cache.

        Returns q, k, v [B, T, *] and the new conv state (conv_q, conv_k, conv_v).
        """
        conv_q = conv_k = conv_v = None
        if last_state is not None:
            conv_q, conv_k, conv_v = last_state['conv_state']
        q, conv_q = self.q_conv1d(x=self.q_proj(hidden_states), cache=conv_q, output_final_state=use_cache,
                                  cu_seqlens=cu_seqlens)
        k, conv_k = self.k_conv1d(x=self.k_proj(hidden_states), cache=conv_k, output_final_state=use_cache,
                                  cu_seqlens=cu_seqlens)
        v, conv_v = self.v_conv1d(x=self.v_proj(hidden_states), cache=conv_v, output_final_state=use_cache,
                                  cu_seqlens=cu_seqlens)
        return q, k, v, (conv_q, conv_k, conv_v)


def delta_rule_gate(layer: nn.Module, o: torch.Tensor, hidden_states: torch.Tensor) -> torch.Tensor:
    """The output step of fla's DeltaNet and GatedDeltaNet: o_norm, gated by g_proj with `use_gate`.

    o: [B, T, HV, V] -> [B, T, HV * V].
    """
    if layer.use_gate:
        o = layer.o_norm(o, rearrange(layer.g_proj(hidden_states), '... (h d) -> ... h d', d=layer.head_v_dim))
    else:
        o = layer.o_norm(o)
    return rearrange(o, 'b t h d -> b t (h d)')
