"""Invariants of the RAM-Net op that need no oracle, checked on the reference and on every fast path.

The reference `naive_recurrent_ram` is itself checked here: against a dense computation (K = M,
no CAPE), the closed forms of PDMA (gamma -> 0 running mean, gamma = 1 moving average), CAPE's ring
buffer, sparsity (untouched slots), packing, and float64 gradcheck.
"""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, naive_recurrent_ram, ram_address
from ramnet_fla.ops.ram.naive import naive_address
from tests.ops.utils import (
    assert_rel_close,
    brute_force_topk,
    dense_recurrent_ram,
    make_inputs,
    make_state,
    op_paths,
    poison_uninitialized,
    addressed_slots,
)

PATHS = op_paths()


def run(op, q, k, v, gamma, num_factors, topk, **kwargs):
    """Call `op` with a final state; clone the initial state first (fused_recurrent_ram updates it)."""
    state = kwargs.pop('initial_state', None)
    if state is not None:
        state = RAMState(state.memory.detach().clone().requires_grad_(state.memory.requires_grad),
                         state.mass.detach().clone().requires_grad_(state.mass.requires_grad),
                         state.position.clone())
    return op(q, k, v, gamma, num_factors, topk, initial_state=state, output_final_state=True, **kwargs)


@pytest.mark.parametrize('op', PATHS)
@pytest.mark.parametrize('with_state', [False, True], ids=['zero-state', 'initial-state'])
def test_full_topk_equals_dense(op, with_state):
    # K = M and no CAPE: every token reads and writes every slot, so the sparse op is dense algebra
    B, T, H, U, d_p, V = 2, 7, 2, 2, 3, 5
    M = d_p ** U
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, dtype=torch.float64, seed=11)
    state = make_state(B, H, M, V, positions=[4, 9], dtype=torch.float64) if with_state else None
    o, final = run(op, q, k, v, gamma, U, M, initial_state=state)
    ref_o, (ref_memory, ref_mass) = dense_recurrent_ram(q, k, v, gamma, U, initial_state=state)
    assert o.dtype == torch.float64
    assert_rel_close('o', o, ref_o, 1e-10)
    assert_rel_close('memory', final.memory, ref_memory, 1e-10)
    assert_rel_close('mass', final.mass, ref_mass, 1e-10)


@pytest.mark.parametrize('op', [PATHS[0], PATHS[1]])
def test_full_topk_gradients_equal_dense(op):
    # the exact gradients (indices held constant) of K = M equal the dense computation's gradients
    B, T, H, U, d_p, V = 1, 6, 2, 2, 2, 3
    M = d_p ** U
    inputs = make_inputs(B, T, H, U, d_p, V, dtype=torch.float64, requires_grad=True, seed=5)
    state = make_state(B, H, M, V, positions=[2], dtype=torch.float64, requires_grad=True)
    leaves = (*inputs, state.memory, state.mass)
    weights = [torch.randn(B, T, H, V, dtype=torch.float64), torch.randn(B, H, M, V, dtype=torch.float64),
               torch.randn(B, H, M, dtype=torch.float64)]

    o, final = op(*inputs, U, M, initial_state=state, output_final_state=True)
    loss = (o * weights[0]).sum() + (final.memory * weights[1]).sum() + (final.mass * weights[2]).sum()
    grads = torch.autograd.grad(loss, leaves)

    ref_o, (ref_memory, ref_mass) = dense_recurrent_ram(*inputs, U, initial_state=state)
    ref_loss = (ref_o * weights[0]).sum() + (ref_memory * weights[1]).sum() + (ref_mass * weights[2]).sum()
    ref_grads = torch.autograd.grad(ref_loss, leaves)
    for name, grad, ref in zip(('q', 'k', 'v', 'gamma', 'memory0', 'mass0'), grads, ref_grads):
        assert_rel_close(f'd{name}', grad, ref, 1e-9)


def constant_logits(batch, seq_len, num_heads, digits, factor_dim, sharpness):
    """Logits [B, T, H, U*d_p] that put almost all probability on one address (the same for all tokens)."""
    logits = torch.zeros(len(digits), factor_dim)
    logits[torch.arange(len(digits)), torch.tensor(digits)] = sharpness
    return logits.flatten().expand(batch, seq_len, num_heads, -1).contiguous()


