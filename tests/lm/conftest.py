"""Shared pieces of the LM tests: a small deterministic English-like text, its byte-level token
cache, and the tiny ram + gla + attention config the distributed and resume tests train."""

from __future__ import annotations

import os
import random

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = ('the lord said unto moses and aaron in the land of egypt this month shall be unto you the beginning '
         'of months it shall be the first month of the year to you speak ye unto all the congregation').split()


def make_text(chars: int, seed: int = 0) -> str:
    """Lines of random words from a small vocabulary: repeated bigrams, like real text."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < chars:
        line = ' '.join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))).capitalize() + '.\n'
        lines.append(line)
        size += len(line)
    return ''.join(lines)


@pytest.fixture(scope='session')
def text_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp('corpus') / 'text.txt'
    path.write_text(make_text(40_000))
    return str(path)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('tokens'))


def subprocess_env() -> dict:
    """The environment for a child `python -m ramnet_fla.lm`: this checkout first on the path."""
    path = os.environ.get('PYTHONPATH')
    return dict(os.environ, PYTHONPATH=REPO + (os.pathsep + path if path else ''), OMP_NUM_THREADS='1')


def tiny_args(text_file: str, data_dir: str, out: str, steps: int = 3) -> list[str]:
    """Command-line arguments of the tiny hybrid run (bytes, 3 layers ram + gla + attention, width 32)."""
    return ['--data', text_file, '--tokenizer', 'bytes', '--data-dir', data_dir,
            '--mixers', 'ram:num_heads=2,num_factors=3', 'gla:num_heads=2', 'attention:num_heads=2',
            '--layers', '3', '--hidden-size', '32', '--steps', str(steps), '--batch-size', '4', '--seq-len', '32',
            '--warmup-steps', '1', '--lr', '3e-3', '--eval-every', '0', '--final-eval-windows', '4',
            '--copy-examples', '0', '--log-every', '1', '--threads', '1', '--no-progress', '--out', out]


def tiny_config(text_file: str, data_dir: str, out: str, **changes):
    """The TrainConfig the command line of `tiny_args` gives."""
    from ramnet_fla.cli.lm import build_parser, config_from_args
    parser = build_parser()
    args = parser.parse_args(['train', *tiny_args(text_file, data_dir, out)])
    config = config_from_args(args.parser, args)
    for key, value in changes.items():
        setattr(config, key, value)
    return config
