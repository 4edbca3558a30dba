"""RAMNetModel and RAMNetForCausalLM on fla's model base classes.

Each block is fla's pre-norm block (norm, token mixer, residual; norm, GatedMLP, residual); the
mixer of layer i comes from the plugin layer (`ramnet_fla.plugin`), so one model type covers
pure RAM-Net and any hybrid. Norms and MLP are ramnet_fla.fla_cpu.modules' CPU-capable fla modules, and
on the CPU the loss is PyTorch's cross entropy (fla's fused losses are Triton-only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from fla.models.generation_utils import FLAUnsupportedCacheGenerationMixin
from fla.models.modeling_utils import FLAForCausalLM, FLAModel, FLAPreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import logging

from ramnet_fla.models.ramnet.configuration_ramnet import RAMNetConfig
from ramnet_fla.fla_cpu.modules import GatedMLP, RMSNorm
from ramnet_fla.utils.backend import use_fla_kernels
from ramnet_fla.utils.checks import check_tensor

if TYPE_CHECKING:
    from fla.models.cache_utils import Cache

logger = logging.get_logger(__name__)


# the loss on the CPU (no parameters; fla copies it before changing its reduction)
_CPU_CRITERION = nn.CrossEntropyLoss()


def _norm(config: RAMNetConfig) -> nn.Module:
    return (RMSNorm if config.fuse_norm else nn.RMSNorm)(config.hidden_size, eps=config.norm_eps)


class RAMNetBlock(GradientCheckpointingLayer):
    """x + mixer(norm(x)), then x + GatedMLP(norm(x)); `attn` is the layer's token mixer."""

    def __init__(self, config: RAMNetConfig, layer_idx: int):
        super().__init__()
        from ramnet_fla.plugin import build_mixer, layer_mixer_spec    # the plugin layer imports models lazily too

        self.config = config
        self.layer_idx = layer_idx
        self.mixer_spec = layer_mixer_spec(config, layer_idx)
        self.attn_norm = _norm(config)
        self.attn = build_mixer(self.mixer_spec, hidden_size=config.hidden_size, layer_idx=layer_idx)
        self.mlp_norm = _norm(config)
        self.mlp = GatedMLP(
            hidden_size=config.hidden_size,
            hidden_ratio=config.hidden_ratio,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            fuse_swiglu=config.fuse_swiglu,
        )

    @property
    def mixer_name(self) -> str:
        return self.mixer_spec['name']

    def _check_mixer_output(self, output, hidden_states: torch.Tensor) -> None:
        """The mixer must keep fla's layer contract: a sequence (o [B, T, hidden], attentions,
        past_key_values) with o the shape of its input. Shapes only (no device sync); a wrong form is
        a TypeError, a wrong shape a ValueError (it would otherwise broadcast into the residual)."""
        where = f"mixer {self.mixer_name!r} at layer {self.layer_idx}"
        expected = "expected a tuple (o, attentions, past_key_values) as fla's layers return"
        if not isinstance(output, (tuple, list)):
            raise TypeError(f"{where} returned a {type(output).__name__}; {expected}")
        if len(output) != 3:
            raise TypeError(f"{where} returned a {type(output).__name__} of {len(output)} items; {expected}")
        o = output[0]
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"{where} returned o of type {type(o).__name__}; expected a torch.Tensor "
                            f"{tuple(hidden_states.shape)}")
        if o.shape != hidden_states.shape:
            raise ValueError(f"{where} returned o of shape {tuple(o.shape)}; expected its input's shape "
                             f"{tuple(hidden_states.shape)} [B, T, hidden_size]")

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = False,
        output_attentions: bool | None = False,
        attnres_states=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None, Cache | None, None]:
        """hidden_states: [B, T, hidden] -> (hidden_states, attentions, past_key_values, None)."""
        residual = hidden_states
        hidden_states = self.attn_norm(hidden_states)
        output = self.attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            **kwargs,
        )
        self._check_mixer_output(output, hidden_states)
        hidden_states, attentions, past_key_values = output
        if self.config.fuse_norm:
            hidden_states, residual = self.mlp_norm(hidden_states, residual, True)
        else:
            hidden_states = residual + hidden_states
            residual = hidden_states
            hidden_states = self.mlp_norm(hidden_states)
        hidden_states = residual + self.mlp(hidden_states, **kwargs)
        return hidden_states, attentions, past_key_values, None


