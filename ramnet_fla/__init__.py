"""ramnet-fla: RAM-Net (arXiv 2602.11958) as a flash-linear-attention plugin."""

__version__ = '0.1.0'

# Plugins: the `@ramnet_fla.hookimpl` marker for mixer plugins, and state accounting over their mixers.
from ramnet_fla.accounting import state_size  # noqa: E402
from ramnet_fla.plugin import hookimpl  # noqa: E402

# Registers RAMNetConfig, RAMNetModel and RAMNetForCausalLM with transformers' Auto classes.
from ramnet_fla.models import RAMNetConfig, RAMNetForCausalLM, RAMNetModel, convert_fla_model  # noqa: E402
