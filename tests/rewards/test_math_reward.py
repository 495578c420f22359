"""Math answers: extraction, math-verify equivalence on tricky pairs, time limits, the math /
exact-match / think-format rewards, and the arithmetic example data set."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import signal
import threading
import time
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

import rlvr.rewards.math as rm
from rlvr.registry import KnobError
from rlvr.rewards.math import (
    extract_math_answer,
    is_number_literal,
    is_unevaluated_arithmetic,
    make_exact_match_reward,
    make_math_reward,
    math_equal,
    think_format_reward,
)
from rlvr.rewards.runner import RewardComponent, RewardRunner
from rlvr.rewards.verifiers import REWARDS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data" / "arithmetic.jsonl"

# --------------------------------------------------------------------------------------------------
# extraction


@pytest.mark.parametrize(
    ("completion", "auto", "boxed", "tag", "last"),
    [
        ("so \\boxed{\\frac{1}{2}} ok", "\\frac{1}{2}", "\\frac{1}{2}", None, "2"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}", "\\{1,2\\}", None, "2"),  # escaped braces do not count
        ("\\boxed{1} then \\boxed{ 2 }", "2", "2", None, "2"),  # the last box, stripped
        ("\\fbox{7}", "7", "7", None, "7"),
        ("x \\boxed 5 y", "5", "5", None, "5"),  # \boxed without braces
        ("\\boxed{3} and \\boxed{4", "4", None, None, "4"),  # last box never closed
        ("\\boxedx{3}", "3", None, None, "3"),  # not a box command
        ("a \\boxed{} b <answer>3</answer>", "", "", "3", "3"),  # an empty box ends auto
        ("<answer>1</answer> <answer> -12 </answer>", "-12", None, "-12", "-12"),
        ("<answer>\\boxed{5}</answer>", "5", "5", "\\boxed{5}", "5"),
        ("so 3-5 = -2.", "-2", None, None, "-2"),  # binary minus is not a sign; a sign is
        ("total 1,234.5 dollars", "1,234.5", None, None, "1,234.5"),
        ("lists 1,2,3", "3", None, None, "3"),
        ("it is 3/4", "3/4", None, None, "3/4"),
        ("about .5 of x^2", "2", None, None, "2"),
        ("costs $1,000.", "1,000", None, None, "1,000"),
        ("x2 abc", None, None, None, None),  # digits glued to a word are not a number
        ("", None, None, None, None),
    ],
)
def test_extract_math_answer(completion, auto, boxed, tag, last):
    assert extract_math_answer(completion) == auto
    assert extract_math_answer(completion, mode="boxed") == boxed
    assert extract_math_answer(completion, mode="answer_tag") == tag
    assert extract_math_answer(completion, mode="last_number") == last


def test_extract_bad_mode_is_named():
    with pytest.raises(ValueError, match="'bogus'"):
        extract_math_answer("1", mode="bogus")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# equivalence: (prediction, reference)

EQUAL = [
    ("0.5", "\\frac{1}{2}"),
    ("\\frac{1}{2}", "0.5"),
    ("x=2", "2"),
    ("x = 2", "2"),
    ("2", "x=2"),
    ("\\dfrac{1}{2}", "\\frac12"),
    ("\\tfrac{3}{4}", "0.75"),
    ("1/2", "0.5"),
    ("\\{2,1\\}", "\\{1,2\\}"),
    ("(0, 1]", "(0,1]"),
    ("\\left(0,1\\right]", "(0,1]"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("\\frac{\\sqrt{3}}{2}", "\\sin(\\pi/3)"),
    ("x^2+2x+1", "(x+1)^2"),
    ("50\\%", "0.5"),
    ("50%", "50"),
    ("1,000", "1000"),
    ("1\\,000", "1000"),
    ("1{,}000", "1000"),
    ("\\text{(B)}", "B"),
    ("(B)", "B"),
    ("-\\frac{1}{2}", "-0.5"),
    ("\\frac{-1}{2}", "-\\frac{1}{2}"),
    ("1.0", "1"),
    ("0.333333", "\\frac{1}{3}"),  # 6 decimals
    ("1 \\frac{1}{2}", "\\frac{3}{2}"),  # a mixed number
    ("$\\frac{3}{4}$", "The answer is \\boxed{0.75}."),  # delimiters; a boxed reference
    ("\\infty", "\\infty"),
    ("1+1=2", "2"),  # a true equation ending in the answer
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),
]

UNEQUAL = [
    ("[0,1]", "(0,1]"),
    ("(0,1)", "(0,1]"),
    ("B", "C"),
    ("2", "-2"),
    ("0.333", "\\frac{1}{3}"),
    ("3.14", "\\pi"),
    ("y=2", "x=2"),
    ("12", "1,2"),
    ("2,3", "2.3"),
    ("2x", "2"),
    ("\\pm 2", "2"),
    ("2 \\pm 1", "3"),
    ("x > 1 \\text{ and } x < 0", "\\emptyset"),
    ("2.0000001", "2"),
]

ADVERSARIAL = [  # answers that hedge or pad must not pass
    ("1 2 3 4 5 6 7", "7"),
    ("1 2 3 4 5 6 7", "28"),  # math-verify alone reads this as 1+2+...+7
    ("3 4", "7"),
    ("1\\ 2", "3"),
    ("0.5 or 1", "0.5"),
    ("0.5 \\text{ or } 1", "0.5"),
    ("0.5, 1", "0.5"),
    ("1,2,3,4,5", "3"),
    ("\\{2, 3\\}", "2"),
    ("x=2 \\text{ or } x=3", "2"),
    ("3=2", "2"),  # math-verify alone keeps the right side
    ("", "0"),
    ("   ", "0"),
    ("\\boxed{}", "0"),
    ("{}", "0"),
    ("\\text{any number}", "2"),
    ("two", "2"),
]


@pytest.mark.parametrize(("pred", "gold"), EQUAL)
def test_equal_pairs(pred, gold):
    assert math_equal(pred, gold)


@pytest.mark.parametrize(("pred", "gold"), UNEQUAL + ADVERSARIAL)
def test_unequal_pairs(pred, gold):
    assert not math_equal(pred, gold)


def test_empty_reference_is_never_equal():
    assert not math_equal("0", "")


def test_math_equal_in_a_worker_thread():
    """Signals work only in the main thread: there the call runs without a limit and still answers."""
    pairs = [*EQUAL[:8], *ADVERSARIAL[:8]]
    out: list[bool] = []
    worker = threading.Thread(target=lambda: out.extend(math_equal(p, g) for p, g in pairs))
    worker.start()
    worker.join(60)
    assert out == [True] * 8 + [False] * 8


# --------------------------------------------------------------------------------------------------
# the time limit


def _slow_verify(*args, **kwargs):
    time.sleep(5)
    return True


def _swallowing_verify(*args, **kwargs):
    with contextlib.suppress(BaseException):  # what a bare except inside sympy would do
        time.sleep(5)
    time.sleep(5)
    return True


@pytest.mark.parametrize("slow", [_slow_verify, _swallowing_verify])
def test_timeout_gives_false_and_restores_signals(monkeypatch, slow):
    monkeypatch.setattr(rm, "verify", slow)
    before = signal.getsignal(signal.SIGALRM)
    t0 = time.monotonic()
    assert math_equal("7", "7", timeout_s=0.2) is False
    assert time.monotonic() - t0 < 1.5
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


class _Outer(BaseException):
    pass


def _raise_outer(signum, frame):
    raise _Outer


def test_an_earlier_outer_timer_fires_first(monkeypatch):
    monkeypatch.setattr(rm, "verify", _slow_verify)
    old = signal.signal(signal.SIGALRM, _raise_outer)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        with pytest.raises(_Outer):
            math_equal("8", "8", timeout_s=5)
        assert time.monotonic() - t0 < 1.5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_a_later_outer_timer_is_rearmed():
    old = signal.signal(signal.SIGALRM, _raise_outer)
    try:
        signal.setitimer(signal.ITIMER_REAL, 20)
        assert math_equal("9", "9", timeout_s=1)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 15 < left <= 20
        assert signal.getsignal(signal.SIGALRM) is _raise_outer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_runner_timeout_wraps_the_math_reward(monkeypatch):
    """The reward runner's per-call SIGALRM limit (0.3 s) ends a slow verification (limit 5 s)."""
    runner = RewardRunner(
        [RewardComponent("math", 1.0, {"timeout_s": 5.0})], timeout=0.3, log=lambda m: None
    )
    res = runner.score(["q", "q"], ["<answer>7</answer>", "<answer>8</answer>"], ["7", "7"], [{}, {}])
    assert res.parts == [[1.0], [0.0]]
    monkeypatch.setattr(rm, "verify", _slow_verify)
    res = runner.score(["q"], ["<answer>6</answer>"], ["6"], [{}])
    assert res.parts == [[0.0]] and res.failures == {"math": 1}


