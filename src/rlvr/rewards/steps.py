"""Step rewards: rewards that score each reasoning step, and their placement on the tokens.

A :class:`StepReward` is a batched reward that can also give one score per step of each completion
(steps are the pieces between ``delimiter``\\ s, see :func:`split_steps`). Token-level credit that needs
``process_rewards`` (``pure_min``) gets them from the run's one step reward: the trainer puts step k's
score on the token where step k ends (:func:`step_token_rewards`). Give the step reward weight 0 in
``[rewards]`` to use it for credit only.

Registered here:

- ``arith_steps``: a rule-based process reward for arithmetic. Every ``lhs = rhs`` in a step whose both
  sides are arithmetic expressions (numbers, + - * / x and parentheses) is evaluated; a step with a
  false equation scores ``wrong`` (default -1), any other step ``right`` (default +1). It needs no model
  and cannot be gamed by style, only by not writing checkable work; the outcome verifier still decides
  the answer (mix it in through ``vr_coef``).

``prm`` (``rlvr.rewards.models``) is the model-based step reward.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rlvr.rewards.verifiers import REWARDS, BatchedReward

if TYPE_CHECKING:
    import torch

__all__ = [
    "StepReward",
    "check_equations",
    "make_arith_steps",
    "split_steps",
    "step_token_rewards",
    "worst_step",
]


def worst_step(scores: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Each completion's outcome as its worst step: min over the counted steps of scores [N, S]
    (mask [N, S]), 0 for a completion without steps; the outcome of the step rewards that score a
    completion by its weakest step (``arith_steps``, ``judge_steps``)."""
    worst = scores.masked_fill(mask == 0, math.inf).amin(dim=1) if scores.shape[1] else scores.sum(1)
    return [0.0 if math.isinf(v) else float(v) for v in worst.tolist()]  # [N]


def split_steps(completion: str, delimiter: str = "\n\n") -> list[str]:
    """The step prefixes of a completion: the text up to the end of each step.

    Steps are the pieces between delimiters; pieces that are only whitespace are not steps (they
    stay inside the following prefixes). A completion without a non-blank piece has no step.
    Example: ``"a\\n\\nb"`` -> ``["a", "a\\n\\nb"]``.
    """
    if not delimiter:
        raise ValueError("delimiter must not be empty")
    pieces = completion.split(delimiter)
    return [delimiter.join(pieces[: k + 1]) for k, piece in enumerate(pieces) if piece.strip()]


