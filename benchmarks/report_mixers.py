"""Issue 4's CPU targets for the mixers and models, as ratios measured in one process.

    python benchmarks/report_mixers.py [--threads N] [--reps R]

1. One mixer's forward+backward at hidden 256, B=8, T=256, 4 heads: `ram` against `gla`'s CPU path
   (and the other built-ins for context). Target: ram <= 1.0x gla.
2. Decoding one token with a 4-layer model (hidden 256) after a prefill of 256 .. 8,192 tokens: `ram`
   against `attention`. Target: ram's time per token grows <= 1.2x from 256 to 8,192; attention's
   grows with the context.
Each figure is the median of `--reps` runs; the runs of the compared mixers are interleaved so that
a load change on a shared machine hits both.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

HIDDEN, BATCH, SEQ_LEN, HEADS = 256, 8, 256, 4
CONTEXTS = (256, 1024, 4096, 8192)
MIXER_SPECS = {
    'ram': {'name': 'ram', 'num_heads': HEADS},                  # defaults: short convolutions on
    'ram-noconv': {'name': 'ram', 'num_heads': HEADS, 'use_short_conv': False},
    'gla': {'name': 'gla', 'num_heads': HEADS},                  # fla's defaults: short convolutions off
    'gla-conv': {'name': 'gla', 'num_heads': HEADS, 'use_short_conv': True},
    'deltanet': {'name': 'deltanet', 'num_heads': HEADS},
    'gated_deltanet': {'name': 'gated_deltanet', 'num_heads': HEADS, 'head_dim': HIDDEN // HEADS},
    'attention': {'name': 'attention', 'num_heads': HEADS},
}


def mixer_train_step(name: str):
    """A closure running one forward+backward of mixer `name` on [B, T, hidden] inputs."""
    from ramnet_fla.plugin import build_mixer
    torch.manual_seed(0)
    mixer = build_mixer(MIXER_SPECS[name], hidden_size=HIDDEN, layer_idx=0)
    x = torch.randn(BATCH, SEQ_LEN, HIDDEN, requires_grad=True)

    def step():
        mixer.zero_grad(set_to_none=True)
        mixer(x)[0].sum().backward()
    return step


def decode_step(name: str, context: int):
    """A closure decoding one token with a 4-layer model of mixer `name` after `context` tokens."""
    from ramnet_fla import RAMNetConfig, RAMNetForCausalLM
    torch.manual_seed(0)
    config = RAMNetConfig(vocab_size=256, hidden_size=HIDDEN, num_hidden_layers=4, mixers=[MIXER_SPECS[name]])
    model = RAMNetForCausalLM(config).eval()
    prompt = torch.randint(0, 256, (1, context))
    with torch.no_grad():
        cache = model(prompt, use_cache=True).past_key_values
    token = torch.randint(0, 256, (1, 1))

    @torch.no_grad()
    def step():
        model(token, past_key_values=cache, use_cache=True)
    return step


def median_seconds(steps: dict, reps: int) -> dict:
    """Median wall time of each closure, runs interleaved across closures, after one warm-up each."""
    for step in steps.values():
        step()
    times = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--reps', type=int, default=7)
    parser.add_argument('--mixers', nargs='*', default=list(MIXER_SPECS))
    args = parser.parse_args()
    warnings.filterwarnings('ignore')
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.reps}\n")

    train = median_seconds({name: mixer_train_step(name) for name in args.mixers}, args.reps)
    print(f"Mixer forward+backward, hidden {HIDDEN}, B={BATCH}, T={SEQ_LEN}, {HEADS} heads\n")
    print("| mixer | seconds | ratio to gla |\n|---|---|---|")
    for name, seconds in train.items():
        print(f"| {name} | {seconds:.3f} | {seconds / train['gla']:.2f} |" if 'gla' in train else f"| {name} | {seconds:.3f} | - |")

    print(f"\nOne decoding step, 4-layer model, hidden {HIDDEN}, batch 1\n")
    print("| context | ram ms | attention ms |\n|---|---|---|")
    decode = {}
    for context in CONTEXTS:
        decode[context] = median_seconds({name: decode_step(name, context) for name in ('ram', 'attention')},
                                         args.reps * 3)
        print(f"| {context} | {decode[context]['ram'] * 1e3:.2f} | {decode[context]['attention'] * 1e3:.2f} |")
    first, last = CONTEXTS[0], CONTEXTS[-1]
    for name in ('ram', 'attention'):
        print(f"{name}: growth {first} -> {last} tokens: {decode[last][name] / decode[first][name]:.2f}x")


if __name__ == '__main__':
    main()
