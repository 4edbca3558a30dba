"""`ramnet-fla state-size`: per-layer and total state of a model, for a preset or a config file.

    ramnet-fla state-size ramnet-340m               # 24 x RAM, width 1024, 8 heads x 128, K=8
    ramnet-fla state-size transformer-340m --seq-len 1024
    ramnet-fla state-size path/to/config.json       # or a directory holding config.json
"""

from __future__ import annotations

import argparse
import json
import os

from ramnet_fla.accounting import state_size
from ramnet_fla.cli.types import int_at_least

# The models of the paper's state table, at the 340M scale (24 layers, width 1024).
PRESETS: dict[str, dict] = {
    'ramnet-340m': {'mixers': [{'name': 'ram', 'num_heads': 8, 'head_dim': 128, 'topk': 8}]},
    'transformer-340m': {'mixers': [{'name': 'attention', 'num_heads': 16}]},
    'gla-340m': {'mixers': [{'name': 'gla', 'num_heads': 4}]},
    'deltanet-340m': {'mixers': [{'name': 'deltanet', 'num_heads': 8}]},
    'gated-deltanet-340m': {'mixers': [{'name': 'gated_deltanet', 'num_heads': 6, 'head_dim': 128}]},
    'hybrid-340m': {'mixers': [{'name': 'ram', 'num_heads': 8, 'head_dim': 128, 'topk': 8}] * 3
                           + [{'name': 'attention', 'num_heads': 16}]},
}
PRESET_SIZES = {'hidden_size': 1024, 'num_hidden_layers': 24}


def load_config(name_or_path: str):
    """A RAMNetConfig from a preset name, a config.json, or a directory holding one."""
    from ramnet_fla.models import RAMNetConfig
    if name_or_path in PRESETS:
        return RAMNetConfig(**PRESET_SIZES, **PRESETS[name_or_path])
    try:
        if os.path.isfile(name_or_path):
            with open(name_or_path) as file:
                values = json.load(file)
            if not isinstance(values, dict):
                raise ValueError(f"a config.json holds a JSON object, got a {type(values).__name__}")
            values.pop('model_type', None)
            return RAMNetConfig(**values)
        if os.path.isdir(name_or_path):
            return RAMNetConfig.from_pretrained(name_or_path)
    except (OSError, ValueError, TypeError) as error:              # JSONDecodeError is a ValueError
        raise SystemExit(f"state-size: {name_or_path!r} is not a usable RAMNet config: {error}") from None
    raise SystemExit(f"state-size: {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) "
                     "nor a config.json or a directory holding one")


def _millions(value) -> str:
    return '?' if value is None else f"{value / 1e6:.2f}M"


def _count(value) -> str:
    return '? (no state_size registered)' if value is None else str(value)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        sizes = state_size(config, args.seq_len)
    except (TypeError, ValueError) as error:                        # e.g. a mixer no plugin registers
        raise SystemExit(f"state-size: {args.config!r}: {error}") from None
    if args.json:
        print(json.dumps(sizes, indent=2))
        return 0
    print(f"{args.config}: {config.num_hidden_layers} layers, width {config.hidden_size}, "
          f"{args.seq_len} tokens per sequence")
    rows = [('LAYER', 'MIXER', 'TOTAL', 'ACTIVE')]
    rows += [(str(layer['layer']), layer['mixer'], _count(layer['total']), _count(layer['active']))
             for layer in sizes['layers']]
    rows += [('sum', '', f"{'?' if sizes['total'] is None else sizes['total']} ({_millions(sizes['total'])})",
              f"{'?' if sizes['active'] is None else sizes['active']} ({_millions(sizes['active'])})")]
    widths = [max(len(row[c]) for row in rows) for c in range(4)]
    for row in rows:
        print(f"{row[0]:>{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}")
    print("total: state entries one sequence keeps; active: entries one decoding step reads or writes")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser('state-size', help='state per sequence and per decoding step of a model')
    parser.add_argument('config', nargs='?', default='ramnet-340m',
                        help=f"a preset ({', '.join(PRESETS)}; default ramnet-340m), a config.json, or a directory")
    parser.add_argument('--seq-len', type=int_at_least(0), default=1024, help='cached tokens per sequence (default 1024)')
    parser.add_argument('--json', action='store_true', help='print JSON instead of a table')
    parser.set_defaults(func=run)
