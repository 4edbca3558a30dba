"""The plugin machinery: hook validation, isolation, registration, failures, spec resolution."""

from __future__ import annotations

import importlib.metadata
import sys
import tomllib
import types
from pathlib import Path

import pluggy
import pytest
import torch.nn as nn

import ramnet_fla
from ramnet_fla.plugin import manager as plugin_module
from ramnet_fla.plugin import (
    BUILTIN_PLUGINS,
    PluginLoadWarning,
    UnknownMixerError,
    build_mixer,
    create_plugin_manager,
    layer_mixer_spec,
    mixers,
    use_plugin_manager,
)

REPO = Path(__file__).resolve().parents[2]
BUILTIN_MIXERS = {'ram', 'gla', 'deltanet', 'gated_deltanet', 'attention'}


class Identity(nn.Module):
    """A trivial mixer with fla's layer contract."""

    def __init__(self, hidden_size, layer_idx=None, scale: float = 1.0):
        super().__init__()
        self.layer_idx, self.scale = layer_idx, scale

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False, **kwargs):
        return hidden_states * self.scale, None, past_key_values


class IdentityPlugin:
    @ramnet_fla.hookimpl
    def ramnet_fla_register_mixers(self, register):
        register('identity', Identity, description='returns its input',
                 state_size=lambda hidden_size, seq_len, **kw: {'total': 0, 'active': 0})


def test_builtins_are_listed_once_and_never_loaded_twice_from_stale_entry_points(monkeypatch):
    # BUILTIN_PLUGINS is the one list; pyproject.toml declares no entry point for a built-in
    declared = tomllib.loads((REPO / 'pyproject.toml').read_text())['project'].get('entry-points', {})
    assert not any(value.startswith('ramnet_fla.plugins.') for value in declared.get('ramnet_fla', {}).values())
    # metadata of an older install still lists them: they are skipped, not reported, not loaded again
    stale = [importlib.metadata.EntryPoint(name, module, 'ramnet_fla') for name, module in BUILTIN_PLUGINS.items()]
    monkeypatch.setattr(importlib.metadata, 'entry_points', lambda group: stale)
    manager = create_plugin_manager(entry_points=True)
    assert manager.failures == {}
    assert [name for name, _ in manager.list_name_plugin()] == list(BUILTIN_PLUGINS)
    assert all(source.startswith('built-in module') for source in manager.sources.values())


def test_isolated_manager_has_builtins_and_never_reads_entry_points(monkeypatch):
    def no_entry_points(**kwargs):
        raise AssertionError('entry points were read')
    monkeypatch.setattr(importlib.metadata, 'entry_points', no_entry_points)
    manager = create_plugin_manager(entry_points=False)
    with use_plugin_manager(manager):
        found = mixers()
    assert set(found) == BUILTIN_MIXERS
    assert {info.plugin for info in found.values()} == set(BUILTIN_PLUGINS)
    assert manager.failures == {}
    assert all(source.startswith('built-in module') for source in manager.sources.values())
    empty = create_plugin_manager(entry_points=False, builtins=False)
    assert empty.mixers() == {}


def test_entry_points_load_builtins_first_and_report_a_broken_plugin_by_name(monkeypatch):
    good = types.ModuleType('ramnet_test_good_plugin')
    good.ramnet_fla_register_mixers = IdentityPlugin().ramnet_fla_register_mixers
    monkeypatch.setitem(sys.modules, 'ramnet_test_good_plugin', good)
    fake = [importlib.metadata.EntryPoint(name, module, 'ramnet_fla') for name, module in BUILTIN_PLUGINS.items()]
    fake += [importlib.metadata.EntryPoint('broken', 'ramnet_test_no_such_module_xyz', 'ramnet_fla'),
             importlib.metadata.EntryPoint('good', 'ramnet_test_good_plugin', 'ramnet_fla')]
    monkeypatch.setattr(importlib.metadata, 'entry_points', lambda group: list(reversed(fake)))
    with pytest.warns(PluginLoadWarning, match="plugin 'broken' failed to load .*ModuleNotFoundError"):
        manager = create_plugin_manager(entry_points=True)
    assert set(manager.failures) == {'broken'}
    assert [p for p in manager.list_name_plugin() if p[0] != 'broken'][:5] == \
        [(name, sys.modules[module]) for name, module in BUILTIN_PLUGINS.items()]
    assert set(manager.mixers()) == BUILTIN_MIXERS | {'identity'}
    assert manager.mixers()['identity'].plugin == 'good'


