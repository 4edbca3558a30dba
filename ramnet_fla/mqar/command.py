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

from ramnet_fla.mqar.address_prior import mixer_with_address_prior
from ramnet_fla.mqar.data import MQARTask
from ramnet_fla.mqar.train import MQARRun, best_per_config, run_sweep

QUICK_TASK = MQARTask(vocab_size=1024, seq_len=64, num_kv_pairs=16)
QUICK_MIXERS = ('ram', 'gla', 'deltanet')
FULL_LEARNING_RATES = (3e-4, 1e-3, 3e-3)
# (num_factors U, factor_dim d_p) giving M = 4**3 .. 4**8 slots from the same 24 logits per head
# where possible: U*d_p = 24 for U in (3, 4, 6, 8) (M = 512, 1296, 4096, 6561); M = 64 (U=3, d_p=4) and
# M = 65536 (U=8, d_p=4) for the ends of the range at 12 and 32 logits.
FULL_RAM_ADDRESSES = ((3, 4), (3, 8), (4, 6), (6, 4), (8, 3), (8, 4))


def mixer_spec(name: str, num_heads: int = 2, **kwargs) -> dict:
    """The spec of a built-in mixer for MQAR: `num_heads` heads and short convolutions on."""
    return {'name': name, 'num_heads': num_heads, 'use_short_conv': True, **kwargs}


def ram_spec(num_factors: int = 3, factor_dim: int = 4, topk: int = 8, **kwargs) -> dict:
    return mixer_spec('ram', num_factors=num_factors, factor_dim=factor_dim, topk=topk, **kwargs)


def quick_runs(seed: int, steps: int, lr: float, mixers=QUICK_MIXERS, num_test: int = 1000,
               prior: bool = True) -> list[MQARRun]:
    """Same task, width, data, steps and lr for every mixer; RAM at its default M = 4**5 = 1,024.

    prior: give every mixer the same address prior (`ramnet_fla.mqar.address_prior`: tied q/k
    projections, write logits delayed by one token at init); without it RAM at M=1,024 stalls.
    """
    specs = {'ram': ram_spec(num_factors=5), 'gla': mixer_spec('gla'), 'deltanet': mixer_spec('deltanet'),
             # fla's defaults (head_dim 256, values twice as wide) would give it 16x DeltaNet's state here
             'gated_deltanet': mixer_spec('gated_deltanet', head_dim=32, expand_v=1)}
    runs = []
    for name in mixers:
        spec = specs.get(name, {'name': name})
        mixer = mixer_with_address_prior(spec) if prior else spec
        runs.append(MQARRun(mixer=mixer, label=name + ('+prior' if prior else ''), d_model=64, task=QUICK_TASK,
                            lr=lr, steps=steps, batch_size=64, eval_every=50, num_test=num_test, seed=seed))
    return runs


def full_runs(seed: int, steps: int, prior: bool = True) -> list[MQARRun]:
    """The Figure-3-style sweep: every (T, pairs, width) for GLA, DeltaNet and RAM at each M."""
    runs = []
    for seq_len in (64, 128, 256, 512, 1024):
        for pairs in sorted({max(4, seq_len // 16), seq_len // 8, seq_len // 4}):
            task = MQARTask(vocab_size=8192, seq_len=seq_len, num_kv_pairs=pairs)
            for width in (64, 128, 256):
                heads = max(2, width // 32)
                specs = [('gla', mixer_spec('gla', heads)), ('deltanet', mixer_spec('deltanet', heads))]
                specs += [(f"ram-M{d ** u}", ram_spec(u, d, num_heads=heads)) for u, d in FULL_RAM_ADDRESSES]
                for label, spec in specs:
                    mixer = mixer_with_address_prior(spec) if prior else spec
                    runs.append(MQARRun(mixer=mixer, label=label + ('+prior' if prior else ''), d_model=width,
                                        task=task, steps=steps, batch_size=64, eval_every=250, num_test=1000,
                                        seed=seed))
    return runs


def format_table(records: list[dict]) -> str:
    columns = [('mixer', 'mixer', str), ('d_model', 'width', str), ('seq_len', 'T', str),
               ('num_kv_pairs', 'pairs', str), ('state_size', 'state', str), ('active_state', 'active', str),
               ('lr', 'lr', lambda x: f"{x:g}"), ('accuracy', 'accuracy', lambda x: f"{x:.3f}"),
               ('steps', 'steps', str), ('seconds', 'seconds', lambda x: f"{x:.0f}")]
    rows = [[fmt(r.get(key)) if r.get(key) is not None else '-' for key, _, fmt in columns] for r in records]
    widths = [max(len(title), *(len(row[i]) for row in rows)) for i, (_, title, _) in enumerate(columns)]
    lines = ['  '.join(title.rjust(w) for (_, title, _), w in zip(columns, widths))]
    lines += ['  '.join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    return '\n'.join(lines)


def plot_accuracy_vs_state(records: list[dict], path: str, title: str) -> None:
    """One line per mixer family per (T, pairs) panel: x = total state per sequence (log), y = test
    accuracy; points whose active state (entries a decoding step touches) differs are annotated."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    settings = sorted({(r['seq_len'], r['num_kv_pairs']) for r in records})
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 3.6), squeeze=False)
    for ax, (seq_len, pairs) in zip(axes[0], settings):
        group = [r for r in records if (r['seq_len'], r['num_kv_pairs']) == (seq_len, pairs)]
        for family in sorted({r['mixer'].split('-')[0] for r in group}):
            points = sorted((r['state_size'] or 0, r['accuracy'], r.get('active_state'))
                            for r in group if r['mixer'].split('-')[0] == family)
            ax.plot([p[0] for p in points], [p[1] for p in points], marker='o', label=family)
            for total, accuracy, active in points:
                if active is not None and active != total:
                    ax.annotate(f"active {active:,}", (total, accuracy), textcoords='offset points',
                                xytext=(0, -12), ha='center', fontsize=7)
        ax.set_xscale('log')
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel('state size per sequence (entries)')
        ax.set_ylabel('MQAR accuracy (held out)')
        ax.set_title(f"T={seq_len}, {pairs} pairs")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, 'results.json')
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


def register(subparsers) -> None:
    parser = subparsers.add_parser('mqar', help='MQAR recall benchmark: RAM-Net vs GLA vs DeltaNet',
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true', help='ram vs gla vs deltanet, T=64, 16 pairs, width 64 (default)')
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
