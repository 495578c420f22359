"""Guidance for groups that all fail: tiered hints (Scaf-GRPO) and solution prefixes (PrefixRL).

A group whose G samples all fail gives a group-relative estimator no gradient. The trainer then
re-rolls that prompt with guidance of rising tier 1, 2, ... ``max_tier`` until some sample succeeds, and
trains on the guided group in place of the failed one. A guide is a function registered in
:data:`GUIDES`::

    fn(problem, *, tier: int, traces: Sequence[str], rng: Generator, **knobs) -> Guide | None

``traces`` are earlier successful completions of the same prompt (the trainer keeps the newest few
per prompt, see :class:`TraceStore`). ``None`` means "no guidance at this tier" (the problem has no
hint source, or the tiers are used up). A :class:`Guide` adds text in two places:

- ``user_extra`` is appended to the question, before the answer-format instruction: the model is
  conditioned on it, and the sampled tokens are on-policy for the hinted prompt (``hints``);
- ``assistant_prefix`` starts the assistant's reply: the model continues it, the prefix's tokens
  belong to the prompt side of the rollout, so they are off-policy tokens masked from the loss, and the
  reward scores prefix + continuation (``prefix``).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlvr.data.tasks import Problem
from rlvr.registry import Registry

__all__ = ["GUIDES", "Guide", "TraceStore", "apply_guide", "arithmetic_steps"]

GUIDES = Registry("guide")


@dataclass(frozen=True)
class Guide:
    """What a guide adds to a prompt (see the module docstring)."""

    user_extra: str = ""
    assistant_prefix: str = ""
    tier: int = 0


def apply_guide(problem: Problem, guide: Guide | None) -> tuple[str, tuple[dict[str, str], ...] | None]:
    """(question, messages) of ``problem`` with the guide's ``user_extra`` appended to the question
    (to the last user turn of a chat). The assistant prefix is added after formatting."""
    if guide is None or not guide.user_extra:
        return problem.question, problem.messages
    if problem.messages:
        *head, last = problem.messages
        turn = {**last, "content": f"{last['content']}\n{guide.user_extra}"}
        return problem.question, (*head, turn)
    return f"{problem.question}\n{guide.user_extra}", None


_TERM = re.compile(r"\s*([+-])\s*(\d+)")


def arithmetic_steps(expression: str) -> list[str] | None:
    """Left-to-right partial sums of an expression of integers joined by + and - (reasoning-gym's
    ``chain_sum``): ``"1 + 5 - 2"`` -> ``["1 + 5 = 6", "6 - 2 = 4"]``; None for any other form."""
    m = re.fullmatch(r"\s*(-?\d+)((?:\s*[+-]\s*\d+)+)\s*", expression)
    if m is None:
        return None
    acc = int(m.group(1))
    steps = []
    for op, num in _TERM.findall(m.group(2)):
        new = acc + int(num) if op == "+" else acc - int(num)
        steps.append(f"{acc} {op} {num} = {new}")
        acc = new
    return steps


def _hint_tiers(problem: Problem, reveal_answer: bool) -> list[str]:
    """The problem's hint texts, least to most revealing, from the first source it has."""
    meta = problem.meta
    hints = meta.get("hints")
    if isinstance(hints, str):
        hints = [hints]
    if isinstance(hints, Sequence) and hints and all(isinstance(h, str) for h in hints):
        tiers = [" ".join(hints[:k]) for k in range(1, len(hints) + 1)]
    elif isinstance(meta.get("solution"), str) and meta["solution"].strip():
        words = meta["solution"].split()
        cuts = sorted({max(1, round(len(words) * f)) for f in (0.25, 0.5, 0.75)})
        tiers = [" ".join(words[:c]) for c in cuts if c < len(words)]
    elif isinstance(meta.get("expression"), str) and (steps := arithmetic_steps(meta["expression"])):
        # the last step states the answer: a hint only when reveal_answer
        tiers = [" ".join(steps[:k]) for k in range(1, len(steps))]
    else:
        tiers = []
    if reveal_answer:
        tiers.append(f"The answer is {problem.answer}.")
    return tiers


