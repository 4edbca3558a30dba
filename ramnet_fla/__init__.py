"""ramnet-fla: RAM-Net (arXiv 2602.11958) as a flash-linear-attention plugin."""

import warnings

__version__ = '0.1.0'

with warnings.catch_warnings():
    # fla warns once, at its import, when Triton sees no GPU; ramnet-fla runs on the CPU on purpose
    # (PyTorch paths), so that warning says nothing to our users. Only this import is silenced.
    warnings.filterwarnings('ignore', message='Triton is not supported on current platform')
    import fla  # noqa: F401

# Plugins: the `@ramnet_fla.hookimpl` marker for mixer plugins, and state accounting over their mixers.
from ramnet_fla.accounting import state_size  # noqa: E402
from ramnet_fla.plugin import hookimpl  # noqa: E402

# Registers RAMNetConfig, RAMNetModel and RAMNetForCausalLM with transformers' Auto classes.
from ramnet_fla.models import RAMNetConfig, RAMNetForCausalLM, RAMNetModel, convert_fla_model  # noqa: E402

__all__ = ['RAMNetConfig', 'RAMNetForCausalLM', 'RAMNetModel', 'convert_fla_model', 'hookimpl', 'state_size']
