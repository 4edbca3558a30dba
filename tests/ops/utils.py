"""Helpers shared by the RAM-Net op tests: random inputs, brute-force oracles, comparisons.

Everything here is deliberately independent of the package's fast paths: the brute-force Top-K
enumerates all M addresses, and `dense_recurrent_ram` updates the whole [M, V] table with dense
tensor algebra (no indices at all), so agreeing with them means something.
"""

from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

from tests.profiling import peak_tensor_bytes

from ramnet_fla.ops.ram import RAMState, chunk_ram, fused_recurrent_ram, naive_recurrent_ram, ram_address


def make_inputs(
    batch: int,
    seq_len: int,
    num_heads: int,
    num_factors: int,
    factor_dim: int,
    value_dim: int,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
    logit_scale: float = 1.0,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random q, k [B, T, H, U*d_p], v [B, T, H, V], gamma [B, T, H] (in (0.1, 2.1), float32 or float64)."""
    generator = torch.Generator().manual_seed(seed)
    width = num_factors * factor_dim
    q = torch.randn(batch, seq_len, num_heads, width, generator=generator) * logit_scale
    k = torch.randn(batch, seq_len, num_heads, width, generator=generator) * logit_scale
    v = torch.randn(batch, seq_len, num_heads, value_dim, generator=generator)
    gamma = torch.rand(batch, seq_len, num_heads, generator=generator) * 2 + 0.1
    gamma_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    tensors = (q.to(dtype), k.to(dtype), v.to(dtype), gamma.to(gamma_dtype))
    return tuple(x.requires_grad_(requires_grad) for x in tensors)


def make_state(
    num_sequences: int,
    num_heads: int,
    num_slots: int,
    value_dim: int,
    positions: list[int] | None = None,
    dtype: torch.dtype = torch.float32,
    requires_grad: bool = False,
    seed: int = 1,
) -> RAMState:
    """A random non-zero RAMState: memory ~ N(0, 1), mass in (0.5, 1.5), the given positions."""
    generator = torch.Generator().manual_seed(seed)
    memory = torch.randn(num_sequences, num_heads, num_slots, value_dim, generator=generator).to(dtype)
    mass = (torch.rand(num_sequences, num_heads, num_slots, generator=generator) + 0.5).to(dtype)
    if positions is None:
        positions = [0] * num_sequences
    position = torch.tensor(positions, dtype=torch.long)
    return RAMState(memory.requires_grad_(requires_grad), mass.requires_grad_(requires_grad), position)


def all_addresses(num_factors: int, factor_dim: int) -> torch.Tensor:
    """Every address as digits [M, U], row i being the digits of flat index i (factor 0 least significant)."""
    digits = torch.tensor(list(itertools.product(range(factor_dim), repeat=num_factors)), dtype=torch.long)
    return digits.flip(-1)     # itertools varies the last digit fastest; flat index wants factor 0 fastest


def brute_force_log_probs(logits: torch.Tensor, num_factors: int) -> torch.Tensor:
    """log w(a) for all M addresses, by enumeration: [..., U*d_p] -> [..., M] (differentiable)."""
    factor_dim = logits.shape[-1] // num_factors
    log_probs = logits.unflatten(-1, (num_factors, factor_dim)).log_softmax(-1)    # [..., U, d_p]
    digits = all_addresses(num_factors, factor_dim)                                  # [M, U]
    total = 0
    for u in range(num_factors):
        total = total + log_probs[..., u, :][..., digits[:, u]]
    return total


def brute_force_topk(logits: torch.Tensor, num_factors: int, topk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-K over an enumeration of all M addresses: (indices, log_probs), each [..., K]."""
    log_probs = brute_force_log_probs(logits, num_factors)
    values, indices = log_probs.topk(topk, dim=-1)
    return indices, values


def dense_recurrent_ram(q, k, v, gamma, num_factors: int, initial_state: RAMState | None = None):
    """RAM-Net with K = M and no CAPE as dense algebra on the whole table (no Top-K, no indices).

    Every token writes every slot a with weight w(a) and reads every slot with weight r(a).
    q, k: [B, T, H, U*d_p]; v: [B, T, H, V]; gamma: [B, T, H]. Returns o [B, T, H, V] and the
    final (memory [B, H, M, V], mass [B, H, M]), in the compute dtype (float64 if q is float64).
    """
    dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    B, T, H, V = v.shape
    read_weight = brute_force_log_probs(q.to(dtype), num_factors).exp()     # [B, T, H, M]
    write_weight = brute_force_log_probs(k.to(dtype), num_factors).exp()
    M = read_weight.shape[-1]
    if initial_state is None:
        memory = v.new_zeros(B, H, M, V, dtype=dtype)
        mass = v.new_zeros(B, H, M, dtype=dtype)
    else:
        memory, mass = initial_state.memory.to(dtype), initial_state.mass.to(dtype)
    outputs = []
    for t in range(T):
        w = write_weight[:, t]                                                    # [B, H, M]
        retain = torch.exp(gamma[:, t, :, None].to(dtype) * torch.log1p(-w.clamp(max=1 - 1e-6)))
        memory = retain[..., None] * memory + w[..., None] * v[:, t, :, None, :].to(dtype)
        mass = retain * mass + w
        outputs.append(torch.einsum('bhm,bhmv->bhv', read_weight[:, t], memory / (mass[..., None] + 1e-6)))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V, dtype=dtype)
    return o, (memory, mass)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 when both are all zero)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    scale = expected.abs().max().item() if expected.numel() else 0.0
    error = (actual - expected).abs().max().item() if expected.numel() else 0.0
    return error / scale if scale > 0 else error


