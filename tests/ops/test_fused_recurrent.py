"""`fused_recurrent_ram` (decoding): agreement with the reference, in-place state updates, prefill + decode."""

from __future__ import annotations

import pytest
import torch

from ramnet_fla.ops.ram import RAMState, chunk_ram, fused_recurrent_ram, naive_recurrent_ram
from tests.ops.utils import (
    Case,
    assert_rel_close,
    compare_cases,
    make_inputs,
    make_state,
    outputs_and_grads,
    peak_allocated_bytes,
    poison_uninitialized,
)


@pytest.fixture(autouse=True)
def torch_backend(monkeypatch):
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'torch')


def same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.data_ptr() == b.data_ptr() and a.shape == b.shape)


@pytest.mark.parametrize('case', compare_cases())
def test_inplace_decoding_matches_naive(case):
    # no gradients tracked + a final state asked for: the in-place token loop
    q, k, v, gamma, kwargs = case.inputs()
    reference_state = kwargs['initial_state']
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True,
                                           **kwargs)
    if reference_state is not None:
        kwargs['initial_state'] = reference_state.clone()
    with poison_uninitialized():
        o, final = fused_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True,
                                       **kwargs)
    assert o.dtype == v.dtype and o.shape == v.shape
    assert_rel_close('o', o, ref_o, 1e-5)
    assert_rel_close('memory', final.memory, ref_final.memory, 1e-5)
    assert_rel_close('mass', final.mass, ref_final.mass, 1e-5)
    assert torch.equal(final.position, ref_final.position)


@pytest.mark.parametrize('case', [param for param in compare_cases()
                                  if param.id in ('U1', 'K=M', 'T1', 'T157-odd', 'H8-mixed-cape', 'V13',
                                                  'initial-state', 'packed-empty-seq')])
def test_fused_gradients_match_naive(case):
    # with inputs that require grad, fused_recurrent_ram runs the exact autograd path
    result = outputs_and_grads(fused_recurrent_ram, case)
    reference = outputs_and_grads(naive_recurrent_ram, case)
    assert result.keys() == reference.keys()
    for name in reference:
        if name != 'position':
            assert_rel_close(name, result[name], reference[name], 1e-5)


def test_float16_inputs():
    case = Case(seq_len=10, cape=[True, False], positions=[5, 6], seed=30)
    q, k, v, gamma, kwargs = case.inputs(dtype=torch.float16)
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True,
                                           **kwargs)
    o, final = fused_recurrent_ram(q, k, v, gamma, case.num_factors, case.topk, output_final_state=True, **kwargs)
    assert o.dtype == torch.float16 and final.memory.dtype == torch.float32
    assert_rel_close('o', o, ref_o, 2e-3)
    assert_rel_close('memory', final.memory, ref_final.memory, 1e-5)
    assert_rel_close('mass', final.mass, ref_final.mass, 1e-5)


def test_state_is_updated_in_place():
    # the returned state holds the very tensors passed in; the M x V table is never copied
    B, T, H, U, d_p, V, K = 2, 3, 2, 3, 4, 8, 4
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, seed=31)
    state = make_state(B, H, d_p ** U, V, positions=[4, 0])
    before = state.clone()
    pointers = [x.data_ptr() for x in state]
    o, final = fused_recurrent_ram(q, k, v, gamma, U, K, cape=[True, False], initial_state=state,
                                   output_final_state=True)
    assert final.memory is state.memory and final.mass is state.mass and final.position is state.position
    assert [x.data_ptr() for x in final] == pointers
    assert state.position.tolist() == [4 + T, T]
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, U, K, cape=[True, False], initial_state=before,
                                           output_final_state=True)
    assert_rel_close('o', o, ref_o, 1e-5)
    assert_rel_close('memory', state.memory, ref_final.memory, 1e-5)
    assert_rel_close('mass', state.mass, ref_final.mass, 1e-5)


def test_decoding_step_allocates_no_table_copy():
    # one token against a 4 MiB table: the step allocates only O(H*K*V) temporaries, never a table copy
    B, H, U, d_p, V, K = 1, 2, 7, 4, 32, 8
    M = d_p ** U
    state = RAMState.zeros(B, H, M, V)
    q, k, v, gamma = make_inputs(B, 1, H, U, d_p, V, seed=36)
    table_bytes = state.memory.numel() * 4

    def step():
        fused_recurrent_ram(q, k, v, gamma, U, K, cape=[True, False], initial_state=state, output_final_state=True)
    step()
    peak = peak_allocated_bytes(step)
    assert 0 < peak < table_bytes / 20, f'a decoding step allocated {peak} bytes; the table has {table_bytes}'
    assert int(state.position) == 2


