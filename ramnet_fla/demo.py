"""What the RAM-Net op does, shown with no training, on the CPU (printed by `ramnet-fla demo`).

1. A CAPE head is a ring buffer: with constant write and read addresses, position-shifted
   addressing makes the read at token t return exactly the value written at t - D.
2. Capacity grows with M at a fixed projection width: P random key/value pairs are written with
   keys of width U*d_p = 24, then read back by their keys. Splitting the same 24 logits into more,
   smaller factors raises M = d_p ** U from 144 to 4,096 slots, fewer pairs collide, and recall
   rises, while the parameters a layer would need stay the same.
"""

from __future__ import annotations

import time

import torch

from ramnet_fla.ops.ram import chunk_ram


def _peaked_logits(digits: torch.Tensor, factor_dim: int, sharpness: float) -> torch.Tensor:
    """Logits [..., U*d_p] whose most likely address has the given digits [..., U]."""
    return torch.nn.functional.one_hot(digits, factor_dim).flatten(-2).float() * sharpness


def ring_buffer_demo(delays=(1, 3, 7, 15), seq_len: int = 64, value_dim: int = 16, seed: int = 0) -> list[dict]:
    """Read back the value written D tokens ago with a CAPE head of constant addresses."""
    generator = torch.Generator().manual_seed(seed)
    num_factors, factor_dim, topk = 3, 4, 2                      # M = 64 slots
    num_slots = factor_dim ** num_factors
    v = torch.randn(1, seq_len, 1, value_dim, generator=generator)
    write_digits = torch.zeros(1, seq_len, 1, num_factors, dtype=torch.long)   # always slot 0 (+ position)
    rows = []
    for delay in delays:
        slot = num_slots - delay                                 # read slot (M - D + t) mod M = t - D
        read_digits = torch.tensor([(slot // factor_dim ** u) % factor_dim for u in range(num_factors)])
        q = _peaked_logits(read_digits.expand(1, seq_len, 1, num_factors), factor_dim, 30.0)
        k = _peaked_logits(write_digits, factor_dim, 30.0)
        gamma = torch.ones(1, seq_len, 1)
        o, _ = chunk_ram(q, k, v, gamma, num_factors, topk, cape=True)
        error = (o[0, delay:, 0] - v[0, :-delay, 0]).abs().max().item()
        rows.append({'delay': delay, 'tokens_checked': seq_len - delay, 'max_abs_error': error})
    return rows


def capacity_demo(num_pairs: int = 256, width: int = 24, value_dim: int = 64, sharpness: float = 8.0,
                  seed: int = 0) -> list[dict]:
    """Write `num_pairs` key/value pairs, read them back by key; recall = nearest stored value."""
    rows = []
    for num_factors in (2, 3, 4, 6, 8, 12):
        factor_dim = width // num_factors
        generator = torch.Generator().manual_seed(seed)
        keys = torch.randn(num_pairs, width, generator=generator) * sharpness
        values = torch.randn(num_pairs, value_dim, generator=generator)
        # tokens: the pairs' writes, then one query per pair (queries write zeros: direction is kept)
        k = torch.cat([keys, keys])[None, :, None]
        q = k.clone()
        v = torch.cat([values, torch.zeros_like(values)])[None, :, None]
        gamma = torch.zeros(1, 2 * num_pairs, 1)                  # gamma -> 0: a running mean per slot
        start = time.perf_counter()
        o, _ = chunk_ram(q, k, v, gamma, num_factors, topk=4)
        elapsed = time.perf_counter() - start
        read = o[0, num_pairs:, 0]
        similarity = torch.nn.functional.normalize(read, dim=-1) @ torch.nn.functional.normalize(values, dim=-1).T
        accuracy = (similarity.argmax(-1) == torch.arange(num_pairs)).float().mean().item()
        rows.append({'U': num_factors, 'd_p': factor_dim, 'M': factor_dim ** num_factors,
                     'pairs': num_pairs, 'recall': accuracy, 'seconds': elapsed})
    return rows
