"""Built-in plugin `gated_deltanet`: fla's GatedDeltaNet (`ramnet_fla.fla_cpu.layers`, also on the CPU)."""

from ramnet_fla.accounting import gated_deltanet_state_size
from ramnet_fla.fla_cpu.layers import GatedDeltaNet
from ramnet_fla.plugin import hookimpl


@hookimpl
def ramnet_fla_register_mixers(register):
    register('gated_deltanet', GatedDeltaNet, state_size=gated_deltanet_state_size,
             description="fla's GatedDeltaNet (gated delta rule); PyTorch chunked path on the CPU")
