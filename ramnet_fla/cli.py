"""The `ramnet-fla` command line.

Each sub-command lives in its own module, which exposes `register(subparsers)` to add its parser
and set `func`; this file only lists them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    'ramnet_fla.demo',
    'ramnet_fla.cli_mixers',
    'ramnet_fla.cli_state_size',
    'ramnet_fla.mqar.command',
    'ramnet_fla.lm.cli',
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='ramnet-fla', description='RAM-Net for flash-linear-attention')
    subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == '__main__':
    sys.exit(main())
