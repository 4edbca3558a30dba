"""`ramnet-fla demo`: print the two demonstrations of `ramnet_fla.demo` (CPU, seconds)."""

from __future__ import annotations

import argparse

import torch

from ramnet_fla.cli.types import int_at_least
from ramnet_fla.demo import capacity_demo, ring_buffer_demo


def _print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    columns = list(rows[0])
    cells = [[f"{row[c]:.3g}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print('  '.join(c.rjust(w) for c, w in zip(columns, widths)))
    for r in cells:
        print('  '.join(x.rjust(w) for x, w in zip(r, widths)))


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    _print_table(ring_buffer_demo(seed=args.seed), 'CAPE head as a ring buffer (M=64, K=2): read at t returns v[t-D]')
    _print_table(capacity_demo(num_pairs=args.pairs, seed=args.seed),
                 f'Recall of {args.pairs} key/value pairs at a fixed key width U*d_p=24 (K=4, no training)')
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser('demo', help='show the RAM-Net op at work (CPU, seconds)')
    parser.add_argument('--pairs', type=int_at_least(1), default=256, help='key/value pairs to store (default 256)')
    parser.add_argument('--seed', type=int_at_least(0), default=0)
    parser.add_argument('--threads', type=int_at_least(1), default=2)
    parser.set_defaults(func=run)
