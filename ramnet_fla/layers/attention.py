"""Causal softmax attention with RoPE and a KV cache in fla's `Cache`, following fla's layer contract.

Pure PyTorch (`scaled_dot_product_attention`), so it runs on the CPU and on CUDA without flash-attn;
fla's own `Attention` cannot even be built without flash-attn (fla 0.6), hence a layer of our own.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from ramnet_fla.fla_cpu.modules import apply_rotary
from ramnet_fla.fla_cpu.ops.utils import packed_token_index
from ramnet_fla.utils.checks import check_attention_mask, check_cu_seqlens, check_int, check_tensor


class SoftmaxAttention(nn.Module):
    """Causal multi-head softmax attention (grouped KV heads allowed) with rotary positions.

    Args:
        hidden_size: model width. Default 1024.
        num_heads: query heads H. Default 8.
        num_kv_heads: key/value heads (divides H); default H.
        head_dim: per-head width D; default hidden_size // num_heads.
        qkv_bias: biases on the q/k/v projections. Default False.
        rope_theta: RoPE base. Default 10000.
        layer_idx: this layer's index in fla's `Cache`.

    The cache holds this layer's rotated keys and values, `attn_state = (k, v)`, each
    [B, L, num_kv_heads * D], padding tokens included (the 2-D mask tells them apart).
    """

    def __init__(
        self,
        hidden_size: int = 1024,
        num_heads: int = 8,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        qkv_bias: bool = False,
        rope_theta: float = 10000.0,
        layer_idx: int | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = check_int('hidden_size', hidden_size, minimum=1)
        self.num_heads = check_int('num_heads', num_heads, minimum=1)
        self.num_kv_heads = check_int('num_kv_heads', num_heads if num_kv_heads is None else num_kv_heads, minimum=1)
        if num_heads % self.num_kv_heads:
            raise ValueError(f"`num_heads` ({num_heads}) must be a multiple of `num_kv_heads` ({self.num_kv_heads})")
        if head_dim is None:
            if hidden_size % num_heads:
                raise ValueError(f"`hidden_size` ({hidden_size}) must be divisible by `num_heads` ({num_heads}) "
                                 "when `head_dim` is not given")
            head_dim = hidden_size // num_heads
        self.head_dim = check_int('head_dim', head_dim, minimum=1)
        if head_dim % 2:
            raise ValueError(f"`head_dim` must be even for rotary positions, got {head_dim}")
        if not isinstance(rope_theta, (int, float)) or rope_theta <= 0:
            raise ValueError(f"`rope_theta` must be a positive number, got {rope_theta!r}")
        self.rope_theta = float(rope_theta)
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(hidden_size, self.num_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(hidden_size, self.num_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=False)

    def forward(self, hidden_states, attention_mask=None, past_key_values=None, use_cache=False,
                output_attentions=False, **kwargs):
        """hidden_states: [B, T, hidden_size]; attention_mask: [B, L] 0/1 padding mask over the cached
        and new tokens (or over the new tokens only); kwargs['cu_seqlens']: packed sequences (B = 1),
        wins over the mask. Returns (o [B, T, hidden_size], None, past_key_values)."""
        check_tensor('hidden_states', hidden_states, 3, '[B, T, hidden_size]')
        if hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(f"`hidden_states` must be [B, T, hidden_size={self.hidden_size}], "
                             f"got {tuple(hidden_states.shape)}")
        batch, q_len, _ = hidden_states.shape
        if kwargs.get('cu_seqlens') is None:                        # packed input ignores the mask
            check_attention_mask(attention_mask, hidden_states)
        if past_key_values is not None and self.layer_idx is None:
            raise ValueError("SoftmaxAttention needs `layer_idx` when `past_key_values` is given")
        q = rearrange(self.q_proj(hidden_states), 'b t (h d) -> b t h d', d=self.head_dim)
        k = rearrange(self.k_proj(hidden_states), 'b t (h d) -> b t h d', d=self.head_dim)
        v = rearrange(self.v_proj(hidden_states), 'b t (h d) -> b t h d', d=self.head_dim)
        cached_len = past_key_values.get_seq_length(self.layer_idx) if past_key_values is not None else 0
        total_len = cached_len + q_len
        device = hidden_states.device

        cu_seqlens = kwargs.get('cu_seqlens')
        key_valid = None                                               # [B, L] bool, None: all valid
        if cu_seqlens is not None:
            cu_seqlens = check_cu_seqlens(cu_seqlens, batch, q_len)
            if cached_len:
                raise ValueError("packed input (`cu_seqlens`) cannot continue a cache that already holds tokens")
            sequence, positions, _ = packed_token_index(cu_seqlens)
            allowed = (sequence[:, None] == sequence[None, :]) & torch.ones(q_len, q_len, dtype=torch.bool,
                                                                            device=device).tril()
            allowed = allowed[None, None]                              # [1, 1, T, T]
        else:
            if attention_mask is not None:
                mask = attention_mask.to(device=device, dtype=torch.bool)
                if mask.shape[-1] == q_len and cached_len:             # a mask over the new tokens only
                    mask = torch.cat([mask.new_ones(batch, cached_len), mask], dim=-1)
                if mask.shape != (batch, total_len):
                    raise ValueError(f"`attention_mask` must be [B={batch}, {total_len}] (cached + new tokens) or "
                                     f"[B, {q_len}], got {tuple(attention_mask.shape)}")
                key_valid = mask
                positions = (mask.long().cumsum(-1) - 1)[:, -q_len:].clamp_min(0)   # count of earlier real tokens
            else:
                positions = torch.arange(cached_len, total_len, device=device)
            allowed = None
            if key_valid is not None or (q_len > 1 and cached_len):
                query_index = torch.arange(cached_len, total_len, device=device)
                allowed = torch.arange(total_len, device=device)[None, :] <= query_index[:, None]   # [T, L]
                allowed = allowed[None, None]
                if key_valid is not None:
                    allowed = allowed & key_valid[:, None, None, :]
                    # a padding query sees no real key: let it see itself (its output is zeroed below)
                    own = torch.zeros(q_len, total_len, dtype=torch.bool, device=device)
                    own[torch.arange(q_len, device=device), query_index] = True
                    padding_query = ~key_valid[:, -q_len:]                                  # [B, T]
                    allowed = allowed | (own[None, None] & padding_query[:, None, :, None])

        q = apply_rotary(q, positions, self.rope_theta)
        k = apply_rotary(k, positions, self.rope_theta)
        if past_key_values is not None:
            k_all, v_all = past_key_values.update(attn_state=(k.flatten(-2), v.flatten(-2)), layer_idx=self.layer_idx,
                                                  offset=q_len)['attn_state']
            k = rearrange(k_all, 'b l (h d) -> b l h d', d=self.head_dim)
            v = rearrange(v_all, 'b l (h d) -> b l h d', d=self.head_dim)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k, v = (x.repeat_interleave(groups, dim=2) for x in (k, v))
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))              # [B, H, T or L, D]
        if allowed is None and q_len > 1:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        o = rearrange(o, 'b h t d -> b t (h d)')
        if key_valid is not None:
            o = o * key_valid[:, -q_len:, None].to(o.dtype)            # padding tokens output zeros
        return self.o_proj(o), None, past_key_values
