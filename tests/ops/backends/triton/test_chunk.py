"""The Triton `chunk_ram` (RAMNET_FLA_BACKEND=triton) against the PyTorch slot-chain path and the
token-by-token reference, outputs, final state and every gradient, under TRITON_INTERPRET=1."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, chunk_ram, naive_recurrent_ram
from tests.ops.utils import Case, assert_rel_close, dense_recurrent_ram, make_inputs, outputs_and_grads, poison_uninitialized

pytestmark = pytest.mark.triton

SMALL_CASES = [
    # awkward sizes, all tiny: the interpreter runs every program in Python
    (Case(seq_len=7, num_factors=3, factor_dim=2, value_dim=6, topk=3, cape=[True, False], positions=[5, 0], seed=1),
     'cape-initial-state'),
    (Case(cu_seqlens=[0, 4, 4, 10], num_heads=2, num_factors=2, factor_dim=2, value_dim=5, topk=4, cape=True, seed=2),
     'packed-empty-seq-K=M-V5'),
    (Case(batch=1, seq_len=6, num_heads=1, num_factors=2, factor_dim=3, value_dim=80, topk=2, positions=[3], seed=3),
     'V80-two-blocks'),
    (Case(batch=1, seq_len=16, num_heads=1, num_factors=2, factor_dim=2, value_dim=3, topk=2, seed=4),
     'M4-long-chains'),
]
CASES = [pytest.param(case, dtype, id=f'{name}-{dtype_name}')
         for case, name in SMALL_CASES for dtype, dtype_name in [(torch.float32, 'fp32'), (torch.float16, 'fp16')]]
# one larger case (T = 32, M = 64, several events per program group), float32 only: about 10 s
CASES.append(pytest.param(Case(seq_len=32, num_heads=2, num_factors=3, factor_dim=4, value_dim=16, topk=4,
                                cape=[False, True], positions=[0, 100], seed=5), torch.float32, id='T32-M64-fp32'))


def run(op, case, backend, monkeypatch, dtype):
    monkeypatch.setenv('RAMNET_FLA_BACKEND', backend)
    with poison_uninitialized():
        return outputs_and_grads(op, case, dtype=dtype)


@pytest.mark.parametrize('case, dtype', CASES)
def test_chunk_triton_matches_torch_and_reference(case, dtype, monkeypatch, poison_kernel_outputs):
    got = run(chunk_ram, case, 'triton', monkeypatch, dtype)
    torch_path = run(chunk_ram, case, 'torch', monkeypatch, dtype)
    reference = run(naive_recurrent_ram, case, 'torch', monkeypatch, dtype)

    assert got['o'].dtype == dtype and got['memory'].dtype == got['mass'].dtype == torch.float32
    assert torch.equal(got['position'], reference['position'])
    # both fast paths compute in float32 from the same float32-cast inputs: only summation order differs
    tight = 1e-5 if dtype == torch.float32 else 2e-3
    for name, expected in torch_path.items():
        if name != 'position':
            assert_rel_close(f'{name} vs torch path', got[name], expected, tight)
    for name, expected in reference.items():
        if name != 'position':
            assert_rel_close(f'{name} vs reference', got[name], expected, 1e-4 if dtype == torch.float32 else 3e-3)


def test_chunk_triton_dense_k_equals_m(monkeypatch):
    """K = M without CAPE is dense linear attention over the whole table: compare with dense algebra."""
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
    q, k, v, gamma = make_inputs(2, 5, 1, 2, 2, 3, seed=7)
    o, final = chunk_ram(q, k, v, gamma, 2, 4, output_final_state=True)
    dense_o, (memory, mass) = dense_recurrent_ram(q, k, v, gamma, 2)
    assert_rel_close('o', o, dense_o, 1e-5)
    assert_rel_close('memory', final.memory, memory, 1e-5)
    assert_rel_close('mass', final.mass, mass, 1e-5)


def test_chunk_triton_backward_is_deterministic_and_leaves_state(monkeypatch):
    """Two backward passes give bitwise equal gradients; the initial state is not modified."""
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
    case = Case(batch=1, seq_len=6, num_heads=1, num_factors=2, factor_dim=2, value_dim=4, topk=2, positions=[1], seed=8)
    first = outputs_and_grads(chunk_ram, case)
    second = outputs_and_grads(chunk_ram, case)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    q, k, v, gamma, kwargs = case.inputs()
    state: RAMState = kwargs['initial_state']
    before = state.clone()
    chunk_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    assert all(torch.equal(a, b) for a, b in zip(state, before))


def test_chunk_triton_without_final_state_and_empty_input(monkeypatch):
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
    q, k, v, gamma = make_inputs(1, 4, 2, 2, 3, 4, seed=9)
    o, final = chunk_ram(q, k, v, gamma, 2, 3)
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'torch')
    ref_o, _ = chunk_ram(q, k, v, gamma, 2, 3)
    assert final is None
    assert_rel_close('o', o, ref_o, 1e-5)

    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
    q, k, v, gamma = make_inputs(2, 0, 2, 2, 3, 4)
    o, final = chunk_ram(q, k, v, gamma, 2, 3, output_final_state=True)
    assert o.shape == (2, 0, 2, 4)
    assert final.memory.abs().sum() == 0 and final.mass.abs().sum() == 0 and final.position.tolist() == [0, 0]


def test_chunk_triton_float64_matches_torch_path(monkeypatch, poison_kernel_outputs):
    """float64 inputs run the kernels in float64: agreement to round-off, gradients included."""
    case = Case(batch=1, seq_len=5, num_heads=2, num_factors=2, factor_dim=2, value_dim=3, topk=2,
                cape=[True, False], positions=[2], seed=3)
    got = run(chunk_ram, case, 'triton', monkeypatch, torch.float64)
    expected = run(chunk_ram, case, 'torch', monkeypatch, torch.float64)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        assert_rel_close(name, got[name], value, 1e-12)


def test_every_kernel_compiles_for_sm90():
    """The interpreter does not compile: lower every RAM-Net kernel to a cubin for sm_90 (H100/H200),
    in a fresh process without TRITON_INTERPRET. No GPU needed, only Triton's bundled ptxas."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip('triton.backends.nvidia')
    env = {key: value for key, value in os.environ.items() if key != 'TRITON_INTERPRET'}
    root = Path(__file__).resolve().parents[4]
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(root), env.get('PYTHONPATH')]))
    result = subprocess.run([sys.executable, str(root / 'benchmarks' / 'gpu' / 'compile_check.py'), '--arch', '90'],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '15 kernels compiled for sm_90' in result.stdout, result.stdout[-3000:]
