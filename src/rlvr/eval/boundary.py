"""The reasoning boundary: which problems a model ever solves in n samples, base against trained.

"Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?"
asks whether RL solves new problems or only solves the base model's problems more often. With the
per-problem correct counts of both models (n samples each) this module answers, for k = n, which
problems were gained, lost and kept, and where the pass@k curves cross.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["crossover_k", "reasoning_boundary"]


def reasoning_boundary(base_correct: Sequence[int], trained_correct: Sequence[int]) -> dict[str, int]:
    """Counts over problems, from correct counts per problem (same problems, same order):

    gained: trained solves it at least once, base never;  lost: base does, trained never;
    kept: both do;  neither: neither does.
    """
    if len(base_correct) != len(trained_correct):
        raise ValueError(
            f"base and trained were evaluated on different problem sets "
            f"({len(base_correct)} vs {len(trained_correct)} problems)"
        )
    out = {"gained": 0, "lost": 0, "kept": 0, "neither": 0}
    for b, t in zip(base_correct, trained_correct, strict=True):
        key = ("kept" if t > 0 else "lost") if b > 0 else ("gained" if t > 0 else "neither")
        out[key] += 1
    return out


def crossover_k(base: Mapping[int, float], trained: Mapping[int, float]) -> int | None:
    """The smallest k (among those measured for both) at which the base's pass@k is at least the
    trained model's, after a smaller k where the trained model was ahead; None if they never cross.
    """
    ks = sorted(set(base) & set(trained))
    ahead = False
    for k in ks:
        if trained[k] > base[k]:
            ahead = True
        elif ahead:
            return k
    return None
