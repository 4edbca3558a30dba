"""`ramnet-fla mqar`: multi-query associative recall, RAM-Net against GLA and DeltaNet.

--quick (the default): `ram` (M = 4**5 = 1,024), `gla` and `deltanet` at the same width (64),
2 layers, on 16 key/value pairs at T=64, the same data, steps and learning rate, on the CPU in
minutes. 16 pairs at T=64 is where a fixed-size state starts to fail (SPEC section 3). Every mixer
gets the same address prior (`ramnet_fla.mqar.address_prior`) unless --no-prior.
--full: the sweep behind a Zoology Figure-3-style plot (sequence lengths 64..1024, up to T/4 pairs,
widths 64..256, RAM's M from 4**3 to 4**8 at a fixed parameter count, a learning-rate sweep per
point). Long: meant for a GPU, and resumable (rerun the same command to continue).

Writes OUT/results.json (one record per run, see `ramnet_fla.mqar.train.train_mqar`) and
OUT/mqar.png (accuracy against state size), and prints a table.
"""

from __future__ import annotations

import argparse
import os

import torch

from ramnet_fla.mqar.experiments import (FULL_LEARNING_RATES, MEDIUM_LEARNING_RATES, QUICK_MIXERS, full_runs,
                                         medium_plan, medium_points, quick_runs, run_medium)
from ramnet_fla.mqar.report import format_table, plot_accuracy_vs_state
from ramnet_fla.mqar.train import best_per_config, run_sweep


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, 'results.json')
    if args.medium:
        return _run_medium(args, results_path)
    if args.full:
        runs = full_runs(args.seed, args.steps or 4000, prior=not args.no_prior)
        learning_rates = args.lr or FULL_LEARNING_RATES
    else:
        runs = quick_runs(args.seed, args.steps or 500, (args.lr or [1e-3])[0],
                          mixers=tuple(args.mixers) if args.mixers else QUICK_MIXERS, num_test=args.num_test,
                          prior=not args.no_prior)
        learning_rates = args.lr
    device = args.device or None
    records = run_sweep(runs, results_path, learning_rates=learning_rates, device=device,
                        progress=not args.no_progress)
    best = best_per_config(records)
    print(format_table(best))
    plot_path = os.path.join(args.out, 'mqar.png')
    machine = 'CUDA' if torch.cuda.is_available() and device != 'cpu' else f"CPU, threads={args.threads}"
    plot_accuracy_vs_state(best, plot_path, f"MQAR ({'full' if args.full else 'quick'}, seed {args.seed}, {machine})")
    print(f"\nresults: {results_path}\nplot:    {plot_path}")
    return 0


def _run_medium(args: argparse.Namespace, results_path: str) -> int:
    """--medium: `ramnet_fla.mqar.experiments.medium_points`, trained by `run_medium`, plotted by report."""
    from ramnet_fla.mqar.report import plot_accuracy_vs_m, plot_medium, summarize_seeds
    points = medium_points(args.steps) if args.steps else medium_points()
    learning_rates = tuple(args.lr) if args.lr else MEDIUM_LEARNING_RATES
    print(medium_plan(points, learning_rates=learning_rates), flush=True)
    def log(r: dict) -> None:
        print(f"{r['mixer']} pairs={r['num_kv_pairs']} seed={r['seed']} lr={r['lr']:g}: accuracy {r['accuracy']:.3f} "
              f"after {r['steps']} steps, {r['seconds']:.0f} s", flush=True)

    records = run_medium(points, results_path, learning_rates=learning_rates, device=args.device or None,
                         progress=not args.no_progress, on_record=log)
    summary = summarize_seeds(records)
    print(format_table(summary))
    plot_medium(summary, os.path.join(args.out, 'mqar_medium.png'))
    plot_accuracy_vs_m(summary, os.path.join(args.out, 'mqar_medium_vs_m.png'))
    print(f"\nresults: {results_path}\nplots:   {args.out}/mqar_medium.png, {args.out}/mqar_medium_vs_m.png")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser('mqar', help='MQAR recall benchmark: RAM-Net vs GLA vs DeltaNet',
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true', help='ram vs gla vs deltanet, T=64, 16 pairs, width 64 (default)')
    mode.add_argument('--medium', action='store_true',
                      help='T=256 sweep over M, seeds and lrs, sized for about 3 h of one CPU core (resumable)')
    mode.add_argument('--full', action='store_true', help='the full Figure-3-style sweep (long; resumable)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default='runs/mqar', help='output folder (default runs/mqar)')
    parser.add_argument('--steps', type=int, default=None, help='steps per run (quick 500, full 4000)')
    parser.add_argument('--lr', type=float, nargs='+', default=None,
                        help='learning rate(s) to sweep (quick: 1e-3; full: 3e-4 1e-3 3e-3)')
    parser.add_argument('--no-prior', action='store_true',
                        help='plain layers, without the address prior (RAM at M=1,024 then stalls)')
    parser.add_argument('--num-test', type=int, default=1000, help='quick mode: held-out examples (default 1000)')
    parser.add_argument('--mixers', nargs='+', default=None, help='quick mode: the registered mixers to compare')
    parser.add_argument('--device', default=None, help='cpu or cuda (default: cuda when present)')
    parser.add_argument('--threads', type=int, default=2, help='CPU threads (default 2)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.set_defaults(func=run)