def test_hookspec_validation_rejects_unknown_hooks_and_arguments(plugin_manager):
    class Typo:
        @ramnet_fla.hookimpl
        def ramnet_fla_register_mixer(self, register):          # missing "s"
            pass

    class WrongArgument:
        @ramnet_fla.hookimpl
        def ramnet_fla_register_mixers(self, registry):
            pass

    with pytest.raises(pluggy.PluginValidationError,
                       match=r"'typo' implements unknown hook\(s\) \['ramnet_fla_register_mixer'\]"):
        plugin_manager.register(Typo(), name='typo')
    assert not plugin_manager.has_plugin('typo')
    class Wrapper:
        @ramnet_fla.hookimpl(wrapper=True)
        def ramnet_fla_select_mixer(self, config, layer_idx):
            return (yield)

    with pytest.raises(pluggy.PluginValidationError, match='registry'):
        plugin_manager.register(WrongArgument(), name='wrong')
    with pytest.raises(pluggy.PluginValidationError, match=r"'wrapper' implements \['ramnet_fla_select_mixer'\] as a wrapper"):
        plugin_manager.register(Wrapper(), name='wrapper')
    assert not plugin_manager.has_plugin('wrapper')
    assert set(plugin_manager.mixers()) == BUILTIN_MIXERS


def test_a_plugin_object_registered_in_a_test_adds_its_mixer(plugin_manager):
    plugin_manager.register(IdentityPlugin(), name='identity-plugin')
    info = mixers()['identity']
    assert (info.name, info.plugin, info.description) == ('identity', 'identity-plugin', 'returns its input')
    mixer = build_mixer({'name': 'identity', 'scale': 2.0}, hidden_size=8, layer_idx=3)
    assert isinstance(mixer, Identity) and mixer.layer_idx == 3 and mixer.scale == 2.0
    plugin_manager.unregister(name='identity-plugin')
    assert 'identity' not in mixers()


def test_a_plugin_failing_in_its_hook_is_reported_and_the_others_keep_working(plugin_manager):
    class Broken:
        @ramnet_fla.hookimpl
        def ramnet_fla_register_mixers(self, register):
            register('half', Identity)
            raise RuntimeError('boom')

    class BadFactory:
        @ramnet_fla.hookimpl
        def ramnet_fla_register_mixers(self, register):
            register('not-callable', 42)

    plugin_manager.register(Broken(), name='broken')
    plugin_manager.register(BadFactory(), name='bad-factory')
    plugin_manager.register(IdentityPlugin(), name='fine')
    with pytest.warns(PluginLoadWarning) as record:
        found = mixers()
    assert set(found) == BUILTIN_MIXERS | {'identity'}          # nothing of a failed hook is kept
    messages = ' '.join(str(w.message) for w in record)
    assert "'broken' failed in ramnet_fla_register_mixers: RuntimeError: boom" in messages
    assert "'bad-factory'" in messages and 'must be callable' in messages
    assert set(plugin_manager.failures) == {'broken', 'bad-factory'}


def test_a_taken_mixer_name_is_reported_and_the_first_registration_kept(plugin_manager):
    class Impostor:
        @ramnet_fla.hookimpl
        def ramnet_fla_register_mixers(self, register):
            register('gla', Identity)

    plugin_manager.register(Impostor(), name='impostor')
    with pytest.warns(PluginLoadWarning, match="'impostor' registers mixer 'gla', which plugin 'gla' already registered"):
        info = mixers()['gla']
    assert info.plugin == 'gla' and info.factory is not Identity


