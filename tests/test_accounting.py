"""State accounting (SPEC section 4) and the paper's headline numbers."""

from __future__ import annotations

import types

import pytest
import torch.nn as nn

import ramnet_fla
from ramnet_fla import RAMNetConfig, state_size
from ramnet_fla.plugin import create_plugin_manager, use_plugin_manager


@pytest.fixture(autouse=True)
def plugin_manager():
    with use_plugin_manager(create_plugin_manager(entry_points=False)) as manager:
        yield manager


def _config(mixers, hidden_size=1024, num_hidden_layers=24):
    return RAMNetConfig(mixers=mixers, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers)


def test_paper_headline_numbers():
    ram = state_size(_config([{'name': 'ram', 'num_heads': 8, 'head_dim': 128, 'topk': 8}]), seq_len=1024)
    assert ram['active'] == 393_216                          # 24 x 2 x K=8 x 1024: the paper's 0.4M
    assert ram['total'] == 24 * 8 * 4 ** 5 * (128 + 1)        # H * M * (V + 1) per layer, M = 4**5
    attention = state_size(_config([{'name': 'attention', 'num_heads': 16}]), seq_len=1024)
    assert attention['active'] == attention['total'] == 50_331_648   # 24 x 2 x 1024 x 1024: the paper's 50.3M
    assert round(attention['active'] / ram['active']) == 128


def test_per_layer_numbers_of_every_builtin_mixer():
    config = _config([
        {'name': 'ram', 'num_heads': 2, 'head_dim': 16, 'num_factors': 3, 'factor_dim': 4, 'topk': 4},
        {'name': 'gla', 'num_heads': 4},                      # d_k = 64 * 0.5 / 4 = 8, d_v = 64 / 4 = 16
        {'name': 'deltanet', 'num_heads': 2},                 # d_k = d_v = 32
        {'name': 'gated_deltanet', 'num_heads': 2, 'head_dim': 8, 'num_v_heads': 4},   # d_v = 16
        {'name': 'attention', 'num_heads': 4, 'num_kv_heads': 2},                       # kv width 32
    ], hidden_size=64, num_hidden_layers=5)
    sizes = state_size(config, seq_len=10)
    expected = [('ram', 2 * 64 * 17, 2 * 4 * 2 * 16), ('gla', 4 * 8 * 16, 4 * 8 * 16), ('deltanet', 2 * 32 * 32, 2 * 32 * 32),
                ('gated_deltanet', 4 * 8 * 16, 4 * 8 * 16), ('attention', 2 * 10 * 32, 2 * 10 * 32)]
    assert [(layer['mixer'], layer['total'], layer['active']) for layer in sizes['layers']] == expected
    assert [layer['layer'] for layer in sizes['layers']] == list(range(5))
    assert sizes['total'] == sum(e[1] for e in expected) and sizes['active'] == sum(e[2] for e in expected)
    assert state_size(config, seq_len=20)['total'] - sizes['total'] == 2 * 10 * 32      # only attention grows


def test_accounting_follows_plugins(plugin_manager):
    class Plugin:
        @ramnet_fla.hookimpl
        def ramnet_fla_register_mixers(self, register):
            register('stateless', lambda hidden_size, layer_idx: nn.Identity())

        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(self, config, layer_idx):
            return {'name': 'attention', 'num_heads': 2} if layer_idx == 0 else None

    plugin_manager.register(Plugin(), name='test-plugin')
    config = types.SimpleNamespace(hidden_size=8, num_hidden_layers=3, mixers=['gla', 'stateless'])
    sizes = state_size(config, seq_len=5)
    assert [(layer['mixer'], layer['total']) for layer in sizes['layers']] == \
        [('attention', 2 * 5 * 8), ('stateless', None), ('gla', 4 * 1 * 2)]   # GLA: 4 heads, d_k 1, d_v 2
    assert sizes['total'] is None and sizes['active'] is None       # unknown, not silently partial


def test_bad_arguments_are_clear_errors():
    config = _config(['ram'], hidden_size=64, num_hidden_layers=1)
    with pytest.raises(ValueError, match='`seq_len` must be an int >= 0'):
        state_size(config, seq_len=-1)
    with pytest.raises(ValueError, match='`config.hidden_size` must be a positive int'):
        state_size(types.SimpleNamespace(mixers=['ram'], num_hidden_layers=1), seq_len=1)
    with pytest.raises(ValueError, match="unknown mixer 'nope'; known mixers: attention"):
        state_size(types.SimpleNamespace(mixers=['nope'], hidden_size=8, num_hidden_layers=1), seq_len=1)
