"""The other commands' bad input (issue 10, beyond `mqar`): usage errors with status 2 naming the option,
config files that cannot be used in one line, Ctrl-C without a traceback; `eval` is a sub-command."""

from __future__ import annotations

import json

import pytest

import ramnet_fla.cli as cli
from ramnet_fla.cli import main


def _exit(argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize('argv,option', [
    (['demo', '--pairs', '0'], '--pairs'), (['demo', '--threads', '0'], '--threads'), (['demo', '--seed', '-3'], '--seed'),
    (['state-size', '--seq-len', '-1'], '--seq-len'), (['state-size', '--seq-len', 'many'], '--seq-len'),
])
def test_bad_values_are_usage_errors(capsys, argv, option):
    assert _exit(argv) == 2
    err = capsys.readouterr().err
    assert 'Traceback' not in err and option in err.strip().splitlines()[-1]


@pytest.mark.parametrize('content,words', [('{"vocab_size": 64, "hidden', 'not a usable'),
                                           ('[1, 2]', 'JSON object'),
                                           ('{"hidden_ratio": 0}', 'hidden_ratio'),
                                           ('{"mixers": ["nosuch"]}', 'nosuch')],
                         ids=['truncated', 'a list', 'a bad value', 'an unknown mixer'])
def test_a_config_file_that_cannot_be_used_is_one_line(tmp_path, content, words):
    path = tmp_path / 'config.json'
    path.write_text(content)
    message = _exit(['state-size', str(path)])
    assert isinstance(message, str) and str(path) in message and words in message and '\n' not in message


def test_ctrl_c_in_any_command_is_one_line(monkeypatch, capsys):
    import ramnet_fla.cli.mixers as mixers

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(mixers, 'run', interrupted)
    assert _exit(['mixers']) == 130
    err = capsys.readouterr().err
    assert 'interrupted' in err and 'Traceback' not in err


def test_eval_is_a_sub_command(capsys):
    assert 'ramnet_fla.evals.cli' in cli.COMMAND_MODULES
    assert _exit(['eval', '--help']) in (0, None)                  # lm-eval's own help
    out = capsys.readouterr().out
    assert '--tasks' in out and '--model' in out


def test_mqar_names_its_extra_first(tmp_path, monkeypatch):
    import importlib.abc
    import sys

    class Hide(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split('.')[0] == 'matplotlib':
                raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
            return None

    for name in list(sys.modules):
        if name.split('.')[0] == 'matplotlib':
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, 'meta_path', [Hide()] + sys.meta_path)
    out = tmp_path / 'out'
    message = _exit(['mqar', '--steps', '1', '--out', str(out)])
    assert message == ("error: ramnet-fla mqar needs the optional extra 'mqar' (missing: matplotlib): "
                       'pip install "ramnet-fla[mqar]"')
    assert not out.exists()                                        # nothing started


def test_a_results_file_of_other_records_is_refused(tmp_path, capsys):
    out = tmp_path / 'out'
    out.mkdir()
    content = json.dumps([{'mixer': 'ram', 'accuracy': 0.5, 'key': 'not json'}])
    (out / 'results.json').write_text(content)
    assert _exit(['mqar', '--steps', '1', '--out', str(out)]) == 2
    assert 'results.json' in capsys.readouterr().err and (out / 'results.json').read_text() == content
