"""Shapes, inputs and timed callables for the GPU benchmarks of the RAM-Net Triton kernels (issue 3).

Shared by `run.py` (the one-command table) and `test_gpu_kernels.py` (pytest-benchmark). Every
timing on a GPU comes from `triton.testing.do_bench` (median of many runs, in ms); `--smoke` in
run.py times tiny shapes on the CPU with `time.perf_counter` only to check that this code works.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

# fla's benchmark shapes (B, T, H, value width V); the baselines use head dim D = V for keys too.
TRAIN_SHAPES = [(4, 2048, 16, 128), (2, 16384, 16, 128), (8, 2048, 8, 64)]
FACTOR_DIM = 4                       # d_p; M = 4 ** U
NUM_FACTORS = list(range(5, 11))     # M = 4^5 = 1,024 ... 4^10 = 1,048,576
TOPK = 8
DECODE_BATCH, DECODE_HEADS, DECODE_VALUE_DIM = 64, 16, 128
DECODE_NUM_FACTORS = [5, 6]          # M = 1,024 and 4,096 (the state is 64 x 16 x M x 128 float32)

# nominal memory bandwidth in GB/s by a substring of torch.cuda.get_device_name()
NOMINAL_BANDWIDTH_GBPS = {'H200': 4800.0, 'H100 NVL': 3900.0, 'H100 PCIe': 2000.0, 'H100': 3350.0,
                          'A100-SXM4-80GB': 2039.0, 'A100': 1555.0}


@dataclass
class Timer:
    """ms per call: do_bench on CUDA, perf_counter (a few calls) otherwise."""

    device: str

    def __call__(self, fn: Callable[[], object]) -> float:
        if self.device == 'cuda':
            from triton.testing import do_bench
            return float(do_bench(fn, warmup=25, rep=100))
        fn()
        start = time.perf_counter()
        repeats = 2
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e3


def ram_inputs(B, T, H, V, num_factors, device, dtype=torch.bfloat16, requires_grad=False, seed=0):
    """q, k [B, T, H, U*d_p], v [B, T, H, V], gamma [B, T, H] (float32) for a RAM layer."""
    generator = torch.Generator(device=device).manual_seed(seed)
    width = num_factors * FACTOR_DIM
    q = torch.randn(B, T, H, width, device=device, generator=generator).to(dtype)
    k = torch.randn(B, T, H, width, device=device, generator=generator).to(dtype)
    v = torch.randn(B, T, H, V, device=device, generator=generator).to(dtype)
    gamma = F.softplus(torch.randn(B, T, H, device=device, generator=generator))
    return tuple(x.requires_grad_(requires_grad) for x in (q, k, v, gamma))


def gla_inputs(B, T, H, D, device, dtype=torch.bfloat16, requires_grad=False, seed=0):
    """q, k, v [B, T, H, D] and log-space forget gates g [B, T, H, D] for GLA."""
    generator = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, device=device, generator=generator).to(dtype) for _ in range(3))
    g = F.logsigmoid(torch.randn(B, T, H, D, device=device, generator=generator)).to(dtype)
    return tuple(x.requires_grad_(requires_grad) for x in (q, k, v, g))


def delta_rule_inputs(B, T, H, D, device, dtype=torch.bfloat16, requires_grad=False, seed=0):
    """q, k (L2-normalised in the kernel), v [B, T, H, D] and beta [B, T, H] in (0, 1) for DeltaNet."""
    generator = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, D, device=device, generator=generator).to(dtype) for _ in range(3))
    beta = torch.rand(B, T, H, device=device, generator=generator).sigmoid().to(dtype)
    return tuple(x.requires_grad_(requires_grad) for x in (q, k, v, beta))


def forward_and_backward(run: Callable[[], torch.Tensor], inputs) -> Callable[[], None]:
    """A callable that runs forward, then backward of sum(o * do) into `inputs`' grads."""
    do = torch.randn_like(run())

    def step():
        for x in inputs:
            x.grad = None
        run().backward(do)
    return step


