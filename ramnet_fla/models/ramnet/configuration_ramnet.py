"""RAMNetConfig: an fla-style causal LM whose token mixer is chosen per layer (RAM, GLA, ... or a plugin's)."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

from fla.models.configuration_utils import validate_loss_config
from transformers.configuration_utils import PreTrainedConfig

from ramnet_fla.plugin.resolve import layer_mixer_spec, normalize_spec
from ramnet_fla.utils.checks import check_int

# RAMAttention's defaults changed with version 2 (short convolutions and self_read_init on). A config
# saved before records no `ram_defaults`; it is read as version 1 and its RAM layers get the options
# they were built with, so an old checkpoint loads into the same architecture.
RAM_DEFAULTS_VERSION = 2
RAM_DEFAULTS_BEFORE = {1: {'use_short_conv': False, 'self_read_init': False}}


def _check_positive_number(name: str, value) -> None:
    """`value` must be a finite real number > 0 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__} ({value!r})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value!r}")


class RAMNetConfig(PreTrainedConfig):
    r"""Configuration of RAMNetModel / RAMNetForCausalLM.

    Every block is pre-norm: x + mixer(norm(x)), then x + GatedMLP(norm(x)), as in fla's models.

    Args:
        mixers: the token mixer of each layer: a list of names or dicts {"name": ..., **kwargs}
            (kwargs go to the mixer's factory along with hidden_size and layer_idx). A list
            shorter than num_hidden_layers repeats: ["ram", "attention"] alternates; a longer one is an
            error. A single
            name or dict means every layer. Default: ["ram"] (pure RAM-Net). Plugins may still
            override a layer's choice (hook `ramnet_fla_select_mixer`).
        vocab_size, hidden_size, num_hidden_layers: the usual sizes.
        hidden_ratio, intermediate_size, hidden_act: the GatedMLP ('swish' or 'powlu').
        max_position_embeddings, norm_eps, initializer_range,
        use_cache, pad_token_id, bos_token_id, eos_token_id, tie_word_embeddings: as in fla.
        fuse_norm, fuse_swiglu, fuse_cross_entropy, fuse_linear_cross_entropy, use_l2warp: fla's
            fused kernels; on the CPU the same math runs in PyTorch whatever the flags say.
    """

    model_type = 'ramnet'
    keys_to_ignore_at_inference = ['past_key_values']

    def __init__(
        self,
        mixers=None,
        ram_defaults: int = RAM_DEFAULTS_VERSION,
        vocab_size: int = 32000,
        hidden_size: int = 1024,
        num_hidden_layers: int = 24,
        hidden_ratio: int | None = 4,
        intermediate_size: int | None = None,
        hidden_act: str = 'swish',
        max_position_embeddings: int = 2048,
        norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        tie_word_embeddings: bool = False,
        initializer_range: float = 0.02,
        fuse_norm: bool = True,
        fuse_swiglu: bool = True,
        fuse_cross_entropy: bool = True,
        fuse_linear_cross_entropy: bool = False,
        use_l2warp: bool = False,
        **kwargs,
    ):
        if mixers is None:
            mixers = ['ram']
        if isinstance(mixers, (str, Mapping)):
            mixers = [mixers]
        if not isinstance(mixers, Sequence) or len(mixers) == 0:
            raise ValueError(f"`mixers` must be a non-empty list of mixer names or dicts, got {mixers!r}")
        for i, spec in enumerate(mixers):
            normalize_spec(spec, f'`mixers[{i}]`')
        check_int('vocab_size', vocab_size, minimum=1)
        check_int('hidden_size', hidden_size, minimum=1)
        check_int('num_hidden_layers', num_hidden_layers, minimum=1)
        if len(mixers) > num_hidden_layers:
            raise ValueError(f"`mixers` lists {len(mixers)} mixers but the model has `num_hidden_layers` = "
                             f"{num_hidden_layers}: the last {len(mixers) - num_hidden_layers} would never be used")
        if hidden_ratio is not None:
            _check_positive_number('hidden_ratio', hidden_ratio)
        if intermediate_size is not None:
            check_int('intermediate_size', intermediate_size, minimum=1)
        check_int('max_position_embeddings', max_position_embeddings, minimum=1)
        _check_positive_number('norm_eps', norm_eps)
        _check_positive_number('initializer_range', initializer_range)
        if pad_token_id is not None:
            check_int('pad_token_id', pad_token_id, minimum=0, maximum=vocab_size - 1)
        for name, value in (('bos_token_id', bos_token_id), ('eos_token_id', eos_token_id)):
            if value is not None and not isinstance(value, list):        # transformers allows a list of eos ids
                check_int(name, value, minimum=0)
        for name, value in (('use_cache', use_cache), ('tie_word_embeddings', tie_word_embeddings),
                            ('fuse_norm', fuse_norm), ('fuse_swiglu', fuse_swiglu), ('use_l2warp', use_l2warp),
                            ('fuse_cross_entropy', fuse_cross_entropy),
                            ('fuse_linear_cross_entropy', fuse_linear_cross_entropy)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool, got {type(value).__name__} ({value!r})")
        if hidden_act not in ('swish', 'powlu'):
            raise ValueError(f"`hidden_act` must be 'swish' or 'powlu' (fla's GatedMLP), got {hidden_act!r}")
        validate_loss_config(fuse_cross_entropy=fuse_cross_entropy, fuse_linear_cross_entropy=fuse_linear_cross_entropy)

        self.mixers = [copy.deepcopy(spec) if isinstance(spec, str) else copy.deepcopy(dict(spec)) for spec in mixers]
        if ram_defaults not in (*RAM_DEFAULTS_BEFORE, RAM_DEFAULTS_VERSION):
            raise ValueError(f"`ram_defaults` must be one of {[*RAM_DEFAULTS_BEFORE, RAM_DEFAULTS_VERSION]}, "
                             f"got {ram_defaults!r}")
        if ram_defaults != RAM_DEFAULTS_VERSION:
            older = RAM_DEFAULTS_BEFORE[ram_defaults]
            self.mixers = [{**older, **({'name': spec} if isinstance(spec, str) else spec)}
                           if (spec if isinstance(spec, str) else spec.get('name')) == 'ram' else spec
                           for spec in self.mixers]
        self.ram_defaults = RAM_DEFAULTS_VERSION          # the old options are explicit in `mixers` now
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.hidden_ratio = hidden_ratio
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.norm_eps = norm_eps
        self.use_cache = use_cache
        self.initializer_range = initializer_range
        self.fuse_norm = fuse_norm
        self.fuse_swiglu = fuse_swiglu
        self.fuse_cross_entropy = fuse_cross_entropy
        self.fuse_linear_cross_entropy = fuse_linear_cross_entropy
        self.use_l2warp = use_l2warp
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )

    @classmethod
    def from_dict(cls, config_dict, **kwargs):
        """As transformers' (from_pretrained reads configs through it); a dict without `ram_defaults`
        was saved before RAMAttention's defaults changed (see RAM_DEFAULTS_VERSION)."""
        if 'ram_defaults' not in config_dict:
            config_dict = {**config_dict, 'ram_defaults': 1}
        return super().from_dict(config_dict, **kwargs)

    def mixer_for_layer(self, layer_idx: int) -> dict:
        """The mixer spec of layer `layer_idx` (a fresh dict {'name': ..., **kwargs}), exactly what the
        model builds: plugins' `ramnet_fla_select_mixer` hooks first, then `mixers`. It delegates to
        `ramnet_fla.plugin.layer_mixer_spec`, the one answer, after checking the layer exists."""
        check_int('layer_idx', layer_idx, minimum=0, maximum=self.num_hidden_layers - 1)
        return layer_mixer_spec(self, layer_idx)

    @property
    def layer_mixer_names(self) -> list[str]:
        """The mixer name of every layer (plugins' select hooks honoured, as in `mixer_for_layer`)."""
        return [self.mixer_for_layer(i)['name'] for i in range(self.num_hidden_layers)]
