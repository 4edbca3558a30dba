"""`ramnet-fla mixers` and `ramnet-fla state-size`."""

from __future__ import annotations

import json

import pytest

from ramnet_fla.cli import main
from ramnet_fla.plugin import create_plugin_manager, use_plugin_manager


@pytest.fixture(autouse=True)
def plugin_manager():
    with use_plugin_manager(create_plugin_manager(entry_points=False)) as manager:
        yield manager


def test_mixers_lists_name_plugin_and_description(capsys):
    assert main(['mixers']) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ['MIXER', 'PLUGIN', 'DESCRIPTION']
    rows = {line.split()[0]: line.split(maxsplit=2) for line in lines[1:] if line.strip()}
    assert set(rows) == {'ram', 'gla', 'deltanet', 'gated_deltanet', 'attention'}
    assert rows['gla'][1] == 'gla' and "GatedLinearAttention" in rows['gla'][2]


def test_mixers_json_reports_failed_plugins(plugin_manager, capsys):
    plugin_manager.failures['broken'] = 'failed to load from entry point ramnet_fla:broken: ImportError: x'
    assert main(['mixers', '--json']) == 0
    report = json.loads(capsys.readouterr().out)
    assert {m['name'] for m in report['mixers']} == {'ram', 'gla', 'deltanet', 'gated_deltanet', 'attention'}
    assert report['failed_plugins'] == {'broken': 'failed to load from entry point ramnet_fla:broken: ImportError: x'}


@pytest.mark.parametrize('preset,active', [('ramnet-340m', 393_216), ('transformer-340m', 50_331_648)])
def test_state_size_presets_give_the_paper_numbers(capsys, preset, active):
    assert main(['state-size', preset, '--seq-len', '1024', '--json']) == 0
    sizes = json.loads(capsys.readouterr().out)
    assert sizes['active'] == active and len(sizes['layers']) == 24
    assert main(['state-size', preset]) == 0
    table = capsys.readouterr().out
    assert f"{active} ({active / 1e6:.2f}M)" in table


def test_state_size_of_a_config_file(tmp_path, capsys):
    from ramnet_fla import RAMNetConfig

    RAMNetConfig(mixers=['gla', {'name': 'attention', 'num_heads': 4}], hidden_size=64,
                 num_hidden_layers=2).save_pretrained(tmp_path)
    for source in (tmp_path, tmp_path / 'config.json'):
        assert main(['state-size', str(source), '--seq-len', '3', '--json']) == 0
        sizes = json.loads(capsys.readouterr().out)
        assert [(layer['mixer'], layer['total']) for layer in sizes['layers']] == \
            [('gla', 4 * 8 * 16), ('attention', 2 * 3 * 64)]
    with pytest.raises(SystemExit, match="neither a preset"):
        main(['state-size', str(tmp_path / 'missing.json')])


def test_python_dash_m_runs_the_same_command_line():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, RAMNET_FLA_LOAD_ENTRY_POINTS='0',
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get('PYTHONPATH')])))
    done = subprocess.run([sys.executable, '-m', 'ramnet_fla.cli', 'mixers', '--json'], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {m['name'] for m in json.loads(done.stdout)['mixers']} == {'ram', 'gla', 'deltanet', 'gated_deltanet',
                                                                      'attention'}
