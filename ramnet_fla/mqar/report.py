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