def chunk_ram_fn(B, T, H, V, num_factors, device, backward: bool, dtype=torch.bfloat16):
    """chunk_ram (Triton path on CUDA), half the heads with CAPE, as in the layer's default."""
    from ramnet_fla.ops.ram import chunk_ram
    inputs = ram_inputs(B, T, H, V, num_factors, device, dtype, requires_grad=backward)
    cape = [h < H // 2 for h in range(H)]

    def run():
        return chunk_ram(*inputs, num_factors, TOPK, cape=cape)[0]
    return forward_and_backward(run, inputs) if backward else run


def chunk_gla_fn(B, T, H, D, device, backward: bool, dtype=torch.bfloat16):
    from fla.ops.gla import chunk_gla
    inputs = gla_inputs(B, T, H, D, device, dtype, requires_grad=backward)

    def run():
        return chunk_gla(*inputs)[0]
    return forward_and_backward(run, inputs) if backward else run


def chunk_delta_rule_fn(B, T, H, D, device, backward: bool, dtype=torch.bfloat16):
    from fla.ops.delta_rule import chunk_delta_rule
    inputs = delta_rule_inputs(B, T, H, D, device, dtype, requires_grad=backward)

    def run():
        return chunk_delta_rule(*inputs, use_qk_l2norm_in_kernel=True)[0]
    return forward_and_backward(run, inputs) if backward else run


def address_fn(B, T, H, num_factors, device, dtype=torch.bfloat16):
    """Both address sets of a chunk_ram forward (reads and writes): two ram_address calls."""
    from ramnet_fla.ops.ram import ram_address
    q, k, _, _ = ram_inputs(B, T, H, 1, num_factors, device, dtype)

    def run():
        ram_address(q, num_factors, TOPK)
        ram_address(k, num_factors, TOPK)
    return run


def decode_ram_fns(batch, H, V, num_factors, device, dtype=torch.bfloat16):
    """(public fused_recurrent_ram step, decode kernel alone, bytes the kernel moves per step).

    One token per sequence; the state is advanced in place, so every call is a real decoding step.
    Bytes: per (sequence, head), K written rows read and written and K read rows read, each V + 1
    float32 (memory row plus mass), plus the inputs q, k (U*d_p each), v (V), gamma (float32) and
    the output o (V).
    """
    from ramnet_fla.ops.ram import RAMState, fused_recurrent_ram
    from ramnet_fla.ops.ram.backends.triton import fused_recurrent_inplace
    from ramnet_fla.ops.ram.common import prepare_call
    M = FACTOR_DIM ** num_factors
    q, k, v, gamma = ram_inputs(batch, 1, H, V, num_factors, device, dtype)
    state = RAMState.zeros(batch, H, M, V, device=device)
    cape = [h < H // 2 for h in range(H)]

    def public_step():
        return fused_recurrent_ram(q, k, v, gamma, num_factors, TOPK, cape=cape, initial_state=state,
                                   output_final_state=True)[0]

    call = prepare_call(q, k, v, gamma, num_factors, TOPK, cape, state, None)

    def kernel_step():
        return fused_recurrent_inplace(q, k, v, gamma, call, state)

    element = q.element_size()
    slot_bytes = 3 * TOPK * (V + 1) * 4
    io_bytes = (2 * num_factors * FACTOR_DIM + 2 * V) * element + 4
    return public_step, kernel_step, batch * H * (slot_bytes + io_bytes)


def decode_gla_fn(batch, H, D, device, dtype=torch.bfloat16):
    """fused_recurrent_gla, one token per sequence, state [batch, H, D, D] float32 carried in and out."""
    from fla.ops.gla import fused_recurrent_gla
    q, k, v, g = gla_inputs(batch, 1, H, D, device, dtype)
    state = torch.zeros(batch, H, D, D, device=device)

    def step():
        return fused_recurrent_gla(q, k, v, g, initial_state=state, output_final_state=True)[0]
    return step


def copy_bandwidth_gbps(timer: Timer, device: str, num_bytes: int = 1 << 30) -> float:
    """Achievable bandwidth: a device-to-device copy of num_bytes (read + write counted)."""
    x = torch.empty(num_bytes // 4, device=device)
    y = torch.empty_like(x)
    ms = timer(lambda: y.copy_(x))
    return 2 * num_bytes / (ms * 1e-3) / 1e9


def nominal_bandwidth_gbps(device_name: str) -> float | None:
    for key, value in NOMINAL_BANDWIDTH_GBPS.items():
        if key in device_name:
            return value
    return None