# --------------------------------------------------------------------------------------------------
# answer forms


@pytest.mark.parametrize(
    ("text", "literal", "unevaluated"),
    [
        ("7", True, False),
        ("-7", True, False),
        ("0.75", True, False),
        (".5", True, False),
        ("1,234", True, False),
        ("3/4", True, False),
        ("\\frac{3}{4}", True, False),
        ("\\frac34", True, False),
        ("\\dfrac{-1}{2}", True, False),
        ("-\\frac{1}{2}", True, False),
        ("50\\%", True, False),
        ("\\boxed{7}", True, False),
        ("(3)", False, False),
        ("6/8", False, True),
        ("14/2", False, True),
        ("\\frac{6}{8}", False, True),
        ("\\frac{4}{1}", False, True),
        ("3+4", False, True),
        ("3 - 4", False, True),
        ("2^3", False, True),
        ("3 \\times 4", False, True),
        ("\\sqrt{49}", False, True),
        ("2\\sqrt{2}", False, True),
        ("x=2", False, False),
        ("(0,1]", False, False),
        ("\\pi", False, False),
    ],
)
def test_number_forms(text, literal, unevaluated):
    assert is_number_literal(text) is literal
    assert is_unevaluated_arithmetic(text) is unevaluated


# --------------------------------------------------------------------------------------------------
# rewards


