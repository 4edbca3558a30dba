"""CPU benchmarks of the RAM-Net op (pytest-benchmark): `pytest benchmarks`.

(a) chunk_ram forward+backward vs fla's PyTorch references for GLA and DeltaNet at the same sizes;
(b) chunk_ram time and peak tensor memory against M = 4^5 .. 4^8 at fixed K;
(c) one-token fused_recurrent_ram decoding against M = 4^5 .. 4^10.
Compare within one run only (the baselines run in the same session); `benchmarks/report_ops.py`
prints the ratios against issue 2's targets.
"""

from __future__ import annotations

import pytest

import report_ops as ops

TRAIN_SHAPE = dict(B=ops.BATCH, T=ops.SEQ_LEN, H=ops.HEADS)


@pytest.mark.benchmark(group='train-fwd-bwd')
@pytest.mark.parametrize('name', ['chunk_ram', 'naive_recurrent_gla', 'delta_rule_recurrence', 'delta_rule_chunkwise'])
def test_train_fwd_bwd(benchmark, describe, name):
    if name == 'chunk_ram':
        step = ops.ram_train_step()
        describe(op='ramnet_fla chunk_ram', **TRAIN_SHAPE, V=ops.VALUE_DIM, U=ops.NUM_FACTORS, d_p=ops.FACTOR_DIM,
                 M=ops.FACTOR_DIM ** ops.NUM_FACTORS, K=ops.TOPK, cape=ops.half_cape(ops.HEADS))
    elif name == 'naive_recurrent_gla':
        step = ops.gla_train_step()
        describe(op='fla.ops.gla.naive.naive_recurrent_gla', **TRAIN_SHAPE, D=ops.VALUE_DIM)
    else:
        step = ops.deltanet_train_step('recurrent' if name == 'delta_rule_recurrence' else 'chunkwise')
        describe(op=f'fla.ops.delta_rule.naive.{name}', **TRAIN_SHAPE, D=ops.VALUE_DIM)
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)


@pytest.mark.benchmark(group='train-vs-M')
@pytest.mark.parametrize('output_final_state', [False, True], ids=['train', 'with-final-state'])
@pytest.mark.parametrize('num_factors', ops.TRAIN_FACTORS, ids=[f'M{ops.FACTOR_DIM ** u}' for u in ops.TRAIN_FACTORS])
def test_train_vs_m(benchmark, describe, num_factors, output_final_state):
    step = ops.ram_train_step(num_factors, output_final_state=output_final_state)
    peak = ops.peak_tensor_bytes(step)
    describe(op='ramnet_fla chunk_ram fwd+bwd', **TRAIN_SHAPE, V=ops.VALUE_DIM, U=num_factors, d_p=ops.FACTOR_DIM,
             M=ops.FACTOR_DIM ** num_factors, K=ops.TOPK, output_final_state=output_final_state,
             peak_tensor_bytes=peak, table_bytes=ops.table_bytes(num_factors))
    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    assert peak > 0


@pytest.mark.benchmark(group='decode-vs-M')
@pytest.mark.parametrize('num_factors', ops.DECODE_FACTORS, ids=[f'M{ops.FACTOR_DIM ** u}' for u in ops.DECODE_FACTORS])
def test_decode_vs_m(benchmark, describe, num_factors):
    step, nbytes = ops.decode_step(num_factors)
    describe(op='ramnet_fla fused_recurrent_ram, one token, in place', B=1, T=1, H=ops.DECODE_HEADS,
             V=ops.VALUE_DIM, U=num_factors, d_p=ops.FACTOR_DIM, M=ops.FACTOR_DIM ** num_factors, K=ops.TOPK,
             table_bytes=nbytes)
    benchmark.pedantic(step, rounds=20, iterations=20, warmup_rounds=1)
