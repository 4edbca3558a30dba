"""Built-in plugin `ram`: RAM-Net (`ramnet_fla.layers.RAMAttention`)."""

from ramnet_fla.accounting import ram_state_size
from ramnet_fla.layers import RAMAttention
from ramnet_fla.plugin import hookimpl


@hookimpl
def ramnet_fla_register_mixers(register):
    register('ram', RAMAttention, state_size=ram_state_size,
             description='RAM-Net: K-hot reads and writes into M = d_p**U memory slots per head (arXiv 2602.11958)')