@pytest.mark.parametrize('op', PATHS)
@pytest.mark.parametrize('gamma_value', [0.0, 1e-7], ids=['gamma0', 'gamma1e-7'])
def test_gamma_to_zero_is_running_mean(op, gamma_value):
    # one slot, written every token with the same weight w: it reads back the mean of all values so far
    B, T, H, U, d_p, V = 2, 11, 2, 2, 4, 6
    q = k = constant_logits(B, T, H, [1, 3], d_p, sharpness=2.0)        # top slot 1 + 3*4 = 13, w ~ 0.6
    v = torch.randn(B, T, H, V)
    gamma = torch.full((B, T, H), gamma_value)
    o, final = run(op, q, k, v, gamma, U, 1)
    _, log_prob = ram_address(k[0, 0, 0], U, 1)
    w = log_prob.exp().item()
    steps = torch.arange(1, T + 1, dtype=torch.float32)[None, :, None, None]
    expected = w * v.cumsum(1) * w / (steps * w + 1e-6)                 # r * sum(w v) / (sum(w) + eps)
    assert_rel_close('o', o, expected, 1e-5)
    assert_rel_close('mass', final.mass[:, :, 13], torch.full((B, H), T * w), 1e-5)


@pytest.mark.parametrize('op', PATHS)
def test_gamma_one_is_moving_average(op):
    # gamma = 1: lambda = 1 - w, so one repeatedly written slot is an exponential moving average
    B, T, H, U, d_p, V = 1, 9, 1, 2, 3, 4
    q = k = constant_logits(B, T, H, [2, 0], d_p, sharpness=1.5)
    v = torch.randn(B, T, H, V)
    gamma = torch.ones(B, T, H)
    o, _ = run(op, q, k, v, gamma, U, 1)
    w = ram_address(k[0, 0, 0], U, 1)[1].exp().item()
    memory, mass, expected = torch.zeros(V), 0.0, []
    for t in range(T):
        memory = (1 - w) * memory + w * v[0, t, 0]
        mass = (1 - w) * mass + w
        expected.append(w * memory / (mass + 1e-6))
    assert_rel_close('o', o[0, :, 0], torch.stack(expected), 1e-5)


@pytest.mark.parametrize('op', PATHS)
@pytest.mark.parametrize('start', [0, 11], ids=['pos0', 'pos11'])
def test_cape_constant_address_is_ring_buffer(op, start):
    # a CAPE head writing one constant address a and reading a - D reads the value written D tokens ago;
    # the same logits on a head without CAPE read a slot nobody writes (zero)
    B, T, H, U, d_p, V, D = 1, 19, 2, 3, 2, 5, 3
    M = d_p ** U
    write_digits, read_digits = [1, 0, 1], [0, 1, 0]                    # a = 5, a - D = 2
    k = constant_logits(B, T, H, write_digits, d_p, sharpness=40.0)
    q = constant_logits(B, T, H, read_digits, d_p, sharpness=40.0)
    v = torch.randn(B, T, H, V)
    gamma = torch.full((B, T, H), 30.0)                                  # overwrite
    state = RAMState.zeros(B, H, M, V)._replace(position=torch.tensor([start]))
    o, final = run(op, q, k, v, gamma, U, 1, cape=[True, False], initial_state=state)

    assert torch.equal(o[0, :D, 0], torch.zeros(D, V)), 'read before anything was written there'
    assert_rel_close('cape head', o[0, D:, 0], v[0, :-D, 0], 1e-5)
    assert torch.equal(o[:, :, 1], torch.zeros(B, T, V)), 'head without CAPE read an unwritten slot'
    # CAPE wrote token t at slot (a + start + t) mod M: the last M tokens sit there in the final table
    for t in range(T - M, T):
        slot = (5 + start + t) % M
        assert_rel_close(f'slot {slot}', final.memory[0, 0, slot], v[0, t, 0], 1e-5)
    assert final.position.tolist() == [start + T]
    assert torch.count_nonzero(final.mass[0, 1]) == 1                    # non-CAPE head: only slot 5


@pytest.mark.parametrize('op', PATHS)
def test_untouched_slots_stay_exact(op):
    # slots no token writes keep their initial memory and mass bit for bit; written ones change
    B, T, H, U, d_p, V, K = 2, 6, 3, 3, 4, 7, 2
    M = d_p ** U
    cape, positions = [True, False, True], [5, 17]
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, seed=3)
    state = make_state(B, H, M, V, positions=positions)
    _, final = run(op, q, k, v, gamma, U, K, cape=cape, initial_state=state)
    touched = addressed_slots(k, U, K, cape, positions)
    untouched = torch.ones(B, H, M, dtype=torch.bool)
    for b, h, slot in touched:
        untouched[b, h, slot] = False
    assert untouched.sum() > B * H * M // 2
    assert torch.equal(final.memory[untouched], state.memory[untouched])
    assert torch.equal(final.mass[untouched], state.mass[untouched])
    assert not torch.isclose(final.mass[~untouched], state.mass[~untouched]).any()


