"""pytest-benchmark configuration for the CPU benchmarks (`pytest benchmarks`, not part of the test suite).

Threads: RAMNET_FLA_BENCH_THREADS (default 1, because the development machines are shared; set it
to the core count on a quiet machine). Every benchmark records its shapes, device, dtype, thread count
and torch version in `benchmark.extra_info` through the `describe` fixture.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

# the workload builders live in benchmarks/report_ops.py, shared with the markdown report
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

THREADS = int(os.environ.get('RAMNET_FLA_BENCH_THREADS', '1'))
torch.set_num_threads(THREADS)


@pytest.fixture
def describe(benchmark):
    """Call describe(**shape) to record the shape plus device, dtype, threads and torch version."""
    def record(**info):
        benchmark.extra_info.update(device='cpu', dtype='float32', threads=torch.get_num_threads(),
                                    torch=torch.__version__, **info)
    return record
