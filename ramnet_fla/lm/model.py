"""The language model of a run: a `RAMNetConfig` from mixer specs, sized to a parameter budget.

A mixer spec on the command line is `NAME`, `NAME:KEY=VALUE,KEY=VALUE` (values read as JSON,
else as text: `ram:use_short_conv=true,topk=16`) or a JSON object (`{"name": "ram", ...}`); a list
of specs shorter than the number of layers repeats, as in `RAMNetConfig`.

Equal parameters: `match_params` picks the GatedMLP's intermediate size of every layer so that
the whole model's count is as close as possible to a target (each unit of intermediate size is
3 * hidden * layers parameters), leaving the mixers exactly as specified.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from ramnet_fla.models import RAMNetConfig, RAMNetForCausalLM


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_mixer_spec(text: str) -> dict:
    """'ram' -> {'name': 'ram'}; 'ram:topk=16,use_short_conv=true' -> {'name': 'ram', 'topk': 16, ...}."""
    text = text.strip()
    if text.startswith('{'):
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"`--mixers`: {text!r} is not valid JSON ({error})") from None
        if not isinstance(spec, dict) or not isinstance(spec.get('name'), str):
            raise ValueError(f"`--mixers`: a JSON mixer spec needs a string 'name', got {text!r}")
        return spec
    name, _, options = text.partition(':')
    if not name:
        raise ValueError(f"`--mixers`: a mixer spec needs a name (NAME or NAME:KEY=VALUE,...), got {text!r}")
    spec = {'name': name}
    for item in filter(None, options.split(',')):
        key, equals, value = item.partition('=')
        if not equals or not key:
            raise ValueError(f"`--mixers`: expected KEY=VALUE in {text!r}, got {item!r}")
        spec[key.strip()] = parse_value(value.strip())
    return spec


def spec_label(spec: dict) -> str:
    """The spec written back in NAME:KEY=VALUE form."""
    options = ','.join(f"{k}={json.dumps(v)}" for k, v in spec.items() if k != 'name')
    return spec['name'] + (':' + options if options else '')


def check_mixers(specs: Sequence[dict]) -> None:
    """Every spec names a registered mixer and its factory accepts the options (ValueError otherwise)."""
    from ramnet_fla.plugin import build_mixer, get_mixer
    for spec in specs:
        get_mixer(spec['name'])
        with torch.device('meta'):
            build_mixer(dict(spec), hidden_size=64, layer_idx=0)


def build_config(mixers: Sequence[dict], vocab_size: int, hidden_size: int, num_layers: int,
                 intermediate_size: int | None = None, max_position_embeddings: int = 2048) -> RAMNetConfig:
    """The run's RAMNetConfig (fla's fused losses off: the training loop computes its own loss)."""
    return RAMNetConfig(mixers=[dict(s) for s in mixers], vocab_size=vocab_size, hidden_size=hidden_size,
                        num_hidden_layers=num_layers, intermediate_size=intermediate_size,
                        max_position_embeddings=max_position_embeddings, fuse_cross_entropy=False,
                        use_cache=False, tie_word_embeddings=False)


def count_params(config: RAMNetConfig) -> dict:
    """{'total', 'embedding', 'non_embedding'} parameters of the model `config` builds (on meta)."""
    with torch.device('meta'):
        model = RAMNetForCausalLM(config)
    total = sum(p.numel() for p in model.parameters())
    embedding = model.model.embeddings.weight.numel() + model.lm_head.weight.numel()
    return {'total': total, 'embedding': embedding, 'non_embedding': total - embedding}


def match_params(config: RAMNetConfig, target: int) -> RAMNetConfig:
    """A copy of `config` whose MLP intermediate size brings the total count closest to `target`."""
    probe = [RAMNetConfig.from_dict({**config.to_dict(), 'intermediate_size': size}) for size in (64, 128)]
    low, high = (count_params(c)['total'] for c in probe)
    per_unit = (high - low) / 64
    size = max(1, round(64 + (target - low) / per_unit))
    return RAMNetConfig.from_dict({**config.to_dict(), 'intermediate_size': int(size)})


def build_model(config: RAMNetConfig, seed: int, device: torch.device) -> RAMNetForCausalLM:
    """The model with seeded initial weights (the same on every rank), on `device`, in float32."""
    torch.manual_seed(seed)
    return RAMNetForCausalLM(config).to(device=device, dtype=torch.float32)
