"""Train small models on MQAR: the Zoology recipe, any registered token mixer, resumable sweeps.

A model is Zoology's: token embedding, `num_layers` pre-norm residual blocks (a token mixer, and an
MLP if asked), a final norm and a head tied to the embedding. Each block's mixer comes from
`ramnet_fla.plugin.build_mixer(spec, hidden_size, layer_idx)` (any registered mixer: 'ram', 'gla',
'deltanet', ..., a name or `{"name": ..., **kwargs}`), or from a callable `(hidden_size, layer_idx)
-> nn.Module` for mixers that are not registered. Training: AdamW (weight decay 0.1), a cosine
learning-rate schedule, cross-entropy at the query positions only, accuracy on a held-out test set
every `eval_every` steps, early stop once it reaches `target_accuracy`.

A sweep is a list of runs; each finished run is appended to a JSON results file at once, and a run
whose key (its whole configuration) is already there is skipped, so an interrupted sweep resumes
where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ramnet_fla import accounting
from ramnet_fla.mqar.data import IGNORE_INDEX, MQARTask, generate_mqar
from ramnet_fla.plugin import build_mixer as build_registered_mixer
from ramnet_fla.utils.checks import check_int

MixerSpec = Any   # a registered name, {"name": ..., **kwargs}, or a callable (hidden_size, layer_idx) -> nn.Module


@dataclass(frozen=True)
class MQARRun:
    """One training run.

    mixer: the token mixer of every layer (see `MixerSpec`); `mixers` overrides it per layer.
    label: a short name for tables and plots (default: the mixer's name).
    d_model: model width. num_layers: blocks (2, as in Zoology). mlp: add a 2-layer MLP (width
    4*d_model, GELU) after each mixer.
    task: the MQAR problem. lr: peak learning rate. steps: optimiser steps at most (the cosine
    schedule ends there). batch_size: examples per step. num_train: size of the training pool
    (at most steps * batch_size are drawn; cycled in a seeded order). num_test: held-out examples.
    eval_every: steps between evaluations.
    target_accuracy: stop early once test accuracy reaches it. warmup_steps: linear warm-up before
    the cosine decay. weight_decay: AdamW's. seed: model init, data and batch order.
    """

    mixer: MixerSpec = 'ram'
    mixers: tuple | None = None
    label: str | None = None
    d_model: int = 64
    num_layers: int = 2
    mlp: bool = False
    task: MQARTask = field(default_factory=MQARTask)
    lr: float = 1e-3
    steps: int = 1000
    batch_size: int = 64
    num_train: int = 100_000
    num_test: int = 1000
    eval_every: int = 100
    target_accuracy: float = 0.99
    warmup_steps: int = 0
    weight_decay: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ('d_model', 'num_layers', 'steps', 'batch_size', 'num_train', 'num_test', 'eval_every'):
            check_int(name, getattr(self, name), minimum=1)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"`lr` must be a number > 0, got {self.lr!r}")
        if not isinstance(self.task, MQARTask):
            raise TypeError(f"`task` must be an MQARTask, got {type(self.task).__name__}")
        if self.mixers is not None and len(self.mixers) == 0:
            raise ValueError("`mixers` must name at least one mixer (a shorter list repeats), got an empty sequence")

    def layer_specs(self) -> list:
        """The mixer spec of each layer (a shorter `mixers` list repeats)."""
        specs = list(self.mixers) if self.mixers is not None else [self.mixer]
        return [specs[i % len(specs)] for i in range(self.num_layers)]

    @property
    def name(self) -> str:
        if self.label is not None:
            return self.label
        return '+'.join(dict.fromkeys(_spec_name(s) for s in self.layer_specs()))

    def key(self) -> str:
        """A string that identifies the run's configuration (the resume key of a sweep)."""
        record = {k: v for k, v in asdict(self).items() if k not in ('mixer', 'mixers', 'task')}
        record['mixers'] = [_spec_json(s) for s in self.layer_specs()]
        record['task'] = self.task.as_dict()
        return json.dumps(record, sort_keys=True)


def _spec_name(spec: MixerSpec) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        return str(spec.get('name', '?'))
    return getattr(spec, '__name__', type(spec).__name__)


def _spec_json(spec: MixerSpec):
    """What a record stores of a spec: the spec itself, a factory's `spec` attribute, or its name."""
    if isinstance(spec, (str, dict)):
        return spec
    if isinstance(getattr(spec, 'spec', None), dict):
        return spec.spec
    return f"callable:{_spec_name(spec)}"


def build_mixer(spec: MixerSpec, hidden_size: int, layer_idx: int) -> nn.Module:
    """A token mixer from a registered spec (via the plugin manager) or a callable factory."""
    if callable(spec) and not isinstance(spec, (str, dict)):
        return spec(hidden_size, layer_idx)
    if not isinstance(spec, (str, dict)):
        raise TypeError(f"a mixer spec must be a name, a dict with 'name', or a callable, got {type(spec).__name__}")
    return build_registered_mixer(spec, hidden_size, layer_idx)


class MLP(nn.Module):
    """Two linear layers with a GELU between them: [B, T, D] -> [B, T, D]."""

    def __init__(self, hidden_size: int, expand: int = 4) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_size, expand * hidden_size)
        self.down = nn.Linear(expand * hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class MQARModel(nn.Module):
    """Embedding, pre-norm residual blocks of (mixer[, MLP]), final norm, tied head.

    forward(input_ids [B, T]) -> logits [B, T, vocab]; forward(input_ids, positions) with a boolean
    positions [B, T] -> logits [N, vocab] of the N selected positions only (what MQAR's loss and
    accuracy need: the head over 8,192 tokens at every position would cost more than the mixers).
    """

    def __init__(self, vocab_size: int, d_model: int, layer_specs: Sequence[MixerSpec], mlp: bool = False) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.mixer_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in layer_specs)
        self.mixers = nn.ModuleList(build_mixer(spec, d_model, i) for i, spec in enumerate(layer_specs))
        self.mlp_norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in layer_specs) if mlp else None
        self.mlps = nn.ModuleList(MLP(d_model) for _ in layer_specs) if mlp else None
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embedding.weight
        nn.init.normal_(self.embedding.weight, std=0.02)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embedding(input_ids)
        for i, mixer in enumerate(self.mixers):
            out = mixer(self.mixer_norms[i](x))
            x = x + (out[0] if isinstance(out, tuple) else out)
            if self.mlps is not None:
                x = x + self.mlps[i](self.mlp_norms[i](x))
        if positions is not None:
            x = x[positions]                                          # [N, d_model]
        return self.head(self.final_norm(x))


