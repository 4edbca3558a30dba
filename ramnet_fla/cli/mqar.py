"""`ramnet-fla mqar`: multi-query associative recall, RAM-Net against GLA and DeltaNet.

--quick (the default): `ram` (M = 4**5 = 1,024), `gla` and `deltanet` at the same width (64),
2 layers, on 16 key/value pairs at T=64, the same data, steps and learning rate, on the CPU in
minutes. 16 pairs at T=64 is where a fixed-size state starts to fail (SPEC section 3). Every mixer
gets the same address prior (`ramnet_fla.mqar.address_prior`) unless --no-prior; a mixer without
the q/k short convolutions it needs (e.g. `attention`) trains without it, and the command says so.
--full: the sweep behind a Zoology Figure-3-style plot (sequence lengths 64..1024, up to T/4 pairs,
widths 64..256, RAM's M from 4**3 to 4**8 at a fixed parameter count, a learning-rate sweep per
point). Long: meant for a GPU, and resumable (rerun the same command to continue).

--medium: T=256, vocabulary 8,192, 32 and 64 pairs, RAM over M with and without the prior against
GLA, DeltaNet and Gated DeltaNet, learning rates and 3 seeds (`ramnet_fla.mqar.experiments`; its
plan and reductions are printed first). --shard I/N splits --medium or --full over N processes
sharing one --out; --report draws the table and plots of what is recorded so far.

Writes OUT/results.json (one record per run, see `ramnet_fla.mqar.train.train_mqar`) and
OUT/mqar.png (accuracy against state size; --medium: mqar_medium.png and mqar_medium_vs_m.png),
and prints a table. Bad arguments, an --out that is a
file and a results.json that is not this tool's stop it before any training (status 2); Ctrl-C
keeps the completed runs (status 130).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from ramnet_fla.cli.types import device as device_name
from ramnet_fla.cli.types import int_at_least, positive_float, shard
from ramnet_fla.utils.extras import require_extra


def check_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """Everything a value-by-value parse cannot see, before any training (`parser.error`: status 2).

    Returns the results file's path; an existing one is read (not changed) to check it is ours.
    """
    from ramnet_fla.mqar.train import load_results
    from ramnet_fla.plugin import get_plugin_manager

    if args.report and args.shard is not None:
        parser.error("argument --report: reports the whole results file; drop --shard")
    if args.shard is not None and not (args.medium or args.full):
        parser.error("argument --shard: only applies to --medium and --full (the quick comparison is one sweep)")
    if args.full:
        ignored = [option for option, value in (('--mixers', args.mixers), ('--num-test', args.num_test))
                   if value is not None]
        if ignored:
            parser.error(f"{' and '.join(ignored)} only apply to the quick comparison; --full runs its fixed sweep")
    if args.mixers:
        known = get_plugin_manager().mixers()
        unknown = [name for name in args.mixers if name not in known]
        if unknown:
            parser.error(f"argument --mixers: unknown mixer(s) {', '.join(map(repr, unknown))}; "
                         f"known mixers: {', '.join(sorted(known))}")
    if args.device and args.device.startswith('cuda'):
        if not torch.cuda.is_available():
            parser.error(f"argument --device: {args.device!r} asked for, but CUDA is not available here")
        index = int(args.device.partition(':')[2] or 0)
        if index >= torch.cuda.device_count():
            parser.error(f"argument --device: {args.device!r}, but only {torch.cuda.device_count()} CUDA device(s)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"argument --out: {args.out!r} is a file, not a folder")
    results_path = os.path.join(args.out, 'results.json')
    try:
        load_results(results_path)
    except (OSError, ValueError) as error:
        parser.error(f"{error}; it is left untouched (pick another --out, or move it away)")
    return results_path


def run(args: argparse.Namespace) -> int:
    require_extra('mqar', ('matplotlib', 'tqdm'), command='ramnet-fla mqar')
    from ramnet_fla.mqar.experiments import FULL_LEARNING_RATES, QUICK_MIXERS, full_runs, quick_runs, quick_without_prior
    from ramnet_fla.mqar.report import format_table, plot_accuracy_vs_state
    from ramnet_fla.mqar.train import best_per_config, load_results, run_sweep

    results_path = check_arguments(args, args.parser)
    torch.set_num_threads(args.threads)
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as error:
        args.parser.error(f"argument --out: cannot create {args.out!r}: {error.strerror or error}")
    if args.report:
        return _report(args, results_path)
    if args.medium:
        return _run_medium(args, results_path)
    if args.full:
        runs = _shard(full_runs(args.seed, args.steps or 4000, prior=not args.no_prior), args.shard)
        learning_rates = args.lr or FULL_LEARNING_RATES
    else:
        mixers = tuple(args.mixers) if args.mixers else QUICK_MIXERS
        if not args.no_prior:
            for name, problem in quick_without_prior(mixers).items():
                print(f"address prior: not applied to {name} ({problem}); it trains without it")
        runs = quick_runs(args.seed, args.steps or 500, (args.lr or [1e-3])[0], mixers=mixers,
                          num_test=1000 if args.num_test is None else args.num_test, prior=not args.no_prior)
        learning_rates = args.lr
    device = args.device or None
    try:
        records = run_sweep(runs, results_path, learning_rates=learning_rates, device=device,
                            progress=not args.no_progress)
    except KeyboardInterrupt:
        kept = len(load_results(results_path))
        print(f"\nramnet-fla mqar: interrupted; {kept} completed run(s) kept in {results_path} "
              "(rerun the same command to continue)", file=sys.stderr)
        return 130
    best = best_per_config(records)
    print(format_table(best))
    plot_path = os.path.join(args.out, 'mqar.png')
    machine = 'CUDA' if torch.cuda.is_available() and device != 'cpu' else f"CPU, threads={args.threads}"
    plot_accuracy_vs_state(best, plot_path, f"MQAR ({'full' if args.full else 'quick'}, seed {args.seed}, {machine})")
    print(f"\nresults: {results_path}\nplot:    {plot_path}")
    return 0


def _report(args: argparse.Namespace, results_path: str) -> int:
    """--report: the table and plots of the runs already in OUT/results.json; trains nothing (e.g.
    while shards of a sweep still run). --medium: per configuration over seeds, as the sweep draws."""
    from ramnet_fla.mqar.report import format_table, plot_accuracy_vs_state
    from ramnet_fla.mqar.train import best_per_config, load_results
    records = load_results(results_path)
    if not records:
        args.parser.error(f"argument --report: {results_path} holds no runs yet")
    if args.medium:
        _medium_outputs(records, results_path, args.out)
        return 0
    best = best_per_config(records)
    print(format_table(best))
    plot_accuracy_vs_state(best, os.path.join(args.out, 'mqar.png'), f"MQAR ({len(records)} runs in {results_path})")
    print(f"\n{len(records)} runs in {results_path}\nplot: {args.out}/mqar.png")
    return 0


def _shard(points: list, share: tuple[int, int] | None) -> list:
    """This process's points of a sweep: I, I+N, I+2N, ... for --shard I/N (all without it)."""
    if share is None:
        return points
    index, count = share
    return points[index::count]


