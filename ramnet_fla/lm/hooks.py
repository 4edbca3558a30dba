"""Hooks into the training loop, for diagnostics that the loop itself should not know about.

A hook is any object with some of these methods (all optional):
    on_train_start(run)                 after the model, optimiser and data are set up
    on_backward_end(run, step)          after backward and clipping, before the optimiser step
                                        (gradients are in place); return a dict to log, or None
    on_eval(run, step) -> dict | None   at every evaluation; its dict is logged under 'diagnostics'
    on_train_end(run)
`run` is the `ramnet_fla.lm.train.Run` (config, model, optimizer, world, data). `train(config,
hooks=[...])` takes hook objects; the command line names registered ones (`--diagnostics NAME`),
registered with `register_diagnostic(name, factory)` where `factory(config) -> hook`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch

DIAGNOSTICS: dict[str, Callable] = {}


def register_diagnostic(name: str, factory: Callable) -> None:
    if name in DIAGNOSTICS:
        raise ValueError(f"diagnostic {name!r} is registered twice")
    DIAGNOSTICS[name] = factory


def build_diagnostics(names, config) -> list:
    unknown = [n for n in names if n not in DIAGNOSTICS]
    if unknown:
        raise ValueError(f"`--diagnostics`: unknown diagnostic(s) {unknown}; known: {sorted(DIAGNOSTICS)}")
    return [DIAGNOSTICS[n](config) for n in names]


def call_hooks(hooks, method: str, *args) -> dict:
    """Call `method` on every hook that has it; merge the dicts they return."""
    merged = {}
    for hook in hooks:
        function = getattr(hook, method, None)
        if function is not None:
            merged.update(function(*args) or {})
    return merged


def _norm(tensor: torch.Tensor) -> float:
    norm = tensor.norm()
    return float(norm.full_tensor() if hasattr(norm, 'full_tensor') else norm)


class GradNorms:
    """Per layer and projection, the gradient norm (e.g. `layers.0.attn.q_proj`), at every
    `log_every`-th step: compares how fast address, value and output projections learn."""

    PATTERN = re.compile(r'(?:^|\.)layers\.(\d+)\.(attn|mlp)\.([^.]+)')

    def __init__(self, config) -> None:
        self.every = max(1, config.log_every)

    def on_backward_end(self, run, step: int) -> dict | None:
        if step % self.every:
            return None
        squares: dict[str, float] = {}
        for name, parameter in run.model.named_parameters():
            match = self.PATTERN.search(name)
            if match is None or parameter.grad is None:
                continue
            key = f"layers.{match[1]}.{match[2]}.{match[3]}"
            squares[key] = squares.get(key, 0.0) + _norm(parameter.grad) ** 2
        return {'grad_norms': {k: v ** 0.5 for k, v in squares.items()}}


register_diagnostic('grad_norms', GradNorms)
