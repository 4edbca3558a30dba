"""Rotary position embedding (RoPE) in PyTorch: the rotate-half form of fla's `RotaryEmbedding`, at given positions."""

from __future__ import annotations

import torch


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate channel pairs (i, i + D/2) of x by angle position * base ** (-2i / D).

    Args:
        x: [B, T, H, D] with D even.
        positions: [B, T] or [T] integer positions of the tokens.
        base: the RoPE base (theta).

    Returns:
        [B, T, H, D] in x's dtype (computed in float32).
    """
    if x.ndim != 4:
        raise ValueError(f"`x` must have shape [B, T, H, D], got {tuple(x.shape)}")
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ValueError(f"rotary embedding needs an even head dim, got {head_dim}")
    if positions.shape not in (x.shape[:2], x.shape[1:2]):
        raise ValueError(f"`positions` must have shape [B, T] or [T] = {list(x.shape[:2])}, got {list(positions.shape)}")
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) * 2 / head_dim)
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq           # [(B,) T, D/2]
    cos, sin = angles.cos().unsqueeze(-2), angles.sin().unsqueeze(-2)        # [(B,) T, 1, D/2]
    x1, x2 = x.float().split(half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