class RAMNetPreTrainedModel(FLAPreTrainedModel):

    config_class = RAMNetConfig
    base_model_prefix = 'model'
    supports_gradient_checkpointing = True
    _no_split_modules = ['RAMNetBlock']
    _supports_cache_class = True


class RAMNetModel(RAMNetPreTrainedModel, FLAModel):
    """Embeddings, `num_hidden_layers` RAMNetBlocks and a final norm; returns hidden states."""

    def __init__(self, config: RAMNetConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([RAMNetBlock(config, layer_idx) for layer_idx in range(config.num_hidden_layers)])
        self.norm = _norm(config)
        self.use_attnres = False                       # fla's attention-residual variant is not offered
        self.gradient_checkpointing = False
        self.post_init()

    def _check_inputs(self, input_ids, inputs_embeds) -> None:
        """input_ids: [B, T] integers in [0, vocab_size) (one min/max read back, so a bad id is named
        here and not in an embedding's index error or a device-side assert; eager only, as torch.compile
        cannot trace the data-dependent branch); inputs_embeds: [B, T, hidden]."""
        if input_ids is not None:
            check_tensor('input_ids', input_ids, 2, '[B, T]')
            if input_ids.dtype.is_floating_point or input_ids.is_complex() or input_ids.dtype == torch.bool:
                raise TypeError(f"`input_ids` must hold integer token ids, got {input_ids.dtype}")
            if input_ids.numel() and not torch.compiler.is_compiling():
                low, high = (int(x) for x in torch.aminmax(input_ids))
                vocab_size = self.embeddings.num_embeddings                 # follows resize_token_embeddings
                if low < 0 or high >= vocab_size:
                    raise ValueError(f"`input_ids` must lie in [0, vocab_size={vocab_size}), "
                                     f"got ids from {low} to {high}")
        if inputs_embeds is not None:
            check_tensor('inputs_embeds', inputs_embeds, 3, '[B, T, hidden_size]')
            if inputs_embeds.shape[-1] != self.config.hidden_size:
                raise ValueError(f"`inputs_embeds` must be [B, T, hidden_size={self.config.hidden_size}], "
                                 f"got {tuple(inputs_embeds.shape)}")

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, past_key_values=None, **kwargs):
        """As fla's FLAModel.forward. transformers >= 5.2x hands the decoding cache back as `cache=`
        (fla 0.6 reads only `past_key_values`, so it would silently decode without state): accept both."""
        cache = kwargs.pop('cache', None)
        if cache is not None:
            if past_key_values is not None and past_key_values is not cache:
                raise ValueError("pass the decoding cache as `past_key_values` or as `cache`, not two different ones")
            past_key_values = cache
        self._check_inputs(input_ids, inputs_embeds)
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
                               past_key_values=past_key_values, **kwargs)


class RAMNetForCausalLM(RAMNetPreTrainedModel, FLAForCausalLM, FLAUnsupportedCacheGenerationMixin):
    """RAMNetModel with a language-model head; `generate` runs with fla's recurrent Cache."""

    _tied_weights_keys = {'lm_head.weight': 'model.embeddings.weight'}

    def __init__(self, config: RAMNetConfig):
        super().__init__(config)
        self.model = RAMNetModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.criterion = None
        self.post_init()

    def _compute_logits_and_loss(self, hidden_states, labels=None, logits_to_keep=0, **kwargs):
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.shape != hidden_states.shape[:2]:
                shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
                raise ValueError(f"`labels` must be [B, T] = {tuple(hidden_states.shape[:2])} like the inputs "
                                 f"(the model shifts them itself), got {shape}")
        if use_fla_kernels(hidden_states) or self.criterion is not None:
            return super()._compute_logits_and_loss(hidden_states, labels, logits_to_keep, **kwargs)
        # fla's fused (linear) cross entropy is Triton-only: on the CPU the same loss in PyTorch
        kwargs['fuse_linear_cross_entropy'] = False
        self.__dict__['criterion'] = _CPU_CRITERION       # one shared module: torch.compile traces it
        try:
            return super()._compute_logits_and_loss(hidden_states, labels, logits_to_keep, **kwargs)
        finally:
            self.__dict__['criterion'] = None
