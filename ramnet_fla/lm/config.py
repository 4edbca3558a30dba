"""`TrainConfig`: every knob of one language-model run, a plain dataclass printed at start and
stored with every checkpoint (a resumed run must match it where the result depends on it)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from ramnet_fla.lm.data import DataSpec
from ramnet_fla.lm.distributed import PARALLEL_MODES

PRECISIONS = ('auto', 'fp32', 'bf16')
# What a resumed run may change: logging, evaluation, checkpointing, threads, and how the global
# batch is split (world size, --grad-accum). Everything else must equal the checkpoint's config.
RESUMABLE_CHANGES = ('out', 'resume', 'progress', 'log_every', 'eval_every', 'eval_windows', 'final_eval_windows',
                     'copy_examples', 'rare_threshold', 'eval_batch_size', 'ckpt_every', 'keep_checkpoints',
                     'threads', 'save_model', 'diagnostics', 'label', 'grad_accum', 'parallel', 'device',
                     'data_dir')


@dataclass
class TrainConfig:
    """One run. Sizes are global: `batch_size` sequences of `seq_len` tokens per optimiser step,
    split over ranks, then into `grad_accum` micro-batches on each rank."""

    # data (ramnet_fla.lm.data / corpus / tokenizer)
    data: tuple = ('kjv',)
    tokenizer: str = 'bpe:4096'
    data_dir: str | None = None
    val_fraction: float = 0.05
    text_column: str = 'text'
    max_chars: int | None = None
    # model (ramnet_fla.lm.model): a mixer spec per layer, repeating
    mixers: tuple = ({'name': 'ram'},)
    layers: int = 4
    hidden_size: int = 256
    intermediate_size: int | None = None
    match_params: int | None = None
    # optimisation (ramnet_fla.lm.optim)
    steps: int = 200
    batch_size: int = 16
    seq_len: int = 256
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # where and how
    parallel: str = 'ddp'
    device: str | None = None
    precision: str = 'auto'
    threads: int | None = None
    seed: int = 0
    # evaluation, logging, checkpoints
    eval_every: int = 50
    eval_windows: int | None = 32
    final_eval_windows: int | None = None
    eval_batch_size: int = 16
    copy_examples: int = 64
    rare_threshold: int = 10
    log_every: int = 10
    ckpt_every: int = 0
    keep_checkpoints: int = 2
    out: str = 'runs/lm/train'
    resume: str | None = None
    save_model: bool = True
    progress: bool = True
    label: str | None = None
    diagnostics: tuple = field(default_factory=tuple)

    def validate(self, world_size: int = 1) -> None:
        """ValueError naming the argument for anything out of range."""
        positive = ('layers', 'hidden_size', 'steps', 'batch_size', 'grad_accum', 'eval_batch_size', 'log_every',
                    'keep_checkpoints')
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`--{name.replace('_', '-')}` must be a positive int, got {value!r}")
        for name in ('eval_every', 'ckpt_every', 'copy_examples', 'warmup_steps', 'rare_threshold'):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"`--{name.replace('_', '-')}` must be an int >= 0, got {value!r}")
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ValueError(f"`--seq-len` must be an int >= 2, got {self.seq_len!r}")
        for name in ('lr', 'grad_clip'):
            if not getattr(self, name) > 0:
                raise ValueError(f"`--{name.replace('_', '-')}` must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"`--min-lr-ratio` must be in [0, 1], got {self.min_lr_ratio!r}")
        if self.warmup_steps > self.steps:
            raise ValueError(f"`--warmup-steps` ({self.warmup_steps}) must be at most `--steps` ({self.steps})")
        if self.parallel not in PARALLEL_MODES:
            raise ValueError(f"`--parallel` must be one of {PARALLEL_MODES}, got {self.parallel!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"`--precision` must be one of {PRECISIONS}, got {self.precision!r}")
        if not self.mixers:
            raise ValueError("`--mixers` must name at least one mixer")
        if self.match_params is not None and self.intermediate_size is not None:
            raise ValueError("give `--match-params` or `--intermediate-size`, not both")
        split = world_size * self.grad_accum
        if self.batch_size % split:
            raise ValueError(f"`--batch-size` ({self.batch_size} sequences, the global batch) must be divisible by "
                             f"the world size x `--grad-accum` = {world_size} x {self.grad_accum} = {split}")

    def data_spec(self) -> DataSpec:
        return DataSpec(tuple(self.data), self.tokenizer, self.data_dir, self.val_fraction, self.text_column,
                        self.max_chars)

    def to_dict(self) -> dict:
        out = asdict(self)
        out['data'], out['mixers'], out['diagnostics'] = list(self.data), [dict(m) for m in self.mixers], \
            list(self.diagnostics)
        return out

    def resume_mismatch(self, saved: dict) -> dict:
        """{name: (saved, now)} for the settings that differ from a checkpoint's and may not."""
        now = self.to_dict()
        return {k: (saved.get(k), now[k]) for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k]}

    def describe(self) -> str:
        width = max(len(f.name) for f in fields(self))
        return '\n'.join(f"  {f.name.ljust(width)}  {json.dumps(v)}" for f, v in
                         zip(fields(self), self.to_dict().values()))