def test_requires_grad_falls_back_and_keeps_initial_state():
    B, T, H, U, d_p, V, K = 2, 5, 2, 2, 4, 6, 3
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, requires_grad=True, seed=32)
    state = make_state(B, H, d_p ** U, V, positions=[1, 2])
    before = state.clone()
    o, final = fused_recurrent_ram(q, k, v, gamma, U, K, cape=True, initial_state=state, output_final_state=True)
    assert o.requires_grad and final.memory.requires_grad
    assert not same_storage(final.memory, state.memory) and not same_storage(final.mass, state.mass)
    assert all(torch.equal(a, b) for a, b in zip(state, before)), 'initial_state was modified'
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, U, K, cape=True, initial_state=before,
                                           output_final_state=True)
    assert_rel_close('o', o, ref_o, 1e-5)
    assert_rel_close('memory', final.memory, ref_final.memory, 1e-5)
    assert torch.equal(final.position, ref_final.position)
    # under no_grad the same call decodes in place
    with torch.no_grad():
        o2, final2 = fused_recurrent_ram(q, k, v, gamma, U, K, cape=True, initial_state=state,
                                         output_final_state=True)
    assert final2.memory is state.memory
    assert_rel_close('o (no_grad)', o2, ref_o, 1e-5)
    assert_rel_close('memory (no_grad)', state.memory, ref_final.memory, 1e-5)


def test_state_requiring_grad_falls_back():
    B, T, H, U, d_p, V, K = 1, 4, 2, 2, 3, 4, 2
    q, k, v, gamma = make_inputs(B, T, H, U, d_p, V, seed=33)
    state = make_state(B, H, d_p ** U, V, positions=[3], requires_grad=True)
    before = state.clone()
    o, final = fused_recurrent_ram(q, k, v, gamma, U, K, initial_state=state, output_final_state=True)
    assert final.memory.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(state, before))
    (dmemory,) = torch.autograd.grad(o.sum() + final.mass.sum(), state.memory)
    assert torch.isfinite(dmemory).all() and dmemory.abs().sum() > 0


def test_no_final_state_leaves_initial_state_alone():
    q, k, v, gamma = make_inputs(1, 6, 2, 2, 3, 4, seed=34)
    state = make_state(1, 2, 9, 4, positions=[2])
    before = state.clone()
    o, final = fused_recurrent_ram(q, k, v, gamma, 2, 3, initial_state=state)
    ref_o, _ = naive_recurrent_ram(q, k, v, gamma, 2, 3, initial_state=before)
    assert final is None
    assert all(torch.equal(a, b) for a, b in zip(state, before))
    assert_rel_close('o', o, ref_o, 1e-5)


def test_converted_state_is_a_copy():
    # a non-contiguous table cannot be updated in place: the result is a converted copy, and correct
    q, k, v, gamma = make_inputs(1, 4, 2, 2, 3, 4, seed=35)
    memory = torch.randn(1, 2, 4, 9).transpose(-1, -2)                     # [1, 2, 9, 4], non-contiguous
    state = RAMState(memory, torch.rand(1, 2, 9) + 0.5, torch.tensor([0]))
    before = state.clone()
    o, final = fused_recurrent_ram(q, k, v, gamma, 2, 3, initial_state=state, output_final_state=True)
    ref_o, ref_final = naive_recurrent_ram(q, k, v, gamma, 2, 3, initial_state=before, output_final_state=True)
    assert_rel_close('o', o, ref_o, 1e-5)
    assert_rel_close('memory', final.memory, ref_final.memory, 1e-5)
    assert torch.equal(state.memory, before.memory)


