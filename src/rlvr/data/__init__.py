"""Prompts, answers and the order in which training sees them."""

from rlvr.data.tasks import Problem, ReasoningGymTask

__all__ = ["Problem", "ReasoningGymTask"]
