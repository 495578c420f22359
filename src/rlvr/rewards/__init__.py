"""Reward functions: plain Python ``(prompt, completion, answer, **meta) -> float``.

They know nothing of tensors. ``REWARDS`` maps names to factories that build a reward function from
its keyword knobs.
"""

from rlvr.rewards.verifiers import REWARDS, extract_answer, format_reward, make_task_reward

__all__ = ["REWARDS", "extract_answer", "format_reward", "make_task_reward"]
