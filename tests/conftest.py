"""Test configuration: run Triton kernels on the CPU under Triton's interpreter.

Without a GPU, `TRITON_INTERPRET=1` runs kernels in numpy. Three things need help there:
1. fla's autotuners benchmark every config through a GPU driver: keep only the first config;
2. the interpreter hands `for i in range(n)` loop variables to kernels as Python ints, which
   breaks `i.to(tl.int64)`: re-bind the loop variable as a tensor at the top of the loop body;
3. fla.utils points `device` at 'cuda' when Triton reports no GPU: point it at the CPU.
And one speed-up: Triton 3.9's interpreter re-patches `triton.language` (a walk of the whole module,
about 2 ms) at every call of a device function (`tl.sum`, `tl.max`, ...), although those patches are
never undone; patching once per function makes interpreted kernels 3 to 4 times faster.
On a machine with CUDA nothing is patched and kernels run for real.
"""

from __future__ import annotations

import ast
import os

import torch

ON_GPU = torch.cuda.is_available()
if not ON_GPU:
    os.environ.setdefault('TRITON_INTERPRET', '1')


def _patch_triton_for_interpreter() -> None:
    import triton.runtime.autotuner as autotuner
    import triton.runtime.interpreter as interpreter

    prune = autotuner.Autotuner.prune_configs
    if not getattr(prune, '_ramnet_single_config', False):
        def first_config_only(self, kwargs, *args, **kw):
            return prune(self, kwargs, *args, **kw)[:1]
        first_config_only._ramnet_single_config = True
        autotuner.Autotuner.prune_configs = first_config_only

    def visit_for(self, node):
        node = self.generic_visit(node)
        func = node.iter.func if isinstance(node.iter, ast.Call) else None
        name = getattr(func, 'attr', getattr(func, 'id', ''))
        if isinstance(node.target, ast.Name) and name != 'static_range':
            rebind = ast.Assign(targets=[ast.Name(id=node.target.id, ctx=ast.Store())],
                                value=ast.Name(id=node.target.id, ctx=ast.Load()))
            node.body.insert(0, ast.copy_location(self.visit_Assign(rebind), node))
        return node
    interpreter.ASTTransformer.visit_For = visit_for


def _patch_device_functions_once() -> None:
    import triton.runtime.interpreter as interpreter

    if getattr(interpreter.InterpretedFunction.__call__, '_ramnet_patched_once', False):
        return
    patched = set()

    def call(self, *args, **kwargs):
        if self.fn not in patched:
            interpreter._patch_lang(self.fn)
            patched.add(self.fn)
        try:
            return self.rewrite()(*args, **kwargs)
        except Exception as e:
            raise interpreter.InterpreterError(repr(e)) from e

    call._ramnet_patched_once = True
    interpreter.InterpretedFunction.__call__ = call


def _point_fla_at_cpu() -> None:
    import fla.utils
    import fla.utils.hardware as hardware
    for module in (fla.utils, hardware):
        module.device = 'cpu'
        module.device_torch_lib = torch.cpu
        module.device_name = 'cpu'


if not ON_GPU:
    _patch_triton_for_interpreter()
    _patch_device_functions_once()
    _point_fla_at_cpu()

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
