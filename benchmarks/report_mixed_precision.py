"""Issue 14's mixed-precision target: do bf16 runs pick the slots fp32 picks, on a trained checkpoint?

    python benchmarks/report_mixed_precision.py [--steps 300] [--save DIR | --load DIR] [--threads N]

Trains (or loads) a tiny RAMNetForCausalLM (2 RAM layers, hidden 64, 4 heads, M = 4**5, K = 8) on
sequences from a fixed sparse random Markov chain, then, on a held-out batch (B=8, T=128), compares
with the float32 run of the same weights:
- slots: the fraction of (token, head) addresses whose K read (write) slots are the same set, per layer;
- gradients: per parameter, |g_bf16 - g_fp32| / |g_fp32| (Frobenius norms) of the cross-entropy loss;
  the median and the maximum over parameters;
- logits: |logits_bf16 - logits_fp32| / |logits_fp32|.
for bf16 autocast and for `model.to(torch.bfloat16)`, each with `float32_address_projections` on
(the default) and off (the logits rounded to bf16, as before the option existed). The script also
runs on code without the option (it then measures that code as it is), for a before/after on the
same saved checkpoint. CPU, float32 master weights, one seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics

import torch
import torch.nn.functional as F

VOCAB, HIDDEN, LAYERS, SEQ_LEN, BATCH = 128, 64, 2, 128, 8
RAM = {'name': 'ram', 'num_heads': 4, 'head_dim': 16, 'num_factors': 5, 'factor_dim': 4, 'topk': 8,
       'use_short_conv': True}


def markov_batch(generator: torch.Generator, transitions: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
    """[batch, seq_len] token ids from the chain `transitions` [VOCAB, VOCAB] (rows sum to 1)."""
    ids = torch.empty(batch, seq_len, dtype=torch.long)
    ids[:, 0] = torch.randint(0, VOCAB, (batch,), generator=generator)
    for t in range(1, seq_len):
        ids[:, t] = torch.multinomial(transitions[ids[:, t - 1]], 1, generator=generator)[:, 0]
    return ids


def chain(seed: int = 0) -> torch.Tensor:
    """A sparse random Markov chain: each token is followed by one of 4 tokens, unevenly weighted."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.full((VOCAB, VOCAB), -1e9)
    nexts = torch.stack([torch.randperm(VOCAB, generator=generator)[:4] for _ in range(VOCAB)])
    logits.scatter_(1, nexts, torch.randn(VOCAB, 4, generator=generator) * 2)
    return logits.softmax(-1)


def build_model():
    from ramnet_fla import RAMNetConfig, RAMNetForCausalLM
    config = RAMNetConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, hidden_ratio=2,
                          mixers=[RAM], pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return RAMNetForCausalLM(config)


def loss_of(model, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits
    return F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())


def train(steps: int, lr: float = 3e-3):
    torch.manual_seed(0)
    model = build_model().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator, transitions = torch.Generator().manual_seed(1), chain()
    for step in range(steps):
        loss = loss_of(model, markov_batch(generator, transitions, 8, 64))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    return model.eval()


class AddressRecorder:
    """Records the read/write slot indices of every chunk_ram call of the RAM layers, in call order."""

    def __init__(self):
        import ramnet_fla.layers.ram as ram_layer
        self.module, self.calls = ram_layer, []
        self.chunk_ram = ram_layer.chunk_ram

    def __enter__(self):
        from ramnet_fla.ops.ram import ram_address

        def spy(q, k, v, gamma, num_factors, topk, **kwargs):
            self.calls.append((ram_address(q.detach().float(), num_factors, topk)[0],
                               ram_address(k.detach().float(), num_factors, topk)[0]))
            return self.chunk_ram(q, k, v, gamma, num_factors=num_factors, topk=topk, **kwargs)
        self.module.chunk_ram = spy
        return self

    def __exit__(self, *exc):
        self.module.chunk_ram = self.chunk_ram


def run(model, ids, autocast: bool):
    """(logits, {param name: grad}, [(read slots, write slots) per layer])."""
    model.zero_grad(set_to_none=True)
    with AddressRecorder() as recorder, torch.autocast('cpu', torch.bfloat16, enabled=autocast):
        logits = model(input_ids=ids).logits
    loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    grads = {name: p.grad.detach().float().clone() for name, p in model.named_parameters() if p.grad is not None}
    return logits.detach().float(), grads, recorder.calls


def same_slots(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.sort(-1).values == b.sort(-1).values).all(-1).float().mean().item()


def compare(reference, other) -> dict:
    (logits32, grads32, slots32), (logits, grads, slots) = reference, other
    relative = {name: ((grads[name] - g).norm() / g.norm()).item() for name, g in grads32.items() if g.norm() > 0}
    worst = max(relative, key=relative.get)
    return {
        'read_slots_same': [round(same_slots(a[0], b[0]), 5) for a, b in zip(slots32, slots)],
        'write_slots_same': [round(same_slots(a[1], b[1]), 5) for a, b in zip(slots32, slots)],
        'grad_rel_median': round(statistics.median(relative.values()), 5),
        'grad_rel_max': round(relative[worst], 5), 'grad_rel_max_param': worst,
        'logits_rel': round(((logits - logits32).norm() / logits32.norm()).item(), 6),
    }


def set_option(model, on: bool) -> bool:
    """Turn float32_address_projections on/off in every RAM layer; False when the code has no such option."""
    from ramnet_fla.layers import RAMAttention
    layers = [m for m in model.modules() if isinstance(m, RAMAttention)]
    if not all(hasattr(m, 'float32_address_projections') for m in layers):
        return False
    for m in layers:
        m.float32_address_projections = on
    return True


def measure(model) -> dict:
    ids = markov_batch(torch.Generator().manual_seed(123), chain(), BATCH, SEQ_LEN)
    results = {}
    has_option = set_option(model, True)
    for label, on in (('float32_address_projections=True', True), ('float32_address_projections=False', False)):
        if has_option:
            set_option(model, on)
        elif on is False:
            continue
        else:
            label = 'code without the option'
        reference = run(model, ids, autocast=False)
        results[f'autocast bf16, {label}'] = compare(reference, run(model, ids, autocast=True))
        cast = copy.deepcopy(model).to(torch.bfloat16)           # the option decides what stays float32
        results[f'model.to(bfloat16), {label}'] = compare(reference, run(cast, ids, autocast=False))
    set_option(model, True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--save', help='save the trained checkpoint here')
    parser.add_argument('--load', help='measure this saved checkpoint instead of training one')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import ramnet_fla  # noqa: F401  (registers model type ramnet)
    if args.load:
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained(args.load).eval()
    else:
        model = train(args.steps)
        if args.save:
            model.save_pretrained(args.save)
    results = measure(model)
    for label, numbers in results.items():
        print(f"{label}: {json.dumps(numbers)}")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)


if __name__ == '__main__':
    main()
