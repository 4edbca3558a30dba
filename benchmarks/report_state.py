"""CPU benchmark of the decoding state formats (issue 11): dense RAMState, SparseRAMState, TieredRAMState.

    python benchmarks/report_state.py [--quick] [--json] [--threads 1] [--model] [--batches 1 8]

For every M = 4^U, batch B and format: prefill T tokens with `chunk_ram` (the state is built in that
format), then decode D tokens one step at a time with `fused_recurrent_ram` (each step decodes one
token of each of the B sequences; `ms_per_token` is the median wall time of one such step,
`cpu_ms_per_token` its thread CPU time, which a loaded machine disturbs far less). H = 8,
V = 64, K = 8, CAPE on half of the heads, float32, random q/k/v/gamma (so nearly every write lands
on a new slot: the worst case for the sparse formats). The dense format runs only where its table
fits in 8 GB; the tiered one keeps its cold table in a sparse file (--tier-dir, up to --tier-limit-gb)
with a hot cache of 10% of the touched slots (at least one step's worth). `address_ms` is the
step's address search alone (it grows with U = log_4 M whatever the state). All formats run in one process on the same
inputs, their decoding steps interleaved round-robin; `max_abs_diff` is each format's largest decode-output difference from the sparse one (0 means
bitwise equal). --quick: M up to 4^8, T = 1,024, D = 32, B = 1. Default: M 4^5 .. 4^12, T = 4,096,
D = 256, B = 1 and 8.
--model adds issue 11's model check: a 4-layer, hidden-256 RAMNetForCausalLM at M = 4^12 (its 'auto'
state format, i.e. sparse) prefills 8,192 tokens and decodes 16 in a fresh subprocess, whose peak RSS
is recorded: once with glibc's default malloc settings, once with a fixed mmap threshold (ALLOCATORS).

Without --json it prints a markdown table; with --json, one JSON list of records (M, format, batch,
state_bytes, touched_slots, ms_per_token, prefill_s, hit_rate, ...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HEADS, VALUE_DIM, FACTOR_DIM, TOPK = 8, 64, 4, 8
DENSE_LIMIT = 8 * 2 ** 30
QUICK = dict(factors=(5, 6, 7, 8), prefill=1024, decode=32)
FULL = dict(factors=tuple(range(5, 13)), prefill=4096, decode=256)
CAPE = [h < HEADS // 2 for h in range(HEADS)]


def make_inputs(batch: int, seq_len: int, num_factors: int, seed: int):
    """q, k [B, T, H, U*d_p], v [B, T, H, V], gamma [B, T, H], float32."""
    generator = torch.Generator().manual_seed(seed)
    width = num_factors * FACTOR_DIM
    q = torch.randn(batch, seq_len, HEADS, width, generator=generator)
    k = torch.randn(batch, seq_len, HEADS, width, generator=generator)
    v = torch.randn(batch, seq_len, HEADS, VALUE_DIM, generator=generator)
    gamma = torch.nn.functional.softplus(torch.randn(batch, seq_len, HEADS, generator=generator))
    return q, k, v, gamma


def dense_bytes(batch: int, num_slots: int) -> int:
    return batch * HEADS * num_slots * (VALUE_DIM + 1) * 4 + batch * 8


def state_bytes(state) -> int:
    if isinstance(state, tuple):
        return sum(t.numel() * t.element_size() for t in state)
    return state.nbytes()


@torch.no_grad()
def prefill_format(fmt: str, num_factors: int, batch: int, prefill, touched: int | None, tier_dir: str):
    """The state after the prefill in one format, and the prefill's wall time."""
    from ramnet_fla.ops.ram import TieredRAMState, chunk_ram

    initial = None
    if fmt == 'tiered':
        cache_slots = max(math.ceil(0.1 * touched), 2 * batch * HEADS * TOPK)
        M = FACTOR_DIM ** num_factors
        initial = TieredRAMState.create(batch, HEADS, M, VALUE_DIM, cache_slots,
                                        path=os.path.join(tier_dir, f'table-M{M}-B{batch}.f32'), overwrite=True)
    start = time.perf_counter()
    _, state = chunk_ram(*prefill, num_factors, TOPK, cape=CAPE, initial_state=initial, output_final_state=True,
                         state_format=fmt)
    prefill_s = time.perf_counter() - start
    if fmt == 'tiered':
        state.reset_stats()
    return state, prefill_s