def _run_medium(args: argparse.Namespace, results_path: str) -> int:
    """--medium: `ramnet_fla.mqar.experiments.medium_points`, trained by `run_medium`, plotted by report."""
    from ramnet_fla.mqar.experiments import MEDIUM_LEARNING_RATES, medium_plan, medium_points, run_medium
    points = _shard(medium_points(args.steps) if args.steps else medium_points(), args.shard)
    learning_rates = tuple(args.lr) if args.lr else MEDIUM_LEARNING_RATES
    print(medium_plan(points, learning_rates=learning_rates), flush=True)
    def log(r: dict) -> None:
        print(f"{r['mixer']} pairs={r['num_kv_pairs']} seed={r['seed']} lr={r['lr']:g}: accuracy {r['accuracy']:.3f} "
              f"after {r['steps']} steps, {r['seconds']:.0f} s", flush=True)

    records = run_medium(points, results_path, learning_rates=learning_rates, device=args.device or None,
                         progress=not args.no_progress, on_record=log)
    _medium_outputs(records, results_path, args.out)
    return 0


def _medium_outputs(records: list[dict], results_path: str, out: str) -> None:
    """The seed table of the records, and the two medium plots in `out`."""
    from ramnet_fla.mqar.report import format_seed_table, plot_accuracy_vs_m, plot_medium, summarize_seeds
    summary = summarize_seeds(records)
    print(format_seed_table(summary))
    plot_medium(summary, os.path.join(out, 'mqar_medium.png'))
    plot_accuracy_vs_m(summary, os.path.join(out, 'mqar_medium_vs_m.png'))
    print(f"\n{len(records)} runs from {results_path}\nplots: {out}/mqar_medium.png, {out}/mqar_medium_vs_m.png")


def register(subparsers) -> None:
    parser = subparsers.add_parser('mqar', help='MQAR recall benchmark: RAM-Net vs GLA vs DeltaNet',
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true', help='ram vs gla vs deltanet, T=64, 16 pairs, width 64 (default)')
    mode.add_argument('--medium', action='store_true',
                      help='T=256 sweep over M, seeds and lrs, sized for about 2 h of two CPU cores '
                           '(--shard 0/2 and 1/2; resumable)')
    mode.add_argument('--full', action='store_true', help='the full Figure-3-style sweep (long; resumable)')
    parser.add_argument('--seed', type=int_at_least(0), default=0)
    parser.add_argument('--out', default='runs/mqar', help='output folder (default runs/mqar)')
    parser.add_argument('--steps', type=int_at_least(1), default=None, help='steps per run (quick 500, full 4000)')
    parser.add_argument('--lr', type=positive_float, nargs='+', default=None,
                        help='learning rate(s) to sweep (quick: 1e-3; full: 3e-4 1e-3 3e-3)')
    parser.add_argument('--no-prior', action='store_true',
                        help='plain layers, without the address prior (RAM at M=1,024 then stalls)')
    parser.add_argument('--num-test', type=int_at_least(1), default=None,
                        help='quick mode: held-out examples (default 1000)')
    parser.add_argument('--mixers', nargs='+', default=None, help='quick mode: the registered mixers to compare')
    parser.add_argument('--device', type=device_name, default=None, help='cpu, cuda or cuda:N (default: cuda when present)')
    parser.add_argument('--threads', type=int_at_least(1), default=2, help='CPU threads (default 2)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--report', action='store_true',
                        help='train nothing: the table and plots of the runs already in OUT/results.json '
                             '(with --medium: over seeds, as the sweep draws them)')
    parser.add_argument('--shard', type=shard, default=None, metavar='I/N',
                        help='--medium/--full: train points I, I+N, ... only; N processes with the same --out '
                             'share its results.json (a lock keeps every record); a run without --shard '
                             'afterwards trains nothing new and draws the plots of all')
    parser.set_defaults(func=run, parser=parser)
