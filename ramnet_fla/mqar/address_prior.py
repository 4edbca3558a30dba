"""A recall prior for large address spaces: tie read and write projections, delay the write by a token.

Why large M learns slowly (SPEC section 3, measured in docs/mqar.md): at initialisation a token's
K write slots and a later token's K read slots are independent random picks among M, so they meet
with probability about K*K/M (1 for M=64, K=8; 1/16 for M=1024). A read of a slot nobody wrote
returns 0, and a slot written once reads back its value exactly whatever the write weight, so
neither the read nor the write logits get a gradient that says where the matching write went:
nothing pulls the two addresses together, and with M=1024 the model stalls.

The prior makes them meet from the first step, with two changes (everything stays trainable):
- `tie`: the write-logit projection is the read-logit projection (k_proj is q_proj), so the same
  input gives the same address for reading and writing;
- `shift` (initialisation only): the short convolution of the write logits starts as a one-token
  delay and that of the read logits as the identity, so token t writes its value at the address
  that a later copy of token t-1 reads. For MQAR, the value after a key is written where that
  key's query reads.

RAMAttention has both as options (`tie_address_projections=True, address_conv_init='shift'`);
this module applies the same to any layer, so baselines can get the same prior.

This is H3's shift-then-match idea (a key is the previous token) put into the address path. It
works for any mixer with fla's names (`q_proj`, `k_proj`, `q_conv1d`, `k_conv1d`): RAMAttention,
fla's GatedLinearAttention and DeltaNet.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ramnet_fla.plugin import build_mixer, normalize_spec


def apply_address_prior(mixer: nn.Module, tie: bool = True, shift: bool = True) -> nn.Module:
    """Tie `mixer.k_proj` to `mixer.q_proj` and/or initialise its q/k short convolutions as identity/delay.

    Returns the mixer (modified in place). `shift` needs the mixer's short convolutions
    (`use_short_conv=True`): `q_conv1d` and `k_conv1d` with weight [D, 1, W], newest tap last.
    """
    for name in ('q_proj', 'k_proj'):
        if not isinstance(getattr(mixer, name, None), nn.Module):
            raise TypeError(f"apply_address_prior needs a mixer with `q_proj` and `k_proj`, "
                            f"{type(mixer).__name__} has no {name!r}")
    if tie:
        if mixer.q_proj.weight.shape != mixer.k_proj.weight.shape:
            raise ValueError(f"`tie` needs q_proj and k_proj of one shape, got {tuple(mixer.q_proj.weight.shape)} "
                             f"and {tuple(mixer.k_proj.weight.shape)}")
        mixer.k_proj = mixer.q_proj
    if shift:
        q_conv, k_conv = getattr(mixer, 'q_conv1d', None), getattr(mixer, 'k_conv1d', None)
        if q_conv is None or k_conv is None:
            raise ValueError(f"`shift` needs the short convolutions of {type(mixer).__name__}: build it with "
                             "use_short_conv=True")
        width = k_conv.weight.shape[-1]
        if width < 2:
            raise ValueError(f"`shift` needs a short convolution of size >= 2, got {width}")
        with torch.no_grad():
            q_conv.weight.zero_()
            q_conv.weight[..., width - 1] = 1.0          # y_t = x_t
            k_conv.weight.zero_()
            k_conv.weight[..., width - 2] = 1.0          # y_t = x_{t-1}
            for conv in (q_conv, k_conv):
                if getattr(conv, 'bias', None) is not None:
                    conv.bias.zero_()
    return mixer


def mixer_with_address_prior(spec, tie: bool = True, shift: bool = True):
    """A mixer factory `(hidden_size, layer_idx) -> nn.Module`: the registered mixer `spec` with the prior.

    Use it as `MQARRun(mixer=mixer_with_address_prior({'name': 'ram', 'use_short_conv': True}))`.
    """
    spec = normalize_spec(spec)
    if spec['name'] == 'ram':
        # RAMAttention has the prior as options: the model's config then records it
        layer_spec = dict(spec, tie_address_projections=tie, address_conv_init='shift' if shift else None)

        def factory(hidden_size: int, layer_idx: int) -> nn.Module:
            return build_mixer(layer_spec, hidden_size, layer_idx)
    else:
        def factory(hidden_size: int, layer_idx: int) -> nn.Module:
            return apply_address_prior(build_mixer(spec, hidden_size, layer_idx), tie=tie, shift=shift)

    factory.__name__ = f"{spec['name']}+prior" if tie and shift else f"{spec['name']}+{'tie' if tie else 'shift'}"
    factory.spec = dict(spec, address_prior={'tie': tie, 'shift': shift})
    return factory


def address_prior_problem(spec, hidden_size: int = 64) -> str | None:
    """Why the prior cannot be given to the registered mixer `spec` (None: it can).

    RAMAttention has it as options; another mixer needs fla's `q_proj`/`k_proj` of one shape and its
    q/k short convolutions, which a mixer built at `hidden_size` (layer 0) is checked for.
    """
    spec = normalize_spec(spec)
    if spec['name'] == 'ram':
        return None if spec.get('use_short_conv') else 'it is built without short convolutions'
    mixer = build_mixer(spec, hidden_size, 0)
    projections = [getattr(mixer, name, None) for name in ('q_proj', 'k_proj')]
    if not all(isinstance(p, nn.Linear) for p in projections):
        return 'it has no q_proj and k_proj'
    if projections[0].weight.shape != projections[1].weight.shape:
        return 'its q_proj and k_proj differ in shape'
    convs = [getattr(mixer, name, None) for name in ('q_conv1d', 'k_conv1d')]
    if any(c is None for c in convs) or convs[1].weight.shape[-1] < 2:
        return 'it has no q/k short convolutions'
    return None
