"""CPU benchmarks of the built-in mixers and of decoding (pytest-benchmark): `pytest benchmarks`.

(a) one mixer's forward+backward at hidden 256, B=8, T=256, 4 heads: `ram` against `gla`'s CPU path
    and the other built-ins; (b) one decoding step of a 4-layer `ram` or `attention` model after a
    prefill of 256 .. 8,192 tokens. Compare within one run only; `benchmarks/report_mixers.py`
    prints the ratios against issue 4's targets.
"""

from __future__ import annotations

import pytest

import report_mixers as mixers


@pytest.mark.benchmark(group='mixer-fwd-bwd')
@pytest.mark.parametrize('name', list(mixers.MIXER_SPECS))
def test_mixer_fwd_bwd(benchmark, describe, name):
    describe(mixer=name, spec=mixers.MIXER_SPECS[name], hidden=mixers.HIDDEN, B=mixers.BATCH, T=mixers.SEQ_LEN)
    benchmark.pedantic(mixers.mixer_train_step(name), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group='decode-vs-context')
@pytest.mark.parametrize('context', mixers.CONTEXTS)
@pytest.mark.parametrize('name', ['ram', 'attention'])
def test_decode_step(benchmark, describe, name, context):
    describe(mixer=name, layers=4, hidden=mixers.HIDDEN, B=1, context=context)
    benchmark.pedantic(mixers.decode_step(name, context), rounds=10, iterations=5, warmup_rounds=1)