@torch.no_grad()
def run_formats(formats, num_factors: int, batch: int, prefill, decode, tier_dir: str) -> list[dict]:
    """Prefill every format, then decode with the formats' steps interleaved round-robin (so that a
    loaded machine slows them alike); one record per format."""
    from ramnet_fla.ops.ram import fused_recurrent_ram, ram_address

    M = FACTOR_DIM ** num_factors
    states, prefill_s, touched = {}, {}, None
    for fmt in formats:                                         # 'sparse' first: it counts the touched slots
        states[fmt], prefill_s[fmt] = prefill_format(fmt, num_factors, batch, prefill, touched, tier_dir)
        if fmt == 'sparse':
            touched = states[fmt].num_touched
    outputs = {fmt: [] for fmt in formats}
    times = {fmt: [] for fmt in formats + ['address']}
    cpu_times = {fmt: [] for fmt in formats + ['address']}
    for step in range(decode[0].shape[1]):
        token = tuple(x[:, step:step + 1] for x in decode)
        for fmt in formats + ['address']:
            start, cpu_start = time.perf_counter(), time.thread_time()
            if fmt == 'address':
                # the step's address search alone (the same beam Top-K): it grows with U whatever the state
                ram_address(torch.stack(token[:2]), num_factors, TOPK)
            else:
                o, states[fmt] = fused_recurrent_ram(*token, num_factors, TOPK, cape=CAPE,
                                                     initial_state=states[fmt], output_final_state=True)
                outputs[fmt].append(o[:, 0])
            cpu_times[fmt].append(time.thread_time() - cpu_start)
            times[fmt].append(time.perf_counter() - start)
    records = []
    touched = states['sparse'].num_touched
    reference = torch.stack(outputs['sparse'])
    for fmt in formats:
        state = states[fmt]
        record = dict(M=M, format=fmt, batch=batch, state_bytes=state_bytes(state), touched_slots=touched,
                      ms_per_token=1e3 * statistics.median(times[fmt]), ms_per_token_mean=1e3 * statistics.fmean(times[fmt]),
                      cpu_ms_per_token=1e3 * statistics.median(cpu_times[fmt]),
                      address_ms=1e3 * statistics.median(times['address']),
                      address_cpu_ms=1e3 * statistics.median(cpu_times['address']), prefill_s=prefill_s[fmt],
                      dense_bytes=dense_bytes(batch, M), bytes_per_touched_payload=state_bytes(state) / (touched * (VALUE_DIM + 1) * 4),
                      max_abs_diff=float((torch.stack(outputs[fmt]) - reference).abs().max()))
        if fmt == 'tiered':
            record.update(hit_rate=state.hit_rate, evictions=state.evictions, cache_slots=state.cache_slots,
                          cold_bytes=state.cold_nbytes())
            os.remove(state.path)
        records.append(record)
    return records


def run_all(factors, batches, prefill_len: int, decode_len: int, tier_dir: str, tier_limit: float, log) -> list[dict]:
    records = []
    for batch in batches:
        for num_factors in factors:
            M = FACTOR_DIM ** num_factors
            prefill = make_inputs(batch, prefill_len, num_factors, seed=num_factors)
            decode = make_inputs(batch, decode_len, num_factors, seed=100 + num_factors)
            formats = (['sparse'] + (['tiered'] if dense_bytes(batch, M) <= tier_limit else [])
                       + (['dense'] if dense_bytes(batch, M) <= DENSE_LIMIT else []))
            for record in run_formats(formats, num_factors, batch, prefill, decode, tier_dir):
                records.append(record)
                log(record)
    return records


