"""RAMNetForCausalLM (a ram + gla hybrid) under torch.compile: the forward without cache (training)
compiles as one graph, loss and gradients match eager, and new batches of the same shape never
recompile."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from ramnet_fla.models.ramnet import RAMNetConfig, RAMNetForCausalLM


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def test_ram_gla_model_forward_compiles_fullgraph_without_recompiles():
    torch.manual_seed(0)
    config = RAMNetConfig(mixers=[{'name': 'ram', 'num_heads': 2, 'num_factors': 3, 'factor_dim': 4, 'topk': 4},
                                  {'name': 'gla', 'num_heads': 2}],
                          vocab_size=64, hidden_size=32, num_hidden_layers=2)
    model = RAMNetForCausalLM(config)
    compiled = torch.compile(model, fullgraph=True, backend='aot_eager')
    for seed in range(5):
        ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(seed))
        losses, grads = [], []
        for run in (compiled, model):
            model.zero_grad()
            with torch._dynamo.config.patch(error_on_recompile=seed > 0):
                loss = run(input_ids=ids, labels=ids, use_cache=False).loss
            loss.backward()
            losses.append(loss.detach())
            grads.append([p.grad.clone() for p in model.parameters()])
        torch.testing.assert_close(losses[0], losses[1])
        for got, want in zip(*grads):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1
