"""One command for the GPU table of issue 3: `python benchmarks/gpu/run.py`.

Times (triton.testing.do_bench, ms, one run, one card) chunk_ram forward and forward+backward
against fla's chunk_gla and chunk_delta_rule at the same B, T, H and value width, for M = 4^5 ...
4^10 (K = 8); the address kernel's share of chunk_ram's forward; decoding steps against
fused_recurrent_gla at batch 64, with the decode kernel's achieved bandwidth; then checks the
issue's targets. Prints markdown, ready for benchmarks/RESULTS.md.

Options: --quick (first shape, M = 4^5 and 4^10 only), --smoke (tiny shapes on the CPU under the
Triton interpreter, perf_counter timing: checks this script, measures nothing).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='first training shape, M = 4^5 and 4^10 only')
    parser.add_argument('--smoke', action='store_true', help='tiny shapes on the CPU (interpreter): test the script')
    return parser.parse_args(argv)


def setup_smoke():
    """CPU: run the kernels under TRITON_INTERPRET=1 with the test suite's interpreter shims."""
    os.environ['TRITON_INTERPRET'] = '1'
    os.environ['RAMNET_FLA_BACKEND'] = 'triton'
    sys.path.insert(0, str(REPO))
    import tests.conftest  # noqa: F401  (installs the interpreter shims, the speed-up included)


def measure(timer, make_fn, *args, **kwargs):
    """ms, or None (printed as OOM) when the GPU runs out of memory."""
    import torch
    try:
        return timer(make_fn(*args, **kwargs))
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return None


def fmt(x, digits=3, missing='OOM'):
    return missing if x is None else f'{x:.{digits}g}' if isinstance(x, float) else str(x)


def ratio(a, b):
    return None if a is None or b is None else a / b