MODEL_SCRIPT = r"""
import json, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
def peak_rss_bytes():
    # VmHWM: this process image's peak. getrusage's ru_maxrss would also count the parent's peak,
    # which Linux carries into a child across fork and exec
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
from ramnet_fla import RAMNetConfig, RAMNetForCausalLM
from ramnet_fla.ops.ram import SparseRAMState
ram = {'name': 'ram', 'num_heads': 4, 'num_factors': 12, 'factor_dim': 4, 'topk': 8}
config = RAMNetConfig(vocab_size=4096, hidden_size=256, num_hidden_layers=4, mixers=[ram], pad_token_id=0)
torch.manual_seed(0)
model = RAMNetForCausalLM(config).eval()
rss_before = peak_rss_bytes()          # the interpreter, torch, transformers, fla and the model's weights
prompt = torch.randint(3, 4096, (1, 8192))
with torch.no_grad():
    start = time.perf_counter()
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    prefill_s = time.perf_counter() - start
    cache, token, times = out.past_key_values, out.logits[:, -1:].argmax(-1), []
    for _ in range(16):
        start = time.perf_counter()
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        times.append(time.perf_counter() - start)
        token = out.logits[:, -1:].argmax(-1)
states = [cache[i]['recurrent_state'] for i in range(4)]
assert all(isinstance(s, SparseRAMState) for s in states)
print(json.dumps(dict(
    model='4 layers, hidden 256, H=4, V=64, M=4^12, K=8', prefill_tokens=8192, decoded=16,
    peak_rss_bytes=peak_rss_bytes(), rss_before_bytes=rss_before,
    state_bytes=sum(s.nbytes() for s in states), touched_slots=sum(s.num_touched for s in states),
    dense_state_bytes=sum(s.dense_nbytes() for s in states), prefill_s=prefill_s,
    ms_per_token=1e3 * sorted(times)[len(times) // 2])))
"""


# glibc raises its mmap threshold (up to 32 MiB) each time a large block is freed, after which
# blocks up to that size come from the heap, where freed space that other live blocks pin stays in
# the process's RSS. A fixed threshold (a documented glibc tunable) keeps large blocks mmapped.
ALLOCATORS = {'glibc default': {}, 'MALLOC_MMAP_THRESHOLD_=131072': {'MALLOC_MMAP_THRESHOLD_': '131072'}}


