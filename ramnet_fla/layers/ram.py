"""RAMAttention: the RAM-Net token mixer as an fla layer (arXiv 2602.11958).

Per head, each token's read and write logits (U factors of width d_p) address K of M = d_p**U
memory slots; the token writes its value into its K write slots with PDMA decay gamma and reads
its K read slots back (see `ramnet_fla.ops.ram`). Around the op, the layer follows fla's GLA
layer: unpad, project, optional short convolutions, op, cache update, per-head RMSNorm times a
sigmoid output gate, output projection, repad.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange
from fla.layers.utils import get_layer_cache, repad_hidden_states, unpad_hidden_states, update_layer_cache

from ramnet_fla.fla_cpu.modules import FusedRMSNormGated, ShortConvolution
from ramnet_fla.ops.ram import RAMState, SparseRAMState, TieredRAMState, chunk_ram, fused_recurrent_ram, ram_address
from ramnet_fla.ops.ram.cape import cape_shift, resolve_cape_heads
from ramnet_fla.utils.checks import check_attention_mask
from ramnet_fla.utils.compile import reject_under_compile

if TYPE_CHECKING:
    from fla.models.cache_utils import Cache

MODES = ('chunk', 'fused_recurrent')
STATE_FORMATS = ('auto', 'dense', 'sparse', 'tiered')
# 'auto' keeps only the written slots from M = 4**8 slots per head on: a dense table of 65,536 slots
# of 65 floats is 17 MB per head and sequence, while 8,192 tokens with K = 8 write at most 65,536.
SPARSE_FROM_SLOTS = 4 ** 8
ADDRESS_CONV_INITS = (None, 'shift', 'identity')
# the newest tap of (read conv, write conv) set to 1, the rest 0: 'shift' delays the write logits by one token
ADDRESS_CONV_TAPS = {'shift': (-1, -2), 'identity': (-1, -1)}
# `address_norm`'s epsilon: far below the square of the logits at fla's initialisation (about 1e-5
# after a short convolution), so that it normalises them instead of shrinking them
ADDRESS_NORM_EPS = 1e-12
# dtypes that `float32_address_projections` keeps the address parameters out of (model.to(bfloat16), .half())
LOW_PRECISION_DTYPES = (torch.float16, torch.bfloat16)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or float64 when it is float64 (for gradcheck)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _autocast_off(x: torch.Tensor):
    """A context that turns off autocast on x's device type while it is on (else does nothing)."""
    device_type = x.device.type
    if device_type in ('cpu', 'cuda', 'xpu', 'mps') and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__}")
    return value


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}, got {value}")
    return value


