"""The reasoning boundary: which problems a model ever solves in n samples, base against trained.

"Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?"
asks whether RL solves new problems or only solves the base model's problems more often. With the
per-problem correct counts of both models (n samples each) this module answers, for k = n, which
problems were gained, lost and kept, and where the pass@k curves cross.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "boundary_rows",
    "boundary_status",
    "crossover_k",
    "reasoning_boundary",
    "write_boundary_csv",
]


def boundary_status(base_correct: int, trained_correct: int) -> str:
    """One problem's place at k = n: ``gained`` (trained solves it at least once, base never),
    ``lost`` (base does, trained never), ``kept`` (both do) or ``neither``."""
    if base_correct > 0:
        return "kept" if trained_correct > 0 else "lost"
    return "gained" if trained_correct > 0 else "neither"


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
        out[boundary_status(b, t)] += 1
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


def boundary_rows(
    questions: Sequence[str],
    answers: Sequence[str],
    base_correct: Sequence[int],
    trained: Mapping[str, Sequence[int]],
    *,
    n: int,
) -> list[dict[str, Any]]:
    """The per-problem boundary table: one dict per problem with ``problem`` (index), ``question``,
    ``answer``, ``n``, ``base_correct`` and, for each trained model ``label``, ``{label}_correct``
    (samples out of n it got right) and ``{label}_status`` (:func:`boundary_status`)."""
    for label, corr in trained.items():
        if len(corr) != len(base_correct):
            raise ValueError(
                f"boundary table: model {label!r} was evaluated on {len(corr)} problems, the base "
                f"on {len(base_correct)}"
            )
    if not (len(questions) == len(answers) == len(base_correct)):
        raise ValueError(
            f"boundary table: {len(questions)} questions, {len(answers)} answers and "
            f"{len(base_correct)} correct counts"
        )
    rows = []
    for i, (q, a, b) in enumerate(zip(questions, answers, base_correct, strict=True)):
        row: dict[str, Any] = {"problem": i, "question": q, "answer": a, "n": n, "base_correct": b}
        for label, corr in trained.items():
            row[f"{label}_correct"] = corr[i]
            row[f"{label}_status"] = boundary_status(b, corr[i])
        rows.append(row)
    return rows


def write_boundary_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write :func:`boundary_rows` as CSV (header from the first row); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        fields = list(rows[0]) if rows else ["problem", "question", "answer", "n", "base_correct"]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path
