"""RAMAttention under torch.compile: fullgraph forward and backward match eager, batches of the
same shape (and, marked dynamic, other sequence lengths) never recompile, a padding mask fails
naming `attention_mask`."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from ramnet_fla.layers import RAMAttention


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield
    torch._dynamo.reset()


def make_layer(**kwargs) -> RAMAttention:
    torch.manual_seed(0)
    return RAMAttention(hidden_size=32, num_heads=2, head_dim=8, num_factors=3, factor_dim=4, topk=4, **kwargs)


def forward_backward(layer, x, dynamic_seq_len: bool = False):
    """(o, grads of x and of every parameter) for the loss sum(o * w) with a fixed w."""
    layer.zero_grad()
    x = x.detach().clone().requires_grad_()
    if dynamic_seq_len:
        torch._dynamo.mark_dynamic(x, 1)
    o = layer(x)[0]
    weight = torch.linspace(-1, 1, o.numel()).view_as(o)
    (o * weight).sum().backward()
    return o.detach(), [x.grad] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize('backend', ['aot_eager', pytest.param('inductor', marks=pytest.mark.slow)])
def test_fullgraph_matches_eager_without_recompiles(backend):
    layer = make_layer(use_short_conv=True)
    compiled = torch.compile(layer, fullgraph=True, backend=backend)
    for seed in range(5):
        x = torch.randn(2, 16, 32, generator=torch.Generator().manual_seed(seed))
        with torch._dynamo.config.patch(error_on_recompile=seed > 0):
            got, got_grads = forward_backward(compiled, x)
        want, want_grads = forward_backward(layer, x)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


def test_dynamic_sequence_length_compiles_once():
    layer = make_layer()
    compiled = torch.compile(layer, fullgraph=True, backend='aot_eager')
    for step, seq_len in enumerate((9, 16, 23, 40)):
        x = torch.randn(2, seq_len, 32)
        with torch._dynamo.config.patch(error_on_recompile=step > 0):
            got, _ = forward_backward(compiled, x, dynamic_seq_len=True)
        torch.testing.assert_close(got, layer(x)[0].detach(), rtol=1e-4, atol=1e-5)
    assert torch._dynamo.utils.counters['stats']['unique_graphs'] == 1


@pytest.mark.parametrize('fullgraph', [True, False], ids=['fullgraph', 'graph-breaks'])
def test_padding_mask_under_compile_names_the_option(fullgraph):
    layer = make_layer()
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, :3] = 0
    compiled = torch.compile(layer, fullgraph=fullgraph, backend='aot_eager')
    with pytest.raises(Exception, match='attention_mask.*not supported under torch.compile'):
        compiled(torch.randn(2, 8, 32), attention_mask=mask)
