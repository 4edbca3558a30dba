"""SparseRAMState: exact agreement with the dense state on every op path, growth, bytes, conversions, errors."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, SparseRAMState, chunk_ram, fused_recurrent_ram, naive_recurrent_ram, slot_index
from tests.ops.utils import (
    Case,
    addressed_slots,
    assert_rel_close,
    compare_cases,
    make_inputs,
    make_state,
    peak_allocated_bytes,
    poison_uninitialized,
)


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'torch')


RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}


def sparse_of(state: RAMState | None) -> SparseRAMState | None:
    return None if state is None else SparseRAMState.from_dense(state)


def assert_state_equal(sparse: SparseRAMState, dense: RAMState, rtol: float) -> None:
    as_dense = sparse.to_dense()
    assert_rel_close('memory', as_dense.memory, dense.memory, rtol)
    assert_rel_close('mass', as_dense.mass, dense.mass, rtol)
    assert torch.equal(as_dense.position, dense.position)


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
@pytest.mark.parametrize('case', compare_cases())
def test_chunk_sparse_matches_dense_and_naive(case, dtype):
    q, k, v, gamma, kwargs = case.inputs(dtype=dtype)
    dense_state = kwargs['initial_state']
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    dense_o, dense_final = chunk_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    kwargs['initial_state'] = sparse_of(dense_state)
    with poison_uninitialized():
        o, final = chunk_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True,
                             state_format='sparse', **kwargs)
    assert isinstance(final, SparseRAMState) and final.dtype == dense_final.memory.dtype
    assert o.dtype == v.dtype
    assert_rel_close('o vs dense', o, dense_o, RTOL[dtype])
    assert_rel_close('o vs naive', o, ref_o, RTOL[dtype])
    assert_state_equal(final, dense_final, RTOL[dtype])
    assert_state_equal(final, ref_final, RTOL[dtype])


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32], ids=['f64', 'f32'])
@pytest.mark.parametrize('case', compare_cases())
def test_fused_sparse_decoding_in_place_matches_dense(case, dtype):
    q, k, v, gamma, kwargs = case.inputs(dtype=dtype)
    dense_state = kwargs['initial_state']
    sparse = sparse_of(dense_state)
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    kwargs['initial_state'] = None if dense_state is None else dense_state.clone()
    dense_o, dense_final = fused_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True,
                                               **kwargs)
    kwargs['initial_state'] = sparse
    with poison_uninitialized():
        o, final = fused_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True,
                                       state_format='sparse', **kwargs)
    if sparse is not None:
        assert final is sparse                      # advanced in place, as the dense decoding state
    assert_rel_close('o vs dense', o, dense_o, RTOL[dtype])
    assert_rel_close('o vs naive', o, ref_o, RTOL[dtype])
    assert_state_equal(final, dense_final, RTOL[dtype])


def test_sparse_prefill_then_decode_packed_equals_one_dense_pass():
    # prefill 3 packed sequences (CAPE, nonzero start positions), then decode them token by token as a batch
    H, U, d_p, V, K = 3, 3, 4, 8, 4
    lengths, extra, start = [6, 0, 11], 5, [3, 250, 17]
    q, k, v, gamma = make_inputs(3, max(lengths) + extra, H, U, d_p, V, dtype=torch.float64, seed=21)
    cape = [True, False, True]
    state = RAMState.zeros(3, H, d_p ** U, V, dtype=torch.float64)._replace(position=torch.tensor(start))
    # the reference: each sequence in one pass over its prefill and its decoded tokens
    full = [naive_recurrent_ram(q[n:n + 1, :lengths[n] + extra], k[n:n + 1, :lengths[n] + extra],
                                v[n:n + 1, :lengths[n] + extra], gamma[n:n + 1, :lengths[n] + extra], U, K, cape=cape,
                                initial_state=state.index_select(torch.tensor([n])), output_final_state=True)
            for n in range(3)]
    pack = lambda x: torch.cat([x[n, :lengths[n]] for n in range(3)])[None]          # noqa: E731
    cu_seqlens = torch.tensor([0, 6, 6, 17])
    o, sparse = chunk_ram(pack(q), pack(k), pack(v), pack(gamma), U, K, cape=cape, initial_state=sparse_of(state),
                          output_final_state=True, cu_seqlens=cu_seqlens)
    assert isinstance(sparse, SparseRAMState)
    for n in range(3):
        assert_rel_close(f'prefill o[{n}]', o[0, cu_seqlens[n]:cu_seqlens[n + 1]], full[n][0][0, :lengths[n]], 1e-12)
    for step in range(extra):
        at = torch.tensor(lengths) + step
        token = lambda x: x[torch.arange(3), at][:, None]                              # noqa: E731
        o, returned = fused_recurrent_ram(token(q), token(k), token(v), token(gamma), U, K, cape=cape,
                                          initial_state=sparse, output_final_state=True)
        assert returned is sparse
        for n in range(3):
            assert_rel_close(f'decode o[{n}, {step}]', o[n, 0], full[n][0][0, lengths[n] + step], 1e-12)
    for n in range(3):
        assert_state_equal(sparse.index_select(torch.tensor([n])), full[n][1], 1e-12)


def test_random_positions_with_cape_match_dense():
    generator = torch.Generator().manual_seed(3)
    positions = torch.randint(0, 10 ** 6, (4,), generator=generator).tolist()
    case = Case(batch=4, seq_len=9, num_heads=2, cape=True, positions=positions, seed=31)
    q, k, v, gamma, kwargs = case.inputs(dtype=torch.float64)
    dense_o, dense_final = chunk_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    kwargs['initial_state'] = sparse_of(kwargs['initial_state'])
    o, final = chunk_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    assert_rel_close('o', o, dense_o, 1e-12)
    assert_state_equal(final, dense_final, 1e-12)


def test_touched_slots_are_exactly_the_written_ones_and_memory_is_independent_of_m():
    # M = 4**10 per head: the dense table would be 2 x 2 x 4**10 x 9 x 4 bytes = 75 MB
    B, T, H, U, d_p, V, K = 2, 16, 2, 10, 4, 8, 4
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, seed=41)
    cape = [True, False]
    holder = {}

    def prefill():
        holder['result'] = chunk_ram(q, k, v, gamma, U, K, cape=cape, output_final_state=True, state_format='sparse')

    peak = peak_allocated_bytes(prefill)
    o, final = holder['result']
    written = addressed_slots(k, U, K, cape, [0] * B)
    keys, memory, mass = final.entries()
    M = d_p ** U
    stored = {(int(key) // (H * M), int(key) // M % H, int(key) % M) for key in keys}
    assert stored == written and final.num_touched == len(written)
    assert bool((mass > 0).all())
    dense_bytes = B * H * M * (V + 1) * 4
    assert peak < dense_bytes / 20, f"peak {peak} bytes is not independent of M (dense table {dense_bytes})"
    # and decoding reads never-written slots as zero, exactly as the dense path would
    small = make_inputs(B, 3, H, U, d_p, V, seed=42)
    o_sparse, _ = fused_recurrent_ram(*small, U, K, cape=cape, initial_state=final, output_final_state=True)
    assert torch.isfinite(o_sparse).all()


@pytest.mark.parametrize('numpy_on_cpu', [True, False], ids=['hash-index', 'sorted-index'])
def test_growth_is_amortised_and_bytes_stay_within_target(numpy_on_cpu, monkeypatch):
    monkeypatch.setattr(slot_index, 'NUMPY_ON_CPU', numpy_on_cpu)
    B, H, U, d_p, V, K = 2, 2, 8, 4, 16, 8
    state = SparseRAMState(B, H, d_p ** U, V)
    reallocations, last = 0, state.table.data_ptr()
    for step in range(120):
        token = make_inputs(B, 1, H, U, d_p, V, seed=100 + step)
        fused_recurrent_ram(*token, U, K, initial_state=state, output_final_state=True)
        if state.table.data_ptr() != last:
            reallocations, last = reallocations + 1, state.table.data_ptr()
        payload = state.num_touched * (V + 1) * 4
        # at most 12.5% spare rows, at most 28 bytes of index per slot (hash: 12.6 bytes an entry at a
        # load >= 0.47; sorted: 16 plus the buffer), plus a fixed part; at V=64 that is <= 1.24x payload
        bound = 1.125 * payload + 28 * state.num_touched + 4096 * 16 + 2048
        assert state.nbytes() <= bound, (step, state.nbytes(), payload)
    assert state.num_touched > 1500
    # geometric growth: about log_{1.125}(touched / 64) reallocations, not one per step
    assert reallocations <= 40
    assert int(state.position[0]) == 120


def test_conversions_round_trip_and_index_select():
    dense = make_state(3, 2, 64, 5, positions=[4, 0, 9], dtype=torch.float64)
    dense.memory[1, :, 10:] = 0                        # some never-written slots
    dense.mass[1, :, 10:] = 0
    sparse = SparseRAMState.from_dense(dense)
    assert sparse.num_touched == 3 * 2 * 64 - 2 * 54
    back = sparse.to_dense()
    assert torch.equal(back.memory, dense.memory) and torch.equal(back.mass, dense.mass)
    assert torch.equal(back.position, dense.position)
    keys, _, _ = sparse.entries()
    assert bool((keys[1:] > keys[:-1]).all())
    index = torch.tensor([2, 0, 2, 1])
    picked = sparse.index_select(index).to_dense()
    expected = dense.index_select(index)
    assert torch.equal(picked.memory, expected.memory) and torch.equal(picked.mass, expected.mass)
    assert torch.equal(picked.position, expected.position)
    copy = sparse.clone()
    copy.write_rows(torch.tensor([0]), torch.full((1, 6), 7.0, dtype=torch.float64))
    assert float(sparse.to_dense().memory[0, 0, 0, 0]) == float(dense.memory[0, 0, 0, 0])
    assert sparse.dense_nbytes() == 3 * 2 * 64 * 6 * 8 + 3 * 8


@pytest.mark.parametrize('numpy_on_cpu', [True, False], ids=['hash-index', 'sorted-index'])
def test_lookups_across_index_growth(numpy_on_cpu, monkeypatch):
    # more keys than the first hash table or the sorted index's buffer holds: the table grows, the
    # buffer is merged into the main arrays on the way; both indexes assign the same row ids
    monkeypatch.setattr(slot_index, 'NUMPY_ON_CPU', numpy_on_cpu)
    state = SparseRAMState(1, 1, 10 ** 6, 1)
    generator = torch.Generator().manual_seed(5)
    keys = torch.randperm(10 ** 6, generator=generator)[:20000]
    for chunk in keys.split(700):
        state.write_rows(chunk, chunk.double()[:, None].repeat(1, 2).float())
    assert state.num_touched == 20000
    rows = state.read_rows(keys)
    assert torch.equal(rows[:, 0], keys.float())
    absent = torch.tensor([k for k in range(30) if k not in set(keys.tolist())])
    assert bool((state.read_rows(absent) == 0).all())
    ids = state.locate(torch.cat([keys[-50:], absent]), create=False)
    assert bool((ids[:50] >= 0).all()) and bool((ids[50:] == -1).all())
    # rows are numbered in insertion order, new keys of one call in ascending key order
    first = keys[:700].sort().values
    assert torch.equal(state.locate(first, create=False), torch.arange(700))


def test_gradients_flow_through_o_and_a_sparse_final_state_is_refused():
    case = Case(seq_len=7, cape=[True, False], positions=[3, 11], seed=51)
    q, k, v, gamma, kwargs = case.inputs(dtype=torch.float64, requires_grad=True)
    dense_state = RAMState(kwargs['initial_state'].memory.detach(), kwargs['initial_state'].mass.detach(),
                           kwargs['initial_state'].position)
    kwargs['initial_state'] = dense_state
    dense_o, _ = chunk_ram(q, k, v, gamma, case.num_factors, case.topk, **kwargs)
    dense_grads = torch.autograd.grad((dense_o * torch.linspace(-1, 1, dense_o.numel()).view_as(dense_o)).sum(),
                                      (q, k, v, gamma))
    kwargs['initial_state'] = SparseRAMState.from_dense(dense_state)
    for op in (chunk_ram, fused_recurrent_ram):
        o, final = op(q, k, v, gamma, case.num_factors, case.topk, **kwargs)
        assert final is None
        grads = torch.autograd.grad((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum(), (q, k, v, gamma))
        for name, grad, expected in zip('qkvg', grads, dense_grads):
            assert_rel_close(f'd{name} ({op.__name__})', grad, expected, 1e-12)
        with pytest.raises(ValueError, match='inference-only'):
            op(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    with torch.no_grad():
        _, final = chunk_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    assert isinstance(final, SparseRAMState)


@pytest.mark.parametrize('op', [chunk_ram, fused_recurrent_ram], ids=['chunk', 'fused_recurrent'])
def test_bad_sparse_states_are_rejected(op):
    q, k, v, gamma = make_inputs(2, 4, 2, 3, 4, 8)                     # N=2, H=2, M=64, V=8
    good = SparseRAMState(2, 2, 64, 8)
    for bad, what in ((SparseRAMState(2, 2, 128, 8), 'M'), (SparseRAMState(2, 3, 64, 8), 'H'),
                      (SparseRAMState(2, 2, 64, 7), 'V'), (SparseRAMState(3, 2, 64, 8), 'N')):
        with pytest.raises(ValueError, match=r'initial_state.*\(N, H, M, V\)'):
            op(q, k, v, gamma, 3, 4, initial_state=bad, output_final_state=True)
    with pytest.raises(TypeError, match='float64'):
        op(q.double(), k.double(), v.double(), gamma.double(), 3, 4, initial_state=good, output_final_state=True)
    with pytest.raises(ValueError, match='state_format'):
        op(q, k, v, gamma, 3, 4, initial_state=good, output_final_state=True, state_format='compressed')
    with pytest.raises(ValueError, match='TieredRAMState'):
        op(q, k, v, gamma, 3, 4, initial_state=good, output_final_state=True, state_format='tiered')
    # a dense state of the wrong shape is still reported by the dense checks, in the sparse format too
    with pytest.raises(ValueError, match='initial_state.memory'):
        op(q, k, v, gamma, 3, 4, initial_state=RAMState.zeros(2, 2, 32, 8), output_final_state=True,
           state_format='sparse')


def test_reference_refuses_a_sparse_state_with_a_clear_error():
    q, k, v, gamma = make_inputs(2, 4, 2, 3, 4, 8)
    with pytest.raises(TypeError, match='initial_state'):
        naive_recurrent_ram(q, k, v, gamma, 3, 4, initial_state=SparseRAMState(2, 2, 64, 8))


def test_constructor_errors_name_the_argument():
    with pytest.raises(ValueError, match='num_slots'):
        SparseRAMState(1, 1, 0, 4)
    with pytest.raises(TypeError, match='dtype'):
        SparseRAMState(1, 1, 4, 4, dtype=torch.float16)
    with pytest.raises(ValueError, match='position'):
        SparseRAMState(2, 1, 4, 4, position=torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match='state'):
        SparseRAMState.from_dense(torch.zeros(2, 2))


@pytest.mark.triton
def test_sparse_state_on_the_triton_backend_matches_dense(monkeypatch):
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
    case = Case(batch=2, seq_len=6, num_heads=2, cape=[True, False], positions=[5, 2], seed=61)
    q, k, v, gamma, kwargs = case.inputs()
    dense_o, dense_final = chunk_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    kwargs['initial_state'] = sparse_of(kwargs['initial_state'])
    o, final = chunk_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    assert_rel_close('o', o, dense_o, 1e-5)
    assert_state_equal(final, dense_final, 1e-5)
    step = make_inputs(2, 1, 2, case.num_factors, case.factor_dim, case.value_dim, seed=62)
    dense_step, _ = fused_recurrent_ram(*step, case.num_factors, case.topk, cape=[True, False],
                                        initial_state=dense_final, output_final_state=True)
    sparse_step, _ = fused_recurrent_ram(*step, case.num_factors, case.topk, cape=[True, False],
                                         initial_state=final, output_final_state=True)
    assert_rel_close('decode o', sparse_step, dense_step, 1e-5)
    assert_state_equal(final, dense_final, 1e-5)
