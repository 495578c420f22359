"""Feedback on a failed completion from a reference worked solution: its first wrong step, InT's
one-step intervention, and a natural-language critique (Critique-GRPO).

Steps are cut as the ``arith_steps`` reward cuts them (:func:`rlvr.rewards.steps.split_steps`, one
step per line by default). A step's *value* is what it states: the text of its ``<answer>...</answer>``
when it has one, else the value of the right side of its last checkable ``lhs = rhs`` equation, else
its text (whitespace collapsed). Step k of a completion is wrong when one of its equations is false
(:func:`rlvr.rewards.steps.check_equations`) or when its value differs from the value of the
reference's step k (numbers within 1e-9 relative). The rules are rlvr's: the papers' models judge
their own traces, the reasoner's task families have exact worked solutions to compare with
(``rlvr.data.solutions``). Plain Python, no tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from rlvr.rewards.steps import _equations, _value, check_equations, split_steps
from rlvr.rewards.verifiers import extract_answer

__all__ = [
    "StepError",
    "critique",
    "error_prefix",
    "first_error",
    "intervention",
    "step_pieces",
    "step_value",
]

Reason = Literal["false", "differs", "missing", "extra"]


@dataclass(frozen=True)
class StepError:
    """The first step of a completion that disagrees with the reference.

    ``index``: 0-based step index; ``step``: the completion's step ('' when it stopped before it);
    ``expected``: the reference's step at ``index`` ('' when the reference has ended); ``reason``:
    'false' (an equation of the step is false), 'differs' (its value is not the reference's),
    'missing' (the completion stopped before the reference's step ``index``) or 'extra' (the
    reference ended before it)."""

    index: int
    step: str
    expected: str
    reason: Reason


def step_pieces(text: str, delimiter: str = "\n") -> list[str]:
    """The steps of ``text`` as pieces (the text between delimiters), blank pieces dropped:
    ``"a\\n\\nb"`` -> ``["a", "b"]``. Piece k is step k of :func:`split_steps`."""
    if not delimiter:
        raise ValueError("delimiter must not be empty")
    return [piece.strip() for piece in text.split(delimiter) if piece.strip()]


def step_value(step: str) -> tuple[str, str | float]:
    """What a step states: ('answer', its tagged answer), ('number', the right side of its last
    checkable equation) or ('text', its whitespace-collapsed text)."""
    answer = extract_answer(step)
    if answer is not None:
        return "answer", " ".join(answer.split())
    sides = [(_value(lhs), _value(rhs)) for lhs, rhs in _equations(step)]
    checked = [r for lv, r in sides if lv is not None and r is not None]
    if checked:
        return "number", float(checked[-1])
    return "text", " ".join(step.split())


def _same(a: tuple[str, str | float], b: tuple[str, str | float]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "number":
        return math.isclose(float(a[1]), float(b[1]), rel_tol=1e-9, abs_tol=1e-9)
    return a[1] == b[1]


def first_error(completion: str, reference: str, *, delimiter: str = "\n") -> StepError | None:
    """The first step of ``completion`` that disagrees with ``reference`` (module docstring), or
    None: the completion has no step (blank), the reference has none, or every step agrees and the
    completion is as long as the reference."""
    ours, ref = step_pieces(completion, delimiter), step_pieces(reference, delimiter)
    if not ours or not ref:
        return None
    for k, step in enumerate(ours):
        expected = ref[k] if k < len(ref) else ""
        if check_equations(step) is False:
            return StepError(k, step, expected, "false")
        if k >= len(ref):
            return StepError(k, step, "", "extra")
        if not _same(step_value(step), step_value(expected)):
            return StepError(k, step, expected, "differs")
    if len(ours) < len(ref):
        return StepError(len(ours), "", ref[len(ours)], "missing")
    return None


def error_prefix(completion: str, err: StepError, *, delimiter: str = "\n") -> str:
    """The completion's own text up to the end of its last step before ``err`` ('' when the error is
    at its first step): what InT keeps of a failed trace."""
    return split_steps(completion, delimiter)[err.index - 1] if err.index > 0 else ""


def intervention(completion: str, reference: str, *, delimiter: str = "\n") -> str | None:
    """InT's corrected trace ("InT: Self-Proposed Interventions Enable Credit Assignment in LLM
    Reasoning"): the completion's text up to the end of its last step before the first error, then
    the reference's step at the error (the one-step intervention) and the reference's steps after
    it, joined by ``delimiter``. None when :func:`first_error` finds no error.

    The paper's SFT target ends at the intervention and its model proposes the step itself; here the
    intervention is the reference's step, and the reference's remaining steps complete the trace so
    that the row is a whole solution the run's verifier can score (rlvr's form). The steps before
    the error agree with the reference's, so its remaining steps follow from them. An 'extra' error
    (the completion went on past the reference's end) gives the completion's text up to it.
    """
    err = first_error(completion, reference, delimiter=delimiter)
    if err is None:
        return None
    head = error_prefix(completion, err, delimiter=delimiter)
    tail = delimiter.join(step_pieces(reference, delimiter)[err.index :])
    if not tail:
        return head
    return f"{head}{delimiter}{tail}" if head else tail


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _false_equation(step: str) -> tuple[str, str, float] | None:
    """(lhs, rhs, the value of lhs) of the first false equation of ``step``."""
    for lhs, rhs in _equations(step):
        lv, rv = _value(lhs), _value(rhs)
        if lv is not None and rv is not None and not math.isclose(lv, rv, rel_tol=1e-9, abs_tol=1e-9):
            return lhs, rhs, lv
    return None


def critique(
    completion: str, reference: str | None, *, correct: bool, delimiter: str = "\n"
) -> str | None:
    """A natural-language critique of a failed completion, from a template (rlvr's; Critique-GRPO,
    "Critique-GRPO: Advancing LLM Reasoning with Natural Language and Numerical Feedback", uses a
    model's critiques): the verifier's outcome, then the first wrong step against ``reference``
    (:func:`first_error`) and what is wrong with it. None for a correct completion.

        outcome:   'The final answer X is wrong.' | 'The response gives no final answer in
                   <answer></answer> tags.'
        'false':   'Step k states "lhs = rhs", but lhs is v.'
        'differs': 'Step k, "...", gives a; the correct step there gives b.' (numbers), else
                   'Step k, "...", is not the right step there.'
        'missing': 'The work stops after step k, before the answer is reached.'
        'extra':   'Step k, "...", comes after the solution is complete.'

    Without a reference, or when no step disagrees, the critique is the outcome alone. Steps are
    counted from 1.
    """
    if correct:
        return None
    answer = extract_answer(completion)
    head = (
        f"The final answer {answer} is wrong."
        if answer
        else "The response gives no final answer in <answer></answer> tags."
    )
    err = None if reference is None else first_error(completion, reference, delimiter=delimiter)
    if err is None:
        return head
    k = err.index + 1
    if err.reason == "false" and (bad := _false_equation(err.step)) is not None:
        lhs, rhs, lv = bad
        detail = f'Step {k} states "{lhs} = {rhs}", but {lhs} is {_num(lv)}.'
    elif err.reason == "missing":
        detail = f"The work stops after step {k - 1}, before the answer is reached."
    elif err.reason == "extra":
        detail = f'Step {k}, "{err.step}", comes after the solution is complete.'
    else:
        got, want = step_value(err.step), step_value(err.expected)
        if got[0] == want[0] == "number":
            detail = (
                f'Step {k}, "{err.step}", gives {_num(float(got[1]))}; '
                f"the correct step there gives {_num(float(want[1]))}."
            )
        else:
            detail = f'Step {k}, "{err.step}", is not the right step there.'
    return f"{head} {detail}"