class StepReward(BatchedReward):
    """A batched reward that also scores every step (:func:`split_steps` with ``self.delimiter``).

    Subclasses implement :meth:`score_steps`; :meth:`step_rewards` caches the last batch, so that a
    step reward used both as an outcome reward and for token credit scores each step once.
    """

    delimiter: str = "\n\n"

    def score_steps(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(step scores [N, S], step mask [N, S]) with S the most steps of any completion."""
        raise NotImplementedError

    def step_rewards(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`score_steps`, computed once for the same prompts and completions in a row."""
        key = (tuple(prompts), tuple(completions))
        cached = getattr(self, "_last", None)
        if cached is None or cached[0] != key:
            cached = (key, *self.score_steps(prompts, completions))
            self._last = cached
        return cached[1], cached[2]


def step_token_rewards(
    tokenizer: Any,
    completion_ids: torch.Tensor,
    lengths: torch.Tensor,
    texts: Sequence[str],
    scores: torch.Tensor,
    step_mask: torch.Tensor,
    delimiter: str,
) -> torch.Tensor:
    """Step scores placed on the tokens where the steps end -> process rewards [N, T].

    ``texts[i]`` is the decoded completion i (``Rollout.texts``: its first ``lengths[i]`` tokens,
    special tokens dropped); step k ends at character c_k = len(split_steps(texts[i])[k]). Its token is
    the first t with len(decode(ids[:t + 1])) >= c_k (a binary search over decoded prefixes, so
    O(S log T) decodes per completion). The last step ends on the last counted token instead: what
    follows its text (trailing delimiters, the EOS token, which the text drops) belongs to it, so no
    token of a completion is left without a step ahead (``pure_min`` gives such a token the value 0,
    which would push against ending the completion). Steps that end on the same token keep the lowest
    score there. Every other position is 0 (``pure_min`` reads nonzero counted positions as step ends).
    """
    import torch

    n, t_max = completion_ids.shape
    out = torch.zeros((n, t_max), dtype=torch.float32)  # [N, T]
    ids = completion_ids.tolist()
    for i in range(n):
        length = int(lengths[i])
        row = ids[i][:length]
        ends = [len(p) for p in split_steps(texts[i], delimiter)]
        memo: dict[int, int] = {}

        def decoded(t: int, row: list[int] = row, memo: dict[int, int] = memo) -> int:
            if t not in memo:
                memo[t] = len(tokenizer.decode(row[: t + 1], skip_special_tokens=True))
            return memo[t]

        steps = sum(1 for k in range(min(len(ends), step_mask.shape[1])) if step_mask[i, k])
        for k, end in enumerate(ends[:steps]):
            lo, hi = 0, length - 1
            while lo < hi and k < steps - 1:  # the first token whose decoded prefix reaches the end
                mid = (lo + hi) // 2
                if decoded(mid) >= end:
                    hi = mid
                else:
                    lo = mid + 1
            if k == steps - 1:
                lo = length - 1  # the last step owns the completion's tail
            value = float(scores[i, k])
            out[i, lo] = value if out[i, lo] == 0 else min(float(out[i, lo]), value)
    return out.to(completion_ids.device)


# ---------------------------------------------------------------- arithmetic steps

_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_SIDE = frozenset("0123456789.()+-*/x×÷ ")  # characters of an arithmetic side of an equation


def _equations(step: str) -> list[tuple[str, str]]:
    """(lhs, rhs) around every ``=``: the longest runs of arithmetic characters on each side, with
    unmatched outer parentheses dropped (``(2 + 3 = 5)`` gives ``2 + 3`` and ``5``)."""
    out = []
    for j, ch in enumerate(step):
        if ch != "=":
            continue
        a, b = j, j + 1
        while a > 0 and step[a - 1] in _SIDE:
            a -= 1
        while b < len(step) and step[b] in _SIDE:
            b += 1
        lhs, rhs = step[a:j].strip(), step[j + 1 : b].strip()
        while lhs.startswith("(") and lhs.count("(") > lhs.count(")"):
            lhs = lhs[1:].strip()
        while rhs.endswith(")") and rhs.count(")") > rhs.count("("):
            rhs = rhs[:-1].strip()
        out.append((lhs, rhs))
    return out


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ValueError("not arithmetic")


def _value(expr: str) -> float | None:
    """The value of an arithmetic expression, or None when it is not one (or divides by zero)."""
    text = expr.replace("×", "*").replace("÷", "/").replace("x", "*").strip()
    if not text or not any(c.isdigit() for c in text):
        return None
    try:
        return _eval(ast.parse(text, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def check_equations(step: str) -> bool | None:
    """Whether every checkable equation of ``step`` holds: True, False, or None when it has none.

    An equation is ``lhs = rhs`` with the longest arithmetic text on each side of an ``=``
    (chains ``a = b = c`` give a = b and b = c); sides that are not arithmetic are skipped. Equal
    means within 1e-9 relative (1e-9 absolute near 0).
    """
    found = None
    for lhs, rhs in _equations(step):
        left, right = _value(lhs), _value(rhs)
        if left is None or right is None:
            continue
        ok = math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9)
        found = ok if found is None else found and ok
    return found


class ArithSteps(StepReward):
    """``arith_steps``: each step scores ``wrong`` if one of its equations is false, else ``right``;
    as an outcome reward, the worst step (0 without steps)."""

    def __init__(self, *, delimiter: str = "\n", right: float = 1.0, wrong: float = -1.0) -> None:
        if not delimiter:
            raise ValueError("arith_steps: the knob 'delimiter' must not be empty")
        if right == 0 or wrong == 0:
            raise ValueError(
                "arith_steps: 'right' and 'wrong' must be nonzero (a 0 step reward reads as no step)"
            )
        self.delimiter, self.right, self.wrong = delimiter, float(right), float(wrong)

    def score_steps(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        prefixes = [split_steps(c, self.delimiter) for c in completions]
        s = max((len(p) for p in prefixes), default=0)
        scores = torch.zeros((len(completions), s))  # [N, S]
        mask = torch.zeros((len(completions), s))  # [N, S]
        for i, steps in enumerate(prefixes):
            start = 0
            for k, prefix in enumerate(steps):
                ok = check_equations(prefix[start:])
                scores[i, k] = self.wrong if ok is False else self.right
                mask[i, k] = 1.0
                start = len(prefix)
        return scores, mask

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        return worst_step(*self.step_rewards(prompts, completions))


@REWARDS.register("arith_steps")
def make_arith_steps(*, delimiter: str = "\n", right: float = 1.0, wrong: float = -1.0) -> StepReward:
    """Rule-based process reward for arithmetic (:class:`ArithSteps`, rlvr's own): a step (split by
    ``delimiter``) scores ``wrong`` when one of its ``lhs = rhs`` equations is false, else ``right``."""
    return ArithSteps(delimiter=delimiter, right=right, wrong=wrong)
