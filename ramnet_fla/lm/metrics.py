"""The run's log: one JSON record per line in OUT/metrics.jsonl (rank 0 only), and the tqdm bar.

Records: {"kind": "train", "step", "tokens", "loss", "lr", "grad_norm", "tokens_per_second"} every
`log_every` steps and {"kind": "eval", "step", "tokens", **metrics} at every evaluation. On resume
the records after the checkpoint's step are dropped, so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
import os


def read_records(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    def __init__(self, path: str, enabled: bool, progress_total: int | None = None, progress: bool = True,
                 description: str = 'train') -> None:
        self.path, self.enabled = path, enabled
        self.bar = None
        if enabled and progress and progress_total:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=progress_total, desc=description, dynamic_ncols=True, leave=False)

    def truncate_after(self, step: int) -> None:
        """Keep only the records up to `step` (resuming from a checkpoint taken at `step`), less the
        final evaluation of a finished run (it is redone)."""
        if not self.enabled:
            return
        kept = [r for r in read_records(self.path) if r['step'] <= step and not r.get('final')]
        temporary = self.path + '.tmp'
        with open(temporary, 'w') as f:
            f.writelines(json.dumps(r) + '\n' for r in kept)
        os.replace(temporary, self.path)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, 'a') as f:
            f.write(json.dumps(record) + '\n')

    def progress(self, steps: int, **postfix) -> None:
        if self.bar is not None:
            self.bar.update(steps)
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)

    def start_at(self, step: int) -> None:
        if self.bar is not None:
            self.bar.update(step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
