"""Diagnostics a training run can log (`--diagnostics NAME ...`, off by default): hooks of
`ramnet_fla.lm.hooks` registered by name.

- `grad_norms`: the gradient norm of every layer's projections (`layers.0.attn.q_proj`, ...), every
  `log_every` steps: how fast address, value and output projections learn against each other.
- `ram_slots`: per RAM layer and head, how the memory is used: the share of the M slots read and
  written, the entropy of slot usage (as a share of log M) and its KL divergence from uniform usage
  (Lample et al. 2019 measure product-key memories so), the mean Top-K weight mass and top-1 weight,
  the PDMA decay exponent's quantiles and the retention (1 - w)**gamma of each token's strongest
  write. Over the micro-batches of every `log_every`-th step (rank 0's rows, as rank 0 logs), and
  over the whole held-out set at every evaluation. The addresses are recomputed from each RAM layer's input in a forward pre-hook
  (`RAMAttention.address_slots`), so the op is untouched; this costs about one address computation
  per layer and forward while it is on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch

from ramnet_fla.ops.ram.common import pdma_decay

DIAGNOSTICS: dict[str, Callable] = {}


def register_diagnostic(name: str, factory: Callable) -> None:
    """Make `--diagnostics NAME` build `factory(config)`, a hook object."""
    if name in DIAGNOSTICS:
        raise ValueError(f"diagnostic {name!r} is registered twice")
    DIAGNOSTICS[name] = factory


def build_diagnostics(names, config) -> list:
    unknown = [n for n in names if n not in DIAGNOSTICS]
    if unknown:
        raise ValueError(f"`--diagnostics`: unknown diagnostic(s) {unknown}; known: {sorted(DIAGNOSTICS)}")
    return [DIAGNOSTICS[n](config) for n in names]


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


class SlotTally:
    """Running slot counts and weight sums of one RAM layer, per head, over any number of batches."""

    def __init__(self, num_heads: int, num_slots: int) -> None:
        self.num_heads, self.num_slots = num_heads, num_slots
        self.slots = {'read': [], 'write': []}          # per kind: [n, H] int64 chunks
        self.sums = {key: torch.zeros(num_heads, dtype=torch.float64)
                     for key in ('read_mass', 'read_top1', 'write_mass', 'write_top1', 'retention')}
        self.tokens = 0
        self.gammas = []                                 # [n, H] float32 chunks

    def add(self, found: dict[str, torch.Tensor]) -> None:
        """`found`: RAMAttention.address_slots of a batch."""
        H = self.num_heads
        for kind in ('read', 'write'):
            self.slots[kind].append(found[f'{kind}_slots'].transpose(-1, -2).reshape(-1, H).cpu())
            weights = found[f'{kind}_weights'].reshape(-1, H, found[f'{kind}_weights'].shape[-1]).double()
            self.sums[f'{kind}_mass'] += weights.sum(-1).sum(0).cpu()
            self.sums[f'{kind}_top1'] += weights.amax(-1).sum(0).cpu()
        gamma = found['gamma'].reshape(-1, H)
        strongest = found['write_weights'].reshape(-1, H, found['write_weights'].shape[-1]).amax(-1)
        retention = pdma_decay(strongest.double(), gamma.double())
        self.sums['retention'] += retention.sum(0).cpu()
        self.gammas.append(gamma.float().cpu())
        self.tokens += gamma.shape[0]

    def summary(self) -> dict:
        """Per head lists: used_share, entropy_ratio, kl_uniform (nats) for reads and writes; topk_mass,
        top1_weight; gamma p10/p50/p90 and the mean retention of the strongest write."""
        log_m = math.log(self.num_slots)
        out = {'num_slots': self.num_slots, 'tokens': self.tokens}
        for kind in ('read', 'write'):
            slots = torch.cat(self.slots[kind])
            used, entropy = [], []
            for h in range(self.num_heads):
                _, counts = torch.unique(slots[:, h], return_counts=True)
                p = counts.double() / counts.sum()
                used.append(counts.numel() / self.num_slots)
                entropy.append(float(-(p * p.log()).sum()))
            out[kind] = {
                'used_share': used,
                'entropy_ratio': [e / log_m for e in entropy],
                'kl_uniform': [log_m - e for e in entropy],
                'topk_mass': (self.sums[f'{kind}_mass'] / self.tokens).tolist(),
                'top1_weight': (self.sums[f'{kind}_top1'] / self.tokens).tolist(),
            }
        gammas = torch.cat(self.gammas)
        quantiles = torch.quantile(gammas, torch.tensor([0.1, 0.5, 0.9]), dim=0)
        out['gamma'] = {'p10': quantiles[0].tolist(), 'p50': quantiles[1].tolist(), 'p90': quantiles[2].tolist()}
        out['retention'] = (self.sums['retention'] / self.tokens).tolist()
        return out


class SlotUsage:
    """`ram_slots`: how every RAM layer uses its slots, in training batches and over evaluations."""

    def __init__(self, config) -> None:
        self.every = max(1, config.log_every)
        self.train_tally: dict[str, SlotTally] = {}
        self.eval_tally: dict[str, SlotTally] = {}
        self.sample_next = False
        self.handles = []

    def on_train_start(self, run) -> None:
        from ramnet_fla.layers.ram import RAMAttention
        for name, module in run.model.named_modules():
            if isinstance(module, RAMAttention):
                key = re.sub(r'^(?:.*\.)?(layers\.\d+)\..*$', r'\1', name)
                self.handles.append(module.register_forward_pre_hook(self._pre_hook(key), with_kwargs=True))
        if not self.handles:
            raise ValueError("`--diagnostics ram_slots` needs a model with at least one RAM layer; "
                             f"the mixers are {[m.get('name') for m in run.config.mixers]}")

    def _pre_hook(self, key: str):
        def hook(module, args, kwargs):
            hidden_states = args[0] if args else kwargs.get('hidden_states')
            if hidden_states is None:
                return None
            if module.training:
                if not self.sample_next:
                    return None
                tallies = self.train_tally
            else:
                tallies = self.eval_tally
            if kwargs.get('attention_mask') is not None or kwargs.get('cu_seqlens') is not None:
                raise ValueError("`--diagnostics ram_slots` takes unpadded, unpacked batches (no attention_mask "
                                 "or cu_seqlens), as `ramnet-fla lm` trains")
            tally = tallies.setdefault(key, SlotTally(module.num_heads, module.num_slots))
            tally.add(module.address_slots(hidden_states.detach()))
            return None
        return hook

    def on_step_start(self, run, step: int) -> None:
        self.sample_next = (step + 1) % self.every == 0
        self.train_tally = {}

    def on_backward_end(self, run, step: int) -> dict | None:
        self.sample_next = False
        if not self.train_tally:
            return None
        return {'ram_slots': {key: tally.summary() for key, tally in self.train_tally.items()}}

    def on_eval(self, run, step: int) -> dict | None:
        tallies, self.eval_tally = self.eval_tally, {}
        if not tallies:
            return None
        return {'ram_slots': {key: tally.summary() for key, tally in tallies.items()}}

    def on_train_end(self, run) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


register_diagnostic('grad_norms', GradNorms)
register_diagnostic('ram_slots', SlotUsage)
