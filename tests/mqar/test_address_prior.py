"""The address prior: tied read/write projections and a one-token write delay line up recall addresses at init."""

import pytest
import torch

from ramnet_fla.layers.ram import RAMAttention
from ramnet_fla.mqar.address_prior import apply_address_prior
from ramnet_fla.ops.ram import ram_address


def _address_logits(layer: RAMAttention, x: torch.Tensor):
    """Read and write logits [B, T, H, U*d_p] as the layer computes them (short convs, temperatures)."""
    q, _ = layer.q_conv1d(layer.q_proj(x))
    k, _ = layer.k_conv1d(layer.k_proj(x))
    B, T, H = x.shape[0], x.shape[1], layer.num_heads
    q = q.view(B, T, H, -1) * torch.exp(-layer.read_log_temperature)[:, None]
    k = k.view(B, T, H, -1) * torch.exp(-layer.write_log_temperature)[:, None]
    return q, k


def test_prior_makes_a_query_read_where_its_key_wrote():
    torch.manual_seed(0)
    layer = apply_address_prior(RAMAttention(hidden_size=32, num_heads=2, num_factors=5, factor_dim=4, topk=8,
                                             cape_heads=0, use_short_conv=True, layer_idx=0))
    assert layer.k_proj is layer.q_proj
    x = torch.randn(3, 12, 32)
    x[:, 9] = x[:, 4]                       # token 9 repeats token 4: the "key" comes back as a query
    q, k = _address_logits(layer, x)
    read_index, _ = ram_address(q, 5, 8)
    write_index, _ = ram_address(k, 5, 8)
    # token 5 (the value after the key at 4) wrote exactly the K slots the query at 9 reads
    assert torch.equal(read_index[:, 9], write_index[:, 5])
    # and in general the write address of t+1 is the read address of t
    assert torch.allclose(k[:, 1:], q[:, :-1])


def test_without_prior_the_addresses_do_not_meet():
    torch.manual_seed(0)
    layer = RAMAttention(hidden_size=32, num_heads=2, num_factors=5, factor_dim=4, topk=8, cape_heads=0,
                         use_short_conv=True, layer_idx=0)
    x = torch.randn(3, 12, 32)
    x[:, 9] = x[:, 4]
    q, k = _address_logits(layer, x)
    read_index, _ = ram_address(q, 5, 8)
    write_index, _ = ram_address(k, 5, 8)
    overlap = (read_index[:, 9, :, :, None] == write_index[:, 5, :, None, :]).sum().item()
    assert overlap < 8, "independent projections meet in about K*K/M = 1/16 slots per head"


def test_the_prior_can_be_applied_in_parts_and_trains():
    torch.manual_seed(0)
    tied = apply_address_prior(RAMAttention(hidden_size=32, num_heads=2, use_short_conv=True), shift=False)
    assert tied.k_proj is tied.q_proj
    assert sum(p.numel() for p in tied.parameters()) < sum(
        p.numel() for p in RAMAttention(hidden_size=32, num_heads=2, use_short_conv=True).parameters())
    shifted = apply_address_prior(RAMAttention(hidden_size=32, num_heads=2, use_short_conv=True), tie=False)
    assert shifted.k_proj is not shifted.q_proj
    assert shifted.k_conv1d.weight[..., -2].eq(1).all() and shifted.k_conv1d.weight[..., -1].eq(0).all()
    out = tied(torch.randn(2, 8, 32))[0]
    out.sum().backward()
    assert tied.q_proj.weight.grad is not None and tied.q_proj.weight.grad.abs().sum() > 0


def test_bad_mixers_are_rejected():
    with pytest.raises(ValueError, match='use_short_conv'):
        apply_address_prior(RAMAttention(hidden_size=32, num_heads=2, use_short_conv=False))
    with pytest.raises(TypeError, match='q_proj'):
        apply_address_prior(torch.nn.Linear(3, 3))


def test_factory_wraps_registered_mixers_and_keeps_their_state_accounting():
    from ramnet_fla.mqar.address_prior import mixer_with_address_prior
    from ramnet_fla.mqar.train import mixer_state_size

    for name in ('ram', 'gla', 'deltanet'):
        factory = mixer_with_address_prior({'name': name, 'num_heads': 2, 'use_short_conv': True})
        mixer = factory(64, 0)
        if name == 'ram':                   # the layer's own options: one projection, no k_proj
            assert mixer.tie_address_projections and mixer.address_conv_init == 'shift'
            assert not hasattr(mixer, 'k_proj')
        else:
            assert mixer.k_proj is mixer.q_proj
        assert factory.__name__ == f"{name}+prior"
        assert factory.spec['address_prior'] == {'tie': True, 'shift': True}
        size = mixer_state_size(factory, mixer, 64, 64)
        assert size is not None and size['total'] > 0
        assert mixer(torch.randn(2, 8, 64))[0].shape == (2, 8, 64)


def test_prior_lets_ram_with_1024_slots_learn_recall_fast():
    """1-layer RAM, M = 4**5 = 1,024, K=8 on an easy MQAR: with the prior it learns in tens of steps,
    without it the addresses of a key's write and its query's read rarely meet and it stalls."""
    from ramnet_fla.mqar.address_prior import mixer_with_address_prior
    from ramnet_fla.mqar.data import MQARTask
    from ramnet_fla.mqar.train import MQARRun, train_mqar

    spec = {'name': 'ram', 'num_heads': 2, 'use_short_conv': True, 'num_factors': 5, 'factor_dim': 4, 'topk': 8}
    settings = dict(d_model=32, num_layers=1, task=MQARTask(vocab_size=64, seq_len=16, num_kv_pairs=2), lr=3e-3,
                    batch_size=32, num_test=256, eval_every=25, target_accuracy=0.95)
    with_prior = train_mqar(MQARRun(mixer=mixer_with_address_prior(spec), steps=150, **settings), 'cpu', progress=False)
    assert with_prior['accuracy'] >= 0.95 and with_prior['steps'] <= 150, with_prior['curve']
    plain = train_mqar(MQARRun(mixer=spec, steps=100, **settings), 'cpu', progress=False)
    assert plain['best_accuracy'] < 0.3, plain['curve']
