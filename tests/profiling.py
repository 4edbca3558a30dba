"""Measuring tensor memory on any device, for the memory tests and the benchmarks (not part of the
installed package; benchmarks/report_ops.py imports it from the repository)."""

from __future__ import annotations

from collections.abc import Callable


def peak_tensor_bytes(fn: Callable[[], None], warmup: bool = True) -> int:
    """Peak bytes of tensor memory allocated while `fn()` runs, beyond what was live before it.

    Replays the allocation and free events that torch.profiler records for torch's allocator (every
    tensor, in forward and backward) in time order and returns the high-water mark of their sum
    (tracemalloc cannot see torch's allocations). With `warmup`, `fn` runs once unprofiled first,
    so one-time allocations (leaf .grad buffers) are not counted; the profiler's own one-time start
    cost is always kept out.
    """
    from torch.profiler import ProfilerActivity, profile

    if warmup:
        fn()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True):
        pass
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                    if event.name() == '[memory]')
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak
