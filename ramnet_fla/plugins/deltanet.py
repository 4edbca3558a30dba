"""Built-in plugin `deltanet`: fla's DeltaNet (`ramnet_fla.fla_cpu.layers`, also on the CPU)."""

from ramnet_fla.accounting import deltanet_state_size
from ramnet_fla.fla_cpu.layers import DeltaNet
from ramnet_fla.plugin import hookimpl


@hookimpl
def ramnet_fla_register_mixers(register):
    register('deltanet', DeltaNet, state_size=deltanet_state_size,
             description="fla's DeltaNet (delta rule); PyTorch chunked path on the CPU")
