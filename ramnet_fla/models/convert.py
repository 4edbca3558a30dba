"""Mix RAM (or any registered mixer) into an existing fla causal LM.

`convert_fla_model(model, mixers, layers)` builds a RAMNetForCausalLM with the same sizes as an fla
model (GLAForCausalLM, DeltaNetForCausalLM, GatedDeltaNetForCausalLM, ...), gives the chosen layers
new mixers, lets the other layers keep their fla mixer as the matching built-in mixer ('gla',
'deltanet', 'gated_deltanet'), and copies every weight that can be kept: embeddings, norms, MLPs,
the LM head and the kept mixers. The new mixers start from the model's usual initialisation.
Every option of fla 0.6's GLA, DeltaNet and Gated DeltaNet configs is mapped or rejected by name
(`option_handling` lists how), so a conversion never silently computes something else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch.nn as nn
from transformers import PretrainedConfig

from ramnet_fla.models.ramnet import RAMNetConfig, RAMNetForCausalLM
from ramnet_fla.plugin import normalize_spec
from ramnet_fla.utils.checks import check_int

# Settings RAMNetConfig shares with fla's model configs (name -> default when the source lacks it).
SHARED_CONFIG_FIELDS = {
    'vocab_size': None, 'hidden_size': None, 'num_hidden_layers': None, 'hidden_ratio': 4,
    'intermediate_size': None, 'hidden_act': 'swish', 'max_position_embeddings': 2048, 'norm_eps': 1e-6,
    'use_cache': True, 'pad_token_id': None,
    'bos_token_id': 1, 'eos_token_id': 2, 'tie_word_embeddings': False, 'initializer_range': 0.02,
    'fuse_norm': True, 'fuse_swiglu': True, 'fuse_cross_entropy': True,
    'fuse_linear_cross_entropy': False, 'use_l2warp': False,
}


# Per fla model type: config option -> argument of the built-in mixer that rebuilds its native mixer
# with the same weights (the arguments fla's own block passes to its layer).
MIXER_OPTIONS = {
    'gla': {'attn_mode': 'mode', 'expand_k': 'expand_k', 'expand_v': 'expand_v', 'num_heads': 'num_heads',
            'num_kv_heads': 'num_kv_heads', 'feature_map': 'feature_map', 'use_short_conv': 'use_short_conv',
            'conv_size': 'conv_size', 'use_output_gate': 'use_output_gate', 'hidden_act': 'gate_fn',
            'elementwise_affine': 'elementwise_affine', 'norm_eps': 'norm_eps', 'clamp_min': 'clamp_min',
            'fuse_norm': 'fuse_norm'},
    'delta_net': {'attn_mode': 'mode', 'expand_k': 'expand_k', 'expand_v': 'expand_v', 'num_heads': 'num_heads',
                  'use_gate': 'use_gate', 'use_beta': 'use_beta', 'use_short_conv': 'use_short_conv',
                  'allow_neg_eigval': 'allow_neg_eigval', 'conv_size': 'conv_size', 'qk_norm': 'qk_norm',
                  'qk_activation': 'qk_activation', 'norm_eps': 'norm_eps'},
    'gated_deltanet': {'expand_v': 'expand_v', 'head_dim': 'head_dim', 'num_heads': 'num_heads',
                       'num_v_heads': 'num_v_heads', 'attn_mode': 'mode', 'use_gate': 'use_gate',
                       'use_short_conv': 'use_short_conv', 'allow_neg_eigval': 'allow_neg_eigval',
                       'conv_size': 'conv_size', 'norm_eps': 'norm_eps',
                       'output_gate_activation': 'output_gate_activation'},
}
# fla model type -> the built-in mixer that rebuilds its native mixer.
KEEPABLE_MIXERS = {'gla': 'gla', 'delta_net': 'deltanet', 'gated_deltanet': 'gated_deltanet'}
# Options fla 0.6's own models never act on, so dropping them changes nothing: GLAConfig's `use_gk` and
# `use_gv` are not passed to the layer; DeltaNet's layer swallows `use_output_norm` in **kwargs (its
# output norm is always there).
IGNORED_BY_FLA = {'gla': {'use_gk', 'use_gv'}, 'delta_net': {'use_output_norm'}, 'gated_deltanet': set()}
# Options with no RAMNet counterpart: converted only at this value. `attn` (fla's softmax-attention
# layers) is checked per layer: such layers must be listed in `layers`.
REJECTED_UNLESS = {'attnres_block_size': None}
PER_LAYER_OPTIONS = {'attn'}
# Settings of every transformers config (PretrainedConfig's own, plus what older saves carry).
TRANSFORMERS_OPTIONS = {'transformers_version', 'architectures', 'output_hidden_states', 'return_dict', 'dtype',
                        'torch_dtype', 'chunk_size_feed_forward', 'is_encoder_decoder', 'id2label', 'label2id',
                        'problem_type', '_name_or_path', 'model_type', 'output_attentions', 'auto_map',
                        'sep_token_id', 'decoder_start_token_id', 'tokenizer_class', 'prefix', 'task_specific_params'}


def option_handling(model_type: str) -> dict[str, str]:
    """How `convert_fla_model` treats each option of an fla config of `model_type`: option ->
    'model' (RAMNetConfig), 'mixer' (the kept mixers' arguments; some also 'model'), 'ignored by fla',
    'rejected unless default', 'per layer' or 'transformers'. Options outside it are rejected."""
    handling = {name: 'transformers' for name in TRANSFORMERS_OPTIONS | set(PretrainedConfig().to_dict())}
    handling.update({name: 'rejected unless default' for name in REJECTED_UNLESS})
    handling.update({name: 'per layer' for name in PER_LAYER_OPTIONS})
    handling.update({name: 'ignored by fla' for name in IGNORED_BY_FLA.get(model_type, ())})
    handling.update({name: 'model' for name in SHARED_CONFIG_FIELDS})
    handling.update({name: 'mixer' for name in MIXER_OPTIONS.get(model_type, {})})
    return handling


def _check_source_options(config) -> None:
    """Every option of a GLA / DeltaNet / Gated DeltaNet config is mapped, or rejected by name."""
    model_type = getattr(config, 'model_type', None)
    for name, allowed in REJECTED_UNLESS.items():
        if getattr(config, name, allowed) != allowed:
            raise ValueError(f"fla option `{name}={getattr(config, name)!r}` has no RAMNet counterpart: "
                             f"only sources with `{name}={allowed!r}` can be converted")
    if model_type not in KEEPABLE_MIXERS:
        return                                  # every layer is replaced: only the shared settings matter
    handling = option_handling(model_type)
    unknown = sorted(name for name in config.to_dict() if name not in handling)
    if unknown:
        raise ValueError(f"fla {model_type!r} config option(s) {unknown} are unknown to convert_fla_model, "
                         "which cannot tell whether the converted model would compute the same")


def _kept_spec(config) -> dict:
    model_type = config.model_type
    spec = {'name': KEEPABLE_MIXERS[model_type]}
    spec.update({argument: getattr(config, option) for option, argument in MIXER_OPTIONS[model_type].items()})
    return spec


def _check_fla_causal_lm(model) -> None:
    base = getattr(model, 'model', None)
    if not isinstance(model, nn.Module) or base is None or not all(
        hasattr(base, name) for name in ('embeddings', 'layers', 'norm')
    ) or not hasattr(model, 'lm_head'):
        raise TypeError(
            "`model` must be a loaded fla causal LM (e.g. fla.models.GLAForCausalLM: `.model.embeddings`, "
            f"`.model.layers`, `.model.norm`, `.lm_head`), got {type(model).__name__}"
        )
    for i, block in enumerate(base.layers):
        missing = [name for name in ('attn_norm', 'attn', 'mlp_norm', 'mlp') if not hasattr(block, name)]
        if missing:
            raise TypeError(f"`model.model.layers[{i}]` is not an fla pre-norm block: it lacks {missing}")


def _resolve_layers(layers, num_layers: int) -> list[int]:
    if layers is None:
        return list(range(num_layers))
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if not isinstance(layers, Sequence) or isinstance(layers, str):
        raise TypeError(f"`layers` must be None, an int or a list of layer indices, got {layers!r}")
    resolved = []
    for i, index in enumerate(layers):
        resolved.append(check_int(f'layers[{i}]', index, minimum=-num_layers, maximum=num_layers - 1) % num_layers)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"`layers` names a layer twice: {list(layers)}")
    return resolved


def _kept_mixer_spec(model, layer_idx: int) -> dict:
    config = model.config
    model_type = getattr(config, 'model_type', None)
    attn_layers = getattr(config, 'attn', None)
    if attn_layers is not None:
        from fla.models.configuration_utils import get_attention_spec
        if get_attention_spec(attn_layers, layer_idx=layer_idx) is not None:
            raise ValueError(
                f"layer {layer_idx} of the source is fla's softmax Attention, which cannot be kept: "
                "list it in `layers` to give it a new mixer"
            )
    if model_type not in KEEPABLE_MIXERS:
        raise ValueError(
            f"the mixers of fla model type {model_type!r} cannot be kept (known: {sorted(KEEPABLE_MIXERS)}); "
            f"list every layer in `layers` (layer {layer_idx} is not) to replace them all"
        )
    return _kept_spec(config)


def convert_fla_model(model, mixers='ram', layers=None) -> RAMNetForCausalLM:
    """A RAMNetForCausalLM built from the fla causal LM `model`, with new mixers in `layers`.

    Args:
        model: a loaded fla causal LM (GLAForCausalLM, DeltaNetForCausalLM, GatedDeltaNetForCausalLM,
            or any fla model with the same block layout when every layer is replaced).
        mixers: the mixer of the replaced layers: a name or {"name": ..., **kwargs} for all of them,
            or a list with one such spec per entry of `layers`. Default: 'ram'.
        layers: indices of the layers that get `mixers` (negative counts from the end); default: all.
            The other layers keep the source's mixer and its weights.

    Returns:
        RAMNetForCausalLM on the source's device and dtype; embeddings, norms, MLPs, LM head and kept
        mixers hold the source's weights. It saves and reloads like any RAMNet model.
    """
    _check_fla_causal_lm(model)
    _check_source_options(model.config)
    num_layers = len(model.model.layers)
    replaced = _resolve_layers(layers, num_layers)
    if isinstance(mixers, (str, Mapping)):
        new_specs = [normalize_spec(mixers, '`mixers`') for _ in replaced]
    elif isinstance(mixers, Sequence):
        if len(mixers) != len(replaced):
            raise ValueError(
                f"`mixers` as a list needs one spec per replaced layer ({len(replaced)}), got {len(mixers)}"
            )
        new_specs = [normalize_spec(spec, f'`mixers[{i}]`') for i, spec in enumerate(mixers)]
    else:
        raise TypeError(f"`mixers` must be a mixer name, a spec dict or a list of them, got {mixers!r}")
    chosen = dict(zip(replaced, new_specs))
    layer_specs = [chosen[i] if i in chosen else _kept_mixer_spec(model, i) for i in range(num_layers)]

    source_config = model.config
    fields = {name: getattr(source_config, name, default) for name, default in SHARED_CONFIG_FIELDS.items()}
    fields['num_hidden_layers'] = num_layers
    config = RAMNetConfig(mixers=layer_specs, **fields)
    parameter = next(model.parameters())
    converted = RAMNetForCausalLM(config).to(device=parameter.device, dtype=parameter.dtype)

    new_mixer_prefixes = tuple(f'model.layers.{i}.attn.' for i in replaced)
    source_state = {key: value for key, value in model.state_dict().items() if not key.startswith(new_mixer_prefixes)}
    target_state = converted.state_dict()
    mismatched = [f"{key}: {tuple(value.shape)} -> {tuple(target_state[key].shape)}"
                  for key, value in source_state.items()
                  if key in target_state and target_state[key].shape != value.shape]
    missing = [key for key in target_state if key not in source_state and not key.startswith(new_mixer_prefixes)]
    unexpected = [key for key in source_state if key not in target_state]
    if mismatched or missing or unexpected:
        raise ValueError(
            "the converted model's weights do not line up with the source's (a kept mixer built differently?): "
            f"shape mismatches {mismatched[:8]}, missing in the source {missing[:8]}, "
            f"not in the converted model {unexpected[:8]}"
        )
    converted.load_state_dict(source_state, strict=False)
    return converted.train(model.training)
