"""The `ramnet-fla` command line: one sub-command per module of this package.

Each module exposes `register(subparsers)`, which adds its parser and sets `func` (the command's
`run(args) -> int`); this file only lists them. Run as `ramnet-fla ...` or `python -m ramnet_fla.cli ...`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    'ramnet_fla.cli.demo',
    'ramnet_fla.cli.mixers',
    'ramnet_fla.cli.state_size',
    'ramnet_fla.cli.mqar',
    'ramnet_fla.cli.lm',
    'ramnet_fla.evals.cli',             # `eval`: beside the harness it drives (also `python -m ramnet_fla.evals`)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='ramnet-fla', description='RAM-Net for flash-linear-attention')
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:                                       # Ctrl-C: one line, no traceback
        print(f"\nramnet-fla {args.command}: interrupted", file=sys.stderr)
        return 130
