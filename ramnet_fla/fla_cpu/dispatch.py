"""The one routing rule of `ramnet_fla.fla_cpu`: fla's forward for accelerator tensors, PyTorch for CPU ones."""

from __future__ import annotations

import inspect

from ramnet_fla.utils.backend import use_fla_kernels


class CPUDispatch:
    """Base for a subclass of an fla module or layer that also runs on the CPU.

    `forward` looks at where its first input lives (`use_fla_kernels`, which `RAMNET_FLA_BACKEND`
    can override): accelerator tensors run the fla class's own forward unchanged, CPU tensors run
    `forward_torch`, which the subclass writes with the fla forward's signature. List it first
    among the bases, e.g. `class RMSNorm(CPUDispatch, fla.modules.RMSNorm)`, so parameters,
    state_dict keys and cache layout stay fla's.
    """

    _dispatch_argument: str = 'x'       # name of the first forward argument, set from forward_torch

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if 'forward_torch' in vars(cls):
            cls._dispatch_argument = list(inspect.signature(cls.forward_torch).parameters)[1]

    def forward(self, *args, **kwargs):
        x = args[0] if args else kwargs[self._dispatch_argument]
        if use_fla_kernels(x):
            return super().forward(*args, **kwargs)
        return self.forward_torch(*args, **kwargs)

    def forward_torch(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no PyTorch path")
