"""Evaluation: unbiased pass@k with confidence intervals, on held-out problems."""

from rlvr.eval.boundary import crossover_k, reasoning_boundary
from rlvr.eval.evaluate import EvalResult, evaluate, summary_ks
from rlvr.eval.passk import bootstrap_ci, mean_pass_at_k, pass_at_k

__all__ = [
    "EvalResult",
    "bootstrap_ci",
    "crossover_k",
    "evaluate",
    "mean_pass_at_k",
    "pass_at_k",
    "reasoning_boundary",
    "summary_ks",
]
