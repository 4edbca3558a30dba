"""ramnet_fla's plugin system (pluggy), laid out as tox's.

- here: the project name and the markers, `@hookimpl` for plugins and `@hookspec` for the contract;
- `spec`: the hook specifications, each docstring the plugin author's documentation;
- `manager`: the one plugin manager (built-ins, then entry points, then `check_pending()`);
- `resolve`: from a spec to a mixer (`layer_mixer_spec`, `build_mixer`, ...).

Data flows one way: config -> `layer_mixer_spec` (plugins may override the config) -> `build_mixer`
-> the registered factory -> an `nn.Module`.
"""

from __future__ import annotations

import pluggy

NAME = 'ramnet_fla'

hookimpl = pluggy.HookimplMarker(NAME)
hookspec = pluggy.HookspecMarker(NAME)

# The markers above must exist before these imports: `spec` uses `hookspec`.
from ramnet_fla.plugin.manager import (  # noqa: E402
    BUILTIN_PLUGINS,
    ENTRY_POINT_GROUP,
    ENTRY_POINTS_ENV_VAR,
    MixerInfo,
    PluginLoadWarning,
    RAMNetPluginManager,
    create_plugin_manager,
    get_plugin_manager,
    use_plugin_manager,
)
from ramnet_fla.plugin.resolve import (  # noqa: E402
    RESERVED_SPEC_KEYS,
    UnknownMixerError,
    build_mixer,
    get_mixer,
    layer_mixer_spec,
    mixers,
    normalize_spec,
)

__all__ = [
    'BUILTIN_PLUGINS', 'ENTRY_POINTS_ENV_VAR', 'ENTRY_POINT_GROUP', 'NAME', 'RESERVED_SPEC_KEYS', 'MixerInfo',
    'PluginLoadWarning', 'RAMNetPluginManager', 'UnknownMixerError', 'build_mixer', 'create_plugin_manager',
    'get_mixer', 'get_plugin_manager', 'hookimpl', 'hookspec', 'layer_mixer_spec', 'mixers', 'normalize_spec',
    'use_plugin_manager',
]
