"""CPU benchmarks of the decoding state formats (pytest-benchmark): `pytest benchmarks/test_bench_state.py`.

One decoding step of `fused_recurrent_ram` after a 512-token prefill, for the dense, sparse and tiered
(hot cache: 10% of the touched slots) states, at M = 4^5 and 4^8; and the prefill itself. Compare
within one run only; `benchmarks/report_state.py` gives the full sweep and the ratios to issue 11's
targets.
"""

from __future__ import annotations

import math

import pytest
import torch

import report_state as rs
from ramnet_fla.ops.ram import TieredRAMState, chunk_ram, fused_recurrent_ram

BATCH, PREFILL, STEPS = 1, 512, 64
FACTORS = (5, 8)
FORMATS = ('dense', 'sparse', 'tiered')


def prefilled_state(fmt: str, num_factors: int, tmp_path):
    """The state after PREFILL tokens, in `fmt`."""
    prefill = rs.make_inputs(BATCH, PREFILL, num_factors, seed=num_factors)
    initial = None
    if fmt == 'tiered':
        with torch.no_grad():
            _, sparse = chunk_ram(*prefill, num_factors, rs.TOPK, cape=rs.CAPE, output_final_state=True,
                                  state_format='sparse')
        initial = TieredRAMState.create(BATCH, rs.HEADS, rs.FACTOR_DIM ** num_factors, rs.VALUE_DIM,
                                        max(math.ceil(0.1 * sparse.num_touched), 2 * BATCH * rs.HEADS * rs.TOPK),
                                        path=tmp_path / 'table.f32')
    with torch.no_grad():
        _, state = chunk_ram(*prefill, num_factors, rs.TOPK, cape=rs.CAPE, initial_state=initial,
                             output_final_state=True, state_format=fmt)
    return state


@pytest.mark.benchmark(group='state-decode-step')
@pytest.mark.parametrize('fmt', FORMATS)
@pytest.mark.parametrize('num_factors', FACTORS, ids=[f'M{rs.FACTOR_DIM ** u}' for u in FACTORS])
def test_decode_step(benchmark, describe, tmp_path, num_factors, fmt):
    state = prefilled_state(fmt, num_factors, tmp_path)
    tokens = rs.make_inputs(BATCH, STEPS, num_factors, seed=100 + num_factors)
    step = {'t': 0}

    @torch.no_grad()
    def decode_one():
        t = step['t'] % STEPS
        step['t'] += 1
        token = tuple(x[:, t:t + 1] for x in tokens)
        fused_recurrent_ram(*token, num_factors, rs.TOPK, cape=rs.CAPE, initial_state=state, output_final_state=True)

    describe(op='fused_recurrent_ram decode step', format=fmt, B=BATCH, prefill=PREFILL, H=rs.HEADS,
             V=rs.VALUE_DIM, K=rs.TOPK, M=rs.FACTOR_DIM ** num_factors)
    benchmark.pedantic(decode_one, rounds=STEPS, warmup_rounds=2)
    benchmark.extra_info['state_bytes'] = rs.state_bytes(state)


@pytest.mark.benchmark(group='state-prefill')
@pytest.mark.parametrize('fmt', ('dense', 'sparse'))
@pytest.mark.parametrize('num_factors', FACTORS, ids=[f'M{rs.FACTOR_DIM ** u}' for u in FACTORS])
def test_prefill(benchmark, describe, tmp_path, num_factors, fmt):
    describe(op='chunk_ram prefill with final state', format=fmt, B=BATCH, T=PREFILL, H=rs.HEADS, V=rs.VALUE_DIM,
             K=rs.TOPK, M=rs.FACTOR_DIM ** num_factors)
    benchmark.pedantic(lambda: prefilled_state(fmt, num_factors, tmp_path), rounds=3, warmup_rounds=1)