@pytest.mark.parametrize('packed', [False, True], ids=['batched', 'packed-prefill'])
def test_prefill_then_decode_equals_one_pass(packed):
    # chunk_ram over a prompt (keeping the state), then one fused_recurrent_ram call per new token,
    # reproduces a single pass over the whole sequence: outputs and final state
    H, U, d_p, V, K = 4, 3, 4, 8, 4
    M = d_p ** U
    cape = [True, False, True, False]
    prompt_lengths, decode_steps = ([5, 0, 9] if packed else [7, 7, 7]), 6
    N = len(prompt_lengths)
    start = [3, 0, 11]
    full = [make_inputs(1, length + decode_steps, H, U, d_p, V, seed=40 + n) for n, length in enumerate(prompt_lengths)]
    state0 = make_state(N, H, M, V, positions=start)

    # reference: one naive pass per sequence
    ref_o, ref_memory, ref_mass = [], [], []
    for n in range(N):
        one = RAMState(state0.memory[n:n + 1], state0.mass[n:n + 1], state0.position[n:n + 1])
        o, final = naive_recurrent_ram(*full[n], U, K, cape=cape, initial_state=one, output_final_state=True)
        ref_o.append(o)
        ref_memory.append(final.memory)
        ref_mass.append(final.mass)

    # prefill: packed with cu_seqlens (one empty prompt), or a [N, T] batch of equal prompts
    if packed:
        prompt = [torch.cat([x[:, :length] for x, length in zip(parts, prompt_lengths)], dim=1)
                  for parts in zip(*full)]
        cu_seqlens = torch.tensor([0] + torch.tensor(prompt_lengths).cumsum(0).tolist())
    else:
        prompt = [torch.cat([x[:, :length] for x, length in zip(parts, prompt_lengths)], dim=0)
                  for parts in zip(*full)]
        cu_seqlens = None
    prompt_o, state = chunk_ram(*prompt, U, K, cape=cape, initial_state=state0.clone(), output_final_state=True,
                                cu_seqlens=cu_seqlens)
    for n in range(N):
        if packed:
            bos = sum(prompt_lengths[:n])
            part = prompt_o[:, bos:bos + prompt_lengths[n]]
        else:
            part = prompt_o[n:n + 1]
        assert_rel_close(f'prompt o[{n}]', part, ref_o[n][:, :prompt_lengths[n]], 1e-5)
    assert state.position.tolist() == [s + length for s, length in zip(start, prompt_lengths)]

    # decode: one token for every sequence per call, [N, 1, ...], state updated in place (chunk_ram's
    # final table may be a strided view that the first step makes contiguous; after that, no copies)
    memory_ptr = None
    with torch.no_grad():
        for step in range(decode_steps):
            token = [torch.cat([x[:, length + step:length + step + 1] for x, length in zip(parts, prompt_lengths)])
                     for parts in zip(*full)]
            o, state = fused_recurrent_ram(*token, U, K, cape=cape, initial_state=state, output_final_state=True)
            memory_ptr = memory_ptr or state.memory.data_ptr()
            assert state.memory.data_ptr() == memory_ptr, f'the table was copied at decoding step {step}'
            for n in range(N):
                t = prompt_lengths[n] + step
                assert_rel_close(f'decode o[{n}, {t}]', o[n:n + 1, 0], ref_o[n][:, t], 1e-5)
    assert_rel_close('memory', state.memory, torch.cat(ref_memory), 1e-5)
    assert_rel_close('mass', state.mass, torch.cat(ref_mass), 1e-5)
    assert state.position.tolist() == [s + length + decode_steps for s, length in zip(start, prompt_lengths)]


def test_state_helpers_for_decoding():
    # RAMState.zeros is an empty memory; index_select reorders sequences (e.g. beams) for decoding
    zeros = RAMState.zeros(3, 2, 16, 4)
    assert zeros.memory.shape == (3, 2, 16, 4) and zeros.mass.shape == (3, 2, 16)
    assert zeros.memory.dtype == torch.float32 and zeros.position.dtype == torch.long
    assert not any(x.any() for x in zeros)
    state = make_state(3, 2, 16, 4, positions=[5, 6, 7])
    order = torch.tensor([2, 0, 0])
    picked = state.index_select(order)
    assert picked.position.tolist() == [7, 5, 5]
    assert torch.equal(picked.memory[1], state.memory[0]) and torch.equal(picked.mass[0], state.mass[2])
    picked.memory.zero_()
    assert state.memory.abs().sum() > 0, 'index_select must not alias the original state'
    # decoding the reordered state equals decoding each original sequence
    q, k, v, gamma = make_inputs(3, 1, 2, 2, 4, 4, seed=50)
    o, _ = fused_recurrent_ram(q, k, v, gamma, 2, 3, cape=True, initial_state=state.index_select(order),
                               output_final_state=True)
    for row, n in enumerate(order.tolist()):
        one = RAMState(state.memory[n:n + 1], state.mass[n:n + 1], state.position[n:n + 1])
        ref_o, _ = naive_recurrent_ram(q[row:row + 1], k[row:row + 1], v[row:row + 1], gamma[row:row + 1], 2, 3,
                                       cape=True, initial_state=one)
        assert_rel_close(f'o[{row}]', o[row:row + 1], ref_o, 1e-5)
