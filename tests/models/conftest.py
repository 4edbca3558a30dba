"""Model tests build mixers through an isolated plugin manager: the built-in mixers only, never
whatever else happens to be installed."""

from __future__ import annotations

import pytest

from ramnet_fla.plugin import create_plugin_manager, use_plugin_manager


@pytest.fixture(autouse=True)
def builtin_plugins_only():
    with use_plugin_manager(create_plugin_manager(entry_points=False)) as manager:
        yield manager
