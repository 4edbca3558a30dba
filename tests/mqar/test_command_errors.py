"""Hardening of `ramnet-fla mqar` (issue 10): every bad argument exits with status 2 and a clear line
naming it, no traceback; results files that are not ours are left untouched; Ctrl-C keeps the
completed runs."""

from __future__ import annotations

import json

import pytest
import torch

from ramnet_fla.cli import main

BASE = ['mqar', '--steps', '1', '--threads', '1', '--no-progress', '--num-test', '16']


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


def _assert_usage_error(capsys, argv, *words):
    assert _exit_code(argv) == 2
    captured = capsys.readouterr()
    assert 'Traceback' not in captured.err + captured.out
    last = [line for line in captured.err.splitlines() if line.strip()][-1]
    for word in words:
        assert word in last, (word, last)


@pytest.mark.parametrize('option,value', [('--steps', '-1'), ('--steps', '0'), ('--lr', '0'), ('--lr', 'nan'),
                                          ('--num-test', '0'), ('--seed', '-1'), ('--threads', '0'),
                                          ('--device', 'tpu')])
def test_bad_values_are_usage_errors(tmp_path, capsys, option, value):
    _assert_usage_error(capsys, [*BASE, '--out', str(tmp_path / 'out'), option, value], option)


def test_an_unknown_mixer_lists_the_known_ones(tmp_path, capsys):
    _assert_usage_error(capsys, [*BASE, '--out', str(tmp_path / 'out'), '--mixers', 'nosuch'], 'nosuch', 'gla')


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_cuda_without_cuda_is_a_usage_error(tmp_path, capsys):
    _assert_usage_error(capsys, [*BASE, '--out', str(tmp_path / 'out'), '--device', 'cuda'], '--device')


def test_out_naming_a_file_is_a_usage_error(tmp_path, capsys):
    target = tmp_path / 'file.txt'
    target.write_text('not a folder')
    _assert_usage_error(capsys, [*BASE, '--out', str(target)], '--out')
    assert target.read_text() == 'not a folder'


@pytest.mark.parametrize('content', ['[{"mixer": "ram", "acc', '{"some": "other tool"}', '[1, 2, 3]'],
                         ids=['truncated', 'a dict', 'not records'])
def test_a_results_file_that_is_not_ours_is_named_and_kept(tmp_path, capsys, content):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'results.json').write_text(content)
    _assert_usage_error(capsys, [*BASE, '--out', str(out)], 'results.json')
    assert (out / 'results.json').read_text() == content


@pytest.mark.parametrize('option', [['--mixers', 'ram'], ['--num-test', '5']])
def test_options_full_ignores_are_usage_errors(tmp_path, capsys, option):
    argv = ['mqar', '--full', '--out', str(tmp_path / 'out'), *option]
    _assert_usage_error(capsys, argv, option[0])


def test_attention_trains_and_is_named_as_not_taking_the_prior(tmp_path, capsys):
    out = tmp_path / 'out'
    assert _exit_code([*BASE, '--out', str(out), '--mixers', 'attention']) == 0
    record, = json.loads((out / 'results.json').read_text())
    assert record['mixer'].startswith('attention') and 0.0 <= record['accuracy'] <= 1.0
    captured = capsys.readouterr()
    assert 'attention' in captured.out + captured.err and 'prior' in captured.out + captured.err


def test_ctrl_c_ends_with_one_line_and_keeps_completed_runs(tmp_path, capsys, monkeypatch):
    import ramnet_fla.mqar.train as train

    real = train.train_mqar
    calls = []

    def interrupted_second_run(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train, 'train_mqar', interrupted_second_run)
    out = tmp_path / 'out'
    code = _exit_code([*BASE, '--out', str(out), '--mixers', 'ram', 'gla'])
    assert code not in (0, None)
    captured = capsys.readouterr()
    assert 'Traceback' not in captured.err and 'interrupt' in captured.err.lower()
    records = json.loads((out / 'results.json').read_text())
    assert [r['mixer'] for r in records] == ['ram+prior']
