"""`ramnet-fla lm --ablations`: RAM variants on the quick job's recipe, each a row at equal size.

Every variant is the quick job's RAM model (4 layers, hidden 256, 4 heads, short convolutions on)
with some options changed, its MLP width matched to the same parameter budget, trained on the same
tokens in the same order with the same schedule, at each learning rate asked for, with the
`ram_slots` diagnostics on (slot usage at the final evaluation). Resumable like `--quick`; several
processes may train disjoint `--only` sets into one OUT, and each collects every finished run under
OUT into OUT/ablations.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from ramnet_fla.lm.config import TrainConfig
from ramnet_fla.lm import jobs

# The layer as the ablations started from: short convolutions on and the paper's independent random
# address projections (self_read_init=False; `self_read_init` defaults to on since these ablations)
BASE_SPEC = {'name': 'ram', 'use_short_conv': True, 'self_read_init': False}
ABLATIONS = {                    # label -> the options changed from BASE_SPEC (`ablation_spec`)
    'base': {},
    'short conv off': {'use_short_conv': False},
    'K=4': {'topk': 4},
    'K=16': {'topk': 16},
    'K=32': {'topk': 32},
    'M=4^3': {'num_factors': 3},
    'M=4^4': {'num_factors': 4},
    'M=4^6': {'num_factors': 6},
    'M=4^8': {'num_factors': 8},
    'CAPE none': {'cape_heads': 0},
    'CAPE all': {'cape_heads': True},
    'tied address projections': {'tie_address_projections': True},
    'temperature 0.5': {'address_temperature': 0.5},
    'temperature 0.25': {'address_temperature': 0.25},
    'address norm, temperature 1': {'address_norm': True},
    'address norm, temperature 0.5': {'address_norm': True, 'address_temperature': 0.5},
    'address norm, temperature 0.25': {'address_norm': True, 'address_temperature': 0.25},
    'self-read init': {'self_read_init': True},
    'self-read init, K=16': {'self_read_init': True, 'topk': 16},
    'self-read init, decay bias +4 (gamma 4.02)': {'self_read_init': True, 'decay_bias_init': 4.0},
    'self-read init, 8 heads of 32': {'self_read_init': True, 'num_heads': 8},
    'self-read init, M=4^6': {'self_read_init': True, 'num_factors': 6},
    'self-read init, M=4^8': {'self_read_init': True, 'num_factors': 8},
    'self-read init, K=4': {'self_read_init': True, 'topk': 4},
    'self-read init, K=32': {'self_read_init': True, 'topk': 32},
    'self-read init, temperature 0.5': {'self_read_init': True, 'address_temperature': 0.5},
    'self-read init, decay bias -2 (gamma 0.13)': {'self_read_init': True, 'decay_bias_init': -2.0},
    'self-read init, decay bias +8 (gamma 8.0)': {'self_read_init': True, 'decay_bias_init': 8.0},
    'self-read init, conv size 8': {'self_read_init': True, 'conv_size': 8},
    'self-read init, 2 heads of 128': {'self_read_init': True, 'num_heads': 2},
    'self-read init, head_dim 32': {'self_read_init': True, 'head_dim': 32},
    'self-read init, head_dim 128': {'self_read_init': True, 'head_dim': 128},
    'self-read init, value skip': {'self_read_init': True, 'value_skip': True},
    # a control without addressable memory: 2 slots, both read and written by every token (two running means)
    'self-read init, M=2 K=2 (no addressable memory)': {'self_read_init': True, 'factor_dim': 2, 'num_factors': 1,
                                                        'topk': 2},
    'self-read init, d_p=32 U=2 (M=4^5)': {'self_read_init': True, 'factor_dim': 32, 'num_factors': 2},
    'self-read init, d_p=8 U=4 (M=4^6)': {'self_read_init': True, 'factor_dim': 8, 'num_factors': 4},
    'self-read init, output norm eps 1e-10': {'self_read_init': True, 'norm_eps': 1e-10},
    'self-read init, output norm eps 1e-4': {'self_read_init': True, 'norm_eps': 1e-4},
    'self-read init, output norm eps 1e-3': {'self_read_init': True, 'norm_eps': 1e-3},
    'self-read init, address norm, temperature 1': {'self_read_init': True, 'address_norm': True},
    'self-read init, address norm, temperature 0.5': {'self_read_init': True, 'address_norm': True,
                                                      'address_temperature': 0.5},
    'self-read init, address norm, temperature 2': {'self_read_init': True, 'address_norm': True,
                                                    'address_temperature': 2.0},
    'tied, identity conv init': {'tie_address_projections': True, 'address_conv_init': 'identity'},
    'tied, identity conv init, address norm, temperature 0.25': {
        'tie_address_projections': True, 'address_conv_init': 'identity', 'address_norm': True,
        'address_temperature': 0.25},
    'tied, identity conv init, K=16': {'tie_address_projections': True, 'address_conv_init': 'identity', 'topk': 16},
    'tied, identity conv init, decay bias +4 (gamma 4.02)': {
        'tie_address_projections': True, 'address_conv_init': 'identity', 'decay_bias_init': 4.0},
    'tied, identity conv init, 8 heads of 32': {'tie_address_projections': True, 'address_conv_init': 'identity',
                                                'num_heads': 8},
    'tied, shift conv init (the MQAR recall prior)': {'tie_address_projections': True, 'address_conv_init': 'shift'},
    'decay bias -2 (gamma 0.13)': {'decay_bias_init': -2.0},
    'decay bias +2 (gamma 2.13)': {'decay_bias_init': 2.0},
    'head_dim 32': {'head_dim': 32},
    'head_dim 128': {'head_dim': 128},
}


def ablation_spec(label: str) -> dict:
    if label not in ABLATIONS:
        raise ValueError(f"`--only`: unknown ablation {label!r}; known: {list(ABLATIONS)}")
    return {**BASE_SPEC, 'num_heads': jobs.NUM_HEADS, **ABLATIONS[label]}


def ablation_config(label: str, lr: float, out: str, target: int, args) -> TrainConfig:
    slug = ''.join(c if c.isalnum() else '_' for c in label).strip('_')
    steps = args.steps or jobs.RECIPE.steps
    return replace(jobs.RECIPE, mixers=(ablation_spec(label),), match_params=target, lr=lr, steps=steps,
                   warmup_steps=min(jobs.RECIPE.warmup_steps, steps),
                   threads=args.threads, data_dir=args.data_dir, progress=not args.no_progress, label=label,
                   copy_examples=0, diagnostics=('ram_slots',),
                   out=os.path.join(out, f"{slug}-lr{lr:g}-{steps}steps"), resume='latest')


def slot_summary(record: dict) -> dict:
    """Means over layers and heads of the final evaluation's slot usage (None without diagnostics)."""
    layers = ((record.get('diagnostics') or {}).get('ram_slots') or {}).values()
    if not layers:
        return {}

    def mean(kind, key):
        values = [v for layer in layers for v in layer[kind][key]]
        return sum(values) / len(values)
    return {'read_used_share': mean('read', 'used_share'), 'write_used_share': mean('write', 'used_share'),
            'write_entropy_ratio': mean('write', 'entropy_ratio'), 'read_topk_mass': mean('read', 'topk_mass'),
            'write_top1_weight': mean('write', 'top1_weight'),
            'retention': sum(v for layer in layers for v in layer['retention'])
            / sum(len(layer['retention']) for layer in layers)}


