"""Built-in plugin `gla`: fla's GatedLinearAttention (`ramnet_fla.fla_cpu.layers`, also on the CPU)."""

from ramnet_fla.accounting import gla_state_size
from ramnet_fla.fla_cpu.layers import GatedLinearAttention
from ramnet_fla.plugin import hookimpl


@hookimpl
def ramnet_fla_register_mixers(register):
    register('gla', GatedLinearAttention, state_size=gla_state_size,
             description="fla's GatedLinearAttention (GLA); PyTorch chunked path on the CPU")
