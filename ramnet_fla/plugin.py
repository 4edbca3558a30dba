"""The plugin manager: finds mixer plugins and builds a model's token mixers from them.

Data flows one way: config -> `layer_mixer_spec` (plugins may override the config) -> `build_mixer`
-> the registered factory -> an `nn.Module`. The contract plugins write against lives in
`ramnet_fla.hookspecs`.

Plugins come from the entry-point group `ramnet_fla` of every installed distribution, ramnet-fla's
own built-in mixers included (`[project.entry-points.ramnet_fla]` in its pyproject.toml). Built-ins
are loaded first, so their names cannot be taken over; if the installed metadata predates an entry
point (e.g. an old editable install), the built-in module is still registered directly.

A plugin that fails to import, to register or to run its registration hook is reported by name
(a `PluginLoadWarning`, and `plugin_manager.failures`) and skipped; the others keep working.
Tests use `create_plugin_manager(entry_points=False)` with `use_plugin_manager(...)`, or set
`RAMNET_FLA_LOAD_ENTRY_POINTS=0`, so they never see whatever else happens to be installed.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.metadata
import inspect
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy
import torch.nn as nn

from ramnet_fla import hookspecs

PROJECT_NAME = 'ramnet_fla'
ENTRY_POINT_GROUP = 'ramnet_fla'
ENTRY_POINTS_ENV_VAR = 'RAMNET_FLA_LOAD_ENTRY_POINTS'

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# The built-in plugins, exactly as pyproject.toml declares them under [project.entry-points.ramnet_fla].
BUILTIN_PLUGINS: dict[str, str] = {
    'ram': 'ramnet_fla.plugins.ram',
    'gla': 'ramnet_fla.plugins.gla',
    'deltanet': 'ramnet_fla.plugins.deltanet',
    'gated_deltanet': 'ramnet_fla.plugins.gated_deltanet',
    'attention': 'ramnet_fla.plugins.attention',
}

# Arguments the model passes to every factory itself; a spec may not set them.
RESERVED_SPEC_KEYS = ('hidden_size', 'layer_idx')


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded or registered; it is skipped and the others keep working."""


class UnknownMixerError(ValueError):
    """A spec names a mixer that no loaded plugin registered."""


@dataclass(frozen=True)
class MixerInfo:
    """A registered token mixer.

    name: the name specs use; factory: `factory(hidden_size=..., layer_idx=..., **kwargs)` -> nn.Module;
    description: one line; state_size: `state_size(hidden_size=..., seq_len=..., **kwargs)` ->
    {"total": int, "active": int}, or None; plugin: the name of the plugin that registered it.
    """

    name: str
    factory: Callable[..., Any]
    description: str
    state_size: Callable[..., dict] | None
    plugin: str