class RAMAttention(nn.Module):
    r"""RAM-Net attention: linear attention over M = factor_dim**num_factors addressable memory slots.

    Args:
        hidden_size (int): width of the input and output. Default: 1024.
        num_heads (int): number of heads H. Default: 4.
        head_dim (int): value width V per head; default hidden_size // num_heads.
        num_factors (int): U, factors of an address. Default: 5.
        factor_dim (int): d_p, choices per factor (M = d_p**U slots). Default: 4.
        topk (int): K, slots each token reads and writes per head. Default: 8.
        cape_heads: heads that use CAPE (position-shifted addresses), see `resolve_cape_heads`;
            default: the first half of the heads.
        use_short_conv (bool): causal depthwise convolutions (with SiLU) on the read logits, write
            logits and values, as fla's DeltaNet has by default. Default: True (on the KJV quick
            recipe they cut held-out bits per byte by 12%, docs/lm.md "Quality").
        conv_size (int): their kernel size. Default: 4.
        conv_bias (bool): their bias. Default: False.
        mode (str): 'chunk' (parallel, for training and prefill) or 'fused_recurrent' (token by token);
            single-token steps always use 'fused_recurrent'. Default: 'chunk'.
        tie_address_projections (bool): one projection gives both the read and the write logits
            (no `k_proj`), so the same input addresses the same slots for reading and writing.
            Default: False (the paper's separate projections).
        address_conv_init (str or None): 'shift' (needs `use_short_conv`) initialises the read-logit
            convolution as the identity and the write-logit convolution as a one-token delay, so token t
            writes its value where a later copy of token t-1 reads: a recall prior that lets large M
            learn (docs/mqar.md, "Large address spaces"). 'identity' initialises both as the identity, so
            with `tie_address_projections` a token reads the very slots it writes (its value, carrying
            the value convolution's local context, plus what earlier tokens left there), as linear
            attention reads its own key. The convolutions stay trainable. Default: None.
        self_read_init (bool or None): start every token reading the very slots it writes, as linear attention
            reads its own key: `k_proj` starts as a copy of `q_proj` (the projections stay separate and
            trainable) and, with `use_short_conv`, both address convolutions start as the identity
            (`address_conv_init='identity'`). A token then reads back its own value, which carries the
            value convolution's local context, mixed with what earlier tokens left in those slots; with
            separate random projections it reads a random sample of earlier writes instead, and at fla's
            initialisation (near-uniform addresses) learns local structure more slowly. None: on, unless
            `address_conv_init='shift'` (the recall prior, which shifts the writes) or
            `tie_address_projections` with `address_conv_init` left None (then the convolutions alone
            decide). Default: None (docs/lm.md "Quality").
        float32_address_projections (bool): compute the read/write logits in float32 whatever the
            autocast or parameter dtype: `q_proj`, `k_proj`, their short convolutions and the two
            log-temperatures stay float32 under `model.to(torch.bfloat16)` / `.half()` (like MoE routers)
            and run outside autocast on float32 inputs. A slot is chosen by a Top-K over the logits, so
            rounding them to bf16 changes which slots are read and written; with this on, bf16 and fp32
            runs of the same weights pick the same slots. Off: those projections follow the autocast /
            parameter dtype like every other projection. Either way the temperatures, log-softmax and
            beam search run in float32; values, gate, output and state keep their dtypes (o: the
            input's dtype, state float32). A parameter cast by someone else (e.g. FSDP2's
            `MixedPrecisionPolicy(param_dtype=...)`) is used in its dtype and the logits upcast after
            the projection: shard the address projections with `param_dtype=torch.float32` to keep them
            exact. Default: True.
        address_norm (bool): divide each head's read and write logits (all U*d_p of them) by their
            root mean square before the temperature, as query/key normalisation does for attention: the
            sharpness of the addresses is then set by the temperatures alone, not by the scale of the
            projections (at fla's initialisation, std 0.02, the logits are near zero and every token
            addresses M slots almost uniformly). Default: False.
        address_temperature (float): the initial temperature of the read and write logits (the
            learnable log-temperatures start at its log); below 1 sharpens the addresses. Default: 1.0.
        decay_bias_init (float or None): the initial bias of `gamma_proj`, so gamma = softplus(bias)
            for a zero input (larger: a written slot forgets more of its old content). None keeps the
            model's initialisation (fla's: bias 0, gamma = softplus(0) = 0.69). Default: None.
        value_skip (bool): add a learned per-channel multiple of the token's own value to the read
            before the output norm, o_t + D * v_t (Mamba's D skip, RWKV's bonus for the current token), so a
            token's local context (the value convolution's) reaches its output whatever its addresses.
            D [H*V] starts at 0: at initialisation the layer computes what it computes without it.
            Default: False.
        norm_eps (float): epsilon of the per-head output RMSNorm. Default: 1e-5.
        layer_idx (int): this layer's index in fla's Cache (needed with `past_key_values`).
        state_format (str): the decoding state kept in the Cache: 'dense' (RAMState, the [M, V] table
            per head), 'sparse' (SparseRAMState, only the slots ever written), 'tiered'
            (TieredRAMState: the full table in host memory or in a file of `tiered_dir`, an LRU cache
            of `tiered_cache_slots` hot rows on the device) or 'auto' (sparse from M >= 4**8 slots
            on). Sparse and tiered states are inference-only and cannot be beam-reordered through
            fla's Cache. Default: 'auto'.
        tiered_cache_slots (int): hot rows of a tiered state, per layer (at least one step's
            N*H*2K). Default: 65,536 (17 MB at V=64).
        tiered_dir (str or None): directory for the tiered states' table files (sparse files of
            N*H*M*(V+1)*4 bytes, one per layer and cache, deleted with the cache); None keeps the
            table in host memory (pinned on CUDA), which then holds all of it. Default: None.

    Parameters depend on M only through U*d_p: q_proj, k_proj [H*U*d_p x hidden]; v_proj, g_proj
    [H*V x hidden]; gamma_proj [H x hidden] (+ bias; gamma = softplus); read_log_temperature and
    write_log_temperature [H] (logits are divided by exp(...), so 0 means unscaled); value_skip [H*V]
    (with `value_skip`); o_norm [V]; o_proj [hidden x H*V].
    """

    def __init__(
        self,
        hidden_size: int = 1024,
        num_heads: int = 4,
        head_dim: int | None = None,
        num_factors: int = 5,
        factor_dim: int = 4,
        topk: int = 8,
        cape_heads=None,
        use_short_conv: bool = True,
        conv_size: int = 4,
        conv_bias: bool = False,
        mode: str = 'chunk',
        norm_eps: float = 1e-5,
        layer_idx: int | None = None,
        tie_address_projections: bool = False,
        address_conv_init: str | None = None,
        self_read_init: bool | None = None,
        float32_address_projections: bool = True,
        state_format: str = 'auto',
        address_norm: bool = False,
        address_temperature: float = 1.0,
        decay_bias_init: float | None = None,
        value_skip: bool = False,
        tiered_cache_slots: int = 65536,
        tiered_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.hidden_size = _positive_int('hidden_size', hidden_size)
        self.num_heads = _positive_int('num_heads', num_heads)
        if head_dim is None:
            if hidden_size % num_heads != 0:
                raise ValueError(
                    f"`hidden_size` ({hidden_size}) must be divisible by `num_heads` ({num_heads}) "
                    "when `head_dim` is not given"
                )
            head_dim = hidden_size // num_heads
        self.head_dim = _positive_int('head_dim', head_dim)
        self.num_factors = _positive_int('num_factors', num_factors)
        self.factor_dim = _positive_int('factor_dim', factor_dim, minimum=2)
        self.num_slots = factor_dim ** num_factors
        self.topk = _positive_int('topk', topk)
        if topk > self.num_slots:
            raise ValueError(
                f"`topk` must be <= the number of slots M = factor_dim**num_factors = {factor_dim}**{num_factors} "
                f"= {self.num_slots}, got {topk}"
            )
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.use_short_conv = _bool('use_short_conv', use_short_conv)
        self.conv_size = _positive_int('conv_size', conv_size, minimum=2) if use_short_conv else conv_size
        self.conv_bias = conv_bias
        if not isinstance(norm_eps, (int, float)) or isinstance(norm_eps, bool) or not norm_eps > 0:
            raise ValueError(f"`norm_eps` must be a positive number, got {norm_eps!r}")
        self.norm_eps = float(norm_eps)
        if layer_idx is not None:
            _positive_int('layer_idx', layer_idx, minimum=0)
        self.layer_idx = layer_idx
        self.cape = resolve_cape_heads(cape_heads, num_heads)
        self.tie_address_projections = _bool('tie_address_projections', tie_address_projections)
        if address_conv_init not in ADDRESS_CONV_INITS:
            raise ValueError(f"`address_conv_init` must be one of {ADDRESS_CONV_INITS}, got {address_conv_init!r}")
        if address_conv_init is not None and not use_short_conv:
            raise ValueError(f"`address_conv_init={address_conv_init!r}` initialises the short convolutions: "
                             "it needs `use_short_conv=True`")
        if self_read_init is None:
            self_read_init = address_conv_init is None and not tie_address_projections
        if not isinstance(self_read_init, bool):
            raise TypeError(f"`self_read_init` must be a bool or None, got {type(self_read_init).__name__}")
        if self_read_init and address_conv_init == 'shift':
            raise ValueError("`self_read_init=True` makes tokens read where they write; `address_conv_init='shift'` "
                             "makes them write where the next token reads: choose one")
        self.self_read_init = self_read_init
        if self_read_init and use_short_conv:
            address_conv_init = 'identity'
        self.address_conv_init = address_conv_init
        self.float32_address_projections = _bool('float32_address_projections', float32_address_projections)
        if state_format not in STATE_FORMATS:
            raise ValueError(f"`state_format` must be one of {STATE_FORMATS}, got {state_format!r}")
        if state_format == 'auto':
            state_format = 'sparse' if self.num_slots >= SPARSE_FROM_SLOTS else 'dense'
        self.state_format = state_format
        self.tiered_cache_slots = _positive_int('tiered_cache_slots', tiered_cache_slots)
        if tiered_dir is not None and not (isinstance(tiered_dir, (str, os.PathLike)) and os.path.isdir(tiered_dir)):
            raise ValueError(f"`tiered_dir` must be None or an existing directory, got {tiered_dir!r}")
        self.tiered_dir = None if tiered_dir is None else os.fspath(tiered_dir)
        self.address_norm = _bool('address_norm', address_norm)
        if isinstance(address_temperature, bool) or not isinstance(address_temperature, (int, float)) \
                or not 0 < address_temperature < float('inf'):
            raise ValueError(f"`address_temperature` must be a positive finite number, got {address_temperature!r}")
        self.address_temperature = float(address_temperature)
        if decay_bias_init is not None and (isinstance(decay_bias_init, bool) or not isinstance(decay_bias_init, (int, float))
                                            or decay_bias_init != decay_bias_init or abs(decay_bias_init) == float('inf')):
            raise ValueError(f"`decay_bias_init` must be None or a finite number, got {decay_bias_init!r}")
        self.decay_bias_init = None if decay_bias_init is None else float(decay_bias_init)
        _bool('value_skip', value_skip)

        H, V = self.num_heads, self.head_dim
        self.logit_dim = self.num_factors * self.factor_dim          # U * d_p per head
        self.q_proj = nn.Linear(hidden_size, H * self.logit_dim, bias=False)    # read logits
        if not tie_address_projections:
            self.k_proj = nn.Linear(hidden_size, H * self.logit_dim, bias=False)    # write logits
        self.v_proj = nn.Linear(hidden_size, H * V, bias=False)
        self.g_proj = nn.Linear(hidden_size, H * V, bias=False)
        self.gamma_proj = nn.Linear(hidden_size, H, bias=True)
        self.read_log_temperature = nn.Parameter(torch.full((H,), math.log(self.address_temperature)))
        self.write_log_temperature = nn.Parameter(torch.full((H,), math.log(self.address_temperature)))
        if use_short_conv:
            self.q_conv1d = ShortConvolution(H * self.logit_dim, conv_size, bias=conv_bias, activation='silu')
            self.k_conv1d = ShortConvolution(H * self.logit_dim, conv_size, bias=conv_bias, activation='silu')
            self.v_conv1d = ShortConvolution(H * V, conv_size, bias=conv_bias, activation='silu')
        # D of `value_skip` ([H*V], a vector so that weight decay leaves it alone, as it does biases)
        self.value_skip = nn.Parameter(torch.zeros(H * V)) if value_skip else None
        self.o_norm = FusedRMSNormGated(V, eps=self.norm_eps, activation='sigmoid')
        self.o_proj = nn.Linear(H * V, hidden_size, bias=False)
        self._init_address_prior()
        self._init_decay_bias()

    def address_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters that produce the read/write logits: q_proj, k_proj (if not tied), their short
        convolutions and the two log-temperatures (each once)."""
        seen = set()
        modules = [self.q_proj, getattr(self, 'k_proj', None)]
        if self.use_short_conv:
            modules += [self.q_conv1d, self.k_conv1d]
        params = [p for m in modules if m is not None for p in m.parameters()]
        for param in params + [self.read_log_temperature, self.write_log_temperature]:
            if id(param) not in seen:
                seen.add(id(param))
                yield param

    def _apply(self, fn, recurse=True):
        """With `float32_address_projections`, dtype casts to float16/bfloat16 (model.to(torch.bfloat16),
        .half()) leave the address parameters (and their gradients) float32; devices still move."""
        if not getattr(self, 'float32_address_projections', False):
            return super()._apply(fn, recurse)
        keep = set()
        for param in self.address_parameters():
            keep.add(id(param))
            if param.grad is not None:
                keep.add(id(param.grad))

        def keep_float32(t):
            out = fn(t)
            if id(t) in keep and isinstance(out, torch.Tensor) and out.dtype in LOW_PRECISION_DTYPES:
                out = t.to(device=out.device, dtype=torch.float32)
            return out

        return super()._apply(keep_float32, recurse)

    def reset_parameters(self) -> None:
        """Temperatures back to `address_temperature`, the address convolutions' prior and the decay
        bias, where given; the projections are initialised by their own modules. fla's model
        initialisation calls this after it has initialised the layer's Linear and Conv1d children."""
        with torch.no_grad():
            self.read_log_temperature.fill_(math.log(self.address_temperature))
            self.write_log_temperature.fill_(math.log(self.address_temperature))
            if self.value_skip is not None:
                self.value_skip.zero_()
        self._init_address_prior()
        self._init_decay_bias()

    def _init_decay_bias(self) -> None:
        if self.decay_bias_init is not None:
            with torch.no_grad():
                self.gamma_proj.bias.fill_(self.decay_bias_init)

    def _init_address_prior(self) -> None:
        """`address_conv_init`: 'shift': read conv = identity, write conv = one-token delay (newest tap
        last); 'identity': both the identity. `self_read_init`: k_proj = q_proj (untied layers)."""
        if self.self_read_init and not self.tie_address_projections:
            with torch.no_grad():
                self.k_proj.weight.copy_(self.q_proj.weight)
        if self.address_conv_init is None:
            return
        with torch.no_grad():
            for conv, tap in zip((self.q_conv1d, self.k_conv1d), ADDRESS_CONV_TAPS[self.address_conv_init]):
                conv.weight.zero_()
                conv.weight[..., tap] = 1.0
                if conv.bias is not None:
                    conv.bias.zero_()
            # fla's model initialisation re-draws every Conv1d unless told the module is initialised
            for conv in (self.q_conv1d, self.k_conv1d):
                conv._is_hf_initialized = True

    def _new_tiered_state(self, num_sequences: int, device: torch.device) -> TieredRAMState:
        """An empty tiered state for a new cache: its table in a temporary file of `tiered_dir`
        (deleted with the state), or in host memory."""
        sizes = (num_sequences, self.num_heads, self.num_slots, self.head_dim, self.tiered_cache_slots)
        if self.tiered_dir is None:
            return TieredRAMState.create(*sizes, device=device)
        return TieredRAMState.create_temporary(*sizes, device=device, directory=self.tiered_dir)

    def extra_repr(self) -> str:
        return (f"heads={self.num_heads}, head_dim={self.head_dim}, slots={self.factor_dim}**{self.num_factors}"
                f"={self.num_slots}, topk={self.topk}, cape_heads={[h for h, c in enumerate(self.cape) if c]}, "
                f"mode={self.mode!r}, state_format={self.state_format!r}"
                + (f", tiered_cache_slots={self.tiered_cache_slots}" if self.state_format == 'tiered' else "")
                + (", address_norm=True" if self.address_norm else "")
                + (f", address_temperature={self.address_temperature:g}" if self.address_temperature != 1 else ""))

    def _address_logits(self, hidden_states, conv_state_q, conv_state_k, use_cache, cu_seqlens):
        """Read and write logits q, k: [B, T, H*U*d_p] float32 (float64 for float64 inputs), with their
        short-convolution states. With `float32_address_projections` the projections and convolutions
        run outside autocast on float32 inputs; otherwise in the autocast / parameter dtype."""
        exact = self.float32_address_projections
        k_proj = self.q_proj if self.tie_address_projections else self.k_proj
        with _autocast_off(hidden_states) if exact else contextlib.nullcontext():
            x = _at_least_float32(hidden_states) if exact else hidden_states
            q = self.q_proj(x.to(self.q_proj.weight.dtype) if exact else x)
            k = q if k_proj is self.q_proj else k_proj(x.to(k_proj.weight.dtype) if exact else x)
            if self.use_short_conv:
                if exact:
                    q, k = q.to(self.q_conv1d.weight.dtype), k.to(self.k_conv1d.weight.dtype)
                q, conv_state_q = self.q_conv1d(q, cache=conv_state_q, output_final_state=use_cache, cu_seqlens=cu_seqlens)
                k, conv_state_k = self.k_conv1d(k, cache=conv_state_k, output_final_state=use_cache, cu_seqlens=cu_seqlens)
        return _at_least_float32(q), _at_least_float32(k), conv_state_q, conv_state_k

    def _head_logits(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[..., H*U*d_p] logits -> [..., H, U*d_p]: RMS-normalised per head with `address_norm`, then
        divided by the per-head temperatures exp(log_temperature)."""
        read_scale = torch.exp(-self.read_log_temperature.to(q.dtype))[:, None]
        write_scale = torch.exp(-self.write_log_temperature.to(k.dtype))[:, None]
        q = rearrange(q, '... (h d) -> ... h d', h=self.num_heads)
        k = rearrange(k, '... (h d) -> ... h d', h=self.num_heads)
        if self.address_norm:
            q = q * torch.rsqrt(q.square().mean(-1, keepdim=True) + ADDRESS_NORM_EPS)
            k = k * torch.rsqrt(k.square().mean(-1, keepdim=True) + ADDRESS_NORM_EPS)
        return q * read_scale, k * write_scale

    @torch.no_grad()
    def address_slots(self, hidden_states: torch.Tensor) -> dict[str, torch.Tensor]:
        """For diagnostics: what a fresh forward of hidden_states [B, T, hidden] (unpadded sequences
        starting at position 0) addresses. Returns 'read_slots' / 'write_slots' [B, T, H, K] int64 (after
        CAPE), 'read_weights' / 'write_weights' [B, T, H, K] (the Top-K probabilities, float32) and
        'gamma' [B, T, H] (the PDMA decay exponent)."""
        if hidden_states.ndim != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"`hidden_states` must be [B, T, hidden_size={self.hidden_size}], got {tuple(hidden_states.shape)}"
            )
        q, k, _, _ = self._address_logits(hidden_states, None, None, False, None)
        q, k = self._head_logits(q, k)
        positions = torch.arange(hidden_states.shape[1], device=q.device).expand(hidden_states.shape[:2])
        cape = torch.tensor(self.cape, device=q.device)
        out = {}
        for name, logits in (('read', q), ('write', k)):
            slots, log_probs = ram_address(logits, self.num_factors, self.topk)
            out[f'{name}_slots'] = cape_shift(slots, positions, cape, self.num_slots)
            out[f'{name}_weights'] = log_probs.float().exp()
        out['gamma'] = F.softplus(self.gamma_proj(hidden_states).float())
        return out

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        **kwargs,
    ) -> tuple[torch.Tensor, None, Cache | None]:
        """hidden_states: [B, T, hidden]; attention_mask: [B, T_total] 0/1 padding mask (the last T
        columns belong to this call); kwargs may hold `cu_seqlens` [N+1] (then B == 1; it wins over
        the mask). Returns (o [B, T, hidden], None, past_key_values)."""
        if hidden_states.ndim != 3 or hidden_states.shape[-1] != self.hidden_size:
            raise ValueError(
                f"`hidden_states` must be [B, T, hidden_size={self.hidden_size}], got {tuple(hidden_states.shape)}"
            )
        if attention_mask is not None and torch.compiler.is_compiling():
            reject_under_compile('attention_mask')
        cu_seqlens = kwargs.get('cu_seqlens')
        if cu_seqlens is None:                                      # packed input ignores the mask
            check_attention_mask(attention_mask, hidden_states)
        batch_size, q_len, _ = hidden_states.shape
        mode = 'fused_recurrent' if q_len == 1 else self.mode

        last_state = get_layer_cache(self, past_key_values)
        hidden_states, indices, cu_seqlens = unpad_hidden_states(hidden_states, cu_seqlens, attention_mask, q_len)

        # q, k: [B, T, H*U*d_p] read / write logits (float32, see `float32_address_projections`); v: [B, T, H*V]
        v = self.v_proj(hidden_states)
        conv_state_q = conv_state_k = conv_state_v = None
        if self.use_short_conv and last_state is not None and last_state.get('conv_state') is not None:
            conv_state_q, conv_state_k, conv_state_v = last_state['conv_state']
        q, k, conv_state_q, conv_state_k = self._address_logits(hidden_states, conv_state_q, conv_state_k,
                                                                use_cache, cu_seqlens)
        if self.use_short_conv:
            v, conv_state_v = self.v_conv1d(v, cache=conv_state_v, output_final_state=use_cache, cu_seqlens=cu_seqlens)

        q, k = self._head_logits(q, k)                     # [B, T, H, U*d_p]
        v = rearrange(v, '... (h d) -> ... h d', h=self.num_heads)          # [B, T, H, V]
        value_dtype = v.dtype
        v = v.to(q.dtype)            # the op takes one dtype; it computes in float32 anyway
        gamma = F.softplus(self.gamma_proj(hidden_states).float())            # [B, T, H], >= 0

        recurrent_state = None
        if last_state is not None and last_state.get('recurrent_state') is not None:
            recurrent_state = last_state['recurrent_state']
            if not isinstance(recurrent_state, (SparseRAMState, TieredRAMState)):
                recurrent_state = RAMState(*recurrent_state)                  # cache maps may give a plain tuple
        elif use_cache and self.state_format == 'tiered':
            recurrent_state = self._new_tiered_state(batch_size if cu_seqlens is None else cu_seqlens.numel() - 1,
                                                     q.device)
        ram = chunk_ram if mode == 'chunk' else fused_recurrent_ram
        o, recurrent_state = ram(
            q, k, v, gamma,
            num_factors=self.num_factors,
            topk=self.topk,
            cape=self.cape,
            initial_state=recurrent_state,
            output_final_state=bool(use_cache),
            cu_seqlens=cu_seqlens,
            state_format=self.state_format if use_cache else None,
        )
        o = o.to(value_dtype)                                                 # [B, T, H, V]
        if self.value_skip is not None:
            o = o + v.to(value_dtype) * self.value_skip.view(self.num_heads, self.head_dim).to(value_dtype)

        update_layer_cache(
            self,
            past_key_values,
            recurrent_state=recurrent_state,
            conv_state=(conv_state_q, conv_state_k, conv_state_v) if self.use_short_conv else None,
            offset=q_len,
        )

        g = rearrange(self.g_proj(hidden_states), '... (h d) -> ... h d', h=self.num_heads)
        o = rearrange(self.o_norm(o, g), '... h d -> ... (h d)')
        o = self.o_proj(o)
        o = repad_hidden_states(o, indices, batch_size, q_len)
        return o, None, past_key_values
