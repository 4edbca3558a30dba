"""fla's ShortConvolution with an exact PyTorch path for CPU tensors.

The convolution is causal and depthwise: channel d of token t is
    y[t, d] = act(bias[d] + sum_w weight[d, w] * x[t - (W - 1) + w, d]) (+ residual[t, d]),
where inputs before the start of a sequence come from its cache (zeros without one). The cache
keeps, as fla does, the last W inputs of every sequence: [N, D, W], newest input in column W - 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fla.modules import ShortConvolution as FlaShortConvolution

from ramnet_fla.fla_cpu.dispatch import CPUDispatch

ACTIVATIONS = (None, 'silu', 'swish')


def _sequence_bounds(batch: int, seq_len: int, cu_seqlens: torch.Tensor | None,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """First and one-past-last flat token index of every sequence: ([N], [N])."""
    if cu_seqlens is None:
        starts = torch.arange(batch, device=device) * seq_len
        return starts, starts + seq_len
    cu_seqlens = cu_seqlens.to(device=device, dtype=torch.long)
    return cu_seqlens[:-1], cu_seqlens[1:]


def causal_conv1d_torch(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    residual: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    activation: str | None = None,
    cu_seqlens: torch.LongTensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal depthwise convolution in PyTorch, computed in float32 or wider (differentiable in every input).

    Args:
        x: [B, T, D] (B == 1 with `cu_seqlens`); weight: [D, W]; bias: [D] or None;
        residual: [B, T, D] added after the activation, or None;
        initial_state: [N, D, W], the last W inputs seen by each sequence, or None (zeros);
        activation: None, 'silu' or 'swish'; cu_seqlens: [N+1] offsets of packed sequences.

    Returns:
        y: [B, T, D] in x's dtype; the final state [N, D, W] in x's dtype, or None.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if x.ndim != 3:
        raise ValueError(f"x must be [B, T, D], got shape {tuple(x.shape)}")
    B, T, D = x.shape
    if weight.ndim != 2 or weight.shape[0] != D:
        raise ValueError(f"weight must be [D={D}, W], got shape {tuple(weight.shape)}")
    if cu_seqlens is not None and B != 1:
        raise ValueError(f"with cu_seqlens the batch size must be 1, got {B}")
    W = weight.shape[1]
    dtype = torch.promote_types(x.dtype, torch.float32)          # float32, or float64 for float64 input
    starts, ends = _sequence_bounds(B, T, cu_seqlens, x.device)
    N, total = len(starts), B * T
    if initial_state is not None and tuple(initial_state.shape) != (N, D, W):
        raise ValueError(f"initial_state (cache) must be [N={N}, D={D}, W={W}], got {tuple(initial_state.shape)}")

    # Rows to gather from: the tokens, then each sequence's W cached inputs, then one zero row.
    rows = [x.reshape(total, D).to(dtype)]
    if initial_state is not None:
        rows.append(initial_state.to(dtype).transpose(1, 2).reshape(N * W, D))
    rows.append(x.new_zeros(1, D, dtype=dtype))
    source = torch.cat(rows)
    zero_row = source.shape[0] - 1

    def row_index(position: torch.Tensor, sequence: torch.Tensor) -> torch.Tensor:
        """Source row of flat token `position` as seen from `sequence` (earlier: cache or zero)."""
        offset = position - starts[sequence]                     # < 0: before the sequence starts
        if initial_state is None:
            before = torch.full_like(position, zero_row)
        else:
            before = total + sequence * W + W + offset           # valid for -W <= offset < 0
        return torch.where(offset >= 0, position, before)

    taps = torch.arange(W, device=x.device)
    lengths = ends - starts
    sequence = torch.repeat_interleave(torch.arange(N, device=x.device), lengths)           # [total]
    window = torch.arange(total, device=x.device)[:, None] - (W - 1) + taps                 # [total, W]
    inputs = source[row_index(window, sequence[:, None].expand_as(window))]                # [total, W, D]
    y = torch.einsum('twd,dw->td', inputs, weight.to(dtype))
    if bias is not None:
        y = y + bias.to(dtype)
    if activation is not None:
        y = F.silu(y)
    if residual is not None:
        y = y + residual.reshape(total, D).to(dtype)
    y = y.to(x.dtype).view(B, T, D)

    final_state = None
    if output_final_state:
        last = ends[:, None] - W + taps                                                    # [N, W]
        seq_ids = torch.arange(N, device=x.device)[:, None].expand_as(last)
        final_state = source[row_index(last, seq_ids)].transpose(1, 2).to(x.dtype).contiguous()
    return y, final_state


class ShortConvolution(CPUDispatch, FlaShortConvolution):
    """fla's `ShortConvolution` (same parameters and state_dict) that also runs on the CPU.

    Accelerator tensors take fla's Triton path unchanged; CPU tensors take `causal_conv1d_torch`.
    As in fla, a single-token step without autograd updates a given cache in place.
    """

    def forward_torch(
        self,
        x: torch.Tensor,
        residual: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: torch.Tensor | None = None,
        output_final_state: bool = False,
        cu_seqlens: torch.LongTensor | None = None,
        chunk_indices: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: [B, T, D]; cache: [N, D, W] or None. Returns y [B, T, D] and the cache [N, D, W] or None."""
        if x.ndim != 3 or x.shape[-1] != self.hidden_size:
            raise ValueError(f"x must be [B, T, {self.hidden_size}], got shape {tuple(x.shape)}")
        if mask is not None:
            if cu_seqlens is not None:
                raise ValueError("`mask` and `cu_seqlens` cannot be provided at the same time")
            x = x * mask.unsqueeze(-1).to(x.dtype)
        B, T = x.shape[:2]
        N = B if cu_seqlens is None else len(cu_seqlens) - 1
        single_step = (not torch.is_grad_enabled() and B * T == N
                       and (cu_seqlens is None or bool((cu_seqlens.diff() == 1).all())))
        update_in_place = single_step and cache is not None
        y, final_state = causal_conv1d_torch(
            x,
            weight=self.weight[:, 0],
            bias=self.bias,
            residual=residual,
            initial_state=cache,
            output_final_state=output_final_state or update_in_place,
            activation=self.activation,
            cu_seqlens=cu_seqlens,
        )
        if update_in_place:
            cache.copy_(final_state)
            final_state = cache
        return y, (final_state if output_final_state else None)
