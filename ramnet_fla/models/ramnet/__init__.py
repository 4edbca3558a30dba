"""RAM-Net models for transformers: registered with AutoConfig / AutoModel / AutoModelForCausalLM."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from ramnet_fla.models.ramnet.configuration_ramnet import RAMNetConfig
from ramnet_fla.models.ramnet.modeling_ramnet import RAMNetBlock, RAMNetForCausalLM, RAMNetModel

AutoConfig.register(RAMNetConfig.model_type, RAMNetConfig, exist_ok=True)
AutoModel.register(RAMNetConfig, RAMNetModel, exist_ok=True)
AutoModelForCausalLM.register(RAMNetConfig, RAMNetForCausalLM, exist_ok=True)

__all__ = ['RAMNetBlock', 'RAMNetConfig', 'RAMNetForCausalLM', 'RAMNetModel']
