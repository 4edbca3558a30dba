"""torch.compile against eager for a training step of a 2-layer ram + gla RAMNetForCausalLM, as a
markdown report (issue 14: compiled <= 1.0x eager, 0 recompiles).

    python benchmarks/report_compile.py [--threads 2] [--reps 5] [--json FILE]

Shape: hidden 256, B=8, T=256, vocab 1024, CPU, float32. One step is the forward (no cache) with
labels and the backward of the loss. The compiled model (inductor, fullgraph) is warmed up on one
batch (the compile time is that first step), then the compiled and the eager model run the same
`--reps` different batches, interleaved; the report gives the median step times, their ratio and
the number of recompiles (dynamo's frame counters after the warm-up), all in one process.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch._dynamo

from ramnet_fla.models.ramnet import RAMNetConfig, RAMNetForCausalLM

HIDDEN, BATCH, SEQ_LEN, VOCAB = 256, 8, 256, 1024


def build_model() -> RAMNetForCausalLM:
    torch.manual_seed(0)
    config = RAMNetConfig(mixers=['ram', 'gla'], vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2)
    return RAMNetForCausalLM(config)


def batch(seed: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (BATCH, SEQ_LEN), generator=torch.Generator().manual_seed(seed))


def train_step(model, ids: torch.Tensor) -> float:
    """Seconds for forward + backward of the LM loss on `ids`."""
    start = time.perf_counter()
    loss = model(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def measure(reps: int) -> dict:
    model = build_model()
    compiled = torch.compile(model, fullgraph=True)
    torch._dynamo.utils.counters.clear()
    compile_s = train_step(compiled, batch(0))
    graphs_after_warmup = torch._dynamo.utils.counters['stats']['unique_graphs']
    train_step(model, batch(0))                                  # eager warm-up
    eager, fast = [], []
    for seed in range(1, reps + 1):
        ids = batch(seed)
        fast.append(train_step(compiled, ids))
        eager.append(train_step(model, ids))
    recompiles = torch._dynamo.utils.counters['stats']['unique_graphs'] - graphs_after_warmup
    return {
        'shape': {'hidden': HIDDEN, 'batch': BATCH, 'seq_len': SEQ_LEN, 'vocab': VOCAB, 'layers': ['ram', 'gla']},
        'device': 'cpu', 'dtype': 'float32', 'threads': torch.get_num_threads(),
        'machine': f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        'compile_s': compile_s, 'eager_step_s': statistics.median(eager), 'compiled_step_s': statistics.median(fast),
        'ratio': statistics.median(fast) / statistics.median(eager), 'recompiles': recompiles,
        'graphs': graphs_after_warmup,
    }


def report(r: dict) -> str:
    return '\n'.join([
        f"### torch.compile vs eager, ram+gla (hidden {HIDDEN}, B={BATCH}, T={SEQ_LEN}), CPU float32, "
        f"{r['threads']} threads",
        '',
        '| figure | value | target |',
        '|---|---|---|',
        f"| first compiled step (compile) | {r['compile_s']:.1f} s | - |",
        f"| eager step (median) | {r['eager_step_s'] * 1e3:.0f} ms | - |",
        f"| compiled step (median) | {r['compiled_step_s'] * 1e3:.0f} ms | - |",
        f"| compiled / eager | {r['ratio']:.2f}x | <= 1.0x |",
        f"| graphs after warm-up / recompiles over the batches | {r['graphs']} / {r['recompiles']} | 1 / 0 |",
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--threads', type=int, default=2, help='torch threads')
    parser.add_argument('--reps', type=int, default=5, help='different batches timed after the warm-up')
    parser.add_argument('--json', help='also write the raw figures to this file')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = measure(args.reps)
    print(report(results))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