def test_unknown_mixer_lists_the_known_ones(plugin_manager):
    with pytest.raises(UnknownMixerError, match="unknown mixer 'glaa'; known mixers: attention, deltanet, "
                                                 "gated_deltanet, gla, ram"):
        build_mixer('glaa', hidden_size=16, layer_idx=0)


def test_bad_spec_arguments_are_clear_errors(plugin_manager):
    with pytest.raises(TypeError, match=r"mixer 'attention' got unexpected argument\(s\) \['num_head'\]; "
                                        r"it accepts: num_heads, num_kv_heads"):
        build_mixer({'name': 'attention', 'num_head': 2}, hidden_size=16, layer_idx=0)
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['num_head'\].*expand_k"):
        build_mixer({'name': 'deltanet', 'num_head': 2}, hidden_size=16, layer_idx=0)   # fla would swallow it
    with pytest.raises(ValueError, match='key dim must be divisible by num_heads'):
        build_mixer({'name': 'gla', 'num_heads': 3}, hidden_size=16, layer_idx=0)
    with pytest.raises(ValueError, match='`topk` must be <='):
        build_mixer({'name': 'ram', 'num_factors': 2, 'factor_dim': 2, 'topk': 5}, hidden_size=16, layer_idx=0)
    with pytest.raises(ValueError, match="may not set \\['hidden_size'\\]"):
        build_mixer({'name': 'gla', 'hidden_size': 8}, hidden_size=16, layer_idx=0)
    with pytest.raises(ValueError, match="must have a string 'name'"):
        build_mixer({'num_heads': 2}, hidden_size=16, layer_idx=0)
    with pytest.raises(TypeError, match='must be a mixer name or a dict'):
        build_mixer(3, hidden_size=16, layer_idx=0)


def test_config_mixers_repeat_and_names_become_specs(plugin_manager):
    config = types.SimpleNamespace(mixers=['ram', {'name': 'gla', 'num_heads': 2}, 'attention'], num_hidden_layers=7)
    specs = [layer_mixer_spec(config, i) for i in range(7)]
    assert specs == [{'name': 'ram'}, {'name': 'gla', 'num_heads': 2}, {'name': 'attention'}] * 2 + [{'name': 'ram'}]
    specs[1]['num_heads'] = 99                                   # a fresh dict every time
    assert config.mixers[1] == {'name': 'gla', 'num_heads': 2}
    with pytest.raises(ValueError, match='`config.mixers` must be a non-empty list'):
        layer_mixer_spec(types.SimpleNamespace(mixers=[]), 0)
    with pytest.raises(ValueError, match='`layer_idx` must be an int >= 0'):
        layer_mixer_spec(config, -1)


def test_select_mixer_first_result_wins_latest_plugin_first(plugin_manager):
    class EveryThirdAttention:
        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(self, config, layer_idx):
            return {'name': 'attention', 'num_heads': 2} if layer_idx % 3 == 2 else None

    class FirstLayerGLA:
        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(self, layer_idx):              # a subset of the arguments is fine
            return 'gla' if layer_idx == 0 else None

    plugin_manager.register(EveryThirdAttention(), name='every-third')
    plugin_manager.register(FirstLayerGLA(), name='first-gla')
    config = types.SimpleNamespace(mixers=['ram'])
    assert [layer_mixer_spec(config, i)['name'] for i in range(6)] == ['gla', 'ram', 'attention', 'ram', 'ram', 'attention']
    assert layer_mixer_spec(config, 2) == {'name': 'attention', 'num_heads': 2}


def test_select_mixer_errors_name_the_plugin(plugin_manager):
    class Raises:
        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(self, config, layer_idx):
            raise KeyError('no such layer')

    class BadAnswer:
        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(self, config, layer_idx):
            return 7

    plugin_manager.register(Raises(), name='raises')
    with pytest.raises(RuntimeError, match="plugin 'raises' failed in ramnet_fla_select_mixer for layer 1"):
        layer_mixer_spec(types.SimpleNamespace(mixers=['ram']), 1)
    plugin_manager.unregister(name='raises')
    plugin_manager.register(BadAnswer(), name='bad-answer')
    with pytest.raises(TypeError, match="ramnet_fla_select_mixer of plugin 'bad-answer' for layer 0 must be a mixer name"):
        layer_mixer_spec(types.SimpleNamespace(mixers=['ram']), 0)