def collect(out: str) -> list[dict]:
    """Every finished ablation run under `out`, in ABLATIONS order then by lr."""
    records = []
    for name in sorted(os.listdir(out)):
        path = os.path.join(out, name, 'results.json')
        if not os.path.exists(path):
            continue
        with open(path) as f:
            record = json.load(f)
        if record.get('mixer') not in ABLATIONS:
            continue
        keep = ('mixer', 'num_params', 'intermediate_size', 'tokens', 'lr', 'loss', 'bits_per_byte',
                'recall_hit_loss', 'other_loss', 'tokens_per_second', 'diverged', 'mixer_specs', 'curve')
        records.append({**{k: record.get(k) for k in keep}, **slot_summary(record)})
    order = list(ABLATIONS)
    records.sort(key=lambda r: (order.index(r['mixer']), r['lr']))
    return records


def format_ablations(records: list[dict]) -> str:
    base = min((r['bits_per_byte'] for r in records if r['mixer'] == 'base'), default=None)
    lines = ['| variant | lr | params | bits/byte | vs base | read slots used | write entropy / log M | '
             'read Top-K mass | tokens/s |', '|---|---|---|---|---|---|---|---|---|']
    for r in records:
        ratio = f"{r['bits_per_byte'] / base:.3f}" if base else '-'
        slots = [f"{r[k]:.3f}" if k in r else '-' for k in ('read_used_share', 'write_entropy_ratio', 'read_topk_mass')]
        lines.append(f"| {r['mixer']} | {r['lr']:g} | {r['num_params']:,} | {r['bits_per_byte']:.4f} | {ratio} | "
                     + ' | '.join(slots) + f" | {r['tokens_per_second']:,.0f} |")
    return '\n'.join(lines)


def run_ablations(args) -> int:
    out = args.out or 'runs/lm/ablations'
    os.makedirs(out, exist_ok=True)
    labels = args.only or list(ABLATIONS)
    for label in labels:
        ablation_spec(label)                                    # unknown labels fail before any training
    lrs = args.lrs or [jobs.RECIPE.lr]
    _, target = jobs._vocab_size(args)
    for label in labels:
        for lr in lrs:
            jobs.train_or_reuse(ablation_config(label, lr, out, target, args))
    records = collect(out)
    temporary = os.path.join(out, f'ablations.json.{os.getpid()}.tmp')
    with open(temporary, 'w') as f:
        json.dump(records, f, indent=1)
    os.replace(temporary, os.path.join(out, 'ablations.json'))
    print(format_ablations(records))
    print(f"\nresults: {os.path.join(out, 'ablations.json')}")
    return 0