@pytest.mark.parametrize('op', PATHS)
def test_poisoned_far_slots_do_not_leak(op):
    # NaN in every slot that no token reads or writes must not reach the outputs or the other slots,
    # and every freshly allocated tensor is NaN-filled, so an unwritten output element fails too
    B, T, H, U, d_p, V, K = 2, 5, 2, 3, 4, 4, 2
    M = d_p ** U
    cape, positions = [False, True], [0, 6]
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, seed=8)
    state = make_state(B, H, M, V, positions=positions)
    used = addressed_slots(k, U, K, cape, positions) | addressed_slots(q, U, K, cape, positions)
    far = torch.ones(B, H, M, dtype=torch.bool)
    for b, h, slot in used:
        far[b, h, slot] = False
    state.memory[far] = float('nan')
    state.mass[far] = float('nan')
    with poison_uninitialized():
        o, final = run(op, q, k, v, gamma, U, K, cape=cape, initial_state=state)
    assert torch.isfinite(o).all()
    assert torch.isfinite(final.memory[~far]).all() and torch.isfinite(final.mass[~far]).all()
    assert final.memory[far].isnan().all() and final.mass[far].isnan().all()


@pytest.mark.parametrize('op', PATHS)
def test_packed_equals_loop_over_sequences(op):
    # packed sequences (one empty) with per-sequence start positions == one call per sequence
    H, U, d_p, V, K = 3, 2, 4, 5, 3
    M = d_p ** U
    bounds = [0, 4, 4, 11, 16]
    positions = [3, 0, 9, 1]
    cape = [True, False, True]
    N, T = len(bounds) - 1, bounds[-1]
    q, k, v, gamma = make_inputs(1, T, H, U, d_p, V, seed=21)
    state = make_state(N, H, M, V, positions=positions)
    cu_seqlens = torch.tensor(bounds)
    o, final = run(op, q, k, v, gamma, U, K, cape=cape, initial_state=state, cu_seqlens=cu_seqlens)
    assert o.shape == (1, T, H, V)
    assert final.position.tolist() == [p + b - a for p, a, b in zip(positions, bounds[:-1], bounds[1:])]
    for n in range(N):
        bos, eos = bounds[n], bounds[n + 1]
        part = [x[:, bos:eos] for x in (q, k, v, gamma)]
        one = RAMState(state.memory[n:n + 1], state.mass[n:n + 1], state.position[n:n + 1])
        ref_o, ref_final = run(op, *part, U, K, cape=cape, initial_state=one)
        assert ref_o.shape == (1, eos - bos, H, V)
        assert_rel_close(f'o[{n}]', o[:, bos:eos], ref_o, 1e-6)
        assert_rel_close(f'memory[{n}]', final.memory[n:n + 1], ref_final.memory, 1e-6)
        assert_rel_close(f'mass[{n}]', final.mass[n:n + 1], ref_final.mass, 1e-6)
    # the empty sequence passes its state through untouched
    assert torch.equal(final.memory[1], state.memory[1]) and torch.equal(final.mass[1], state.mass[1])


def test_naive_gradcheck():
    # float64 gradcheck of the reference, initial memory and mass included, through o and the final state
    B, T, H, U, d_p, V, K = 1, 3, 2, 2, 2, 2, 2
    M = d_p ** U
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, dtype=torch.float64, requires_grad=True, seed=2)
    state = make_state(B, H, M, V, positions=[1], dtype=torch.float64, requires_grad=True)

    def fn(q, k, v, gamma, memory, mass):
        o, final = naive_recurrent_ram(q, k, v, gamma, U, K, cape=[True, False],
                                       initial_state=RAMState(memory, mass, state.position),
                                       output_final_state=True)
        return o, final.memory, final.mass

    assert torch.autograd.gradcheck(fn, (q, k, v, gamma, state.memory, state.mass))


@pytest.mark.parametrize('num_factors, factor_dim, topk', [(3, 4, 5), (1, 6, 4), (4, 2, 16), (2, 3, 9), (5, 4, 8)],
                         ids=lambda x: str(x))
def test_reference_address_is_the_brute_force_topk(num_factors, factor_dim, topk):
    """The reference's own beam search equals an enumeration of all M addresses, gradients included."""
    generator = torch.Generator().manual_seed(num_factors * 10 + topk)
    logits = (torch.randn(7, 2, num_factors * factor_dim, generator=generator, dtype=torch.float64) * 3).requires_grad_()
    index, log_prob = naive_address(logits, num_factors, topk)
    expected_index, expected_log_prob = brute_force_topk(logits, num_factors, topk)
    assert torch.equal(index, expected_index)       # continuous random logits: no ties
    torch.testing.assert_close(log_prob, expected_log_prob, rtol=0, atol=1e-12)
    grad = torch.randn(log_prob.shape, generator=generator, dtype=torch.float64)
    (got,) = torch.autograd.grad((log_prob * grad).sum(), logits)
    (expected,) = torch.autograd.grad((expected_log_prob * grad).sum(), logits)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
