"""Plugin tests run against an isolated plugin manager: built-ins only, no installed entry points."""

from __future__ import annotations

import pytest

from ramnet_fla.plugin import create_plugin_manager, use_plugin_manager


@pytest.fixture
def plugin_manager():
    """A fresh manager with the built-in mixers and nothing else, made the process-wide one."""
    manager = create_plugin_manager(entry_points=False)
    with use_plugin_manager(manager):
        yield manager
