"""Bad input gets a clear ValueError/TypeError naming the argument, identically on every path."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, ram_address
from tests.ops.utils import op_paths

PATHS = op_paths()
B, T, H, U, D_P, V, K = 2, 5, 2, 3, 4, 6, 4
M = D_P ** U


def good_args() -> dict:
    """Valid keyword arguments for every op path; each case below breaks exactly one thing."""
    return dict(
        q=torch.randn(B, T, H, U * D_P), k=torch.randn(B, T, H, U * D_P), v=torch.randn(B, T, H, V),
        gamma=torch.rand(B, T, H), num_factors=U, topk=K, cape=False, initial_state=None,
        output_final_state=True, cu_seqlens=None,
    )


def packed_args(cu_seqlens) -> dict:
    args = good_args()
    for name in ('q', 'k', 'v', 'gamma'):
        args[name] = args[name][:1].reshape(1, T, *args[name].shape[2:]).contiguous()
    args['cu_seqlens'] = cu_seqlens
    return args


def with_changes(**changes):
    args = good_args()
    args.update(changes)
    return args


def state(memory_shape=(B, H, M, V), mass_shape=(B, H, M), position=None, **kw):
    return RAMState(torch.zeros(memory_shape, **kw), torch.zeros(mass_shape, **kw),
                    torch.zeros(B, dtype=torch.long) if position is None else position)


BAD_INPUTS = [
    # ranks and widths
    pytest.param(lambda: with_changes(q=torch.randn(B, T, U * D_P)), ValueError,
                 r'`q` must have shape \[B, T, H, U\*d_p\]',
                 id='q-rank3'),
    pytest.param(lambda: with_changes(k=[[0.0]]), TypeError, r'`k` must be a torch.Tensor', id='k-not-tensor'),
    pytest.param(lambda: with_changes(v=torch.randn(B, T, H)), ValueError, r'`v` must have shape', id='v-rank3'),
    pytest.param(lambda: with_changes(gamma=torch.rand(B, T, H, 1)), ValueError, r'`gamma` must have shape',
                 id='gamma-rank4'),
    pytest.param(lambda: with_changes(k=torch.randn(B, T, H, U * D_P + U)), ValueError,
                 r'`q` and `k` must have the same shape',
                 id='k-width'),
    pytest.param(lambda: with_changes(v=torch.randn(B, T + 1, H, V)), ValueError, r'`v` must be \[B, T, H, V\]',
                 id='v-length'),
    pytest.param(lambda: with_changes(gamma=torch.rand(B, T, H + 1)), ValueError, r'`gamma` must be \[B, T, H\]',
                 id='gamma-heads'),
    pytest.param(lambda: with_changes(v=torch.randn(B, T, H, 0)), ValueError, r'`v`.*V >= 1', id='v-width0'),
    # factorisation: U*d_p must divide the width, d_p >= 2, 1 <= topk <= M
    pytest.param(lambda: with_changes(num_factors=5), ValueError, r'num_factors=5 does not divide',
                 id='U-not-dividing'),
    pytest.param(lambda: with_changes(num_factors=12), ValueError, r'factor_dim.*must be >= 2', id='dp1'),
    pytest.param(lambda: with_changes(num_factors=0), ValueError, r'`num_factors` must be >= 1', id='U0'),
    pytest.param(lambda: with_changes(num_factors=3.0), TypeError, r'`num_factors` must be an int', id='U-float'),
    pytest.param(lambda: with_changes(topk=M + 1), ValueError, r'`topk` must be <= the number of slots M = 4\*\*3 = 64',
                 id='topk>M'),
    pytest.param(lambda: with_changes(topk=0), ValueError, r'`topk` must be >= 1', id='topk0'),
    pytest.param(lambda: with_changes(topk=True), TypeError, r'`topk` must be an int', id='topk-bool'),
    # dtypes and devices
    pytest.param(lambda: with_changes(k=torch.randn(B, T, H, U * D_P, dtype=torch.float64)), TypeError,
                 r'`q`, `k` and `v` must share one dtype', id='k-float64'),
    pytest.param(lambda: with_changes(v=torch.randn(B, T, H, V).half()), TypeError, r'must share one dtype',
                 id='v-half'),
    pytest.param(lambda: with_changes(q=torch.randint(0, 3, (B, T, H, U * D_P))), TypeError,
                 r'`q` must be floating point', id='q-int'),
    pytest.param(lambda: with_changes(gamma=torch.ones(B, T, H, dtype=torch.long)), TypeError,
                 r'`gamma` must be floating point', id='gamma-int'),
    pytest.param(lambda: with_changes(k=torch.empty(B, T, H, U * D_P, device='meta')), ValueError,
                 r'`k` must be on the same device as `q`', id='k-meta-device'),
    pytest.param(lambda: with_changes(v=torch.empty(B, T, H, V, device='meta')), ValueError,
                 r'`v` must be on the same device', id='v-meta-device'),
    pytest.param(lambda: with_changes(gamma=torch.empty(B, T, H, device='meta')), ValueError,
                 r'`gamma` must be on the same device', id='gamma-meta-device'),
    # gamma values
    pytest.param(lambda: with_changes(gamma=torch.rand(B, T, H) - 2.0), ValueError, r'`gamma`.*must be >= 0',
                 id='gamma-negative'),
    pytest.param(lambda: with_changes(gamma=torch.full((B, T, H), float('nan'))), ValueError, r'`gamma` must be finite',
                 id='gamma-nan'),
    # cape
    pytest.param(lambda: with_changes(cape=[True]), ValueError, r'`cape` must give one bool per head \(2\), got 1',
                 id='cape-short'),
    pytest.param(lambda: with_changes(cape=[True, False, True]), ValueError, r'`cape` must give one bool per head',
                 id='cape-long'),
    pytest.param(lambda: with_changes(cape=1), TypeError, r'`cape` must be a bool or one bool per head', id='cape-int'),
    pytest.param(lambda: with_changes(cape=[0.5, 1]), TypeError, r'`cape` must contain bools', id='cape-floats'),
    # cu_seqlens
    pytest.param(lambda: packed_args(torch.tensor([1, 3, T])), ValueError, r'`cu_seqlens` must start at 0',
                 id='cu-not-from-0'),
    pytest.param(lambda: packed_args(torch.tensor([0, 3, T - 1])), ValueError, r'`cu_seqlens`.*end at T = 5',
                 id='cu-wrong-end'),
    pytest.param(lambda: packed_args(torch.tensor([0, 4, 2, T])), ValueError, r'`cu_seqlens` must be non-decreasing',
                 id='cu-decreasing'),
    pytest.param(lambda: packed_args(torch.tensor([0.0, 2.0, T])), TypeError, r'`cu_seqlens` must hold integers',
                 id='cu-float'),
    pytest.param(lambda: packed_args(torch.tensor([[0, T]])), ValueError, r'`cu_seqlens` must be 1-D', id='cu-2d'),
    pytest.param(lambda: packed_args([0, T]), TypeError, r'`cu_seqlens` must be a 1-D integer torch.Tensor',
                 id='cu-list'),
    pytest.param(lambda: packed_args(torch.empty(2, dtype=torch.long, device='meta')), ValueError,
                 r'`cu_seqlens` must be on the inputs\' device', id='cu-meta-device'),
    pytest.param(lambda: with_changes(cu_seqlens=torch.tensor([0, 2, T])), ValueError,
                 r'packed input \(`cu_seqlens` given\) needs batch size 1, got q.shape\[0\] = 2', id='cu-batch2'),
    # initial state
    pytest.param(lambda: with_changes(initial_state=torch.zeros(B, H, M, V)), TypeError,
                 r'`initial_state` must be a RAMState', id='state-tensor'),
    pytest.param(lambda: with_changes(initial_state=state(memory_shape=(B, H, M, V + 1))), ValueError,
                 r'`initial_state.memory` must have shape \(2, 2, 64, 6\)', id='state-memory-V'),
    pytest.param(lambda: with_changes(initial_state=state(memory_shape=(B, H, M // 2, V))), ValueError,
                 r'`initial_state.memory` must have shape', id='state-memory-M'),
    pytest.param(lambda: with_changes(initial_state=state(mass_shape=(B, H, M, 1))), ValueError,
                 r'`initial_state.mass` must have shape \(2, 2, 64\)', id='state-mass-shape'),
    pytest.param(lambda: with_changes(initial_state=state(position=torch.zeros(B + 1, dtype=torch.long))), ValueError,
                 r'`initial_state.position` must have shape \(2,\)', id='state-position-shape'),
    pytest.param(lambda: with_changes(initial_state=state(position=torch.zeros(B))), TypeError,
                 r'`initial_state.position` must be an integer tensor', id='state-position-float'),
    pytest.param(lambda: with_changes(initial_state=state(dtype=torch.long)), TypeError,
                 r'`initial_state.memory` and `.mass` must be floating point', id='state-int-memory'),
    pytest.param(lambda: with_changes(initial_state=RAMState(torch.zeros(B, H, M, V), [0.0], torch.zeros(B).long())),
                 TypeError, r'`initial_state.mass` must be a torch.Tensor', id='state-mass-list'),
    pytest.param(lambda: with_changes(initial_state=state(device='meta')), ValueError,
                 r'`initial_state.memory` must be on the inputs\' device', id='state-meta-device'),
    pytest.param(lambda: {**packed_args(torch.tensor([0, 2, 3, T])), 'initial_state': state()}, ValueError,
                 r'`initial_state.memory` must have shape \(3, 2, 64, 6\).*N=3 sequences', id='state-N-vs-packed'),
]


@pytest.mark.parametrize('make_args, error, message', BAD_INPUTS)
@pytest.mark.parametrize('op', PATHS)
def test_bad_input_is_rejected(op, make_args, error, message):
    args = make_args()
    with pytest.raises(error, match=message):
        op(**args)


@pytest.mark.parametrize('op', PATHS)
def test_good_arguments_are_accepted(op):
    # the baseline of the cases above is valid, so each case fails for its own reason only
    o, final = op(**good_args())
    assert o.shape == (B, T, H, V) and final.memory.shape == (B, H, M, V)
    o, final = op(**packed_args(torch.tensor([0, 2, 2, T])))
    assert final.position.tolist() == [2, 0, 3]


@pytest.mark.parametrize('op', PATHS[1:])
@pytest.mark.parametrize('value', ['cuda-please', 'TORCHX'], ids=['bogus', 'bogus-upper'])
def test_unknown_backend_is_rejected(op, value, monkeypatch):
    # the dispatching paths (chunk, fused_recurrent, ram_address) refuse a bogus RAMNET_FLA_BACKEND
    monkeypatch.setenv('RAMNET_FLA_BACKEND', value)
    with pytest.raises(ValueError, match=r"RAMNET_FLA_BACKEND must be one of \('torch', 'triton'\), got"):
        op(**good_args())
    with pytest.raises(ValueError, match=r"RAMNET_FLA_BACKEND must be one of"):
        ram_address(torch.randn(3, 8), 2, 2)


def test_reference_ignores_backend_variable(monkeypatch):
    # the reference has one implementation: the variable (even a bogus one) does not affect it
    from ramnet_fla.ops.ram import naive_recurrent_ram
    args = good_args()
    expected, _ = naive_recurrent_ram(**args)
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'bogus')
    o, _ = naive_recurrent_ram(**args)
    assert torch.equal(o, expected)


def test_backend_variable_is_case_insensitive(monkeypatch):
    from ramnet_fla.ops.ram import chunk_ram
    monkeypatch.setenv('RAMNET_FLA_BACKEND', ' Torch ')
    o, _ = chunk_ram(**good_args())
    assert o.shape == (B, T, H, V)


@pytest.mark.parametrize('logits, num_factors, topk, error, message', [
    pytest.param([1.0, 2.0], 1, 1, TypeError, r'`logits` must be a torch.Tensor', id='not-tensor'),
    pytest.param(torch.tensor(1.0), 1, 1, ValueError, r'`logits` must have at least one dim', id='scalar'),
    pytest.param(torch.ones(3, 8, dtype=torch.long), 2, 2, TypeError, r'`logits` must be floating point', id='int'),
    pytest.param(torch.randn(3, 8), 3, 2, ValueError, r'num_factors=3 does not divide', id='U-not-dividing'),
    pytest.param(torch.randn(3, 8), 8, 1, ValueError, r'factor_dim.*must be >= 2, got 1', id='dp1'),
    pytest.param(torch.randn(3, 8), 2, 17, ValueError, r'`topk` must be <= the number of slots M = 4\*\*2 = 16',
                 id='topk>M'),
    pytest.param(torch.randn(3, 8), 2, 0, ValueError, r'`topk` must be >= 1', id='topk0'),
], )
def test_ram_address_bad_input(logits, num_factors, topk, error, message):
    with pytest.raises(error, match=message):
        ram_address(logits, num_factors, topk)


@pytest.mark.parametrize('op', PATHS)
def test_cape_forms_are_equivalent(op):
    # a list of bools, a bool tensor and 0/1 ints name the same heads; a bool applies to all heads
    args = good_args()
    as_list, _ = op(**{**args, 'cape': [True, False]})
    as_tensor, _ = op(**{**args, 'cape': torch.tensor([True, False])})
    as_ints, _ = op(**{**args, 'cape': [1, 0]})
    assert torch.equal(as_list, as_tensor) and torch.equal(as_list, as_ints)
    all_heads, _ = op(**{**args, 'cape': True})
    per_head, _ = op(**{**args, 'cape': [True, True]})
    none, _ = op(**{**args, 'cape': False})
    assert torch.equal(all_heads, per_head)
    assert not torch.equal(as_list, none) and torch.equal(as_list[:, :, 1], none[:, :, 1])
