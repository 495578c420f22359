"""rlvr.rewards.feedback: the first wrong step against a reference, InT's intervention text and the
template critique, on hand-built step texts."""

from __future__ import annotations

import pytest

from rlvr.rewards.feedback import StepError, critique, first_error, intervention, step_value

REF = "4 - 1 = 3\n3 - 7 = -4\n<answer>-4</answer>"


def test_step_values():
    assert step_value("4 - 1 = 3") == ("number", 3.0)
    assert step_value("so 2 + 2 = 4 = 4") == ("number", 4.0)  # the last equation's right side
    assert step_value("  <answer> -4 </answer>") == ("answer", "-4")
    assert step_value("Divide  both sides:") == ("text", "Divide both sides:")


def test_the_error_at_the_first_step():
    bad = "4 - 1 = 2\n2 - 7 = -5\n<answer>-5</answer>"
    assert first_error(bad, REF) == StepError(0, "4 - 1 = 2", "4 - 1 = 3", "false")
    assert intervention(bad, REF) == REF  # nothing kept before it: the reference from step 1
    assert critique(bad, REF, correct=False) == (
        'The final answer -5 is wrong. Step 1 states "4 - 1 = 2", but 4 - 1 is 3.'
    )


def test_the_error_at_a_middle_step_keeps_the_samples_own_prefix():
    # a true equation with the wrong value: it differs from the reference's step
    bad = "4-1 = 3\n3 + 7 = 10\n<answer>10</answer>"
    assert first_error(bad, REF) == StepError(1, "3 + 7 = 10", "3 - 7 = -4", "differs")
    assert intervention(bad, REF) == "4-1 = 3\n3 - 7 = -4\n<answer>-4</answer>"
    assert critique(bad, REF, correct=False) == (
        'The final answer 10 is wrong. Step 2, "3 + 7 = 10", gives 10; the correct step there gives -4.'
    )
    # blank lines are no steps: the step count and the kept prefix skip them
    spaced = "4-1 = 3\n\n3 - 7 = -3\n<answer>-3</answer>"
    assert first_error(spaced, REF) == StepError(1, "3 - 7 = -3", "3 - 7 = -4", "false")
    assert intervention(spaced, REF) == "4-1 = 3\n3 - 7 = -4\n<answer>-4</answer>"


def test_no_error_and_no_steps():
    assert first_error(REF, REF) is None and intervention(REF, REF) is None
    same = "4 - 1 = 3\n3 - 7 = -4\n<answer> -4 </answer>"  # the same values, other spacing
    assert first_error(same, REF) is None
    for blank in ("", "   ", "\n\n"):
        assert first_error(blank, REF) is None and intervention(blank, REF) is None
    assert first_error("4 - 1 = 3", "") is None  # a reference without steps
    assert critique(REF, REF, correct=True) is None  # nothing to critique in a right answer
    assert critique(same, REF, correct=False) == "The final answer -4 is wrong."


def test_a_sample_that_stops_early_or_runs_past_the_reference():
    assert first_error("4 - 1 = 3", REF) == StepError(1, "", "3 - 7 = -4", "missing")
    assert intervention("4 - 1 = 3", REF) == REF
    assert critique("4 - 1 = 3", REF, correct=False) == (
        "The response gives no final answer in <answer></answer> tags. The work stops after step "
        "1, before the answer is reached."
    )
    long = f"{REF}\n<answer>5</answer>"
    assert first_error(long, REF) == StepError(3, "<answer>5</answer>", "", "extra")
    assert intervention(long, REF) == REF  # up to the reference's end
    assert critique(long, REF, correct=False).endswith(  # type: ignore[union-attr]
        'Step 4, "<answer>5</answer>", comes after the solution is complete.'
    )


def test_a_step_of_words_and_other_delimiters():
    ref = "Solve: x equals 2; <answer>2</answer>"
    assert first_error("Solve: x equals 3; <answer>3</answer>", ref, delimiter=";") == StepError(
        0, "Solve: x equals 3", "Solve: x equals 2", "differs"
    )
    assert critique("Solve: x equals 3; <answer>3</answer>", ref, correct=False, delimiter=";") == (
        'The final answer 3 is wrong. Step 1, "Solve: x equals 3", is not the right step there.'
    )
    assert critique("junk", None, correct=False) == (
        "The response gives no final answer in <answer></answer> tags."
    )
    with pytest.raises(ValueError, match="delimiter"):
        first_error(REF, REF, delimiter="")
