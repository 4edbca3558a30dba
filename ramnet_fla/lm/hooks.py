"""Hooks into the training loop, for diagnostics that the loop itself should not know about.

A hook is any object with some of these methods (all optional):
    on_train_start(run)                 after the model, optimiser and data are set up
    on_step_start(run, step)            before step `step`'s (0-based) forward passes
    on_backward_end(run, step)          after backward and clipping, before the optimiser step
                                        (gradients are in place); return a dict to log, or None
    on_eval(run, step) -> dict | None   at every evaluation; its dict is logged under 'diagnostics'
    on_train_end(run)
`run` is the `ramnet_fla.lm.train.Run` (config, model, optimizer, world, data). `train(config,
hooks=[...])` takes hook objects; the command line names registered ones (`--diagnostics NAME`,
`ramnet_fla.lm.diagnostics`).
"""

from __future__ import annotations


def call_hooks(hooks, method: str, *args) -> dict:
    """Call `method` on every hook that has it; merge the dicts they return."""
    merged = {}
    for hook in hooks:
        function = getattr(hook, method, None)
        if function is not None:
            merged.update(function(*args) or {})
    return merged
