"""Device-dispatching versions of fla's Triton activation functions (fla.modules.activations)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from fla.modules.activations import elu_p1 as fla_elu_p1
from fla.modules.activations import logsigmoid as fla_logsigmoid
from fla.modules.activations import sigmoid as fla_sigmoid
from fla.modules.activations import swish as fla_swish

from ramnet_fla.utils.backend import use_fla_kernels


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return fla_sigmoid(x) if use_fla_kernels(x) else torch.sigmoid(x.float()).to(x.dtype)


def swish(x: torch.Tensor) -> torch.Tensor:
    return fla_swish(x) if use_fla_kernels(x) else F.silu(x.float()).to(x.dtype)


def logsigmoid(x: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    if use_fla_kernels(x):
        return fla_logsigmoid(x, temperature)
    return (F.logsigmoid(x.float()) / temperature).to(x.dtype)


def elu_p1(x: torch.Tensor) -> torch.Tensor:
    return fla_elu_p1(x) if use_fla_kernels(x) else (F.elu(x.float()) + 1).to(x.dtype)


# fla's Triton activation -> its replacement, for `make_cpu_capable`.
CPU_CAPABLE_ACTIVATIONS = {fla_sigmoid: sigmoid, fla_swish: swish, fla_logsigmoid: logsigmoid, fla_elu_p1: elu_p1}
