"""transformers models of ramnet-fla, and conversion of fla models into them."""

from ramnet_fla.models.convert import convert_fla_model
from ramnet_fla.models.ramnet import RAMNetConfig, RAMNetForCausalLM, RAMNetModel

__all__ = ['RAMNetConfig', 'RAMNetForCausalLM', 'RAMNetModel', 'convert_fla_model']