class RAMNetPluginManager(pluggy.PluginManager):
    """pluggy's PluginManager for project `ramnet_fla`, with per-plugin error isolation.

    failures: plugin name -> what went wrong (import, registration, or its registration hook).
    sources: plugin name -> where it came from (entry point, built-in module, or an object).
    """

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.failures: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self._mixers: dict[str, MixerInfo] | None = None

    # registration ---------------------------------------------------------------------------------

    def register(self, plugin, name: str | None = None) -> str | None:
        """Register `plugin` and check that it implements only hooks of `ramnet_fla.hookspecs`."""
        name = super().register(plugin, name)
        if name is None:                                            # blocked
            return None
        hooks = self.get_hookcallers(plugin) or ()
        unknown = [hook.name for hook in hooks if not hook.has_spec()]
        wrappers = [hook.name for hook in hooks for impl in hook.get_hookimpls()
                    if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)]
        if unknown or wrappers:
            self.unregister(plugin)
            known = sorted(n for n in vars(hookspecs) if n.startswith(PROJECT_NAME + '_'))
            problem = (f"implements unknown hook(s) {unknown}; known hooks: {known}" if unknown
                       else f"implements {wrappers} as a wrapper, which ramnet_fla hooks do not support")
            raise pluggy.PluginValidationError(plugin, f"plugin {name!r} {problem}")
        self.sources.setdefault(name, f"object {plugin!r}")
        self._mixers = None
        return name

    def unregister(self, plugin=None, name: str | None = None):
        plugin = super().unregister(plugin, name)
        self._mixers = None
        return plugin

    def load_plugin(self, name: str, load: Callable[[], Any], source: str) -> bool:
        """Import (via `load`) and register one plugin; on failure report it by name and go on."""
        if self.has_plugin(name) or self.is_blocked(name):
            return False
        try:
            plugin = load()
            self.register(plugin, name=name)
        except Exception as error:                                 # noqa: BLE001 - any plugin bug
            self._report(name, f"failed to load from {source}: {type(error).__name__}: {error}")
            return False
        self.sources[name] = source
        return True

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load every installed entry point of `group`, ramnet-fla's built-ins first."""
        builtin_order = {module: i for i, module in enumerate(BUILTIN_PLUGINS.values())}
        found = sorted(importlib.metadata.entry_points(group=group),
                       key=lambda ep: (builtin_order.get(ep.value, len(builtin_order)), ep.name))
        for entry_point in found:
            dist = getattr(entry_point, 'dist', None)
            origin = f" ({dist.name} {dist.version})" if dist is not None else ''
            self.load_plugin(entry_point.name, entry_point.load,
                             f"entry point {group}:{entry_point.name} = {entry_point.value}{origin}")

    def load_builtins(self) -> None:
        """Register the built-in plugins that entry points did not already provide."""
        registered = {getattr(p, '__name__', None) for p in self.get_plugins()}
        for name, module in BUILTIN_PLUGINS.items():
            if module not in registered and name not in self.failures:
                self.load_plugin(name, lambda module=module: importlib.import_module(module),
                                 f"built-in module {module}")

    def _report(self, name: str, message: str) -> None:
        self.failures[name] = message
        warnings.warn(f"ramnet_fla plugin {name!r} {message}; it is skipped, the other plugins still work",
                      PluginLoadWarning, stacklevel=3)

    # mixers -------------------------------------------------------------------------------------

    def mixers(self) -> dict[str, MixerInfo]:
        """All registered mixers by name (collected once, again after plugins change)."""
        if self._mixers is None:
            self._mixers = self._collect_mixers()
        return dict(self._mixers)

    def _collect_mixers(self) -> dict[str, MixerInfo]:
        collected: dict[str, MixerInfo] = {}
        # hook implementations in registration order: built-ins first, so they keep their names
        for impl in self.hook.ramnet_fla_register_mixers.get_hookimpls():
            plugin_name = impl.plugin_name
            offered: dict[str, MixerInfo] = {}
            register = _registration_callback(plugin_name, offered)
            try:
                impl.function(**{arg: register for arg in impl.argnames})
            except Exception as error:                             # noqa: BLE001 - any plugin bug
                self._report(plugin_name, f"failed in ramnet_fla_register_mixers: {type(error).__name__}: {error}")
                continue
            for name, info in offered.items():
                if name in collected:
                    self._report(plugin_name, f"registers mixer {name!r}, which plugin "
                                              f"{collected[name].plugin!r} already registered")
                    continue
                collected[name] = info
        return collected

    def select_mixer(self, config, layer_idx: int):
        """The first non-None answer of `ramnet_fla_select_mixer` (latest plugin first), or None."""
        for impl in reversed(self.hook.ramnet_fla_select_mixer.get_hookimpls()):
            arguments = {'config': config, 'layer_idx': layer_idx}
            try:
                result = impl.function(**{arg: arguments[arg] for arg in impl.argnames})
            except Exception as error:
                raise RuntimeError(f"plugin {impl.plugin_name!r} failed in ramnet_fla_select_mixer "
                                   f"for layer {layer_idx}: {type(error).__name__}: {error}") from error
            if result is not None:
                return normalize_spec(result, f"ramnet_fla_select_mixer of plugin {impl.plugin_name!r} "
                                              f"for layer {layer_idx}")
        return None


def _registration_callback(plugin: str, offered: dict[str, MixerInfo]) -> Callable[..., None]:
    """The `register` callable handed to one plugin's `ramnet_fla_register_mixers`."""

    def register(name: str, factory: Callable[..., Any], *, description: str = '',
                 state_size: Callable[..., dict] | None = None) -> None:
        offered[name] = _check_registration(name, factory, description, state_size, plugin, offered)

    return register


def _check_registration(name, factory, description, state_size, plugin: str, offered: dict) -> MixerInfo:
    if not isinstance(name, str) or not name or name != name.strip():
        raise ValueError(f"a mixer name must be a non-empty string without surrounding spaces, got {name!r}")
    if name in offered:
        raise ValueError(f"mixer {name!r} is registered twice")
    if not callable(factory):
        raise TypeError(f"the factory of mixer {name!r} must be callable, got {type(factory).__name__}")
    if not isinstance(description, str):
        raise TypeError(f"the description of mixer {name!r} must be a str, got {type(description).__name__}")
    if state_size is not None and not callable(state_size):
        raise TypeError(f"`state_size` of mixer {name!r} must be callable or None, got {type(state_size).__name__}")
    return MixerInfo(name=name, factory=factory, description=description, state_size=state_size, plugin=plugin)