@pytest.mark.parametrize(
    ("completion", "answer", "expected"),
    [
        ("<answer>7</answer>", "7", 1.0),
        ("<answer>7.0</answer>", "7", 1.0),
        ("<answer>0.75</answer>", "\\frac{3}{4}", 1.0),
        ("<answer>3/4</answer>", "\\frac{3}{4}", 1.0),
        ("I think \\boxed{\\frac{1}{2}}.", "0.5", 1.0),
        ("<answer>x = 2</answer>", "\\boxed{2}", 1.0),
        ("so it is 12", "12", 1.0),  # last number
        ("<answer>1 2 3 4 5 6 7</answer>", "7", 0.0),  # many numbers
        ("<answer>1 2 3 4 5 6 7</answer>", "28", 0.0),
        ("<answer>0.5 or 1</answer>", "0.5", 0.0),
        ("\\boxed{} the answer is 3", "3", 0.0),  # an empty box
        ("<answer>8</answer>", "7", 0.0),
        ("no answer", "7", 0.0),
        ("<answer>3 + 4</answer>", "7", 0.0),  # restating the question's arithmetic
        ("<answer>6/8</answer>", "\\frac{3}{4}", 0.0),  # not simplified
        ("<answer>\\sqrt{49}</answer>", "7", 0.0),
        ("<answer>\\sqrt{8}</answer>", "2\\sqrt{2}", 1.0),  # the reference is not a literal
    ],
)
def test_math_reward(completion, answer, expected):
    assert REWARDS["math"]()("q", completion, answer) == expected


def test_math_reward_knobs():
    lenient = make_math_reward(reject_unevaluated=False)
    assert lenient("q", "<answer>3 + 4</answer>", "7") == 1.0
    assert lenient("q", "<answer>6/8</answer>", "\\frac{3}{4}") == 1.0
    tag_only = make_math_reward(extract="answer_tag")
    assert tag_only("q", "\\boxed{7}", "7") == 0.0
    assert tag_only("q", "\\boxed{7} <answer>7</answer>", "7") == 1.0
    with pytest.raises(ValueError, match="reference answer is empty"):
        make_math_reward()("q", "<answer>1</answer>", " ")
    with pytest.raises(KnobError, match="extract"):
        REWARDS.check_knobs("math", {"extract": "bogus"})
    with pytest.raises(KnobError, match="timeout_s"):
        REWARDS.check_knobs("math", {"timeout_s": -1.0})


@pytest.mark.parametrize(
    ("kwargs", "completion", "answer", "expected"),
    [
        ({}, "<answer> Paris </answer>", "paris", 1.0),
        ({}, "<answer>New   York</answer>", "new york", 1.0),
        ({}, "<answer>Paris</answer>", "Paris, France", 0.0),
        ({}, "Paris", "Paris", 0.0),  # no tag
        ({"case_sensitive": True}, "<answer>Paris</answer>", "paris", 0.0),
        ({"normalize_space": False}, "<answer>New   York</answer>", "new york", 0.0),
        ({"extract": "none"}, "  Paris\n", "paris", 1.0),
        ({"extract": "boxed"}, "so \\boxed{42}", "42", 1.0),
        ({"extract": "last_number"}, "it is 1,234.", "1,234", 1.0),
        ({"extract": "last_number"}, "it is 1,234.", "1234", 0.0),  # exact, not numeric
    ],
)
def test_exact_match_reward(kwargs, completion, answer, expected):
    assert make_exact_match_reward(**kwargs)("q", completion, answer) == expected
    assert REWARDS["exact_match"](**kwargs)("q", completion, answer) == expected


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        ("<think>3 + 4 = 7</think><answer>7</answer>", 1.0),
        ("  <think>\na < b\n</think>\n\n<answer> 7 </answer>\n", 1.0),
        ("<think></think><answer>7</answer>", 1.0),
        ("<answer>7</answer>", 0.0),  # no think block
        ("<think>x</think>", 0.0),  # no answer
        ("<think>x</think><answer> </answer>", 0.0),  # empty answer
        ("<think>x</think><answer>1</answer><answer>2</answer>", 0.0),  # two answers
        ("<think>a</think><think>b</think><answer>1</answer>", 0.0),  # two think blocks
        ("<think>a <answer>1</answer></think><answer>1</answer>", 0.0),  # answer inside think
        ("<answer>1</answer><think>x</think>", 0.0),  # wrong order
        ("so <think>x</think><answer>1</answer>", 0.0),  # text before
        ("<think>x</think> then <answer>1</answer>", 0.0),  # text between
        ("<think>x</think><answer>1</answer> bye", 0.0),  # text after
        ("<think>x<answer>1</answer>", 0.0),  # think never closed
    ],
)
def test_think_format_reward(completion, expected):
    assert think_format_reward("q", completion, "7") == expected
    assert REWARDS["think_format"]()("q", completion, "7") == expected


