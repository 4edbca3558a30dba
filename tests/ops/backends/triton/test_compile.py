"""The Triton backend's custom ops under torch.compile (aot_eager, kernels under TRITON_INTERPRET=1
on the CPU): a fullgraph chunk_ram forward + backward matches eager (the autograd Functions), and
in-place decoding advances the state as eagerly."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from ramnet_fla.ops.ram import RAMState, chunk_ram, fused_recurrent_ram
from tests.ops.utils import make_inputs, make_state

pytestmark = pytest.mark.triton

H, U, DP, V, K = 2, 2, 4, 8, 4            # M = 16


@pytest.fixture(autouse=True)
def triton_backend(monkeypatch):
    monkeypatch.setenv('RAMNET_FLA_BACKEND', 'triton')
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_chunk_ram_fullgraph_matches_eager():
    initial = make_state(2, H, DP ** U, V, positions=[1, 4])

    def step(q, k, v, gamma, memory0):
        o, final = chunk_ram(q, k, v, gamma, U, K, cape=[True, False], output_final_state=True,
                             initial_state=RAMState(memory0, initial.mass, initial.position))
        return o, final.memory, final.mass

    compiled = torch.compile(step, fullgraph=True, backend='aot_eager')
    results = []
    for run in (compiled, step):
        inputs = [x.requires_grad_() for x in make_inputs(2, 5, H, U, DP, V, seed=3)]
        memory0 = initial.memory.clone().requires_grad_()
        outputs = run(*inputs, memory0)
        sum((x * torch.linspace(-1, 1, x.numel()).view_as(x)).sum() for x in outputs).backward()
        results.append([*outputs, *(x.grad for x in inputs), memory0.grad])
    for got, want in zip(*results):
        torch.testing.assert_close(got, want)


def test_fused_recurrent_ram_compiled_decoding_advances_the_state():
    q, k, v, gamma = make_inputs(2, 1, H, U, DP, V, seed=4)
    start = make_state(2, H, DP ** U, V, positions=[2, 0])

    def decode(q, k, v, gamma, state):
        return fused_recurrent_ram(q, k, v, gamma, U, K, cape=True, initial_state=state, output_final_state=True)[0]

    compiled_state, eager_state = start.clone(), start.clone()
    got = torch.compile(decode, fullgraph=True, backend='aot_eager')(q, k, v, gamma, compiled_state)
    torch.testing.assert_close(got, decode(q, k, v, gamma, eager_state))
    for a, b in zip(compiled_state, eager_state):
        torch.testing.assert_close(a, b)