def run_model(threads: int, allocator: str = 'glibc default') -> dict:
    """Issue 11's model check in a fresh process (its own peak RSS), with one of ALLOCATORS' settings."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get('PYTHONPATH', '')]),
               **ALLOCATORS[allocator])
    result = subprocess.run([sys.executable, '-c', MODEL_SCRIPT, str(threads)], capture_output=True, text=True,
                            env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"model check failed:\n{result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]), format='sparse', batch=1, M=FACTOR_DIM ** 12,
                allocator=allocator)


def summary(records: list[dict]) -> list[str]:
    """Ratios against issue 11's targets, from records of one process: medians of the decoding steps'
    thread CPU time (with one thread, the work itself, without the waits of a loaded machine), wall
    time in brackets."""
    lines = []
    by = {(r['M'], r['format'], r['batch']): r for r in records if 'model' not in r}
    for batch in sorted({r['batch'] for r in by.values()}):
        ms = sorted({m for (m, f, b) in by if b == batch})
        small, large = ms[0], ms[-1]
        sparse_small, sparse_large = by.get((small, 'sparse', batch)), by.get((large, 'sparse', batch))
        dense_small = by.get((small, 'dense', batch))
        if sparse_small and dense_small:
            lines.append(f"B={batch}: sparse / dense time per token at M={small}: "
                         f"{sparse_small['cpu_ms_per_token'] / dense_small['cpu_ms_per_token']:.2f} "
                         f"[wall {sparse_small['ms_per_token'] / dense_small['ms_per_token']:.2f}] (target <= 1.5)")
        if sparse_small and sparse_large:
            lines.append(f"B={batch}: sparse time per token M={large} / M={small}: "
                         f"{sparse_large['cpu_ms_per_token'] / sparse_small['cpu_ms_per_token']:.2f} "
                         f"[wall {sparse_large['ms_per_token'] / sparse_small['ms_per_token']:.2f}] (target <= 1.3); "
                         "without the address search (U grows from "
                         f"{round(math.log(small, FACTOR_DIM))} to {round(math.log(large, FACTOR_DIM))} factors): "
                         f"{(sparse_large['cpu_ms_per_token'] - sparse_large['address_cpu_ms']) / (sparse_small['cpu_ms_per_token'] - sparse_small['address_cpu_ms']):.2f}")
            lines.append(f"B={batch}: sparse bytes at M={large}: {sparse_large['state_bytes'] / sparse_large['dense_bytes']:.4%}"
                         f" of dense (target <= 1%), {sparse_large['bytes_per_touched_payload']:.3f} x touched x (V+1) x 4"
                         " (target <= 1.25 + fixed)")
    for r in records:
        if 'model' in r:
            lines.append(f"model ({r['model']}, {r.get('allocator', 'glibc default')}): peak RSS "
                         f"{r['peak_rss_bytes'] / 2 ** 20:.0f} MiB after "
                         f"{r['prefill_tokens']} + {r['decoded']} tokens (target <= 1 GB = 954 MiB), "
                         f"{r['rss_before_bytes'] / 2 ** 20:.0f} MiB of it before the first token (imports and "
                         f"weights); {r['ms_per_token']:.1f} ms per decoded token; state "
                         f"{r['state_bytes'] / 2 ** 20:.1f} MiB vs dense {r['dense_state_bytes'] / 2 ** 30:.1f} GiB")
    return lines


def markdown(records: list[dict]) -> str:
    head = ('| M | format | B | state MiB | touched | bytes / payload | prefill s | ms / token | hit rate | '
            'cpu ms / token | address cpu ms | max abs diff |\n|---|---|---|---|---|---|---|---|---|---|---|---|')
    rows = []
    for r in records:
        if 'model' in r:
            continue
        hit = f"{r['hit_rate']:.3f}" if 'hit_rate' in r else ''
        rows.append(f"| {r['M']} | {r['format']} | {r['batch']} | {r['state_bytes'] / 2 ** 20:.1f} | "
                    f"{r['touched_slots']} | {r.get('bytes_per_touched_payload', float('nan')):.3f} | "
                    f"{r['prefill_s']:.2f} | {r['ms_per_token']:.2f} | {hit} | {r['cpu_ms_per_token']:.2f} | "
                    f"{r['address_cpu_ms']:.2f} | "
                    f"{r['max_abs_diff']:.1e} |")
    return '\n'.join([head, *rows, '', *summary(records)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='M up to 4^8, prefill 1,024, decode 32')
    parser.add_argument('--json', action='store_true', help='print one JSON list of records')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--batches', type=int, nargs='+', default=None, help='default: 1 8 (--quick: 1)')
    parser.add_argument('--tier-limit-gb', type=float, default=64.0,
                        help='run the tiered format where its cold file is at most this large (logical size)')
    parser.add_argument('--max-factors', type=int, default=None, help='largest U (M = 4^U) to run')
    parser.add_argument('--model', action='store_true', help="add the 4-layer model's memory check")
    parser.add_argument('--tier-dir', default=None, help='directory for the tiered cold-tier files (default: a temp dir)')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else FULL
    factors = tuple(u for u in sizes['factors'] if args.max_factors is None or u <= args.max_factors)
    batches = args.batches or ([1] if args.quick else [1, 8])
    log = (lambda r: print(json.dumps(r), file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(dir=args.tier_dir) as tier_dir:
        records = run_all(factors, batches, sizes['prefill'], sizes['decode'], tier_dir, args.tier_limit_gb * 2 ** 30, log)
    if args.model:
        records.extend(run_model(args.threads, allocator) for allocator in ALLOCATORS)
    if args.json:
        print(json.dumps(records))
    else:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
              f"{torch.__version__}, {args.threads} thread(s); one process, decoding steps of the formats interleaved\n")
        print(markdown(records))
    return 0


if __name__ == '__main__':
    sys.exit(main())