@GUIDES.register("hints", needs={"tier", "traces", "rng"})
def hints(
    problem: Problem,
    *,
    tier: int,
    traces: Sequence[str],
    rng: np.random.Generator,
    prefix_text: str = "Hint:",
    reveal_answer: bool = False,
) -> Guide | None:
    """Tiered hints ("Scaf-GRPO: Scaffolded Group Relative Policy Optimization for Enhancing LLM
    Reasoning"; "Learning to Hint for Reinforcement Learning"): tier k appends the k-th hint text to
    the question,

        question + "\\n" + prefix_text + " " + tiers[k - 1]

    Tiers, least to most revealing, from the first source the problem has: its ``hints`` field (a
    list: tier k shows the first k hints); its ``solution`` text (tiers show the first 25 / 50 / 75%
    of its words); or, for reasoning-gym arithmetic with an ``expression`` of + and - terms, the
    first k partial sums. ``reveal_answer`` adds a last tier that states the answer. None beyond the
    last tier or without a source.
    """
    tiers = _hint_tiers(problem, reveal_answer)
    if not 1 <= tier <= len(tiers):
        return None
    return Guide(user_extra=f"{prefix_text} {tiers[tier - 1]}".strip(), tier=tier)


@GUIDES.register(
    "prefix", needs={"tier", "traces", "rng"}, bounds={"max_frac": "(0, 1]", "tiers": ">= 1"}
)
def prefix(
    problem: Problem,
    *,
    tier: int,
    traces: Sequence[str],
    rng: np.random.Generator,
    max_frac: float = 0.75,
    tiers: int = 3,
) -> Guide | None:
    """Off-policy prefixes of known solutions (PrefixRL, "Reuse your FLOPs"): the reply starts with
    the first fraction of a successful trace and the policy completes it on-policy,

        f_k = max_frac * k / tiers,   prefix = trace[: floor(f_k * len(trace))]   (k = 1..tiers)

    cut back to the last whitespace when the trace has any before that point. The trace is drawn at
    random from the prompt's earlier successful completions (``traces``: the run's own, which makes
    the self-improvement loop of the paper) or, when there are none, is the problem's ``solution``
    field. The prefix is on the prompt side, so its tokens are masked from the loss. None without a
    trace, beyond ``tiers``, or when the prefix would be empty.
    """
    pool = list(traces)
    if not pool and isinstance(problem.meta.get("solution"), str):
        pool = [problem.meta["solution"]]
    if not pool or not 1 <= tier <= tiers:
        return None
    trace = pool[int(rng.integers(len(pool)))]
    cut = int(max_frac * tier / tiers * len(trace))
    space = trace.rfind(" ", 0, cut + 1)
    if space > 0:
        cut = space + 1
    if cut <= 0:
        return None
    return Guide(assistant_prefix=trace[:cut], tier=tier)


class TraceStore:
    """The newest ``per_prompt`` successful completions of each prompt (keyed by its question text),
    the off-policy traces of :func:`prefix`. Saved in checkpoints."""

    def __init__(self, per_prompt: int = 4) -> None:
        self.per_prompt = int(per_prompt)
        self._traces: dict[str, deque[str]] = {}

    def add(self, key: str, text: str) -> None:
        q = self._traces.setdefault(key, deque(maxlen=self.per_prompt))
        if text not in q:
            q.append(text)

    def get(self, key: str) -> list[str]:
        return list(self._traces.get(key, ()))

    def __len__(self) -> int:
        return len(self._traces)

    def state_dict(self) -> dict[str, Any]:
        return {"per_prompt": self.per_prompt, "traces": {k: list(v) for k, v in self._traces.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.per_prompt = int(state["per_prompt"])
        self._traces = {k: deque(v, maxlen=self.per_prompt) for k, v in state["traces"].items()}
