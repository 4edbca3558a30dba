"""Argument checks shared by the whole package: each raises a TypeError or ValueError naming the
argument and what was expected."""

from __future__ import annotations

import torch


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` must be an int (not a bool) in [minimum, maximum]; returned unchanged."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value}")
    return value


def check_tensor(name: str, x, ndim: int, layout: str) -> None:
    """`x` must be a tensor with `ndim` dims; `layout` (e.g. '[B, T, H, D]') goes into the message."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"`{name}` must have shape {layout} ({ndim} dims), got shape {tuple(x.shape)}")


def check_cu_seqlens(cu_seqlens, batch: int, seq_len: int, device: torch.device | None = None) -> torch.Tensor:
    """Packed-sequence offsets [0, ..., T] for inputs of batch size 1; returned as int64.

    `device`, when given, is where the inputs live (the offsets must be there too).
    """
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"`cu_seqlens` must be a 1-D integer torch.Tensor, got {type(cu_seqlens).__name__}")
    if cu_seqlens.ndim != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"`cu_seqlens` must be 1-D with at least 2 entries [0, ..., T], got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype.is_floating_point or cu_seqlens.dtype == torch.bool or cu_seqlens.is_complex():
        raise TypeError(f"`cu_seqlens` must hold integers, got {cu_seqlens.dtype}")
    if device is not None and cu_seqlens.device != device:
        raise ValueError(f"`cu_seqlens` must be on the inputs' device {device}, got {cu_seqlens.device}")
    if batch != 1:
        raise ValueError(f"packed input (`cu_seqlens` given) needs batch size 1, got q.shape[0] = {batch}")
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != seq_len:
        raise ValueError(f"`cu_seqlens` must start at 0 and end at T = {seq_len}, got {bounds[0]} ... {bounds[-1]}")
    if any(b < a for a, b in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"`cu_seqlens` must be non-decreasing, got {bounds}")
    return cu_seqlens.long()


def check_attention_mask(attention_mask, hidden_states: torch.Tensor) -> None:
    """fla's padding mask: [B, T_total] with 1 (or True) = token, 0 = padding, T_total >= T.

    hidden_states: [B, T, ...], the tokens of this call. The mask may cover the whole context while
    decoding (fla's layers then read its last T columns); shorter than T, another batch size or
    values other than 0/1 are errors. Bool, integer and floating masks holding only 0 and 1 pass.
    """
    if attention_mask is None:
        return
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"`attention_mask` must be a torch.Tensor of shape [batch_size, seq_len], "
                        f"got {type(attention_mask).__name__}")
    batch, seq_len = hidden_states.shape[:2]
    if attention_mask.ndim != 2:
        raise ValueError("`attention_mask` must be a [batch_size, seq_len] 0/1 padding mask (0 = padding), "
                         f"got shape {tuple(attention_mask.shape)}")
    if attention_mask.shape[0] != batch or attention_mask.shape[1] < seq_len:
        raise ValueError(f"`attention_mask` must be [batch_size={batch}, >= seq_len={seq_len}] (its last {seq_len} "
                         f"columns belong to these tokens), got shape {tuple(attention_mask.shape)}")
    if attention_mask.is_complex():
        raise TypeError(f"`attention_mask` must be bool or hold 0/1 numbers, got {attention_mask.dtype}")
    if attention_mask.dtype != torch.bool and not bool(((attention_mask == 0) | (attention_mask == 1)).all()):
        bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)][:4].tolist()
        raise ValueError(f"`attention_mask` must hold only 0 (padding) and 1 (token), got values such as {bad}")
