"""Evaluation: unbiased pass@k and maj@k with confidence intervals, reasoning boundary, plots."""

from rlvr.eval.boundary import (
    boundary_rows,
    boundary_status,
    crossover_k,
    reasoning_boundary,
    write_boundary_csv,
)
from rlvr.eval.evaluate import EvalResult, evaluate, final_answer, plan_batches, summary_ks
from rlvr.eval.passk import (
    bootstrap_ci,
    distinct_answers,
    encode_answers,
    majority_at_k,
    mean_pass_at_k,
    pass_at_k,
)

__all__ = [
    "EvalResult",
    "bootstrap_ci",
    "boundary_rows",
    "boundary_status",
    "crossover_k",
    "distinct_answers",
    "encode_answers",
    "evaluate",
    "final_answer",
    "majority_at_k",
    "mean_pass_at_k",
    "pass_at_k",
    "plan_batches",
    "reasoning_boundary",
    "summary_ks",
    "write_boundary_csv",
]
