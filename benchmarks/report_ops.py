"""CPU benchmarks of the RAM-Net op against issue 2's targets, as a markdown report.

    python benchmarks/report_ops.py [--threads 1] [--reps 5] [--rss] [--json FILE]

Every figure is a median over `--reps` runs after a warm-up, timed with time.perf_counter, with the
baselines (fla's `naive_recurrent_gla` and DeltaNet's `delta_rule_recurrence`) measured in the same
process and interleaved with it (round-robin), so ratios hold up even on a loaded machine. Peak
memory is the high-water mark of the tensor bytes torch's CPU allocator hands out during the call
(torch.profiler memory events, see `peak_tensor_bytes`); `--rss` adds the growth of the process'
peak RSS, measured in one fresh subprocess per M.

The workload builders here are shared with the pytest-benchmark suite (benchmarks/test_bench_ops.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

# peak_tensor_bytes (with a warm-up call by default) is a development tool kept beside the tests,
# outside the installed package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.profiling import peak_tensor_bytes  # noqa: E402

# issue 2's shapes: B=4, T=512, H=4, V=64 (D=64 for the baselines), U=5, d_p=4 (M=1,024), K=8
BATCH, SEQ_LEN, HEADS, VALUE_DIM, FACTOR_DIM, TOPK = 4, 512, 4, 64, 4, 8
NUM_FACTORS = 5
TRAIN_FACTORS = (5, 6, 7, 8)                 # M = 4^5 .. 4^8
DECODE_FACTORS = (5, 6, 7, 8, 9, 10)         # M = 4^5 .. 4^10
DECODE_HEADS = 8

TARGETS = {
    'train_vs_gla': 0.5,        # chunk_ram fwd+bwd time / naive_recurrent_gla fwd+bwd time
    'train_m_growth': 1.5,      # chunk_ram time at M=4^8 / time at M=4^5
    'decode_m_growth': 2.0,     # fused_recurrent_ram time per token at M=4^10 / at M=4^5
}


def ram_inputs(num_factors: int, batch: int = BATCH, seq_len: int = SEQ_LEN, heads: int = HEADS,
               requires_grad: bool = True, seed: int = 0):
    """q, k [B, T, H, U*d_p], v [B, T, H, V], gamma [B, T, H] (float32), like a layer produces them."""
    generator = torch.Generator().manual_seed(seed)
    width = num_factors * FACTOR_DIM
    q = torch.randn(batch, seq_len, heads, width, generator=generator)
    k = torch.randn(batch, seq_len, heads, width, generator=generator)
    v = torch.randn(batch, seq_len, heads, VALUE_DIM, generator=generator)
    gamma = torch.nn.functional.softplus(torch.randn(batch, seq_len, heads, generator=generator))
    return tuple(x.requires_grad_(requires_grad) for x in (q, k, v, gamma))


def half_cape(heads: int) -> list[bool]:
    """The layer's default: CAPE on the first half of the heads."""
    return [h < heads // 2 for h in range(heads)]


def ram_train_step(num_factors: int = NUM_FACTORS, output_final_state: bool = False) -> Callable[[], None]:
    """One chunk_ram forward + backward (loss on o, plus on the final state when it is asked for)."""
    from ramnet_fla.ops.ram import chunk_ram
    q, k, v, gamma = ram_inputs(num_factors)
    cape = half_cape(HEADS)

    def step():
        o, final = chunk_ram(q, k, v, gamma, num_factors, TOPK, cape=cape, output_final_state=output_final_state)
        loss = o.sum()
        if final is not None:
            loss = loss + final.memory.sum() + final.mass.sum()
        loss.backward()
    return step


def gla_train_step() -> Callable[[], None]:
    """fla's `naive_recurrent_gla` forward + backward at B, T, H and D = V (the PyTorch GLA reference)."""
    from fla.ops.gla.naive import naive_recurrent_gla
    generator = torch.Generator().manual_seed(1)
    shape = (BATCH, SEQ_LEN, HEADS, VALUE_DIM)
    q, k, v = (torch.randn(shape, generator=generator).requires_grad_() for _ in range(3))
    gk = torch.nn.functional.logsigmoid(torch.randn(shape, generator=generator)).requires_grad_()

    def step():
        o, _ = naive_recurrent_gla(q, k, v, gk)
        o.sum().backward()
    return step


def deltanet_train_step(kind: str = 'recurrent') -> Callable[[], None]:
    """fla's DeltaNet PyTorch reference forward + backward at the same sizes ([B, H, T, D] layout).

    kind='recurrent': `delta_rule_recurrence` (token by token, the analogue of naive_recurrent_gla);
    kind='chunkwise': `delta_rule_chunkwise` (chunks of 32, the faster PyTorch form).
    """
    from fla.ops.delta_rule.naive import delta_rule_chunkwise, delta_rule_recurrence
    generator = torch.Generator().manual_seed(2)
    shape = (BATCH, HEADS, SEQ_LEN, VALUE_DIM)
    q, v = (torch.randn(shape, generator=generator).requires_grad_() for _ in range(2))
    k = torch.nn.functional.normalize(torch.randn(shape, generator=generator), dim=-1).requires_grad_()
    beta = torch.rand(BATCH, HEADS, SEQ_LEN, generator=generator).requires_grad_()
    fn = delta_rule_recurrence if kind == 'recurrent' else delta_rule_chunkwise

    def step():
        o, _ = fn(q, k, v, beta)
        o.sum().backward()
    return step


def decode_step(num_factors: int) -> tuple[Callable[[], None], int]:
    """One-token fused_recurrent_ram at batch 1, H=8, V=64, K=8 against a resident M x V table.

    The table is filled (every page touched, as after a long prompt) and updated in place by each
    call. Returns the step and the table's bytes.
    """
    from ramnet_fla.ops.ram import RAMState, fused_recurrent_ram
    M = FACTOR_DIM ** num_factors
    state = RAMState(torch.full((1, DECODE_HEADS, M, VALUE_DIM), 0.1), torch.ones(1, DECODE_HEADS, M),
                     torch.zeros(1, dtype=torch.long))
    q, k, v, gamma = ram_inputs(num_factors, batch=1, seq_len=1, heads=DECODE_HEADS, requires_grad=False)
    cape = half_cape(DECODE_HEADS)

    @torch.no_grad()
    def step():
        fused_recurrent_ram(q, k, v, gamma, num_factors, TOPK, cape=cape, initial_state=state,
                            output_final_state=True)
    return step, state.memory.numel() * 4 + state.mass.numel() * 4


def decode_address_step(num_factors: int) -> Callable[[], None]:
    """Only the addressing of one decoding token (read and write Top-K), to show what grows with U."""
    from ramnet_fla.ops.ram import ram_address
    q, k, _, _ = ram_inputs(num_factors, batch=1, seq_len=1, heads=DECODE_HEADS, requires_grad=False)

    @torch.no_grad()
    def step():
        ram_address(q, num_factors, TOPK)
        ram_address(k, num_factors, TOPK)
    return step


def interleaved_medians(steps: dict[str, Callable[[], None]], reps: int = 5, warmup: int = 1,
                        calls: int = 1) -> dict[str, float]:
    """Median seconds per call of each step, timed round-robin (A B C A B C ...) so that a load
    change on a shared machine hits every step alike. Each sample times `calls` calls in a row."""
    for _ in range(warmup):
        for step in steps.values():
            step()
    samples = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(calls):
                step()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(times) for name, times in samples.items()}


