"""pytest-benchmark GPU benchmarks of the RAM-Net Triton kernels (issue 3); skipped without CUDA.

Run: `pytest benchmarks/gpu -q` (add `--benchmark-json out.json` to keep the numbers). Each
benchmark times one callable with `triton.testing.do_bench` (median ms, recorded in extra_info
as `do_bench_ms`) and lets pytest-benchmark time a few synchronised rounds besides; shapes, dtype
and the card are in extra_info. `python benchmarks/gpu/run.py` prints the same numbers as a table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='GPU benchmarks need CUDA')

SHAPE_IDS = [f'B{B}-T{T}-H{H}-V{V}' for B, T, H, V in h.TRAIN_SHAPES]


def record(benchmark, fn, **info):
    """Time fn with do_bench into extra_info, then a few synchronised pytest-benchmark rounds."""
    timer = h.Timer('cuda')
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), dtype='bfloat16', topk=h.TOPK,
                                factor_dim=h.FACTOR_DIM, do_bench_ms=timer(fn), **info)

    def synchronised():
        fn()
        torch.cuda.synchronize()
    benchmark.pedantic(synchronised, rounds=5, warmup_rounds=2)
    return benchmark.extra_info['do_bench_ms']


@pytest.mark.parametrize('backward', [False, True], ids=['fwd', 'fwd+bwd'])
@pytest.mark.parametrize('num_factors', h.NUM_FACTORS, ids=[f'M{4 ** u}' for u in h.NUM_FACTORS])
@pytest.mark.parametrize('shape', h.TRAIN_SHAPES, ids=SHAPE_IDS)
def test_chunk_ram(benchmark, shape, num_factors, backward):
    B, T, H, V = shape
    fn = h.chunk_ram_fn(B, T, H, V, num_factors, 'cuda', backward)
    record(benchmark, fn, op='chunk_ram', B=B, T=T, H=H, V=V, M=4 ** num_factors, backward=backward)


@pytest.mark.parametrize('backward', [False, True], ids=['fwd', 'fwd+bwd'])
@pytest.mark.parametrize('op', ['chunk_gla', 'chunk_delta_rule'])
@pytest.mark.parametrize('shape', h.TRAIN_SHAPES, ids=SHAPE_IDS)
def test_fla_baseline(benchmark, shape, op, backward):
    B, T, H, V = shape
    make = h.chunk_gla_fn if op == 'chunk_gla' else h.chunk_delta_rule_fn
    record(benchmark, make(B, T, H, V, 'cuda', backward), op=op, B=B, T=T, H=H, D=V, backward=backward)


@pytest.mark.parametrize('num_factors', [h.NUM_FACTORS[0], h.NUM_FACTORS[-1]], ids=['M1024', 'M1048576'])
@pytest.mark.parametrize('shape', h.TRAIN_SHAPES, ids=SHAPE_IDS)
def test_address(benchmark, shape, num_factors):
    B, T, H, _ = shape
    record(benchmark, h.address_fn(B, T, H, num_factors, 'cuda'), op='ram_address x2', B=B, T=T, H=H,
           M=4 ** num_factors)


@pytest.mark.parametrize('num_factors', h.DECODE_NUM_FACTORS, ids=[f'M{4 ** u}' for u in h.DECODE_NUM_FACTORS])
@pytest.mark.parametrize('what', ['public-step', 'kernel'])
def test_decode_ram(benchmark, what, num_factors):
    public_step, kernel_step, num_bytes = h.decode_ram_fns(h.DECODE_BATCH, h.DECODE_HEADS, h.DECODE_VALUE_DIM,
                                                           num_factors, 'cuda')
    ms = record(benchmark, public_step if what == 'public-step' else kernel_step, op=f'fused_recurrent_ram {what}',
                batch=h.DECODE_BATCH, H=h.DECODE_HEADS, V=h.DECODE_VALUE_DIM, M=4 ** num_factors)
    benchmark.extra_info['tokens_per_s'] = h.DECODE_BATCH / (ms * 1e-3)
    if what == 'kernel':
        benchmark.extra_info['gbps'] = num_bytes / (ms * 1e-3) / 1e9
        benchmark.extra_info['nominal_gbps'] = h.nominal_bandwidth_gbps(torch.cuda.get_device_name())


def test_decode_gla(benchmark):
    fn = h.decode_gla_fn(h.DECODE_BATCH, h.DECODE_HEADS, h.DECODE_VALUE_DIM, 'cuda')
    ms = record(benchmark, fn, op='fused_recurrent_gla step', batch=h.DECODE_BATCH, H=h.DECODE_HEADS,
                D=h.DECODE_VALUE_DIM)
    benchmark.extra_info['tokens_per_s'] = h.DECODE_BATCH / (ms * 1e-3)
