"""What the plugin-fault handling of issue 10 does exactly: names, types and what stays loaded."""

from __future__ import annotations

import warnings

import pytest
import torch.nn as nn

import ramnet_fla
from ramnet_fla.plugin import PluginLoadWarning, build_mixer, create_plugin_manager, use_plugin_manager
from tests.plugins.test_plugin_faults import PLUGIN_SOURCE, _fake_distribution


def test_a_builtin_named_entry_point_loads_under_its_distribution(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, monkeypatch, 'shadowdist', {'gla': 'shadow_plugin'}, {'shadow_plugin': PLUGIN_SOURCE})
    with warnings.catch_warnings():
        warnings.simplefilter('error', PluginLoadWarning)            # loading it is not a failure
        manager = create_plugin_manager(entry_points=True)
    found = manager.mixers()
    assert found['shadow_gla'].plugin == 'shadowdist:gla' and found['gla'].plugin == 'gla'
    assert 'shadowdist' in manager.sources['shadowdist:gla'] and not manager.failures


def test_a_module_that_implements_no_hook_is_dropped_and_listed(tmp_path, monkeypatch):
    source = "def helper():\n    return 1\n"
    _fake_distribution(tmp_path, monkeypatch, 'emptydist', {'empty': 'empty_plugin'}, {'empty_plugin': source})
    with pytest.warns(PluginLoadWarning, match='implements no hook') as caught:
        manager = create_plugin_manager(entry_points=True)
    assert 'known hooks' in str(caught[0].message)
    assert 'empty' in manager.failures and not manager.has_plugin('empty')


class Picky(nn.Module):
    def __init__(self, hidden_size, layer_idx=None, width=1):
        super().__init__()
        if width < 1:
            raise ValueError(f"`width` must be >= 1, got {width}")
        if width == 7:
            raise TypeError("seven is not a width")


class PickyPlugin:
    @ramnet_fla.hookimpl
    def ramnet_fla_register_mixers(self, register):
        register('picky', Picky)


@pytest.mark.parametrize('width,error', [(0, ValueError), (7, TypeError)])
def test_a_factory_s_own_errors_keep_their_type_and_gain_the_layer(width, error):
    manager = create_plugin_manager(entry_points=False)
    manager.register(PickyPlugin(), name='picky-plugin')
    with use_plugin_manager(manager), pytest.raises(error) as info:
        build_mixer({'name': 'picky', 'width': width}, hidden_size=8, layer_idx=3)
    message = str(info.value)
    assert "mixer 'picky'" in message and 'picky-plugin' in message and 'layer 3' in message
    assert type(info.value) is error
