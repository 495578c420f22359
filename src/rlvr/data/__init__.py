"""Prompts, answers and the order in which training sees them."""

from rlvr.data.files import DatasetError, FileDataset
from rlvr.data.tasks import Problem, ReasoningGymTask

__all__ = ["DatasetError", "FileDataset", "Problem", "ReasoningGymTask"]
