"""`python -m ramnet_fla.evals ...`: lm-eval's command line with ramnet registered."""

from ramnet_fla.evals.harness import run_lm_eval

if __name__ == '__main__':
    run_lm_eval()