def test_process_wide_manager_honours_the_environment_switch(monkeypatch):
    monkeypatch.setattr(plugin_module, '_plugin_manager', None)
    monkeypatch.setenv('RAMNET_FLA_LOAD_ENTRY_POINTS', '0')
    monkeypatch.setattr(importlib.metadata, 'entry_points', lambda **kw: pytest.fail('entry points were read'))
    manager = plugin_module.get_plugin_manager()
    assert plugin_module.get_plugin_manager() is manager
    assert set(manager.mixers()) == BUILTIN_MIXERS


def test_select_hook_is_called_through_pluggy_and_stops_at_the_first_result(plugin_manager):
    asked = []

    class Early:
        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(self, layer_idx):
            asked.append('early')
            return 'gla'

    class Late:
        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixer(self, layer_idx):
            asked.append('late')
            return 'attention' if layer_idx == 1 else None

    plugin_manager.register(Early(), name='early')
    plugin_manager.register(Late(), name='late')
    calls = []
    undo = plugin_manager.add_hookcall_monitoring(lambda name, impls, kwargs: calls.append(name),
                                                  lambda outcome, name, impls, kwargs: None)
    try:
        assert layer_mixer_spec(types.SimpleNamespace(mixers=['ram']), 1) == {'name': 'attention'}
        assert asked == ['late'], 'firstresult: the earlier plugin is not asked once the later one answered'
        assert layer_mixer_spec(types.SimpleNamespace(mixers=['ram']), 0) == {'name': 'gla'}
        assert asked == ['late', 'late', 'early']
    finally:
        undo()
    assert calls == ['ramnet_fla_select_mixer'] * 2                 # one pluggy hook call per question


def test_register_hook_is_called_through_pluggy_once_per_plugin(plugin_manager):
    plugin_manager.register(IdentityPlugin(), name='identity-plugin')
    calls = []
    undo = plugin_manager.add_hookcall_monitoring(
        lambda name, impls, kwargs: calls.append((name, [impl.plugin_name for impl in impls])),
        lambda outcome, name, impls, kwargs: None)
    try:
        assert 'identity' in plugin_manager.mixers()
    finally:
        undo()
    assert calls == [('ramnet_fla_register_mixers', [name]) for name in [*BUILTIN_PLUGINS, 'identity-plugin']]


def test_check_pending_rejects_a_plugin_with_an_unknown_hook(plugin_manager):
    class Typo:
        @ramnet_fla.hookimpl
        def ramnet_fla_select_mixers(self, config, layer_idx):    # an extra "s"
            return None

    pluggy.PluginManager.register(plugin_manager, Typo(), name='typo')   # around ramnet_fla's own check
    with pytest.raises(pluggy.PluginValidationError,
                       match=r"'typo' implements unknown hook\(s\) \['ramnet_fla_select_mixers'\]"):
        plugin_manager.check_pending()
    plugin_manager.unregister(name='typo')
    plugin_manager.check_pending()                                  # the built-ins all match a spec


def test_an_entry_point_with_an_unknown_hook_is_reported_and_skipped(monkeypatch):
    typo = types.ModuleType('ramnet_test_typo_plugin')
    typo.ramnet_fla_register_mixer = ramnet_fla.hookimpl(lambda register: None)
    monkeypatch.setitem(sys.modules, 'ramnet_test_typo_plugin', typo)
    found = [importlib.metadata.EntryPoint('typo', 'ramnet_test_typo_plugin', 'ramnet_fla')]
    monkeypatch.setattr(importlib.metadata, 'entry_points', lambda group: found)
    with pytest.warns(PluginLoadWarning, match=r"'typo' failed to load .*unknown hook\(s\) \['ramnet_fla_register_mixer'\]"):
        manager = create_plugin_manager(entry_points=True)
    assert not manager.has_plugin('typo') and set(manager.mixers()) == BUILTIN_MIXERS