def mixer_state_size(spec: MixerSpec, module: nn.Module, hidden_size: int, seq_len: int) -> dict | None:
    """{'total': ..., 'active': ...} state entries per sequence of one mixer, or None if unknown.

    Asks the plugin manager's state accounting for registered mixers (also behind a factory that
    carries its registered spec as `factory.spec`); a module may instead expose
    `state_size(seq_len) -> dict` itself.
    """
    if hasattr(module, 'state_size'):
        return dict(module.state_size(seq_len))
    if callable(spec) and isinstance(getattr(spec, 'spec', None), dict):      # a factory wrapping a registered mixer
        spec = {k: v for k, v in spec.spec.items() if k != 'address_prior'}
    if isinstance(spec, (str, dict)):
        return accounting.mixer_state_size(spec, hidden_size, seq_len)
    return None


def default_device() -> torch.device:
    return torch.device('cuda' if torch.cuda.is_available() else 'cpu')


def _lr_factor(step: int, steps: int, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to 0 at `steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of query positions whose argmax prediction is the right value."""
    was_training = model.training
    model.eval()
    correct = total = 0
    device = next(model.parameters()).device
    for start in range(0, inputs.shape[0], batch_size):
        x = inputs[start:start + batch_size].to(device)
        y = labels[start:start + batch_size].to(device)
        mask = y != IGNORE_INDEX
        # an MQARModel runs its head at the query positions only; any other model gives [B, T, vocab]
        logits = model(x, mask) if isinstance(model, MQARModel) else model(x)[mask]
        prediction = logits.argmax(-1)                                # [N]
        correct += (prediction == y[mask]).sum().item()
        total += mask.sum().item()
    model.train(was_training)
    return correct / max(total, 1)


def train_mqar(run: MQARRun, device: torch.device | str | None = None, progress: bool = True,
               model_hook: Callable[[nn.Module], None] | None = None) -> dict:
    """Train one model on one MQAR task and return its record.

    The record (a JSON-able dict): mixer (the run's name), mixer_specs, d_model, num_layers, mlp,
    seq_len, num_kv_pairs, vocab_size, state_size and active_state (summed over layers; None if a
    mixer has no state accounting), num_params, lr, accuracy (held out, at the last evaluation),
    best_accuracy, steps (done), max_steps, batch_size, seconds, seed, device, curve ([step,
    accuracy] per evaluation) and key (the run's configuration, for resuming sweeps).
    model_hook: called with the built model before training (e.g. to inspect it).
    """
    device = torch.device(device) if device is not None else default_device()
    task = run.task
    torch.manual_seed(run.seed)
    specs = run.layer_specs()
    model = MQARModel(task.vocab_size, run.d_model, specs, mlp=run.mlp).to(device)
    if model_hook is not None:
        model_hook(model)
    sizes = [mixer_state_size(s, m, run.d_model, task.seq_len) for s, m in zip(specs, model.mixers)]
    known = all(s is not None for s in sizes)

    num_train = min(run.num_train, run.steps * run.batch_size)
    train_x, train_y = generate_mqar(task, num_train, run.seed, 'train')
    test_x, test_y = generate_mqar(task, run.num_test, run.seed, 'test')
    order_generator = torch.Generator().manual_seed(run.seed)

    optimizer = torch.optim.AdamW(model.parameters(), lr=run.lr, weight_decay=run.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, run.steps, run.warmup_steps))

    curve: list[list] = []          # [step, test accuracy]
    accuracy, best, step = 0.0, 0.0, 0
    start = time.perf_counter()
    permutation = torch.randperm(num_train, generator=order_generator)
    cursor = 0
    bar = _progress_bar(run, progress)
    model.train()
    for step in range(1, run.steps + 1):
        if cursor + run.batch_size > num_train:
            permutation, cursor = torch.randperm(num_train, generator=order_generator), 0
        batch = permutation[cursor:cursor + run.batch_size]
        cursor += run.batch_size
        x, y = train_x[batch].to(device), train_y[batch].to(device)
        mask = y != IGNORE_INDEX
        logits = model(x, mask)                                       # [N, vocab]: query positions only
        loss = F.cross_entropy(logits.float(), y[mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if not math.isfinite(loss.item()):
            curve.append([step, float('nan')])
            break
        if step % run.eval_every == 0 or step == run.steps:
            accuracy = evaluate(model, test_x, test_y)
            best = max(best, accuracy)
            curve.append([step, accuracy])
            if bar is not None:
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{accuracy:.3f}")
            if accuracy >= run.target_accuracy:
                break
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - start

    return {
        'mixer': run.name,
        'mixer_specs': [_spec_json(s) for s in specs],
        'd_model': run.d_model,
        'num_layers': run.num_layers,
        'mlp': run.mlp,
        'seq_len': task.seq_len,
        'num_kv_pairs': task.num_kv_pairs,
        'vocab_size': task.vocab_size,
        'state_size': sum(s['total'] for s in sizes) if known else None,
        'active_state': sum(s['active'] for s in sizes) if known else None,
        'num_params': sum(p.numel() for p in model.parameters()),
        'lr': run.lr,
        'accuracy': accuracy,
        'best_accuracy': best,
        'steps': step,
        'max_steps': run.steps,
        'batch_size': run.batch_size,
        'seconds': round(seconds, 2),
        'seed': run.seed,
        'device': str(device),
        'curve': curve,
        'key': run.key(),
    }


def _progress_bar(run: MQARRun, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    t = run.task
    return tqdm(total=run.steps, desc=f"{run.name} T={t.seq_len} D={t.num_kv_pairs} lr={run.lr:g}",
                leave=False, dynamic_ncols=True)


# what every record of `train_mqar` holds, checked when a results file is read back
RECORD_FIELDS = {'key': str, 'mixer': str, 'accuracy': (int, float)}


def load_results(path: str | os.PathLike) -> list[dict]:
    """The records of a results file, or [] if it does not exist yet.

    A file that is not JSON (e.g. truncated), not a list, or holds anything but `train_mqar`
    records raises a ValueError naming it; the file is left as it is.
    """
    if not os.path.exists(path):
        return []
    if not os.path.isfile(path):
        raise ValueError(f"results file {path} is not a file")
    try:
        with open(path) as f:
            records = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"results file {path} is not valid JSON (truncated?): {error}") from error
    if not isinstance(records, list):
        raise ValueError(f"results file {path} must hold a JSON list of MQAR records, got {type(records).__name__}")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"results file {path}: item {i} is a {type(record).__name__}, not an MQAR record")
        wrong = [name for name, kind in RECORD_FIELDS.items()
                 if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool)]
        if wrong:
            raise ValueError(f"results file {path}: item {i} is not an MQAR record (missing or wrong {wrong})")
        try:
            config = json.loads(record['key'])
        except json.JSONDecodeError:
            config = None
        if not isinstance(config, dict):
            raise ValueError(f"results file {path}: item {i} has a `key` that is not a run configuration")
    return records


def save_results(path: str | os.PathLike, records: list[dict]) -> None:
    """Write the records atomically (a crash never leaves a half-written file)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = f"{path}.tmp"
    with open(temporary, 'w') as f:
        json.dump(records, f, indent=1)
    os.replace(temporary, path)


@contextlib.contextmanager
def _locked(path: str | os.PathLike):
    """An exclusive lock on `path`.lock while the block runs (POSIX flock; elsewhere no lock), so
    processes sharing one results file (`--shard`) never lose each other's records."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(f"{path}.lock", 'a') as handle:
        try:
            import fcntl
        except ImportError:  # Windows: one process per results file
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def append_result(path: str | os.PathLike, record: dict) -> list[dict]:
    """Add one record to a results file, re-reading it under a lock first, so records that other
    processes appended meanwhile are kept. Returns the file's records after the append."""
    with _locked(path):
        records = load_results(path)
        if all(r['key'] != record['key'] for r in records):
            records.append(record)
            save_results(path, records)
    return records


def run_sweep(runs: Sequence[MQARRun], results_path: str | os.PathLike | None = None,
              learning_rates: Sequence[float] | None = None, device=None, progress: bool = True,
              stop_lr_sweep_at_target: bool = True,
              on_record: Callable[[dict], None] | None = None) -> list[dict]:
    """Train every run (at every learning rate, if given); return the records of this sweep.

    results_path: a JSON list of records; runs already recorded there are skipped (resume) and
        every new record is appended as soon as it is done.
    learning_rates: each run is trained at each of these (in order) instead of its own lr; with
        `stop_lr_sweep_at_target`, the remaining rates of a run are skipped once one reaches the
        target accuracy (the lr sweep of Zoology, cut short when nothing is left to find).
    """
    done = {r['key']: r for r in load_results(results_path)} if results_path is not None else {}
    out = []
    for base in runs:
        for lr in (learning_rates or [base.lr]):
            run = replace(base, lr=lr)
            record = done.get(run.key())
            if record is None:
                record = train_mqar(run, device=device, progress=progress)
                done[record['key']] = record
                if results_path is not None:
                    append_result(results_path, record)
            out.append(record)
            if on_record is not None:
                on_record(record)
            if stop_lr_sweep_at_target and record['accuracy'] >= base.target_accuracy:
                break
    return out


def best_per_config(records: Sequence[dict]) -> list[dict]:
    """The best-accuracy record of each configuration across learning rates (first seen order)."""
    best: dict[str, dict] = {}
    for record in records:
        config = json.loads(record['key'])
        config.pop('lr')
        key = json.dumps(config, sort_keys=True)
        if key not in best or record['accuracy'] > best[key]['accuracy']:
            best[key] = record
    return list(best.values())
