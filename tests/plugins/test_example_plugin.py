"""The example third-party plugin (plugins/ramnet-fla-example) installed for real with pip into a
temporary directory (offline, no dependencies), found through its `ramnet_fla` entry point, and
used in a model."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fla.models.utils import Cache

from ramnet_fla.plugin import build_mixer, create_plugin_manager, use_plugin_manager

EXAMPLE = Path(__file__).resolve().parents[2] / 'plugins' / 'ramnet-fla-example'


@pytest.fixture(scope='module')
def example_manager(tmp_path_factory):
    """A plugin manager that loaded entry points with ramnet-fla-example installed."""
    root = tmp_path_factory.mktemp('example-plugin')
    source, target = root / 'source', root / 'site-packages'
    shutil.copytree(EXAMPLE, source)                          # keep build files out of the repository
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
                    '--quiet', '--disable-pip-version-check', '--target', str(target), str(source)],
                   check=True, capture_output=True, timeout=240)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        manager = create_plugin_manager(entry_points=True)
        with use_plugin_manager(manager):
            yield manager
    finally:
        sys.path.remove(str(target))
        for name in [m for m in sys.modules if m.startswith('ramnet_fla_example')]:
            del sys.modules[name]
        importlib.invalidate_caches()


def test_installed_plugin_is_found_through_its_entry_point(example_manager):
    info = example_manager.mixers()['causal_conv']
    assert info.plugin == 'example'
    assert 'example third-party plugin' in info.description
    assert 'ramnet-fla-example 0.1.0' in example_manager.sources['example']
    assert {'ram', 'gla', 'deltanet', 'gated_deltanet', 'attention'} <= set(example_manager.mixers())
    assert 'example' not in example_manager.failures


def test_example_mixer_keeps_fla_layer_contract(example_manager):
    torch.manual_seed(0)
    mixer = build_mixer({'name': 'causal_conv', 'kernel_size': 3}, hidden_size=16, layer_idx=0)
    x = torch.randn(2, 10, 16)
    with torch.no_grad():
        full, _, _ = mixer(x)
        cache = Cache()
        steps = [mixer(x[:, :4], past_key_values=cache, use_cache=True)[0]]
        steps += [mixer(x[:, t:t + 1], past_key_values=cache, use_cache=True)[0] for t in range(4, 10)]
        packed, _, _ = mixer(x.reshape(1, 20, 16), cu_seqlens=torch.tensor([0, 10, 20]))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.reshape(2, 10, 16), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(TypeError, match=r"unexpected argument\(s\) \['kernel'\]; it accepts: kernel_size"):
        build_mixer({'name': 'causal_conv', 'kernel': 3}, hidden_size=16, layer_idx=0)


def test_model_built_with_the_plugin_mixer(example_manager):
    from ramnet_fla import RAMNetConfig, RAMNetForCausalLM, state_size

    config = RAMNetConfig(mixers=[{'name': 'causal_conv', 'kernel_size': 3},
                                  {'name': 'ram', 'num_heads': 2, 'num_factors': 2, 'factor_dim': 4, 'topk': 2}],
                          vocab_size=50, hidden_size=16, num_hidden_layers=2, hidden_ratio=2)
    torch.manual_seed(0)
    model = RAMNetForCausalLM(config)
    assert type(model.model.layers[0].attn).__name__ == 'CausalConvMixer'
    input_ids = torch.randint(0, 50, (2, 9))
    output = model(input_ids=input_ids, labels=input_ids)
    output.loss.backward()
    assert torch.isfinite(output.loss)
    assert model.model.layers[0].attn.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model.generate(input_ids, max_new_tokens=4, do_sample=False, use_cache=True, output_scores=True,
                             return_dict_in_generate=True)
        # greedy decoding with the cache scores what a full forward over the same tokens scores
        # (compared as logits: a tiny random model has near-ties that argmax would break either way)
        logits = model(input_ids=out.sequences[:, :-1]).logits
    torch.testing.assert_close(torch.stack(out.scores, 1), logits[:, input_ids.shape[1] - 1:], rtol=1e-5, atol=1e-5)
    sizes = state_size(config, seq_len=100)
    # causal_conv keeps (W-1) * D = 2 * 16; RAM keeps H*M*(V+1) = 2*16*9 and touches 2*K*H*V = 2*2*2*8
    assert [(layer['mixer'], layer['total'], layer['active']) for layer in sizes['layers']] == \
        [('causal_conv', 32, 32), ('ram', 288, 64)]
    assert (sizes['total'], sizes['active']) == (320, 96)


def test_cli_lists_the_installed_plugin(example_manager, capsys):
    from ramnet_fla.cli import main

    assert main(['mixers']) == 0
    rows = [line.split(maxsplit=2) for line in capsys.readouterr().out.splitlines()[1:] if line.strip()]
    assert ['causal_conv', 'example', 'gated causal depthwise convolution (example third-party plugin)'] in rows
