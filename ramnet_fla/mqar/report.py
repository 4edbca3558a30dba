"""MQAR results as a table and a plot: accuracy against state size, best learning rate per config."""

from __future__ import annotations


def format_table(records: list[dict]) -> str:
    """One aligned row per record (mixer, width, T, pairs, state, active, lr, accuracy, steps, seconds)."""
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


def _config_key(record: dict) -> str:
    """A record's configuration without seed and lr (the point a seed/lr sweep belongs to)."""
    import json
    config = json.loads(record['key'])
    config.pop('lr', None)
    config.pop('seed', None)
    return json.dumps(config, sort_keys=True)


def family(record: dict) -> str:
    """'ram+prior', 'ram', 'gla+prior', ...: the mixer label without its size suffix."""
    name = record['mixer']
    base = name.split('+')[0].split('-')[0]
    return base + ('+prior' if name.endswith('+prior') else '')


def num_slots(record: dict) -> int | None:
    """M = d_p ** U of a RAM record (from its first layer's spec), else None."""
    spec = record['mixer_specs'][0]
    if not isinstance(spec, dict) or spec.get('name') != 'ram':
        return None
    return spec.get('factor_dim', 4) ** spec.get('num_factors', 5)


def summarize_seeds(records: list[dict]) -> list[dict]:
    """One row per configuration: for each seed its best-lr record, then mean / min / max accuracy.

    Each row has the fields `format_table` shows (accuracy = mean over seeds, lr = the first seed's
    best rate, steps = mean steps, seconds = total over the kept records) plus accuracy_min,
    accuracy_max, seeds, lrs (each seed's best), num_slots and family.
    """
    per_seed: dict[str, dict[int, dict]] = {}
    order: list[str] = []
    for record in records:
        key = _config_key(record)
        if key not in per_seed:
            per_seed[key], _ = {}, order.append(key)
        kept = per_seed[key].get(record['seed'])
        if kept is None or record['accuracy'] > kept['accuracy']:
            per_seed[key][record['seed']] = record
    rows = []
    for key in order:
        kept = [per_seed[key][s] for s in sorted(per_seed[key])]
        accuracies = [r['accuracy'] for r in kept]
        first = kept[0]
        rows.append({**{k: first.get(k) for k in ('mixer', 'mixer_specs', 'd_model', 'seq_len', 'num_kv_pairs',
                                                   'vocab_size', 'state_size', 'active_state', 'num_params',
                                                   'max_steps')},
                     'lr': first['lr'], 'accuracy': sum(accuracies) / len(accuracies),
                     'accuracy_min': min(accuracies), 'accuracy_max': max(accuracies),
                     'seeds': [r['seed'] for r in kept], 'lrs': [r['lr'] for r in kept],
                     'steps': round(sum(r['steps'] for r in kept) / len(kept)),
                     'seconds': sum(r['seconds'] for r in kept),
                     'family': family(first), 'num_slots': num_slots(first)})
    return rows


