"""Evaluation with EleutherAI's lm-evaluation-harness (the optional extra `eval`).

    python -m ramnet_fla.evals --model hf --model_args pretrained=PATH --tasks wikitext ...
    ramnet-fla eval --model hf --model_args pretrained=PATH --tasks wikitext ...

Like fla's own `evals/harness.py`: import ramnet_fla (so transformers knows model type `ramnet` and
the mixer plugins are loaded), register an lm-eval model named `ramnet` (lm-eval's HF model under our
name, as fla registers `fla`), then hand every argument to lm-eval's command line unchanged.
"""

from ramnet_fla.evals.harness import EVAL_MODULES, run_lm_eval

__all__ = ['EVAL_MODULES', 'run_lm_eval']
