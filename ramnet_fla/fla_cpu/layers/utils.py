"""Helpers for layers that follow fla's layer contract (beside fla's own `fla.layers.utils`)."""

from __future__ import annotations

import torch


def check_attention_mask(attention_mask: torch.Tensor | None) -> None:
    """fla's padding mask is [batch_size, seq_len], 0 = padding (fla asserts it; we raise)."""
    if attention_mask is not None and attention_mask.ndim != 2:
        raise ValueError(
            "attention_mask must be a [batch_size, seq_len] 0/1 padding mask (0 = padding), "
            f"got shape {tuple(attention_mask.shape)}"
        )
