"""Optional extras checked before a command starts work, so a missing one fails at once and by name.

`pip install "ramnet-fla[mqar]"` and friends install what a command needs beyond the core; a command
calls `require_extra` first, instead of running for minutes and failing at its first late import.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence


class MissingExtraError(ImportError):
    """An optional extra of ramnet-fla is not installed (the message says which, and how to install it)."""


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The names in `modules` that cannot be imported (absent, hidden or broken), in order."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    return missing


def require_extra(extra: str, modules: Sequence[str], command: str | None = None) -> None:
    """Check that the modules of the optional extra `extra` import, before any work starts.

    Args:
        extra: the extra's name in pyproject.toml, e.g. 'mqar'.
        modules: the importable names it provides, e.g. ('matplotlib', 'tqdm').
        command: the command that needs it, e.g. 'ramnet-fla mqar'. Given: exit (SystemExit, status 1)
            with one line on stderr, as a command line should. Not given: raise MissingExtraError.
    """
    if isinstance(modules, str) or not isinstance(modules, Sequence) or not modules:
        raise TypeError(f"`modules` must be a non-empty list of module names, got {modules!r}")
    missing = missing_modules(modules)
    if not missing:
        return
    what = command or 'this feature'
    message = (f"{what} needs the optional extra '{extra}' (missing: {', '.join(missing)}): "
               f'pip install "ramnet-fla[{extra}]"')
    if command is not None:
        raise SystemExit(f"error: {message}")
    raise MissingExtraError(message, name=missing[0])
