"""A user reward function, named in a recipe by file path (docs/rewards-and-data.md):

[rewards.brevity]
function = "examples/brevity_reward.py:brevity"
weight = 0.2
limit = 8
"""


def brevity(prompt: str, completion: str, answer: str, *, limit: int = 8, **meta) -> float:
    """1 for a completion of at most ``limit`` words, falling linearly to 0 at twice that."""
    words = len(completion.split())
    return max(0.0, min(1.0, 2.0 - words / limit))
