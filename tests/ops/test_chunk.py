"""`chunk_ram` (the PyTorch slot-chain path) against the reference: outputs, final state, gradients."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, chunk_ram, naive_recurrent_ram
from tests.ops.utils import (
    Case,
    assert_rel_close,
    compare_cases,
    make_inputs,
    make_state,
    outputs_and_grads,
    poison_uninitialized,
)


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    # these tests are about the PyTorch path, whatever the environment forces
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'torch')


@pytest.mark.parametrize('case', compare_cases())
def test_chunk_matches_naive_float32(case):
    with poison_uninitialized():
        result = outputs_and_grads(chunk_ram, case)
    reference = outputs_and_grads(naive_recurrent_ram, case)
    assert result.keys() == reference.keys()
    assert result['o'].dtype == torch.float32 and result['memory'].dtype == torch.float32
    assert torch.equal(result['position'], reference['position'])
    for name in reference:
        if name != 'position':
            assert_rel_close(name, result[name], reference[name], 1e-5)


@pytest.mark.parametrize('case', [
    pytest.param(Case(seq_len=13, cape=[True, False], positions=[3, 8], seed=12), id='initial-state'),
    pytest.param(Case(cu_seqlens=[0, 6, 6, 15], cape=True, positions=[1, 2, 3], seed=13), id='packed'),
])
def test_chunk_matches_naive_float16(case):
    # half inputs are computed in float32 (the state stays float32); o and the gradients come back in half
    result = outputs_and_grads(chunk_ram, case, dtype=torch.float16)
    reference = outputs_and_grads(naive_recurrent_ram, case, dtype=torch.float16)
    assert result['o'].dtype == torch.float16 and result['dv'].dtype == torch.float16
    assert result['memory'].dtype == torch.float32
    for name in reference:
        if name != 'position':
            assert_rel_close(name, result[name], reference[name], 2e-3)


def test_float32_reference_is_close_to_float64():
    # sanity of the comparison above: float32 rounding alone stays well below the 1e-5 tolerance
    case = Case(seq_len=30, cape=[True, False], positions=[4, 9], seed=14)
    single = outputs_and_grads(chunk_ram, case)
    double = outputs_and_grads(chunk_ram, case, dtype=torch.float64)
    for name in ('o', 'memory', 'mass', 'dq', 'dv', 'dgamma', 'dmemory0'):
        assert_rel_close(name, single[name], double[name], 1e-5)


@pytest.mark.parametrize('with_state, cape, packed', [
    pytest.param(False, False, False, id='zero-state'),
    pytest.param(True, [True, False], False, id='state-mixed-cape'),
    pytest.param(True, True, True, id='state-packed'),
])
def test_chunk_gradcheck(with_state, cape, packed):
    B, T, H, U, d_p, V, K = (1, 5, 2, 2, 2, 2, 2) if packed else (2, 4, 2, 2, 2, 2, 2)
    M = d_p ** U
    cu_seqlens = torch.tensor([0, 2, 2, 5]) if packed else None
    N = 3 if packed else B
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, dtype=torch.float64, requires_grad=True, seed=15)
    leaves = [q, k, v, gamma]
    position = torch.arange(N) * 3 + 1
    if with_state:
        state = make_state(N, H, M, V, positions=position.tolist(), dtype=torch.float64, requires_grad=True)
        leaves += [state.memory, state.mass]

    def fn(q, k, v, gamma, memory=None, mass=None):
        initial = RAMState(memory, mass, position) if memory is not None else None
        o, final = chunk_ram(q, k, v, gamma, U, K, cape=cape, initial_state=initial, output_final_state=True,
                             cu_seqlens=cu_seqlens)
        return o, final.memory, final.mass

    assert torch.autograd.gradcheck(fn, tuple(leaves))


def test_chunk_without_final_state_matches():
    # output_final_state=False: same o, no state, gradients still flow from o alone
    q, k, v, gamma = make_inputs(2, 17, 2, 3, 4, 8, requires_grad=True, seed=16)
    o, final = chunk_ram(q, k, v, gamma, 3, 4, cape=[False, True])
    ref_o, _ = naive_recurrent_ram(q, k, v, gamma, 3, 4, cape=[False, True])
    assert final is None
    assert_rel_close('o', o, ref_o, 1e-5)
    weight = torch.randn_like(o)
    grads = torch.autograd.grad((o * weight).sum(), (q, k, v, gamma))
    ref_grads = torch.autograd.grad((ref_o * weight).sum(), (q, k, v, gamma))
    for name, grad, ref in zip('qkvg', grads, ref_grads):
        assert_rel_close(f'd{name}', grad, ref, 1e-5)


def test_chunk_does_not_modify_initial_state():
    q, k, v, gamma = make_inputs(2, 9, 2, 3, 4, 8, seed=17)
    state = make_state(2, 2, 64, 8, positions=[3, 4])
    saved = state.clone()
    chunk_ram(q, k, v, gamma, 3, 4, cape=True, initial_state=state, output_final_state=True)
    assert all(torch.equal(a, b) for a, b in zip(state, saved))


def test_chunk_memory_is_independent_of_m_in_saved_activations():
    # from a zero state without a final state, nothing saved for backward scales with M:
    # count the elements autograd keeps alive at M = 4**3 and M = 4**8
    def saved_elements(num_factors):
        q, k, v, gamma = make_inputs(1, 16, 2, num_factors, 4, 8, requires_grad=True, seed=18)
        total = 0

        def pack(x):
            nonlocal total
            total += x.numel()
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            o, _ = chunk_ram(q, k, v, gamma, num_factors, 4)
        return total

    small, large = saved_elements(3), saved_elements(8)
    assert large < 2 * small, f'saved activations grow with M: {small} -> {large} elements'
