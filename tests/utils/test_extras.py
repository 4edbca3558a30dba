"""require_extra: a missing optional extra fails at once, in one line naming the extra to install."""

from __future__ import annotations

import importlib.abc
import sys

import pytest

from ramnet_fla.utils.extras import MissingExtraError, missing_modules, require_extra


class HideModules(importlib.abc.MetaPathFinder):
    """An import hook that makes `names` (and their submodules) fail to import, as if not installed."""

    def __init__(self, *names):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split('.')[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@pytest.fixture
def hide(monkeypatch):
    def hide_modules(*names):
        for name in list(sys.modules):
            if name.split('.')[0] in names:
                monkeypatch.delitem(sys.modules, name)
        monkeypatch.setattr(sys, 'meta_path', [HideModules(*names)] + sys.meta_path)
    return hide_modules


def test_installed_modules_pass():
    require_extra('test', ['json', 'argparse'])
    require_extra('test', ('json',), command='ramnet-fla something')


def test_a_module_set_to_none_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, 'json', None)
    with pytest.raises(MissingExtraError, match=r"optional extra 'mqar' \(missing: json\)") as error:
        require_extra('mqar', ['argparse', 'json'])
    assert 'pip install "ramnet-fla[mqar]"' in str(error.value)
    assert isinstance(error.value, ImportError) and error.value.name == 'json'


def test_an_import_hook_hides_modules(hide):
    hide('json', 'csv')
    assert missing_modules(['csv', 'argparse', 'json']) == ['csv', 'json']
    with pytest.raises(MissingExtraError, match='missing: csv, json'):
        require_extra('eval', ['csv', 'json'])


def test_a_command_exits_with_one_line(hide):
    hide('json')
    with pytest.raises(SystemExit) as exit_info:
        require_extra('mqar', ['json'], command='ramnet-fla mqar')
    message = str(exit_info.value.code)
    assert message == ("error: ramnet-fla mqar needs the optional extra 'mqar' (missing: json): "
                       'pip install "ramnet-fla[mqar]"')
    assert '\n' not in message


def test_a_broken_module_counts_as_missing(tmp_path, monkeypatch):
    (tmp_path / 'broken_extra_module.py').write_text("raise ImportError('a dependency of it is missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert missing_modules(['broken_extra_module']) == ['broken_extra_module']


@pytest.mark.parametrize('modules', ['json', [], None])
def test_modules_must_be_a_list_of_names(modules):
    with pytest.raises(TypeError, match='modules'):
        require_extra('mqar', modules)
