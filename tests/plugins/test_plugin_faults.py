"""Hardening of the plugin machinery (issue 10): faults are reported with the plugin, the mixer and the
layer they come from; nothing is skipped or broadcast silently."""

from __future__ import annotations

import textwrap
import warnings

import pytest
import torch
import torch.nn as nn

import ramnet_fla
from ramnet_fla import RAMNetConfig, RAMNetForCausalLM
from ramnet_fla.plugin import PluginLoadWarning, create_plugin_manager, use_plugin_manager


def _fake_distribution(tmp_path, monkeypatch, dist: str, entry_points: dict[str, str], modules: dict[str, str]):
    """An installed distribution `dist` (a .dist-info on sys.path) whose `ramnet_fla` entry points
    name the given modules, written into tmp_path."""
    for module, source in modules.items():
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
    info = tmp_path / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / 'METADATA').write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = '\n'.join(f"{name} = {value}" for name, value in entry_points.items())
    (info / 'entry_points.txt').write_text(f"[ramnet_fla]\n{lines}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


PLUGIN_SOURCE = '''
    import torch.nn as nn
    import ramnet_fla

    class Mixer(nn.Module):
        def __init__(self, hidden_size, layer_idx=None):
            super().__init__()

        def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, **kwargs):
            return hidden_states, None, past_key_values

    @ramnet_fla.hookimpl
    def ramnet_fla_register_mixers(register):
        register('shadow_gla', Mixer, description='a third-party mixer')
'''


def test_an_entry_point_named_like_a_builtin_is_loaded_or_reported(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, monkeypatch, 'shadowdist', {'gla': 'shadow_plugin'}, {'shadow_plugin': PLUGIN_SOURCE})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        manager = create_plugin_manager(entry_points=True)
    found = manager.mixers()
    assert found['gla'].plugin == 'gla' or found['gla'].plugin.startswith('ramnet_fla')   # the built-in keeps its name
    reported = [str(w.message) for w in caught if issubclass(w.category, PluginLoadWarning)]
    loaded = 'shadow_gla' in found
    assert loaded or (any('shadowdist' in m and 'gla' in m for m in reported)
                      and any('shadowdist' in str(v) for v in manager.failures.values()))


def test_a_module_without_hookimpl_markers_is_reported(tmp_path, monkeypatch):
    # the decorator line goes with the next line's indentation, so the module still imports
    source = PLUGIN_SOURCE.replace('@ramnet_fla.hookimpl\n    ', '')
    assert 'hookimpl' not in source and 'def ramnet_fla_register_mixers' in source
    _fake_distribution(tmp_path, monkeypatch, 'unmarkeddist', {'unmarked': 'unmarked_plugin'},
                       {'unmarked_plugin': source})
    with pytest.warns(PluginLoadWarning, match='unmarked') as caught:
        manager = create_plugin_manager(entry_points=True)
    assert 'shadow_gla' not in manager.mixers()
    message = ' '.join(str(w.message) for w in caught)
    assert 'hookimpl' in message and 'ramnet_fla_register_mixers' in message     # not an import failure


class Broken(nn.Module):
    """A mixer whose output breaks fla's layer contract in the way `kind` says."""

    def __init__(self, hidden_size, layer_idx=None, kind='raise'):
        super().__init__()
        if kind == 'raise':
            raise RuntimeError('kaput')
        self.kind = kind

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, **kwargs):
        if self.kind == 'bare':
            return hidden_states
        if self.kind == 'pair':
            return hidden_states, None
        if self.kind == 'broadcast':
            return hidden_states[:, :1], None, past_key_values
        if self.kind == 'list':
            return [hidden_states, None, past_key_values]
        raise AssertionError(self.kind)


class BrokenPlugin:
    @ramnet_fla.hookimpl
    def ramnet_fla_register_mixers(self, register):
        register('broken', Broken, description='breaks on purpose')


@pytest.fixture
def with_broken():
    manager = create_plugin_manager(entry_points=False)
    manager.register(BrokenPlugin(), name='broken-plugin')
    with use_plugin_manager(manager):
        yield manager


def _config(kind: str) -> RAMNetConfig:
    return RAMNetConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                        mixers=[{'name': 'ram', 'num_heads': 2, 'num_factors': 3, 'factor_dim': 4, 'topk': 4},
                                {'name': 'broken', 'kind': kind}])


def test_a_factory_that_raises_names_the_mixer_and_the_layer(with_broken):
    with pytest.raises(Exception) as info:
        RAMNetForCausalLM(_config('raise'))
    message = str(info.value)
    assert 'broken' in message and 'layer 1' in message and 'kaput' in message


@pytest.mark.parametrize('kind', ['bare', 'pair', 'broadcast'])
def test_a_mixer_output_of_the_wrong_form_names_the_mixer_and_the_layer(with_broken, kind):
    model = RAMNetForCausalLM(_config(kind))
    with pytest.raises((TypeError, ValueError)) as info:
        model(torch.randint(0, 64, (2, 8)))
    message = str(info.value)
    assert 'broken' in message and 'layer 1' in message and 'expected' in message


def test_a_list_output_is_accepted_as_a_sequence(with_broken):
    model = RAMNetForCausalLM(_config('list'))
    assert model(torch.randint(0, 64, (2, 8))).logits.shape == (2, 8, 64)