def format_seed_table(rows: list[dict]) -> str:
    """The rows of `summarize_seeds` as a markdown table (mean and min..max over seeds)."""
    lines = ['| mixer | pairs | state | active | params | seeds | best lr (per seed) | accuracy mean | min..max '
             '| steps (mean) |', '|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        lrs = ', '.join(f"{lr:g}" for lr in r['lrs'])
        lines.append(f"| {r['mixer']} | {r['num_kv_pairs']} | {r['state_size']:,} | {r['active_state']:,} | "
                     f"{r['num_params']:,} | {len(r['seeds'])} | {lrs} | {r['accuracy']:.3f} | "
                     f"{r['accuracy_min']:.3f}..{r['accuracy_max']:.3f} | {r['steps']} |")
    return '\n'.join(lines)


_STYLE = {'ram+prior': ('tab:red', 'o'), 'ram': ('tab:orange', 's'), 'gla+prior': ('tab:blue', '^'),
          'deltanet+prior': ('tab:green', 'v'), 'gated_deltanet+prior': ('tab:purple', 'D'),
          'gla': ('tab:cyan', '^'), 'deltanet': ('tab:olive', 'v'), 'gated_deltanet': ('tab:pink', 'D')}


def _errorbar(ax, rows: list[dict], x_of, label: str, **style) -> None:
    rows = sorted(rows, key=x_of)
    xs = [x_of(r) for r in rows]
    ys = [r['accuracy'] for r in rows]
    low = [r['accuracy'] - r['accuracy_min'] for r in rows]
    high = [r['accuracy_max'] - r['accuracy'] for r in rows]
    ax.errorbar(xs, ys, yerr=[low, high], capsize=3, label=label, **style)


def plot_medium(rows: list[dict], path: str, title: str | None = None) -> None:
    """One panel per pair count: x = total state per sequence (log), y = held-out accuracy, the mean
    over seeds with min..max bars; RAM's active state (entries a decoding step touches) as a hollow
    marker joined to its total state by a dotted line."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pair_counts = sorted({r['num_kv_pairs'] for r in rows})
    fig, axes = plt.subplots(1, len(pair_counts), figsize=(5.2 * len(pair_counts), 4.2), squeeze=False)
    for ax, pairs in zip(axes[0], pair_counts):
        group = [r for r in rows if r['num_kv_pairs'] == pairs]
        for fam in sorted({r['family'] for r in group}):
            members = [r for r in group if r['family'] == fam]
            color, marker = _STYLE.get(fam, ('gray', 'x'))
            seeds = sorted({len(r['seeds']) for r in members})
            label = f"{fam} ({'/'.join(map(str, seeds))} seeds)"
            _errorbar(ax, members, lambda r: r['state_size'], label, color=color, marker=marker,
                      linestyle='-' if fam.startswith('ram') else 'none')
            if fam.startswith('ram'):
                for r in members:
                    ax.plot([r['active_state'], r['state_size']], [r['accuracy']] * 2, ':', color=color, lw=0.8)
                    ax.plot(r['active_state'], r['accuracy'], marker=marker, mfc='none', color=color, ls='none')
                    ax.annotate(f"M={r['num_slots']:,}", (r['state_size'], r['accuracy']), fontsize=7,
                                textcoords='offset points', xytext=(-4, -10), ha='right')
        ax.plot([], [], marker='o', mfc='none', color='gray', ls='none', label='RAM active state (hollow)')
        ax.set_xscale('log')
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel('state size per sequence, 2 layers (entries, log)')
        ax.set_ylabel('accuracy, held out\n(mean; bars: min..max over seeds)')
        ax.set_title(f"T={group[0]['seq_len']}, {pairs} key/value pairs, width {group[0]['d_model']}")
        ax.grid(alpha=0.3, which='both')
        ax.legend(fontsize=7, loc='best')
    vocab = rows[0]['vocab_size'] if rows else '?'
    fig.suptitle(title or f"MQAR accuracy against state size\n(vocabulary {vocab:,}; per seed the best "
                          "learning rate)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_accuracy_vs_m(rows: list[dict], path: str, title: str | None = None) -> None:
    """RAM only: x = slots M (log), y = accuracy (mean, min..max over seeds), one line per (pairs,
    prior); the parameter count of each line's models is in the legend (nearly fixed: only the address
    projection, H*U*d_p x width per layer, changes with M)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ram = [r for r in rows if r['num_slots'] is not None]
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    for pairs, fam in sorted({(r['num_kv_pairs'], r['family']) for r in ram}):
        members = [r for r in ram if (r['num_kv_pairs'], r['family']) == (pairs, fam)]
        params = sorted(r['num_params'] for r in members)
        color, marker = _STYLE.get(fam, ('gray', 'x'))
        span = f"{params[0]:,}" if params[0] == params[-1] else f"{params[0]:,}..{params[-1]:,}"
        pair_style = {16: ':', 32: '--'}.get(pairs, '-')
        _errorbar(ax, members, lambda r: r['num_slots'], f"{fam}, {pairs} pairs ({span} params)",
                  color=color, marker=marker, linestyle=pair_style, alpha=1.0 if pair_style == '-' else 0.7)
    ax.set_xscale('log')
    slots = sorted({r['num_slots'] for r in ram})
    ax.set_xticks(slots, [f"{m:,}" for m in slots])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel('memory slots M = d_p ** U (log)')
    ax.set_ylabel('accuracy, held out\n(mean; bars: min..max over seeds)')
    ax.grid(alpha=0.3, which='both')
    if ram:
        ax.legend(fontsize=7)
    seq_len = ram[0]['seq_len'] if ram else '?'
    ax.set_title(title or f"RAM-Net: accuracy against M at a nearly fixed parameter count (T={seq_len})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
