"""`ramnet-fla eval ...`: lm-eval's command line with ramnet registered (see `ramnet_fla.evals`)."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add `eval`: every argument after it goes to lm-eval unchanged (its `-h` included)."""
    # '+' as the only prefix character: no lm-eval option is parsed here, all of them pass through
    parser = subparsers.add_parser(
        'eval', add_help=False, prefix_chars='+',
        help='evaluate a checkpoint with lm-evaluation-harness (all arguments go to lm-eval; extra: eval)',
        description='Runs lm-eval with model type ramnet registered, e.g. ramnet-fla eval --model hf '
                    '--model_args pretrained=PATH --tasks wikitext. Needs pip install "ramnet-fla[eval]".',
    )
    parser.add_argument('lm_eval_args', nargs=argparse.REMAINDER, help='arguments for lm-eval')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ramnet_fla.evals.harness import run_lm_eval
    run_lm_eval(args.lm_eval_args, prog='ramnet-fla eval')
    return 0
