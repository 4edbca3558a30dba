"""The Triton decoding kernel (`fused_recurrent_ram` with RAMNET_FLA_BACKEND=triton) against the
token-by-token reference, under TRITON_INTERPRET=1: in-place state updates, packed sequences with
per-sequence CAPE positions, prefill then decoding, and the autograd fallback."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, chunk_ram, fused_recurrent_ram, naive_recurrent_ram
from tests.ops.utils import Case, assert_rel_close, make_inputs, make_state, outputs_and_grads, poison_uninitialized

pytestmark = pytest.mark.triton


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch, poison_kernel_outputs):
    """Force the Triton kernels and NaN-fill every buffer they should overwrite."""
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')


CASES = [
    pytest.param(Case(seq_len=5, num_factors=3, factor_dim=2, value_dim=6, topk=3, cape=[True, False],
                      positions=[4, 9], seed=11), id='batch-cape-initial-state'),
    pytest.param(Case(cu_seqlens=[0, 3, 3, 8], num_heads=2, num_factors=2, factor_dim=2, value_dim=5, topk=4,
                      cape=True, positions=[2, 5, 0], seed=12), id='packed-empty-seq-K=M-V5'),
    pytest.param(Case(batch=3, seq_len=1, num_factors=2, factor_dim=4, value_dim=7, topk=8, cape=[False, True],
                      seed=13), id='T1-no-state'),
]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16], ids=['fp32', 'fp16'])
@pytest.mark.parametrize('case', CASES)
def test_fused_recurrent_updates_state_in_place(case, dtype):
    q, k, v, gamma, kwargs = case.inputs(dtype=dtype)
    state = kwargs['initial_state']
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    memory_before = state.memory.clone() if state is not None else None
    with poison_uninitialized():
        o, final = fused_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)

    assert o.dtype == dtype and final.memory.dtype == torch.float32
    rtol = 1e-5 if dtype == torch.float32 else 2e-3
    assert_rel_close('o', o, ref_o, rtol)
    assert_rel_close('memory', final.memory, ref_final.memory, 1e-5)
    assert_rel_close('mass', final.mass, ref_final.mass, 1e-5)
    assert torch.equal(final.position, ref_final.position)
    if state is not None:
        # advanced in place: the caller's tensors now hold the final state
        assert final.memory is state.memory and final.mass is state.mass and final.position is state.position
        assert not torch.equal(state.memory, memory_before)


def test_prefill_then_decode_equals_one_pass():
    """chunk_ram over a prefix, then one fused_recurrent_ram call per token, equals the reference over all."""
    cape = [True, False]
    q, k, v, gamma = make_inputs(2, 6, 2, 2, 3, 4, seed=14)
    state = make_state(2, 2, 9, 4, positions=[3, 0], seed=15)
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, 2, 3, cape=cape, initial_state=state, output_final_state=True)

    o_prefix, running = chunk_ram(q[:, :3], k[:, :3], v[:, :3], gamma[:, :3], 2, 3, cape=cape,
                                  initial_state=state, output_final_state=True)
    outputs = [o_prefix]
    for t in range(3, 6):
        o_t, running = fused_recurrent_ram(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], gamma[:, t:t + 1], 2, 3,
                                           cape=cape, initial_state=running, output_final_state=True)
        outputs.append(o_t)
    assert_rel_close('o', torch.cat(outputs, 1), ref_o, 1e-5)
    assert_rel_close('memory', running.memory, ref_final.memory, 1e-5)
    assert_rel_close('mass', running.mass, ref_final.mass, 1e-5)
    assert torch.equal(running.position, ref_final.position)


def test_fused_recurrent_with_gradients_takes_the_exact_chunk_path(monkeypatch):
    """With gradients to track, the Triton fused path must not touch the state and must match the reference."""
    case = Case(batch=1, seq_len=5, num_heads=1, num_factors=2, factor_dim=2, value_dim=4, topk=2, positions=[6], seed=16)
    got = outputs_and_grads(fused_recurrent_ram, case)
    expected = outputs_and_grads(naive_recurrent_ram, case)
    for name, value in expected.items():
        if name == 'position':
            assert torch.equal(got[name], value)
        else:
            assert_rel_close(name, got[name], value, 1e-4)

    q, k, v, gamma, kwargs = case.inputs()
    state: RAMState = kwargs['initial_state']
    before = state.clone()
    o, _ = fused_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, **kwargs)   # no final state asked
    assert all(torch.equal(a, b) for a, b in zip(state, before))
    assert torch.isfinite(o).all()
