"""Hand a command line to lm-eval after registering ramnet with transformers and lm-eval."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from ramnet_fla.utils.extras import require_extra

# what the optional extra `eval` provides
EVAL_MODULES = ('lm_eval', 'accelerate')      # lm-eval and its HF model's needs (lm-eval[hf])
LM_EVAL_MODEL_NAME = 'ramnet'


def register_lm_eval_model() -> None:
    """Register `--model ramnet` with lm-eval: its HF causal-LM wrapper, for RAMNet checkpoints (any
    `--model_args` of lm-eval's `hf` model apply). `--model hf` works as well once ramnet_fla is imported."""
    from lm_eval.api.registry import MODEL_REGISTRY, register_model
    from lm_eval.models.huggingface import HFLM

    if LM_EVAL_MODEL_NAME in MODEL_REGISTRY:
        return

    @register_model(LM_EVAL_MODEL_NAME)
    class RAMNetLM(HFLM):
        """lm-eval's HFLM for ramnet checkpoints (registered by importing ramnet_fla)."""


def run_lm_eval(argv: Sequence[str] | None = None, prog: str = 'python -m ramnet_fla.evals') -> None:
    """Run lm-eval's command line (`lm-eval [run|ls|validate] ...`) with `argv` (default: sys.argv[1:]).

    Exits with one line naming the extra when lm-eval is not installed, before anything else happens.
    """
    require_extra('eval', EVAL_MODULES, command=prog)
    import ramnet_fla  # noqa: F401  (registers model type ramnet with transformers; loads the mixer plugins)
    from lm_eval.__main__ import cli_evaluate

    register_lm_eval_model()
    argv = list(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = ['lm-eval', *argv]              # lm-eval's command line reads sys.argv
    try:
        cli_evaluate()
    finally:
        sys.argv = saved