def rss_peak_growth(num_factors: int, threads: int, output_final_state: bool = False) -> int:
    """Peak RSS growth (bytes) over one chunk_ram fwd+bwd, in a fresh subprocess for this M.

    The subprocess builds the inputs, resets the kernel's RSS high-water mark (/proc/self/clear_refs),
    runs one step and reports VmHWM - VmRSS-before. This includes allocator overheads and one-time
    initialisation, the same for every M.
    """
    code = (
        'import sys, torch; sys.path.insert(0, %r); import report_ops as r; torch.set_num_threads(%d); '
        'step = r.ram_train_step(%d, output_final_state=%r); '
        'kb = lambda key: int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]); '
        'open("/proc/self/clear_refs", "w").write("5"); before = kb("VmRSS"); step(); '
        'print((kb("VmHWM") - before) * 1024)'
    ) % (os.path.dirname(os.path.abspath(__file__)), threads, num_factors, output_final_state)
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def table_bytes(num_factors: int, batch: int = BATCH, heads: int = HEADS) -> int:
    """Bytes of one float32 state table (memory + mass) for `batch` sequences."""
    return batch * heads * FACTOR_DIM ** num_factors * (VALUE_DIM + 1) * 4


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return (f'{os.cpu_count()}-core {cpu}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), '
            f'python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start')


def mib(n: float) -> str:
    return f'{n / 2 ** 20:.1f} MiB'


def verdict(value: float, target: float) -> str:
    return 'met' if value <= target else f'MISSED by {value / target:.2f}x'


def run(reps: int, threads: int, with_rss: bool) -> dict:
    torch.set_num_threads(threads)
    results = {'machine': machine()}
    results.update(interleaved_medians({
        'ram': ram_train_step(),
        'gla': gla_train_step(),
        'deltanet_recurrent': deltanet_train_step('recurrent'),
        'deltanet_chunkwise': deltanet_train_step('chunkwise'),
    }, reps))
    times = interleaved_medians({(U, final): ram_train_step(U, output_final_state=final)
                                 for U in TRAIN_FACTORS for final in (False, True)}, reps)
    results['train'] = {}
    for U in TRAIN_FACTORS:
        row = {'time': times[U, False], 'peak': peak_tensor_bytes(ram_train_step(U)),
               'time_final_state': times[U, True],
               'peak_final_state': peak_tensor_bytes(ram_train_step(U, output_final_state=True))}
        if with_rss:
            row['rss'] = rss_peak_growth(U, threads)
        results['train'][U] = row
    steps, tables = {}, {}
    for U in DECODE_FACTORS:
        steps[U], tables[U] = decode_step(U)
        steps['address', U] = decode_address_step(U)
    per_token = interleaved_medians(steps, reps, warmup=2, calls=100)
    results['decode'] = {U: {'time': per_token[U], 'address': per_token['address', U], 'table': tables[U]}
                         for U in DECODE_FACTORS}
    return results


