"""Argument checks and token layout shared by the PyTorch versions of fla's ops (fla's `fla.ops.utils`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fla.ops.utils.index import prepare_lens, prepare_position_ids

from ramnet_fla.utils.checks import check_cu_seqlens, check_tensor


def check_same_tokens(reference: torch.Tensor, **tensors: torch.Tensor) -> None:
    """Every tensor must share B, T (and the device) with `reference`."""
    for name, x in tensors.items():
        if x.shape[:2] != reference.shape[:2]:
            raise ValueError(f"`{name}` must have B, T = {tuple(reference.shape[:2])} like q, got shape {tuple(x.shape)}")
        if x.device != reference.device:
            raise ValueError(f"`{name}` must be on q's device {reference.device}, got {x.device}")


def check_initial_state(initial_state, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """`initial_state` must be a tensor of exactly `shape` on `device`; returned unchanged."""
    check_tensor('initial_state', initial_state, len(shape), str(list(shape)))
    if tuple(initial_state.shape) != shape:
        raise ValueError(f"`initial_state` must have shape {list(shape)}, got {list(initial_state.shape)}")
    if initial_state.device != device:
        raise ValueError(f"`initial_state` must be on q's device {device}, got {initial_state.device}")
    return initial_state


def packed_token_index(cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """For packed tokens: (sequence id [T], offset inside its sequence [T], longest length).

    Offsets are fla's `prepare_position_ids`; sequence ids come from the lengths, because fla's
    `prepare_sequence_ids` (fla 0.6) counts an empty sequence as no sequence.
    """
    lengths = prepare_lens(cu_seqlens)
    sequence = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)
    return sequence, prepare_position_ids(cu_seqlens), int(lengths.max()) if len(lengths) else 0


def packed_to_padded(x: torch.Tensor, cu_seqlens: torch.Tensor, index=None) -> torch.Tensor:
    """[1, T_total, ...] packed sequences -> [N, T_max, ...], zeros after each sequence's end."""
    sequence, offset, longest = index if index is not None else packed_token_index(cu_seqlens)
    padded = x.new_zeros(len(cu_seqlens) - 1, longest, *x.shape[2:])
    return padded.index_put((sequence, offset), x[0])


def padded_to_packed(x: torch.Tensor, cu_seqlens: torch.Tensor, index=None) -> torch.Tensor:
    """Inverse of `packed_to_padded`: [N, T_max, ...] -> [1, T_total, ...]."""
    sequence, offset, _ = index if index is not None else packed_token_index(cu_seqlens)
    return x[sequence, offset].unsqueeze(0)


def to_chunks(x: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[B, T, H, ...] -> [B, H, n, C, ...] with T zero-padded at the end to n * C."""
    pad = (-x.shape[1]) % chunk_size
    if pad:
        x = F.pad(x, (0, 0) * (x.ndim - 2) + (0, pad))
    x = x.movedim(1, 2)
    return x.reshape(*x.shape[:2], -1, chunk_size, *x.shape[3:])


def from_chunks(x: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B, H, n, C, ...] -> [B, T, H, ...], dropping the end padding."""
    x = x.reshape(*x.shape[:2], -1, *x.shape[4:])
    return x[:, :, :seq_len].movedim(2, 1)


def run_per_sequence(core, tokens: list, initial_state, *, heads: int, key_dim: int, value_dim: int,
                     state_v_first: bool, output_final_state: bool, cu_seqlens, out_dtype: torch.dtype):
    """The frame every op here shares around its chunked `core`.

    Packed sequences (`cu_seqlens`, B = 1) become a padded batch [N, T_max, ...] (None tokens stay
    None); the initial state is checked against fla's layout ([N, H, K, V], or [N, H, V, K] with
    `state_v_first`) and handed over as [N, H, K, V] in the tokens' dtype;
    `core(*tokens, h0) -> (o [N, T, H, V], final state [N, H, K, V])`; then o is repacked and cast
    to `out_dtype`, the final state put back in fla's layout (or None without `output_final_state`).
    """
    batch, seq_len = tokens[0].shape[:2]
    index = None
    if cu_seqlens is not None:
        cu_seqlens = check_cu_seqlens(cu_seqlens, batch, seq_len)
        index = packed_token_index(cu_seqlens)
        tokens = [None if x is None else packed_to_padded(x, cu_seqlens, index) for x in tokens]
    num_sequences = tokens[0].shape[0]
    h0 = None
    if initial_state is not None:
        dims = (value_dim, key_dim) if state_v_first else (key_dim, value_dim)
        h0 = check_initial_state(initial_state, (num_sequences, heads, *dims), tokens[0].device).to(tokens[0].dtype)
        if state_v_first:
            h0 = h0.transpose(-1, -2)
    o, ht = core(*tokens, h0)
    if cu_seqlens is not None:
        o = padded_to_packed(o, cu_seqlens, index)
    if not output_final_state:
        ht = None
    elif state_v_first:
        ht = ht.transpose(-1, -2).contiguous()
    return o.to(out_dtype), ht
