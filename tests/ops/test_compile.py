"""The RAM ops under torch.compile: the custom ops pass torch.library.opcheck (schema, fake kernel,
autograd registration), the public ops compile with fullgraph and match eager, the same shapes
never recompile, and options that cannot be compiled fail naming the option."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from ramnet_fla.ops.ram import RAMState, chunk_ram, fused_recurrent_ram, ram_address
from ramnet_fla.ops.ram.backends.torch import library
from tests.ops.utils import make_inputs, make_state

H, U, DP, V, K = 2, 3, 4, 8, 4          # heads, factors, factor width, value width, top-k (M = 64)
M = DP ** U
CAPE = [True, False]


def inputs(batch, seq_len, seed=0, dtype=torch.float32, requires_grad=False):
    return make_inputs(batch, seq_len, H, U, DP, V, dtype=dtype, requires_grad=requires_grad, seed=seed)


def state(num_sequences, dtype=torch.float32, requires_grad=False):
    return make_state(num_sequences, H, M, V, positions=[3] * num_sequences, dtype=dtype, requires_grad=requires_grad)

# everything but the slow bit-for-bit strides test, which needs every aten op to match its meta
OPCHECK_TESTS = ('test_schema', 'test_autograd_registration', 'test_faketensor', 'test_aot_dispatch_dynamic')


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def chunk_args(B: int, T: int, with_state: bool, output_final_state: bool, requires_grad: bool = True):
    """Arguments of `ramnet::torch_chunk` for a small call, as the public op builds them."""
    q, k, v, gamma = inputs(B, T, dtype=torch.float64)
    index, log_prob = ram_address(torch.stack([q, k]).reshape(-1, q.shape[-1]), U, K)
    read_slot, write_slot = index.view(2, B * T, H, K)
    read_weight, write_weight = (x.exp().detach().requires_grad_(requires_grad) for x in log_prob.view(2, B * T, H, K))
    memory0 = mass0 = None
    if with_state:
        initial = state(B, dtype=torch.float64)
        memory0, mass0 = (x.detach().requires_grad_(requires_grad) for x in (initial.memory, initial.mass))
    sequence_ids = torch.arange(B).repeat_interleave(T)
    return (read_weight, write_weight, v.detach().flatten(0, 1).requires_grad_(requires_grad),
            gamma.detach().flatten(0, 1).requires_grad_(requires_grad), memory0, mass0,
            read_slot, write_slot, sequence_ids, B, M, output_final_state, False)


def test_opcheck_address():
    logits = torch.randn(7, 12, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(library.torch_address, (logits, 3, 5), test_utils=OPCHECK_TESTS)
    _, index, log_probs = library.torch_address(logits.detach(), 3, 5)
    torch.library.opcheck(library.torch_address_backward, (log_probs, index, torch.randn(7, 5, dtype=torch.float64),
                                                           torch.float64), test_utils=OPCHECK_TESTS)


@pytest.mark.parametrize('with_state, output_final_state', [(False, False), (True, True), (False, True)],
                         ids=['no-state', 'state-in-out', 'state-out'])
def test_opcheck_chunk(with_state, output_final_state):
    args = chunk_args(2, 5, with_state, output_final_state)
    torch.library.opcheck(library.torch_chunk, args, test_utils=OPCHECK_TESTS)
    saved = library.torch_chunk(*(x.detach() if isinstance(x, torch.Tensor) else x for x in args))[3:]
    read_weight, write_weight, v, gamma, memory0, mass0 = (x.detach() if x is not None else None for x in args[:6])
    grad_final = (torch.randn_like(memory0), torch.randn_like(mass0)) if output_final_state and with_state else (None, None)
    torch.library.opcheck(library.torch_chunk_backward,
                          (torch.randn_like(v), *grad_final, read_weight, write_weight, v, gamma, memory0, mass0,
                           *saved, args[9], args[10]), test_utils=OPCHECK_TESTS)


def test_opcheck_fused_recurrent():
    q, k, v, gamma = inputs(2, 4)
    start = state(2)
    torch.library.opcheck(library.torch_fused_recurrent,
                          (q, k, v, gamma, start.memory.clone(), start.mass.clone(), start.position,
                           torch.tensor(CAPE), None, U, K, False),
                          test_utils=('test_schema', 'test_faketensor', 'test_aot_dispatch_dynamic'))


def count_graphs() -> int:
    return torch._dynamo.utils.counters['stats']['unique_graphs']


@pytest.mark.parametrize('with_state', [False, True], ids=['no-state', 'state'])
def test_chunk_ram_fullgraph_matches_eager_and_never_recompiles(with_state):
    initial = state(2) if with_state else None

    def step(q, k, v, gamma, initial_state):
        o, final = chunk_ram(q, k, v, gamma, U, K, cape=CAPE, initial_state=initial_state, output_final_state=True)
        return o, final.memory, final.mass, final.position

    compiled = torch.compile(step, fullgraph=True, backend='aot_eager')
    for seed in range(5):
        batch = inputs(2, 12, seed=seed, requires_grad=True)
        eager_inputs = [x.detach().clone().requires_grad_() for x in batch]
        start = initial._replace(memory=initial.memory.clone().requires_grad_()) if with_state else None
        eager_state = initial._replace(memory=initial.memory.clone().requires_grad_()) if with_state else None
        with torch._dynamo.config.patch(error_on_recompile=seed > 0):
            got = compiled(*batch, start)
        want = step(*eager_inputs, eager_state)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w)
        weights = [torch.randn_like(w) for w in want[:3]]
        sum((g * w).sum() for g, w in zip(got[:3], weights)).backward()
        sum((g * w).sum() for g, w in zip(want[:3], weights)).backward()
        for x, y in zip(batch, eager_inputs):
            torch.testing.assert_close(x.grad, y.grad)
        if with_state:
            torch.testing.assert_close(start.memory.grad, eager_state.memory.grad)
    assert count_graphs() == 1


def test_fused_recurrent_ram_compiles_in_place_decoding():
    q, k, v, gamma = inputs(2, 1)
    start = state(2)

    def decode(q, k, v, gamma, initial_state):
        return fused_recurrent_ram(q, k, v, gamma, U, K, cape=CAPE, initial_state=initial_state,
                                   output_final_state=True)

    compiled_state, eager_state = start.clone(), start.clone()
    o, _ = torch.compile(decode, fullgraph=True, backend='aot_eager')(q, k, v, gamma, compiled_state)
    want, _ = decode(q, k, v, gamma, eager_state)
    torch.testing.assert_close(o, want)
    for got, expected in zip(compiled_state, eager_state):
        torch.testing.assert_close(got, expected)                     # advanced in place, as eagerly
    assert not torch.equal(compiled_state.memory, start.memory)


def test_bad_gamma_is_still_rejected_when_compiled():
    q, k, v, gamma = inputs(1, 4)
    compiled = torch.compile(lambda *a: chunk_ram(*a, U, K)[0], fullgraph=True, backend='aot_eager')
    compiled(q, k, v, gamma)
    with pytest.raises(ValueError, match='gamma'):
        compiled(q, k, v, -gamma - 1)


@pytest.mark.parametrize('fullgraph', [True, False], ids=['fullgraph', 'graph-breaks'])
def test_packed_sequences_under_compile_name_the_option(fullgraph):
    q, k, v, gamma = inputs(1, 8)
    cu_seqlens = torch.tensor([0, 3, 8])
    compiled = torch.compile(lambda *a: chunk_ram(*a, U, K, cu_seqlens=cu_seqlens)[0], fullgraph=fullgraph,
                             backend='aot_eager')
    with pytest.raises(Exception, match='cu_seqlens.*not supported under torch.compile'):
        compiled(q, k, v, gamma)
