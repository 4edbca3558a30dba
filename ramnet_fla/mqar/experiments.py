"""The MQAR experiments behind `ramnet-fla mqar`: the quick comparison and the full sweep, as run lists.

quick_runs: `ram` (M = 4**5 = 1,024), `gla` and `deltanet` at the same width (64), 2 layers, on 16
key/value pairs at T=64, the same data, steps and learning rate. 16 pairs at T=64 is where a
fixed-size state starts to fail (SPEC section 3). Every mixer gets the same address prior
(`ramnet_fla.mqar.address_prior`) unless `prior=False`.
full_runs: the sweep behind a Zoology Figure-3-style plot (sequence lengths 64..1024, up to T/4
pairs, widths 64..256, RAM's M from 4**3 to 4**8 at a fixed parameter count).
"""

from __future__ import annotations

from ramnet_fla.mqar.address_prior import address_prior_problem, mixer_with_address_prior
from ramnet_fla.mqar.data import MQARTask
from ramnet_fla.mqar.train import MQARRun

QUICK_TASK = MQARTask(vocab_size=1024, seq_len=64, num_kv_pairs=16)
QUICK_MIXERS = ('ram', 'gla', 'deltanet')
QUICK_WIDTH = 64
FULL_LEARNING_RATES = (3e-4, 1e-3, 3e-3)
# (num_factors U, factor_dim d_p) giving M = 4**3 .. 4**8 slots from the same 24 logits per head
# where possible: U*d_p = 24 for U in (3, 4, 6, 8) (M = 512, 1296, 4096, 6561); M = 64 (U=3, d_p=4) and
# M = 65536 (U=8, d_p=4) for the ends of the range at 12 and 32 logits.
FULL_RAM_ADDRESSES = ((3, 4), (3, 8), (4, 6), (6, 4), (8, 3), (8, 4))


def mixer_spec(name: str, num_heads: int = 2, **kwargs) -> dict:
    """The spec of a built-in mixer for MQAR: `num_heads` heads and short convolutions on."""
    return {'name': name, 'num_heads': num_heads, 'use_short_conv': True, **kwargs}


def ram_spec(num_factors: int = 3, factor_dim: int = 4, topk: int = 8, **kwargs) -> dict:
    return mixer_spec('ram', num_factors=num_factors, factor_dim=factor_dim, topk=topk, **kwargs)


def quick_spec(name: str) -> dict:
    """The spec the quick comparison gives mixer `name` (a registered name)."""
    specs = {'ram': ram_spec(num_factors=5), 'gla': mixer_spec('gla'), 'deltanet': mixer_spec('deltanet'),
             # fla's defaults (head_dim 256, values twice as wide) would give it 16x DeltaNet's state here
             'gated_deltanet': mixer_spec('gated_deltanet', head_dim=32, expand_v=1)}
    return specs.get(name, {'name': name})


def quick_without_prior(mixers=QUICK_MIXERS) -> dict[str, str]:
    """The mixers of the quick comparison that cannot take the address prior, with the reason."""
    problems = {name: address_prior_problem(quick_spec(name), QUICK_WIDTH) for name in dict.fromkeys(mixers)}
    return {name: problem for name, problem in problems.items() if problem is not None}


def quick_runs(seed: int, steps: int, lr: float, mixers=QUICK_MIXERS, num_test: int = 1000,
               prior: bool = True) -> list[MQARRun]:
    """Same task, width, data, steps and lr for every mixer; RAM at its default M = 4**5 = 1,024.

    prior: give every mixer the same address prior (`ramnet_fla.mqar.address_prior`: tied q/k
    projections, write logits delayed by one token at init); without it RAM at M=1,024 stalls.
    Mixers it cannot apply to (`quick_without_prior`, e.g. softmax attention: no short
    convolutions) train without it, labelled without '+prior'.
    """
    lacking = quick_without_prior(mixers) if prior else {}
    runs = []
    for name in mixers:
        spec = quick_spec(name)
        with_prior = prior and name not in lacking
        mixer = mixer_with_address_prior(spec) if with_prior else spec
        runs.append(MQARRun(mixer=mixer, label=name + ('+prior' if with_prior else ''), d_model=QUICK_WIDTH,
                            task=QUICK_TASK, lr=lr, steps=steps, batch_size=64, eval_every=50, num_test=num_test,
                            seed=seed))
    return runs


def full_runs(seed: int, steps: int, prior: bool = True) -> list[MQARRun]:
    """The Figure-3-style sweep: every (T, pairs, width) for GLA, DeltaNet and RAM at each M."""
    runs = []
    for seq_len in (64, 128, 256, 512, 1024):
        for pairs in sorted({max(4, seq_len // 16), seq_len // 8, seq_len // 4}):
            task = MQARTask(vocab_size=8192, seq_len=seq_len, num_kv_pairs=pairs)
            for width in (64, 128, 256):
                heads = max(2, width // 32)
                specs = [('gla', mixer_spec('gla', heads)), ('deltanet', mixer_spec('deltanet', heads))]
                specs += [(f"ram-M{d ** u}", ram_spec(u, d, num_heads=heads)) for u, d in FULL_RAM_ADDRESSES]
                for label, spec in specs:
                    mixer = mixer_with_address_prior(spec) if prior else spec
                    runs.append(MQARRun(mixer=mixer, label=label + ('+prior' if prior else ''), d_model=width,
                                        task=task, steps=steps, batch_size=64, eval_every=250, num_test=1000,
                                        seed=seed))
    return runs
