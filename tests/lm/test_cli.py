"""`ramnet-fla lm`: bad input exits with status 2 and one line naming the argument, no traceback."""

from __future__ import annotations

import pytest

from ramnet_fla.cli import main as ramnet_main
from tests.lm.conftest import tiny_args


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        ramnet_main(['lm', *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert len(lines) == 1, err
    return lines[0]


def _with(args: list[str], option: str, *values: str) -> list[str]:
    """`args` with `option`'s values replaced."""
    out = list(args)
    index = out.index(option)
    end = index + 1
    while end < len(out) and not out[end].startswith('--'):
        end += 1
    out[index + 1:end] = values
    return out


@pytest.mark.parametrize('option, values, expected', [
    ('--mixers', ['ram', 'mamba9'], "unknown mixer 'mamba9'; known mixers: attention, deltanet"),
    ('--mixers', ['ram:topk=4096'], 'topk'),
    ('--mixers', ['ram:=3'], '--mixers'),
    ('--steps', ['0'], '`--steps` must be a positive int, got 0'),
    ('--steps', ['-5'], '`--steps` must be a positive int, got -5'),
    ('--batch-size', ['0'], '`--batch-size` must be a positive int'),
    ('--tokenizer', ['bpe:12'], '`--tokenizer`'),
    ('--warmup-steps', ['9'], '`--warmup-steps` (9) must be at most `--steps` (3)'),
])
def test_bad_arguments(capsys, tmp_path, text_file, data_dir, option, values, expected):
    args = _with(tiny_args(text_file, data_dir, str(tmp_path / 'out')), option, *values)
    assert expected in _error(capsys, ['train', *args])


def test_world_size_must_divide_the_global_batch(capsys, monkeypatch, tmp_path, text_file, data_dir):
    monkeypatch.setenv('WORLD_SIZE', '3')
    line = _error(capsys, ['train', *tiny_args(text_file, data_dir, str(tmp_path / 'out'))])
    assert '`--batch-size` (4 sequences, the global batch) must be divisible by the world size x `--grad-accum`' in line
    monkeypatch.setenv('WORLD_SIZE', '2')
    args = tiny_args(text_file, data_dir, str(tmp_path / 'out')) + ['--grad-accum', '4']
    assert '2 x 4 = 8' in _error(capsys, ['train', *args])


def test_a_corpus_shorter_than_one_sequence(capsys, tmp_path):
    short = tmp_path / 'short.txt'
    short.write_text('In the beginning God created the heaven and the earth.\n' * 3)
    args = tiny_args(str(short), str(tmp_path / 'cache'), str(tmp_path / 'out'))
    line = _error(capsys, ['train', *_with(args, '--seq-len', '512')])
    assert '`--seq-len`: the train split' in line and 'fewer than one sequence of seq_len + 1 = 513' in line


def test_missing_data_and_no_job(capsys, tmp_path, data_dir):
    args = tiny_args(str(tmp_path / 'nothing-*.txt'), data_dir, str(tmp_path / 'out'))
    assert 'names no text file' in _error(capsys, ['train', *args])
    assert 'give a sub-command (prepare, train) or --quick / --sweep / --ablations' in _error(capsys, [])
    assert '--steps' in _error(capsys, ['--quick', '--steps', '0'])


@pytest.mark.parametrize('argv, expected', [
    (['--ablations', '--only', 'K=5'], "`--only`: unknown ablation(s) ['K=5']"),
    (['--sweep', '--only', 'mamba'], "`--only`: unknown model(s) ['mamba']"),
    (['--quick', '--lrs', '1e-3'], '--lrs goes with --sweep or --ablations'),
    (['--ablations', '--lrs', '0'], '`--lrs` must be positive'),
    (['--quick', '--ablations'], 'not allowed with argument'),
    (['--sweep', '--seeds', '1'], '--seeds goes with --quick'),
    (['--quick', '--seeds', '0', '0'], '`--seeds` must be distinct integers >= 0'),
    (['--quick', '--seeds', '-1'], '`--seeds` must be distinct integers >= 0'),
])
def test_job_options_are_checked_before_any_work(capsys, argv, expected):
    assert expected in _error(capsys, argv)
