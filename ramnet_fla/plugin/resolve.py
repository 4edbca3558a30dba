"""From a mixer spec to a mixer: what layer i gets, what a name means, and building it.

A spec is a mixer name or a dict `{'name': ..., **kwargs}`; `normalize_spec` is the one place that
checks one. `layer_mixer_spec` is the one answer to "which mixer does layer i get": the model,
`RAMNetConfig.mixer_for_layer` and the state accounting all ask it.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping

import torch.nn as nn

from ramnet_fla.plugin.manager import MixerInfo, get_plugin_manager

# Arguments the model passes to every factory itself; a spec may not set them.
RESERVED_SPEC_KEYS = ('hidden_size', 'layer_idx')


class UnknownMixerError(ValueError):
    """A spec names a mixer that no loaded plugin registered."""


def normalize_spec(spec, where: str = 'mixer spec') -> dict:
    """A mixer spec as a new dict `{'name': ..., **kwargs}`; a string `s` means `{'name': s}`.

    where: what the spec is (e.g. 'config.mixers[2]'), for the error messages.
    """
    if isinstance(spec, str):
        spec = {'name': spec}
    elif isinstance(spec, Mapping):
        spec = copy.deepcopy(dict(spec))
    else:
        raise TypeError(f"{where} must be a mixer name or a dict {{'name': ..., **kwargs}}, got {type(spec).__name__}")
    if not isinstance(spec.get('name'), str):
        raise ValueError(f"{where} must have a string 'name', got {spec!r}")
    if not spec['name']:
        raise ValueError(f"{where}: a mixer name must not be empty")
    for key in spec:
        if not isinstance(key, str):
            raise TypeError(f"{where} must have string keys, got {key!r}")
    reserved = [key for key in RESERVED_SPEC_KEYS if key in spec]
    if reserved:
        raise ValueError(f"{where} may not set {reserved}: the model passes them to every mixer; got {spec!r}")
    return spec


def layer_mixer_spec(config, layer_idx: int) -> dict:
    """The mixer spec `{'name': ..., **kwargs}` of layer `layer_idx` (a fresh dict each time).

    The first plugin whose `ramnet_fla_select_mixer(config, layer_idx)` returns a spec wins; else
    `config.mixers` decides: a list of names or spec dicts, repeated when shorter than the model.
    config: anything with `mixers` (e.g. a RAMNetConfig).
    """
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or layer_idx < 0:
        raise ValueError(f"`layer_idx` must be an int >= 0, got {layer_idx!r}")
    manager = get_plugin_manager()
    selected = manager.select_mixer(config, layer_idx)
    if selected is not None:
        try:
            return normalize_spec(selected)
        except (TypeError, ValueError):                             # say which plugin gave it
            plugin = manager.answering_plugin(config, layer_idx)
            return normalize_spec(selected, f"ramnet_fla_select_mixer of plugin {plugin!r} for layer {layer_idx}")
    choices = getattr(config, 'mixers', None)
    if isinstance(choices, (str, Mapping)):
        choices = [choices]
    if not isinstance(choices, (list, tuple)) or not choices:
        raise ValueError(f"`config.mixers` must be a non-empty list of mixer names or spec dicts, got {choices!r}")
    position = layer_idx % len(choices)
    return normalize_spec(choices[position], f"config.mixers[{position}]")


def mixers() -> dict[str, MixerInfo]:
    """Every registered mixer, by name."""
    return get_plugin_manager().mixers()


def get_mixer(name: str) -> MixerInfo:
    """The registered mixer `name`; an unknown name raises `UnknownMixerError` listing the known ones."""
    manager = get_plugin_manager()
    known = manager.mixers()
    if name not in known:
        failed = f"; plugins that failed to load: {sorted(manager.failures)}" if manager.failures else ''
        raise UnknownMixerError(f"unknown mixer {name!r}; known mixers: {', '.join(sorted(known)) or '(none)'}{failed}")
    return known[name]


def build_mixer(spec, hidden_size: int, layer_idx: int | None):
    """Build the token mixer `spec` (a name or `{'name': ..., **kwargs}`) for one layer.

    Calls the registered `factory(hidden_size=hidden_size, layer_idx=layer_idx, **kwargs)`.
    Raises UnknownMixerError (listing the known mixers) for an unknown name, TypeError for
    arguments the factory does not take, ValueError for values it rejects, RuntimeError for any
    other failure of the factory; each message names the mixer, its plugin and the layer.
    """
    spec = normalize_spec(spec)
    name = spec.pop('name')
    info = get_mixer(name)
    _check_factory_arguments(info, spec)
    where = f"mixer {name!r} (plugin {info.plugin!r})" + ('' if layer_idx is None else f" for layer {layer_idx}")
    try:
        mixer = info.factory(hidden_size=hidden_size, layer_idx=layer_idx, **spec)
    except AssertionError as error:                                 # fla layers check with assert
        raise ValueError(f"{where} rejected its arguments {spec}: {error}") from error
    except (TypeError, ValueError) as error:                        # the factory's own argument checks
        if type(error) in (TypeError, ValueError):
            raise type(error)(f"{where}: {error}") from error
        error.add_note(f"raised by {where}")                        # a subclass keeps its type
        raise
    except Exception as error:                                      # noqa: BLE001 - any plugin bug
        raise RuntimeError(f"{where} failed to build: {type(error).__name__}: {error}") from error
    if not isinstance(mixer, nn.Module):
        raise TypeError(f"the factory of mixer {name!r} (plugin {info.plugin!r}) returned "
                        f"{type(mixer).__name__}, expected a torch.nn.Module")
    return mixer


def _check_factory_arguments(info: MixerInfo, kwargs: dict) -> None:
    try:
        parameters = inspect.signature(info.factory).parameters.values()
    except (TypeError, ValueError):                                 # no signature to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return                                                      # the factory checks for itself
    accepted = [p.name for p in parameters
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                and p.name not in RESERVED_SPEC_KEYS]
    unexpected = sorted(set(kwargs) - set(accepted))
    if unexpected:
        raise TypeError(f"mixer {info.name!r} got unexpected argument(s) {unexpected}; "
                        f"it accepts: {', '.join(accepted) or '(none)'}")