def assert_rel_close(name: str, actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    """Shapes equal, no NaN/Inf in either, and max abs error <= rtol * max |expected|."""
    assert actual is not None and expected is not None, f"{name}: missing tensor"
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(expected).all(), f"{name}: non-finite values in the reference"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values (NaN leak?)"
    error = relative_error(actual, expected)
    assert error <= rtol, f"{name}: relative error {error:.3e} > {rtol:.1e}"


def addressed_slots(logits: torch.Tensor, num_factors: int, topk: int, cape_heads: list[bool],
                    start_positions: list[int]) -> set[tuple[int, int, int]]:
    """The set of (sequence, head, slot) addressed by logits [B, T, H, U*d_p] (no packing), CAPE applied."""
    indices, _ = ram_address(logits, num_factors, topk)        # [B, T, H, K]
    M = (logits.shape[-1] // num_factors) ** num_factors
    B, T, H, _ = indices.shape
    touched = set()
    for b in range(B):
        for t in range(T):
            for h in range(H):
                shift = start_positions[b] + t if cape_heads[h] else 0
                for slot in indices[b, t, h].tolist():
                    touched.add((b, h, (slot + shift) % M))
    return touched


def op_paths():
    """The three public paths as pytest params with readable ids (the reference first)."""
    return [
        pytest.param(naive_recurrent_ram, id='naive'),
        pytest.param(chunk_ram, id='chunk'),
        pytest.param(fused_recurrent_ram, id='fused_recurrent'),
    ]


@contextlib.contextmanager
def poison_uninitialized():
    """Within the block, every tensor torch allocates without initialising (torch.empty, new_empty,
    empty_like, ...) is filled with NaN, so an output element that a path forgets to write fails
    the finiteness checks. Uses torch's deterministic mode, restored on exit."""
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


class Case:
    """One comparison setting: sizes, CAPE heads, an optional initial state and optional packing."""

    def __init__(self, batch=2, seq_len=9, num_heads=2, num_factors=3, factor_dim=4, value_dim=8, topk=4,
                 cape=False, positions=None, cu_seqlens=None, seed=0):
        self.batch, self.seq_len, self.num_heads = batch, seq_len, num_heads
        self.num_factors, self.factor_dim, self.value_dim, self.topk = num_factors, factor_dim, value_dim, topk
        self.cape, self.positions, self.cu_seqlens, self.seed = cape, positions, cu_seqlens, seed
        if cu_seqlens is not None:
            self.batch, self.seq_len = 1, cu_seqlens[-1]
        self.num_sequences = len(cu_seqlens) - 1 if cu_seqlens is not None else self.batch
        self.num_slots = factor_dim ** num_factors

    def inputs(self, dtype=torch.float32, requires_grad=False):
        """(q, k, v, gamma, kwargs) with a fresh initial state (float32) when the case has positions."""
        q, k, v, gamma = make_inputs(self.batch, self.seq_len, self.num_heads, self.num_factors, self.factor_dim,
                                     self.value_dim, dtype=dtype, requires_grad=requires_grad, seed=self.seed)
        state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
        state = None
        if self.positions is not None:
            state = make_state(self.num_sequences, self.num_heads, self.num_slots, self.value_dim,
                               positions=self.positions, dtype=state_dtype, requires_grad=requires_grad,
                               seed=self.seed + 1)
        cu_seqlens = torch.tensor(self.cu_seqlens) if self.cu_seqlens is not None else None
        kwargs = dict(cape=self.cape, initial_state=state, cu_seqlens=cu_seqlens)
        return q, k, v, gamma, kwargs


def compare_cases():
    """Comparison settings against the reference, with readable ids: the awkward sizes of TESTING.md."""
    return [
        pytest.param(Case(num_factors=1, factor_dim=6, value_dim=8, topk=2), id='U1'),
        pytest.param(Case(seq_len=10, num_factors=4, factor_dim=2, value_dim=4, topk=3), id='dp2'),
        pytest.param(Case(seq_len=8, num_factors=2, factor_dim=3, value_dim=4, topk=9), id='K=M'),
        pytest.param(Case(batch=3, seq_len=1, topk=4), id='T1'),
        pytest.param(Case(seq_len=157, value_dim=16, topk=4, cape=[True, False], seed=4), id='T157-odd'),
        pytest.param(Case(seq_len=40, num_factors=2, factor_dim=2, value_dim=3, topk=2, seed=5), id='M4-long-chains'),
        pytest.param(Case(seq_len=13, num_heads=8, num_factors=3, factor_dim=3, topk=3, seed=6,
                          cape=[True, False, False, True, True, False, True, False]), id='H8-mixed-cape'),
        pytest.param(Case(batch=1, seq_len=12, num_heads=3, num_factors=2, factor_dim=5, value_dim=13, topk=5,
                          seed=7), id='V13'),
        pytest.param(Case(seq_len=20, num_factors=5, factor_dim=4, topk=8, cape=[False, True], seed=8), id='M1024-K8'),
        pytest.param(Case(seq_len=11, cape=[True, False], positions=[7, 130], seed=9), id='initial-state'),
        pytest.param(Case(cu_seqlens=[0, 5, 5, 12, 21], num_heads=3, cape=[True, False, True],
                          positions=[2, 0, 40, 7], seed=10), id='packed-empty-seq'),
    ]


def loss_of(o, final, seed=123):
    """A scalar that depends on o and on the final state (memory and mass), with fixed random weights."""
    generator = torch.Generator().manual_seed(seed)
    loss = (o.float() * torch.randn(o.shape, generator=generator)).sum()
    if final is not None:
        loss = loss + (final.memory.float() * torch.randn(final.memory.shape, generator=generator)).sum()
        loss = loss + (final.mass.float() * torch.randn(final.mass.shape, generator=generator)).sum()
    return loss


def outputs_and_grads(op, case, dtype=torch.float32):
    """Run `op` on the case's inputs; return {name: tensor} for o, the final state and every gradient."""
    q, k, v, gamma, kwargs = case.inputs(dtype=dtype, requires_grad=True)
    state = kwargs['initial_state']
    o, final = op(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    leaves = {'q': q, 'k': k, 'v': v, 'gamma': gamma}
    if state is not None:
        leaves.update(memory0=state.memory, mass0=state.mass)
    grads = torch.autograd.grad(loss_of(o, final), list(leaves.values()))
    result = {'o': o, 'memory': final.memory, 'mass': final.mass, 'position': final.position}
    result.update({f'd{name}': grad for name, grad in zip(leaves, grads)})
    return result


def peak_allocated_bytes(fn) -> int:
    """High-water mark of tensor bytes allocated while `fn()` runs (no warm-up; see tests/profiling.py)."""
    return peak_tensor_bytes(fn, warmup=False)
