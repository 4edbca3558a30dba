"""CAPE (content-and-position addressing): which heads shift their slots by the token position.

One normaliser for the op's `cape` argument (`cape_flags`) and the layer's richer `cape_heads`
argument (`resolve_cape_heads`, which accepts counts and head indices too), and the shift itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def cape_flags(cape, num_heads: int, name: str = 'cape') -> list[bool]:
    """One bool per head from a bool (every head) or one bool (or 0/1) per head, list or tensor."""
    if isinstance(cape, bool):
        return [cape] * num_heads
    if isinstance(cape, torch.Tensor):
        values = cape.detach().to('cpu').reshape(-1).tolist()
    elif isinstance(cape, Sequence) and not isinstance(cape, str):
        values = list(cape)
    else:
        raise TypeError(f"`{name}` must be a bool or one bool per head ({num_heads}), got {type(cape).__name__}")
    if not all(isinstance(c, bool) or c in (0, 1) for c in values):
        raise TypeError(f"`{name}` must contain bools, got {values}")
    if len(values) != num_heads:
        raise ValueError(f"`{name}` must give one bool per head ({num_heads}), got {len(values)} values")
    return [bool(c) for c in values]


def resolve_cape_heads(cape_heads, num_heads: int) -> list[bool]:
    """One bool per head for the layer's `cape_heads`: None (the first num_heads // 2 heads), a bool
    (all or none), an int n (the first n heads), a sequence of head indices, or one bool per head."""
    if cape_heads is None:
        return [h < num_heads // 2 for h in range(num_heads)]
    if isinstance(cape_heads, bool):
        return [cape_heads] * num_heads
    if isinstance(cape_heads, int):
        if not 0 <= cape_heads <= num_heads:
            raise ValueError(f"`cape_heads` as a count must be in [0, num_heads={num_heads}], got {cape_heads}")
        return [h < cape_heads for h in range(num_heads)]
    if isinstance(cape_heads, torch.Tensor):
        cape_heads = cape_heads.tolist()
    if isinstance(cape_heads, Sequence) and not isinstance(cape_heads, str):
        values = list(cape_heads)
        if all(isinstance(c, int) and not isinstance(c, bool) for c in values):
            bad = [c for c in values if not 0 <= c < num_heads]
            if bad:
                raise ValueError(f"`cape_heads` holds head indices outside [0, {num_heads}): {bad}")
            return [h in set(values) for h in range(num_heads)]
        if all(isinstance(c, bool) for c in values):
            return cape_flags(values, num_heads, name='cape_heads')
    raise TypeError(
        "`cape_heads` must be None, a bool, an int (the first n heads), a list of head indices "
        f"or a list of {num_heads} bools, got {cape_heads!r}"
    )


def cape_shift(indices: torch.Tensor, positions: torch.Tensor, cape_heads: torch.Tensor, num_slots: int) -> torch.Tensor:
    """Apply CAPE: slot i of a CAPE head at absolute position p becomes (i + p) mod M.

    indices: [..., H, K] int64; positions: [...] int64; cape_heads: [H] bool.
    """
    if not torch.compiler.is_compiling() and not bool(cape_heads.any()):   # a host sync: eager only
        return indices
    shift = positions[..., None, None] * cape_heads[:, None].long()
    return torch.remainder(indices + shift, num_slots)