# --------------------------------------------------------------------------------------------------
# the arithmetic data set


def _rows() -> list[dict[str, str]]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]


def _value(answer: str) -> Fraction:
    """The rational value of a data set answer, read without math-verify."""
    if m := re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", answer):
        return Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)
    return Fraction(Decimal(answer))


def _recompute(prompt: str) -> Fraction:
    """The answer of a prompt, computed from its text."""
    if m := re.fullmatch(r"(\d) ([-+*]) (\d) =", prompt):
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        return Fraction({"+": a + b, "-": a - b, "*": a * b}[op])
    if m := re.fullmatch(r"What is (\d+)/(\d+) \+ (\d+)/(\d+)\?", prompt):
        a, b, c, d = map(int, m.groups())
        return Fraction(a, b) + Fraction(c, d)
    if m := re.fullmatch(r"Simplify (\d+)/(\d+)", prompt):
        return Fraction(int(m.group(1)), int(m.group(2)))
    if m := re.fullmatch(r"What is (\d*\.\d+) \+ (\d*\.\d+)\?", prompt):
        return Fraction(Decimal(m.group(1))) + Fraction(Decimal(m.group(2)))
    if m := re.fullmatch(r"Write (\d+)/(\d+) as a decimal\.", prompt):
        return Fraction(int(m.group(1)), int(m.group(2)))
    raise AssertionError(f"unknown prompt form: {prompt!r}")


def _equivalent(x: Fraction, answer: str) -> str:
    """Another way to write the same number: a decimal for a fraction, a fraction for the rest."""
    if x.denominator == 1:
        return f"{x.numerator}.0"
    if answer.lstrip("-").startswith("\\frac"):
        return (
            str(Decimal(x.numerator) / Decimal(x.denominator))
            if 10**6 % x.denominator == 0
            else (f"{x.numerator}/{x.denominator}")
        )
    return f"\\frac{{{x.numerator}}}{{{x.denominator}}}"


def test_dataset_rows_are_well_formed_and_right():
    rows = _rows()
    assert 190 <= len(rows) <= 210
    assert [r["id"] for r in rows] == [f"arith-{i:04d}" for i in range(1, len(rows) + 1)]
    assert len({r["prompt"] for r in rows}) == len(rows)
    kinds = {re.sub(r"\d+(\.\d+)?", "N", r["prompt"]) for r in rows}
    assert len(kinds) >= 7
    for r in rows:
        assert set(r) == {"prompt", "answer", "id"}, r["id"]
        x = _value(r["answer"])
        assert x == _recompute(r["prompt"]), r["id"]
        assert is_number_literal(r["answer"]), r[
            "id"
        ]  # simplest form, so the math reward's guard applies
        assert len(r["answer"]) <= 12, r["id"]


def test_dataset_answers_verify():
    """Each answer equals itself and an equivalent form, and not its neighbour value + 1."""
    for r in _rows():
        a, x = r["answer"], _value(r["answer"])
        other = _equivalent(x, a)
        assert math_equal(a, a), r["id"]
        assert math_equal(other, a), (r["id"], other)
        assert not math_equal(str(x.numerator + x.denominator) + "/" + str(x.denominator), a), r["id"]


def test_dataset_is_what_the_generator_makes():
    spec = importlib.util.spec_from_file_location(
        "make_arithmetic", ROOT / "examples" / "make_arithmetic.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.render(module.make_rows()) == DATA.read_text(encoding="utf-8")
    assert module.make_rows(seed=1) != module.make_rows(seed=0)
