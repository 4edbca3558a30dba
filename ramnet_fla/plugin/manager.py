"""The plugin manager: ramnet_fla's built-in plugins, then installed entry points, then a final check.

ramnet_fla's own mixers are listed once, in `BUILTIN_PLUGINS`, and registered directly (as datasette
registers its default plugins); the entry-point group `ramnet_fla` is for third-party plugins. An
entry point that names a built-in module (the metadata of an install that predates this rule) is
skipped, so a built-in is never loaded twice; one from another distribution that merely uses a
built-in's name (`gla = "pkg.mod"`) is loaded as `"<distribution>:gla"`. An entry-point module that
implements no hook (e.g. its functions lack `@hookimpl`) is reported and dropped.

A plugin that fails to import, to register or to run its registration hook is reported by name
(a `PluginLoadWarning`, and `plugin_manager.failures`) and skipped; the others keep working.
Tests use `create_plugin_manager(entry_points=False)` with `use_plugin_manager(...)`, or set
`RAMNET_FLA_LOAD_ENTRY_POINTS=0`, so they never see whatever else happens to be installed.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pluggy

from ramnet_fla.plugin import NAME, spec

ENTRY_POINT_GROUP = NAME
ENTRY_POINTS_ENV_VAR = 'RAMNET_FLA_LOAD_ENTRY_POINTS'

# ramnet_fla's own plugins (name -> module), registered in this order before any entry point.
BUILTIN_PLUGINS: dict[str, str] = {
    'ram': 'ramnet_fla.plugins.ram',
    'gla': 'ramnet_fla.plugins.gla',
    'deltanet': 'ramnet_fla.plugins.deltanet',
    'gated_deltanet': 'ramnet_fla.plugins.gated_deltanet',
    'attention': 'ramnet_fla.plugins.attention',
}


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded or registered; it is skipped and the others keep working."""


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
        super().__init__(NAME)
        self.add_hookspecs(spec)
        self.failures: dict[str, str] = {}
        self.sources: dict[str, str] = {}
        self._mixers: dict[str, MixerInfo] | None = None

    # registration ---------------------------------------------------------------------------------

    def register(self, plugin, name: str | None = None) -> str | None:
        """Register `plugin`; one implementing a hook `ramnet_fla.plugin.spec` lacks is refused at once."""
        name = super().register(plugin, name)
        if name is None:                                            # blocked
            return None
        problem = self._hook_problem(plugin)
        if problem:
            self.unregister(plugin)
            raise pluggy.PluginValidationError(plugin, f"plugin {name!r} {problem}")
        self.sources.setdefault(name, f"object {plugin!r}")
        self._mixers = None
        return name

    def unregister(self, plugin=None, name: str | None = None):
        plugin = super().unregister(plugin, name)
        self._mixers = None
        return plugin

    def check_pending(self) -> None:
        """pluggy's final check that every implementation matches a spec, with ramnet_fla's message.

        `register` already refuses such a plugin; this also covers plugins registered around it
        (e.g. through `pluggy.PluginManager.register`).
        """
        for name, plugin in self.list_name_plugin():
            problem = self._hook_problem(plugin)
            if problem:
                raise pluggy.PluginValidationError(plugin, f"plugin {name!r} {problem}")
        super().check_pending()

    def _hook_problem(self, plugin) -> str | None:
        """What is wrong with `plugin`'s hook implementations (unknown hooks, wrappers), or None."""
        hooks = self.get_hookcallers(plugin) or ()
        unknown = [hook.name for hook in hooks if not hook.has_spec()]
        if unknown:
            known = sorted(n for n in vars(spec) if n.startswith(NAME + '_'))
            return f"implements unknown hook(s) {unknown}; known hooks: {known}"
        wrappers = [hook.name for hook in hooks for impl in hook.get_hookimpls()
                    if impl.plugin is plugin and (impl.wrapper or impl.hookwrapper)]
        if wrappers:
            return f"implements {wrappers} as a wrapper, which ramnet_fla hooks do not support"
        return None

    def load_plugin(self, name: str, load: Callable[[], Any], source: str) -> bool:
        """Import (via `load`) and register one plugin; on failure report it by name and go on."""
        if self.is_blocked(name):
            return False
        if self.has_plugin(name):
            self._report(name, f"from {source} is not loaded: the name is taken by {self.sources.get(name, '?')}")
            return False
        try:
            plugin = load()
            self.register(plugin, name=name)
        except Exception as error:                                 # noqa: BLE001 - any plugin bug
            self._report(name, f"failed to load from {source}: {type(error).__name__}: {error}")
            return False
        if not self.get_hookcallers(plugin):                       # registered, but it does nothing
            self.unregister(plugin)
            unmarked = sorted(n for n in dir(plugin) if n.startswith(NAME + '_') and callable(getattr(plugin, n)))
            hint = (f": it defines {unmarked} without the `@ramnet_fla.hookimpl` marker" if unmarked
                    else f"; known hooks: {sorted(n for n in vars(spec) if n.startswith(NAME + '_'))}")
            self._report(name, f"from {source} registers no mixer and implements no hook{hint}")
            return False
        self.sources[name] = source
        return True

    def load_builtins(self) -> None:
        """Register ramnet_fla's own plugins, in `BUILTIN_PLUGINS` order."""
        for name, module in BUILTIN_PLUGINS.items():
            self.load_plugin(name, lambda module=module: importlib.import_module(module), f"built-in module {module}")

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        """Load every installed entry point of `group` (third-party plugins), by name.

        An entry point naming a built-in module comes from stale metadata (ramnet-fla itself
        declared its built-ins as entry points up to 0.1.0) and is skipped.
        """
        builtin_modules = set(BUILTIN_PLUGINS.values())
        for entry_point in sorted(importlib.metadata.entry_points(group=group), key=lambda ep: ep.name):
            if entry_point.value in builtin_modules:
                continue
            dist = getattr(entry_point, 'dist', None)
            origin = f" ({dist.name} {dist.version})" if dist is not None else ''
            name = entry_point.name
            if name in BUILTIN_PLUGINS and dist is not None:
                name = f"{dist.name}:{name}"                       # a built-in's name: qualify it, load it
            self.load_plugin(name, entry_point.load, f"entry point {group}:{entry_point.name} = {entry_point.value}{origin}")

    def _report(self, name: str, message: str) -> None:
        self.failures[name] = message
        warnings.warn(f"ramnet_fla plugin {name!r} {message}; it is skipped, the other plugins still work",
                      PluginLoadWarning, stacklevel=3)

    # hooks --------------------------------------------------------------------------------------

    def mixers(self) -> dict[str, MixerInfo]:
        """All registered mixers by name (collected once, again after plugins change)."""
        if self._mixers is None:
            self._mixers = self._collect_mixers()
        return dict(self._mixers)

    def _collect_mixers(self) -> dict[str, MixerInfo]:
        hook = self.hook.ramnet_fla_register_mixers
        collected: dict[str, MixerInfo] = {}
        # One call per plugin, through pluggy (a subset caller), not one call for all: each mixer must
        # be attributed to the plugin that registered it, and a plugin that raises is dropped whole
        # while the others keep theirs. Registration order: built-ins first, so they keep their names.
        implementers = [impl.plugin for impl in hook.get_hookimpls()]
        for impl in hook.get_hookimpls():
            offered: dict[str, MixerInfo] = {}
            call = self.subset_hook_caller(hook.name, [p for p in implementers if p is not impl.plugin])
            try:
                call(register=_registration_callback(impl.plugin_name, offered))
            except Exception as error:                             # noqa: BLE001 - any plugin bug
                self._report(impl.plugin_name, f"failed in {hook.name}: {type(error).__name__}: {error}")
                continue
            for name, info in offered.items():
                if name in collected:
                    self._report(impl.plugin_name, f"registers mixer {name!r}, which plugin "
                                                   f"{collected[name].plugin!r} already registered")
                    continue
                collected[name] = info
        return collected

    def select_mixer(self, config, layer_idx: int):
        """`ramnet_fla_select_mixer`'s first non-None answer (latest plugin first), or None.

        pluggy calls the implementations and stops at the first answer (`firstresult`); a plugin
        that raises is named in a RuntimeError.
        """
        hook = self.hook.ramnet_fla_select_mixer
        try:
            return hook(config=config, layer_idx=layer_idx)
        except Exception as error:
            culprit = _raising_plugin(error, hook.get_hookimpls())
            raise RuntimeError(f"plugin {culprit!r} failed in {hook.name} for layer {layer_idx}: "
                               f"{type(error).__name__}: {error}") from error

    def answering_plugin(self, config, layer_idx: int) -> str | None:
        """The plugin behind `select_mixer`'s answer, to name it when the answer is invalid.

        pluggy's firstresult call returns the answer alone, so the implementations are asked again one
        at a time, in pluggy's order (latest first); the spec asks for pure implementations.
        """
        hook = self.hook.ramnet_fla_select_mixer
        implementers = [impl.plugin for impl in hook.get_hookimpls()]
        for impl in reversed(hook.get_hookimpls()):
            alone = self.subset_hook_caller(hook.name, [p for p in implementers if p is not impl.plugin])
            if alone(config=config, layer_idx=layer_idx) is not None:
                return impl.plugin_name
        return None


def _raising_plugin(error: BaseException, impls) -> str:
    """The plugin whose hook implementation is the outermost of `impls` in `error`'s traceback."""
    codes = {getattr(impl.function, '__code__', None): impl.plugin_name for impl in impls}
    for frame, _ in traceback.walk_tb(error.__traceback__):
        if frame.f_code in codes:
            return codes[frame.f_code]
    return '?'


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
    """A new plugin manager: the built-ins, then installed entry points, then `check_pending()`.

    entry_points: load the third-party plugins of the entry-point group `ramnet_fla`; False gives an
        isolated manager for tests.
    builtins: register ramnet_fla's own mixers (`BUILTIN_PLUGINS`).
    """
    manager = RAMNetPluginManager()
    if builtins:
        manager.load_builtins()
    if entry_points:
        manager.load_entry_points()
    manager.check_pending()
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
