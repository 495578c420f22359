"""Worked solutions: the final answer passes the task's own scorer, and every arithmetic line passes
``arith_steps``."""

from __future__ import annotations

import pytest

from rlvr.data.solutions import SOLVERS, solve
from rlvr.data.tasks import Problem, ReasoningGymTask
from rlvr.rewards.steps import check_equations, make_arith_steps
from rlvr.rewards.verifiers import REWARDS, extract_answer

# task -> (generation knobs, the least share of problems the solver must solve)
FAMILIES = {
    "chain_sum": ({}, 1.0),
    "basic_arithmetic": ({}, 0.9),
    "countdown": ({}, 0.9),
    "gcd": ({}, 1.0),
    "lcm": ({}, 1.0),
    "prime_factorization": ({}, 1.0),
    "simple_equations": ({}, 1.0),
}
ARITHMETIC = {"chain_sum", "basic_arithmetic", "countdown", "gcd", "lcm", "prime_factorization"}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_solutions_score_full_marks_and_steps_check(name):
    knobs, share = FAMILIES[name]
    problems = ReasoningGymTask(name, seed=3, heldout_size=4, **knobs).next(60)
    sols = [SOLVERS[name](p) for p in problems]
    solved = [(p, s) for p, s in zip(problems, sols, strict=True) if s is not None]
    assert len(solved) >= share * len(problems)
    score = REWARDS["answer"]()
    for p, s in solved:
        assert score(p.question, s, p.answer, **p.meta) == 1.0, (p.question, s)
        assert s.splitlines()[-1] == f"<answer>{extract_answer(s)}</answer>"
    steps = make_arith_steps()
    worst = steps([p.question for p, _ in solved], [s for _, s in solved], [], [], group_size=1)
    assert min(worst) == 1.0  # no false equation on any line
    if name in ARITHMETIC:  # and the work is checkable: most lines state an equation
        lines = [ln for _, s in solved for ln in s.splitlines()]
        assert sum(check_equations(ln) is True for ln in lines) >= 0.4 * len(lines)


def test_a_wrong_step_is_caught():
    """The steps are really checked: a solution with one digit changed fails arith_steps."""
    p = Problem("4 - 1 - 7 =", "-4", {"source_dataset": "chain_sum", "expression": "4 - 1 - 7"})
    good = solve(p)
    assert good == "4 - 1 = 3\n3 - 7 = -4\n<answer>-4</answer>"
    bad = good.replace("= 3", "= 2")
    assert make_arith_steps()(["q"], [bad], [], [], group_size=1) == [-1.0]


def test_order_of_operations_and_dead_ends():
    p = Problem("", "-1", {"source_dataset": "basic_arithmetic", "expression": "5 - 3 * 2"})
    assert solve(p) == "5 - 3 * 2 = 5 - 6\n5 - 6 = -1\n<answer>-1</answer>"
    p = Problem("", "", {"source_dataset": "countdown", "numbers": [3, 5, 7], "target": 22})
    text = solve(p)
    assert "dead end" in text and extract_answer(text) in text.splitlines()[-2]
    assert solve(Problem("", "", {"source_dataset": "no_such_task"})) is None