def main(argv=None):
    args = parse_args(argv)
    if args.smoke:
        setup_smoke()
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness as h

    if args.smoke:
        device, dtype = 'cpu', torch.float16
        shapes, factors = [(1, 16, 2, 8)], [2, 3]
        decode = (2, 2, 8, [2])
        card = 'CPU (smoke run: interpreter, perf_counter; not a measurement)'
    else:
        if not torch.cuda.is_available():
            sys.exit('run.py needs a CUDA GPU (use --smoke to check the script on the CPU)')
        device, dtype = 'cuda', torch.bfloat16
        shapes, factors = h.TRAIN_SHAPES, h.NUM_FACTORS
        if args.quick:
            shapes, factors = shapes[:1], [factors[0], factors[-1]]
        decode = (h.DECODE_BATCH, h.DECODE_HEADS, h.DECODE_VALUE_DIM, h.DECODE_NUM_FACTORS)
        card = torch.cuda.get_device_name()
    timer = h.Timer(device)
    print(f'# RAM-Net Triton kernels on {card}; torch {torch.__version__}; dtype {dtype}; K = {h.TOPK}, d_p = {h.FACTOR_DIM}\n')

    print('## chunk_ram vs fla (ms; ratio = chunk_ram / chunk_gla, forward+backward)\n')
    print('| B | T | H | V | M | ram fwd | ram fwd+bwd | gla fwd | gla fwd+bwd | delta fwd | delta fwd+bwd '
          '| ratio | address ms | address / ram fwd |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    growth, ratios_at_1024, address_shares = [], [], []
    for B, T, H, V in shapes:
        gla = [measure(timer, h.chunk_gla_fn, B, T, H, V, device, backward, dtype) for backward in (False, True)]
        delta = [measure(timer, h.chunk_delta_rule_fn, B, T, H, V, device, backward, dtype) for backward in (False, True)]
        by_m = {}
        for U in factors:
            M = h.FACTOR_DIM ** U
            fwd = measure(timer, h.chunk_ram_fn, B, T, H, V, U, device, False, dtype)
            fwd_bwd = measure(timer, h.chunk_ram_fn, B, T, H, V, U, device, True, dtype)
            address = measure(timer, h.address_fn, B, T, H, U, device, dtype)
            by_m[M] = fwd_bwd
            share = ratio(address, fwd)
            address_shares.append(share)
            if M == 1024:
                ratios_at_1024.append(ratio(fwd_bwd, gla[1]))
            print(f'| {B} | {T} | {H} | {V} | {M:,} | {fmt(fwd)} | {fmt(fwd_bwd)} | {fmt(gla[0])} | {fmt(gla[1])} '
                  f'| {fmt(delta[0])} | {fmt(delta[1])} | {fmt(ratio(fwd_bwd, gla[1]))} | {fmt(address)} '
                  f'| {fmt(None if share is None else 100 * share)}% |')
        small, large = min(by_m), max(by_m)
        growth.append(((B, T, H, V), small, large, ratio(by_m[large], by_m[small])))

    print('\n## growth of chunk_ram forward+backward with M\n')
    print('| B | T | H | V | from M | to M | time ratio |')
    print('|---|---|---|---|---|---|---|')
    for (B, T, H, V), small, large, r in growth:
        print(f'| {B} | {T} | {H} | {V} | {small:,} | {large:,} | {fmt(r)} |')

    batch, H, V, decode_factors = decode
    copy_gbps = h.copy_bandwidth_gbps(timer, device, 1 << 30 if device == 'cuda' else 1 << 20)
    nominal = h.nominal_bandwidth_gbps(card) if device == 'cuda' else None
    gla_ms = measure(timer, h.decode_gla_fn, batch, H, V, device, dtype)
    print(f'\n## decoding, batch {batch}, H {H}, V {V}, one token per step (copy bandwidth {copy_gbps:.0f} GB/s, '
          f'nominal {fmt(nominal, 4, "unknown")} GB/s)\n')
    print('| M | ram step ms | ram tokens/s | kernel ms | kernel GB/s | % of copy | % of nominal '
          '| gla step ms | gla tokens/s |')
    print('|---|---|---|---|---|---|---|---|---|')
    decode_fractions = []
    gla_tokens = 'OOM' if gla_ms is None else f'{batch / (gla_ms * 1e-3):,.0f}'
    for U in decode_factors:
        M = h.FACTOR_DIM ** U
        public_step, kernel_step, num_bytes = h.decode_ram_fns(batch, H, V, U, device, dtype)
        step_ms, kernel_ms = timer(public_step), timer(kernel_step)
        gbps = num_bytes / (kernel_ms * 1e-3) / 1e9
        fraction = gbps / (nominal or copy_gbps)
        decode_fractions.append(fraction)
        print(f'| {M:,} | {fmt(step_ms)} | {batch / (step_ms * 1e-3):,.0f} | {fmt(kernel_ms)} | {gbps:.0f} '
              f'| {100 * gbps / copy_gbps:.1f}% | {fmt(None if nominal is None else 100 * gbps / nominal, 3, "n/a ")}% '
              f'| {fmt(gla_ms)} | {gla_tokens} |')

    def verdict(ok):
        return 'n/a' if ok is None else 'PASS' if ok else 'FAIL'
    worst_ratio = max((r for r in ratios_at_1024 if r is not None), default=None)
    worst_growth = max((g[3] for g in growth if g[3] is not None), default=None)
    worst_share = max((s for s in address_shares if s is not None), default=None)
    print('\n## targets of issue 3\n')
    print(f'- chunk_ram fwd+bwd <= 1.5x chunk_gla at M = 1,024: worst {fmt(worst_ratio, 3, "n/a")}x: '
          f'{verdict(None if worst_ratio is None else worst_ratio <= 1.5)}')
    print(f'- growth M = 4^5 -> 4^10 <= 1.3x: worst {fmt(worst_growth, 3, "n/a")}x: '
          f'{verdict(None if worst_growth is None or len(factors) < 2 else worst_growth <= 1.3)}')
    print(f'- decode kernel >= 50% of memory bandwidth at batch {batch}: worst {100 * min(decode_fractions):.1f}% '
          f'of {"nominal" if nominal else "copy"} bandwidth: {verdict(min(decode_fractions) >= 0.5)}')
    print(f'- address kernel <= 10% of chunk_ram forward: worst {fmt(None if worst_share is None else 100 * worst_share, 3, "n/a")}%: '
          f'{verdict(None if worst_share is None else worst_share <= 0.10)}')


if __name__ == '__main__':
    main()
