"""Compile every RAM-Net Triton kernel for a CUDA architecture, without a GPU (a developer tool).

The interpreter (TRITON_INTERPRET=1) checks what the kernels compute but not that they compile:
`triton.compile` with a `GPUTarget` lowers each kernel to PTX and a cubin on any machine, which
catches type errors, unsupported ops and register-hungry shapes before a GPU session does.

    python benchmarks/gpu/compile_check.py [--arch 90] [--float64]

Must run without TRITON_INTERPRET (the kernels must be real JIT functions).
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

import triton
import triton.language as tl


def _jit_function(kernel):
    """The JITFunction under autotune/heuristics wrappers."""
    while not isinstance(kernel, triton.runtime.jit.JITFunction):
        if not hasattr(kernel, 'fn'):
            raise RuntimeError('kernels are not JIT functions: run without TRITON_INTERPRET=1')
        kernel = kernel.fn
    return kernel


def compile_kernel(kernel, pointer_types: dict, constants: dict, arch: int, num_warps: int) -> float:
    """Compile one specialisation to a cubin; returns the seconds it took. Arguments not in
    `constants` take their type from `pointer_types` ('*fp32', 'i32', ...)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _jit_function(kernel)
    signature = {name: 'constexpr' if name in constants else pointer_types[name] for name in fn.arg_names}
    constexprs = {(fn.arg_names.index(name),): value for name, value in constants.items()}
    start = time.perf_counter()
    triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                   target=GPUTarget('cuda', arch, 32), options={'num_warps': num_warps})
    return time.perf_counter() - start


def specialisations(float64: bool):
    """(name, kernel, pointer types, constants, num_warps) for the shapes the op uses."""
    from ramnet_fla.ops.ram.backends.triton import address, chunk, fused_recurrent

    accumulators = [(tl.float32, '*fp32')] + ([(tl.float64, '*fp64')] if float64 else [])
    i64 = '*i64'
    for acc, acc_ptr in accumulators:
        for U, DP, K in [(5, 4, 8), (2, 8, 32)]:           # rank selection; K rounds of max
            blocks = dict(U=U, DP=DP, K=K, BD=triton.next_power_of_2(DP), BK=triton.next_power_of_2(K), ACC=acc)
            yield (f'ram_address_fwd U{U} d_p{DP} K{K}', address.ram_address_fwd_kernel,
                   dict(x='*bf16', index=i64, log_prob=acc_ptr, R='i32'), blocks, 4)
            yield (f'ram_address_bwd U{U} d_p{DP} K{K}', address.ram_address_bwd_kernel,
                   dict(x='*bf16', index=i64, dlog_prob=acc_ptr, dx='*bf16', R='i32'), blocks, 4)
        for initial, final in itertools.product([False, True], repeat=2):
            types = dict(event_order=i64, group_offsets=i64, segment_offsets=i64, segment_rows=i64,
                         write_weight=acc_ptr, v='*bf16', gamma='*fp32', memory0=acc_ptr, mass0=acc_ptr,
                         prev_memory=acc_ptr, prev_mass=acc_ptr, read_memory=acc_ptr, read_mass=acc_ptr,
                         memory=acc_ptr, mass=acc_ptr, E='i32')
            constants = dict(K=8, V=128, BV=64, ACC=acc, USE_INITIAL_STATE=initial, STORE_FINAL_STATE=final)
            constants.update({} if initial else dict(memory0=None, mass0=None))
            constants.update({} if final else dict(memory=None, mass=None))
            yield (f'chunk_ram_fwd_chain initial={initial} final={final}', chunk.chunk_ram_fwd_chain_kernel,
                   types, constants, 2)
            types = dict(event_order=i64, group_offsets=i64, segment_offsets=i64, segment_rows=i64,
                         read_weight=acc_ptr, write_weight=acc_ptr, v='*bf16', gamma='*fp32', do='*bf16',
                         prev_memory=acc_ptr, prev_mass=acc_ptr, read_memory=acc_ptr, read_mass=acc_ptr,
                         dmemory=acc_ptr, dmass=acc_ptr, dmemory0=acc_ptr, dmass0_partial=acc_ptr,
                         dread_weight_partial=acc_ptr, dwrite_weight_partial=acc_ptr, dgamma_partial=acc_ptr,
                         dv_event=acc_ptr, E='i32', S='i32')
            constants = dict(K=8, V=100, BV=64, ACC=acc, USE_INITIAL_STATE=initial, USE_FINAL_STATE_GRADIENT=final)
            constants.update({} if initial else dict(dmemory0=None, dmass0_partial=None))
            constants.update({} if final else dict(dmemory=None, dmass=None))
            yield (f'chunk_ram_bwd_chain initial={initial} final-grad={final}', chunk.chunk_ram_bwd_chain_kernel,
                   types, constants, 1)
        yield ('chunk_ram_fwd_o', chunk.chunk_ram_fwd_o_kernel,
               dict(read_weight=acc_ptr, read_memory=acc_ptr, read_mass=acc_ptr, o='*bf16', NTH='i32'),
               dict(K=8, V=128, BK=8, BV=64, ACC=acc), 4)
        for varlen in [False, True]:
            types = dict(q='*bf16', k='*bf16', v='*bf16', gamma='*fp32', o='*bf16', memory=acc_ptr, mass=acc_ptr,
                         position=i64, cape_heads='*i32', cu_seqlens=i64, T='i32')
            constants = dict(H=16, U=5, DP=4, M=1024, K=8, V=128, BD=4, BK=8, BV=128, ACC=acc, IS_VARLEN=varlen)
            constants.update({} if varlen else dict(cu_seqlens=None))
            yield (f'fused_recurrent_ram_fwd varlen={varlen}', fused_recurrent.fused_recurrent_ram_fwd_kernel,
                   types, constants, 8)


def compile_all(arch: int = 90, float64: bool = False, verbose: bool = True) -> list[tuple[str, float]]:
    """Compile every specialisation; raises on the first kernel that does not compile."""
    if os.environ.get('TRITON_INTERPRET') == '1':
        raise RuntimeError('compile_check needs real JIT functions: unset TRITON_INTERPRET')
    results = []
    for name, kernel, types, constants, num_warps in specialisations(float64):
        seconds = compile_kernel(kernel, types, constants, arch, num_warps)
        results.append((name, seconds))
        if verbose:
            print(f'sm_{arch} {"fp64" if constants.get("ACC") == tl.float64 else "fp32"} {name}: {seconds:.2f} s')
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description='Compile the RAM-Net Triton kernels for a CUDA arch (no GPU needed).')
    parser.add_argument('--arch', type=int, default=90, help='compute capability x 10 (90 = H100/H200, 80 = A100)')
    parser.add_argument('--float64', action='store_true', help='also the float64 (gradcheck) specialisations')
    args = parser.parse_args(argv)
    results = compile_all(args.arch, args.float64)
    print(f'{len(results)} kernels compiled for sm_{args.arch}')


if __name__ == '__main__':
    main()