def create_plugin_manager(*, entry_points: bool = True, builtins: bool = True) -> RAMNetPluginManager:
    """A new plugin manager.

    entry_points: load every installed plugin of the entry-point group `ramnet_fla` (ramnet-fla's
        built-ins are declared there too). False gives an isolated manager for tests.
    builtins: make sure the built-in mixers are registered even without entry points.
    """
    manager = RAMNetPluginManager()
    if entry_points:
        manager.load_entry_points()
    if builtins:
        manager.load_builtins()
    return manager


_plugin_manager: RAMNetPluginManager | None = None


def get_plugin_manager() -> RAMNetPluginManager:
    """The process-wide plugin manager, created on first use.

    It loads entry points unless the environment variable RAMNET_FLA_LOAD_ENTRY_POINTS is `0`
    (then only the built-ins are registered).
    """
    global _plugin_manager
    if _plugin_manager is None:
        load = os.environ.get(ENTRY_POINTS_ENV_VAR, '1').strip().lower() not in ('0', 'false', 'no', 'off')
        _plugin_manager = create_plugin_manager(entry_points=load)
    return _plugin_manager


@contextlib.contextmanager
def use_plugin_manager(manager: pluggy.PluginManager) -> Iterator[pluggy.PluginManager]:
    """Make `manager` the process-wide plugin manager inside the `with` block (for tests)."""
    global _plugin_manager
    previous, _plugin_manager = _plugin_manager, manager
    try:
        yield manager
    finally:
        _plugin_manager = previous


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


def normalize_spec(spec, where: str = 'mixer spec') -> dict:
    """A mixer spec as a new dict `{'name': ..., **kwargs}`; a string `s` means `{'name': s}`."""
    if isinstance(spec, str):
        return {'name': spec}
    if not isinstance(spec, Mapping):
        raise TypeError(f"{where} must be a mixer name or a dict {{'name': ..., **kwargs}}, got {type(spec).__name__}")
    spec = copy.deepcopy(dict(spec))
    if not isinstance(spec.get('name'), str):
        raise ValueError(f"{where} must have a string 'name', got {spec!r}")
    for key in spec:
        if not isinstance(key, str):
            raise TypeError(f"{where} must have string keys, got {key!r}")
    reserved = [key for key in RESERVED_SPEC_KEYS if key in spec]
    if reserved:
        raise ValueError(f"{where} may not set {reserved}: the model passes them to every mixer; got {spec!r}")
    return spec


def layer_mixer_spec(config, layer_idx: int) -> dict:
    """The mixer spec `{'name': ..., **kwargs}` of layer `layer_idx`.

    The first plugin whose `ramnet_fla_select_mixer(config, layer_idx)` returns a spec wins; else
    `config.mixers` decides: a list of names or spec dicts, repeated when shorter than the model.
    """
    if isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or layer_idx < 0:
        raise ValueError(f"`layer_idx` must be an int >= 0, got {layer_idx!r}")
    selected = get_plugin_manager().select_mixer(config, layer_idx)
    if selected is not None:
        return selected
    choices = getattr(config, 'mixers', None)
    if isinstance(choices, (str, Mapping)):
        choices = [choices]
    if not isinstance(choices, (list, tuple)) or not choices:
        raise ValueError(f"`config.mixers` must be a non-empty list of mixer names or spec dicts, got {choices!r}")
    position = layer_idx % len(choices)
    return normalize_spec(choices[position], f"config.mixers[{position}]")


def build_mixer(spec, hidden_size: int, layer_idx: int | None):
    """Build the token mixer `spec` (a name or `{'name': ..., **kwargs}`) for one layer.

    Calls the registered `factory(hidden_size=hidden_size, layer_idx=layer_idx, **kwargs)`.
    Raises UnknownMixerError (listing the known mixers) for an unknown name, TypeError for
    arguments the factory does not take, ValueError for values it rejects.
    """
    spec = normalize_spec(spec)
    name = spec.pop('name')
    info = get_mixer(name)
    _check_factory_arguments(info, spec)
    try:
        mixer = info.factory(hidden_size=hidden_size, layer_idx=layer_idx, **spec)
    except AssertionError as error:                                 # fla layers check with assert
        raise ValueError(f"mixer {name!r} rejected its arguments {spec}: {error}") from error
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
