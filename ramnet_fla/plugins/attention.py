"""Built-in plugin `attention`: causal softmax attention (`ramnet_fla.layers.SoftmaxAttention`)."""

from ramnet_fla.accounting import attention_state_size
from ramnet_fla.layers import SoftmaxAttention
from ramnet_fla.plugin import hookimpl


@hookimpl
def ramnet_fla_register_mixers(register):
    register('attention', SoftmaxAttention, state_size=attention_state_size,
             description='causal softmax attention with RoPE and a KV cache (PyTorch SDPA, no flash-attn)')