def report(results: dict) -> str:
    lines = [f'Machine: {results["machine"]}.', '']
    ram, gla = results['ram'], results['gla']
    first, last = TRAIN_FACTORS[0], TRAIN_FACTORS[-1]
    train = results['train']
    decode = results['decode']
    d_first, d_last = DECODE_FACTORS[0], DECODE_FACTORS[-1]
    train_growth = train[last]['time'] / train[first]['time']
    peak_growth = train[last]['peak'] - train[first]['peak']
    table_growth = table_bytes(last) - table_bytes(first)
    decode_growth = decode[d_last]['time'] / decode[d_first]['time']
    lines += [
        '| target | measured | target value | verdict |',
        '|---|---|---|---|',
        f'| chunk_ram fwd+bwd / naive_recurrent_gla fwd+bwd (M=4^5) | {ram / gla:.3f} | <= 0.5 | '
        f'{verdict(ram / gla, TARGETS["train_vs_gla"])} |',
        f'| chunk_ram time M=4^8 / M=4^5 | {train_growth:.3f} | <= 1.5 | '
        f'{verdict(train_growth, TARGETS["train_m_growth"])} |',
        f'| chunk_ram peak memory growth M=4^5 -> 4^8 | {mib(peak_growth)} | <= table growth {mib(table_growth)} | '
        f'{"met" if peak_growth <= table_growth else "MISSED"} |',
        f'| fused_recurrent_ram time per token M=4^10 / M=4^5 | {decode_growth:.3f} | <= 2.0 | '
        f'{verdict(decode_growth, TARGETS["decode_m_growth"])} |',
        '',
        '(a) forward + backward at B=4, T=512, H=4, V=D=64 (RAM: U=5, d_p=4, M=1,024, K=8, CAPE on 2 of 4 heads)',
        '',
        '| op | median time | ratio to naive_recurrent_gla |',
        '|---|---|---|',
    ]
    for name, key in (('chunk_ram', 'ram'), ('fla naive_recurrent_gla', 'gla'),
                      ('fla delta_rule_recurrence (DeltaNet)', 'deltanet_recurrent'),
                      ('fla delta_rule_chunkwise (DeltaNet, C=32)', 'deltanet_chunkwise')):
        lines.append(f'| {name} | {results[key]:.3f} s | {results[key] / gla:.3f} |')
    has_rss = 'rss' in train[first]
    lines += [
        '',
        '(b) chunk_ram forward + backward against M (same shapes, K=8). Peak = tensor bytes allocated at once'
        ' (torch.profiler); table = one float32 state (memory + mass) for the batch.',
        '',
        '| M | time | time / time(4^5) | peak | with final state: time | peak | table |'
        + (' peak RSS growth |' if has_rss else ''),
        '|---|---|---|---|---|---|---|' + ('---|' if has_rss else ''),
    ]
    for U in TRAIN_FACTORS:
        row = train[U]
        lines.append(
            f'| 4^{U} = {FACTOR_DIM ** U:,} | {row["time"]:.3f} s | {row["time"] / train[first]["time"]:.2f} | '
            f'{mib(row["peak"])} | {row["time_final_state"]:.3f} s | {mib(row["peak_final_state"])} | '
            f'{mib(table_bytes(U))} |' + (f' {mib(row["rss"])} |' if has_rss else ''))
    lines += [
        '',
        '(c) fused_recurrent_ram, one token, batch 1, H=8, V=64, K=8, state updated in place',
        '',
        '| M | time per token | / time(4^5) | addressing alone (2 x ram_address, U steps each) '
        '| table (memory + mass) |',
        '|---|---|---|---|---|',
    ]
    for U in DECODE_FACTORS:
        row = decode[U]
        lines.append(f'| 4^{U} = {FACTOR_DIM ** U:,} | {row["time"] * 1e6:.0f} us | '
                     f'{row["time"] / decode[d_first]["time"]:.2f} | {row["address"] * 1e6:.0f} us | '
                     f'{mib(row["table"])} |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--threads', type=int, default=1, help='torch threads (default 1: the machine is shared)')
    parser.add_argument('--reps', type=int, default=5, help='timed repetitions per figure (median)')
    parser.add_argument('--rss', action='store_true', help='also measure peak RSS growth, a subprocess per M')
    parser.add_argument('--json', help='also write the raw figures to this file')
    args = parser.parse_args(argv)
    results = run(args.reps, args.threads, args.rss)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    print(report(results))


if __name__ == '__main__':
    main()
