"""Reward functions: plain Python ``(prompt, completion, answer, **meta) -> float``.

They know nothing of tensors. ``REWARDS`` maps names to factories that build a reward function from
its keyword knobs; importing this package registers the built-in ones.
"""

import rlvr.rewards.code  # registers code, weighted_tests
import rlvr.rewards.judge  # registers llm_judge, judge_steps
import rlvr.rewards.math  # registers math, exact_match, think_format
import rlvr.rewards.models  # registers reward_model, ensemble, prm, likelihood, relevance
import rlvr.rewards.omega  # registers omega_steps
import rlvr.rewards.spurious  # registers random
import rlvr.rewards.sql  # registers sql_exec, sql_syntax, sql_schema, sql_ngram
import rlvr.rewards.steps  # noqa: F401 - registers arith_steps
from rlvr.rewards.math import extract_math_answer, math_equal
from rlvr.rewards.verifiers import (
    REWARDS,
    BatchedReward,
    extract_answer,
    format_reward,
    make_task_reward,
)

__all__ = [
    "REWARDS",
    "BatchedReward",
    "extract_answer",
    "extract_math_answer",
    "format_reward",
    "make_task_reward",
    "math_equal",
]
