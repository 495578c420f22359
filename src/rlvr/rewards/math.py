"""Math answers: extraction, math-verify equivalence; the math, exact-match and think-format rewards.

Extraction (:func:`extract_math_answer`) finds the final answer of a completion: the last ``\\boxed{}``
(or ``\\fbox{}``) with balanced braces, the last ``<answer>...</answer>``, or the last number.

Equivalence (:func:`math_equal`) parses both sides as LaTeX with math-verify (``parse`` on the answer
wrapped in ``\\boxed{}``, then ``verify(gold, pred)``), so that ``\\frac{1}{2}`` = ``0.5`` = ``1/2``,
``x=2`` = ``2``, ``\\{1,2\\}`` = ``\\{2,1\\}``, ``(0,1]`` = ``(0, 1]`` ≠ ``[0,1]``, ``2\\sqrt{2}`` =
``\\sqrt{8}``, ``1,000`` = ``1000``, ``50\\%`` = ``0.5`` = ``50`` (math-verify's percentage rule) and
``\\text{(B)}`` = ``B``. Two kinds of answer that math-verify would accept are refused because a
policy can game them: numbers set side by side (``1 2 3 4 5 6 7``, which LaTeX parsing reads as the
sum of mixed numbers, 28) and a false numeric equation (``3=2``, which math-verify reduces to its
right side, 2).

Timeouts: math-verify's own timeouts use ``signal.alarm`` with whole seconds, fail outside the main
thread, and cancel any timer the caller had set. Here they are turned off, and one time limit covers
the whole of a :func:`math_equal` call instead: an ``ITIMER_REAL`` timer in the main thread that leaves
an earlier caller's timer (the reward runner's per-call timeout) to fire first when it is due sooner,
and re-arms it afterwards with its remaining time. In any other thread the call runs WITHOUT a time
limit (signals reach only the main thread); run rewards in processes when a limit matters.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from math import gcd
from typing import Any, Literal

import sympy
from math_verify import LatexExtractionConfig, parse, verify

from rlvr.rewards.verifiers import REWARDS, RewardFn, extract_answer

__all__ = [
    "extract_boxed",
    "extract_last_number",
    "extract_math_answer",
    "is_number_literal",
    "is_unevaluated_arithmetic",
    "make_exact_match_reward",
    "make_math_reward",
    "make_think_format_reward",
    "math_equal",
    "think_format_reward",
]

ExtractMode = Literal["auto", "boxed", "answer_tag", "last_number"]


class _NoTimeoutWarning(logging.Filter):
    """Drop math-verify's one-time warning that its own timeouts are off (ours replace them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_NoTimeoutWarning())

# --------------------------------------------------------------------------------------------------
# extraction

_BOX = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# a number as written: optional sign (not after a word, number or bracket, so 3-5 gives 5), then
# thousands groups 1,234(.5), a fraction 3/4, a decimal 0.25 / .25, or an integer
_NUMBER = re.compile(
    r"(?:(?<![\w)\]}.])-)?(?<![\w.])"
    r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+/\d+|\d+(?:\.\d+)?|\.\d+)"
)


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (braces balanced, ``\\{`` skipped).

    ``\\boxed 5`` (no braces) gives ``5``. None when there is no box or the last one is never closed.
    """
    found = list(_BOX.finditer(text))
    if not found:
        return None
    i = found[-1].end()
    while i < len(text) and text[i].isspace():
        i += 1
    if i == len(text):
        return None
    if text[i] != "{":  # \boxed 5: the token up to the next space or $
        m = re.match(r"[^\s$]+", text[i:])
        return m.group(0) if m else None
    depth, start = 0, i + 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2  # an escaped character, \{ or \} included, never counts
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
        i += 1
    return None


def extract_last_number(text: str) -> str | None:
    """The last number as written (``-3``, ``0.25``, ``.5``, ``3/4``, ``1,234.5``), or None."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def extract_math_answer(completion: str, *, mode: ExtractMode = "auto") -> str | None:
    """The final answer of a completion, or None when the chosen method finds none.

    ``boxed``: the last ``\\boxed{}`` / ``\\fbox{}``; ``answer_tag``: the last ``<answer>...</answer>``;
    ``last_number``: the last number; ``auto``: boxed, else answer tag, else last number (a method
    that finds an empty answer, such as ``\\boxed{}``, ends the search with ``""``).
    """
    if mode == "boxed":
        return extract_boxed(completion)
    if mode == "answer_tag":
        return extract_answer(completion)
    if mode == "last_number":
        return extract_last_number(completion)
    if mode == "auto":
        for method in (extract_boxed, extract_answer, extract_last_number):
            found = method(completion)
            if found is not None:
                return found
        return None
    raise ValueError(f"extract mode {mode!r}: expected 'auto', 'boxed', 'answer_tag' or 'last_number'")


# --------------------------------------------------------------------------------------------------
# answer forms

_MATH_DELIMS = re.compile(r"^\s*(?:\$\$(.*)\$\$|\$(.*)\$|\\\((.*)\\\)|\\\[(.*)\\\])\s*$", re.DOTALL)
# LaTeX thousands separators 1\,000 and 1{,}000 (math-verify reads 1\,000 as 1*0)
_THIN_THOUSANDS = re.compile(r"(?<=\d)(?:\\,|\{,\}|\\ |~)(?=\d{3}(?!\d))")
_SPACE_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?$")
# two numbers with only space between them: LaTeX parsing adds them up as mixed numbers
_JUXTAPOSED = re.compile(r"\d(?:\s|\\[,;:! ]|\\q?quad|~)+[-+]?\.?\d")
_LITERAL = re.compile(
    r"^[-+]?(?:(?P<int>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"|(?P<num>\d+)/(?P<den>\d+)"
    r"|\\[dt]?frac(?:\{(?P<fnum>-?\d+)\}\{(?P<fden>\d+)\}|(?P<dnum>\d)(?P<dden>\d)))"
    r"(?:\\?%)?$"
)
_ARITH_COMMANDS = re.compile(r"\\(?:left|right|times|cdot|div|[dt]?frac|sqrt|%)(?![A-Za-z])")
_ARITH_CHARS = frozenset("0123456789.,+-*/^(){}×÷·%")
# an operation: an operator after a number or closing bracket (not a sign), or an operator command
_OPERATION = re.compile(r"(?<=[\d)}])[-+*/^×÷·]|\\(?:times|cdot|div|[dt]?frac|sqrt)(?![A-Za-z])")


def _core(text: str) -> str:
    """An answer without surrounding math delimiters or box, thousands separators made plain."""
    text = text.strip()
    if _BOX.search(text):
        boxed = extract_boxed(text)
        text = boxed if boxed is not None else text
    m = _MATH_DELIMS.match(text)
    if m:
        text = next(g for g in m.groups() if g is not None).strip()
    text = _THIN_THOUSANDS.sub("", text)
    if _SPACE_THOUSANDS.match(text):
        text = text.replace(" ", "")
    return text


def is_number_literal(text: str) -> bool:
    """Whether an answer is one number in simplest written form.

    Integers and decimals (optional sign, thousands commas allowed), and fractions ``a/b`` or
    ``\\frac{a}{b}`` in lowest terms with ``b > 1``; an optional trailing ``%``. ``14/2``, ``6/8`` and
    ``\\frac{4}{2}`` are not.
    """
    m = _LITERAL.match(re.sub(r"\s+", "", _core(text)))
    if m is None:
        return False
    if m.group("int") is not None:
        return True
    num, den = next(
        (m.group(a), m.group(b))
        for a, b in (("num", "den"), ("fnum", "fden"), ("dnum", "dden"))
        if m.group(a) is not None
    )
    n, d = abs(int(num)), int(den)
    return d > 1 and gcd(n, d) == 1


def is_unevaluated_arithmetic(text: str) -> bool:
    """Whether an answer is arithmetic on numbers that is not itself a number literal.

    Made only of digits, ``. , % ( ) { }``, the operators ``+ - * / ^ × ÷ ·`` and the commands
    ``\\times \\cdot \\div \\frac \\sqrt \\left \\right``, with at least one operation, and not
    :func:`is_number_literal`: ``3+4``, ``2^3``, ``14/2``, ``\\frac{6}{8}``, ``\\sqrt{49}``; not
    ``-3`` or ``(3)``.
    """
    core = re.sub(r"\s+", "", _core(text))
    if not any(c.isdigit() for c in core) or not _OPERATION.search(core):
        return False
    return set(_ARITH_COMMANDS.sub("", core)) <= _ARITH_CHARS and not is_number_literal(core)


# --------------------------------------------------------------------------------------------------
# time limit


class _MathTimeout(BaseException):
    """math_equal ran past its time limit (a BaseException, so math-verify's handlers let it pass)."""


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`_MathTimeout` in the body after ``seconds`` (main thread only; else no limit).

    A caller's ``ITIMER_REAL`` timer that is due first is left to fire; one due later is re-armed on
    exit with what is left of it. The timer repeats every 50 ms until the body ends, so a bare
    ``except:`` inside sympy that swallows one alarm does not stop the limit.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    outer_left, outer_every = signal.getitimer(signal.ITIMER_REAL)
    if 0 < outer_left <= seconds:
        yield  # the caller's own timer ends the call first
        return
    armed = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        if armed[0]:
            raise _MathTimeout

    start = time.monotonic()
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds, 0.05)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old if old is not None else signal.SIG_DFL)
        if outer_left > 0:
            left = outer_left - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), outer_every)


# --------------------------------------------------------------------------------------------------
# equivalence

_LATEX = (LatexExtractionConfig(),)


@lru_cache(maxsize=4096)
def _parse(core: str) -> tuple[Any, ...]:
    """math-verify's parse of one answer (LaTeX or plain), as ``[sympy object, normalised string]``."""
    return tuple(parse("\\boxed{" + core + "}", extraction_config=_LATEX, parsing_timeout=None))


def _false_equation(obj: Any) -> bool:
    """A numeric equation whose sides differ, such as ``3=2`` (math-verify would keep its right side)."""
    if not isinstance(obj, sympy.Eq) or obj.free_symbols:
        return False
    try:
        return sympy.simplify(obj.lhs - obj.rhs) != 0
    except Exception:
        return True


def math_equal(pred: str, gold: str, *, timeout_s: float = 5.0) -> bool:
    """Whether an extracted answer equals the reference, by math-verify.

    Both sides lose surrounding ``$``/``\\(\\)``/``\\[\\]`` and a ``\\boxed{}`` around them, are
    parsed as LaTeX and compared with ``verify(gold, pred)`` (numbers to 6 decimals, symbolic
    simplification, sets, intervals, equations ``x=2`` against ``2``). False when either side is empty
    or unparsable, when the prediction sets numbers side by side (``1 2 3``) or is a false numeric
    equation (``3=2``), and when the call runs past ``timeout_s`` seconds (a limit that holds only in
    the main thread, see the module docstring; ``timeout_s <= 0`` means none).
    """
    p, g = _core(pred), _core(gold)
    if not p or not g or _JUXTAPOSED.search(p):
        return False
    try:
        with _time_limit(timeout_s):
            gold_parsed, pred_parsed = _parse(g), _parse(p)
            if not gold_parsed or not pred_parsed or any(map(_false_equation, pred_parsed)):
                return False
            return bool(verify(list(gold_parsed), list(pred_parsed), timeout_seconds=None))
    except _MathTimeout:
        return False


# --------------------------------------------------------------------------------------------------
# rewards


@REWARDS.register("math", bounds={"timeout_s": ">= 0"})
def make_math_reward(
    *, extract: ExtractMode = "auto", timeout_s: float = 5.0, reject_unevaluated: bool = True
) -> RewardFn:
    """Factory: 1.0 when the completion's final answer equals the reference by :func:`math_equal`
    (the standard rule-based math verifier).

    ``extract`` picks the answer (see :func:`extract_math_answer`); no answer gives 0.0. The
    reference may be a number, LaTeX, or text with a ``\\boxed{}``. With ``reject_unevaluated`` (the
    default), when the reference is a number literal (:func:`is_number_literal`) an answer that is
    unevaluated arithmetic (:func:`is_unevaluated_arithmetic`: ``3+4``, ``14/2``, ``\\frac{6}{8}``)
    gets 0.0, since restating the question's arithmetic would otherwise earn full reward.
    """

    def math_reward(prompt: str, completion: str, answer: str, **meta: Any) -> float:
        if not answer.strip():
            raise ValueError("math reward: the reference answer is empty")
        pred = extract_math_answer(completion, mode=extract)
        if pred is None:
            return 0.0
        if reject_unevaluated and is_number_literal(answer) and is_unevaluated_arithmetic(pred):
            return 0.0
        return 1.0 if math_equal(pred, answer, timeout_s=timeout_s) else 0.0

    return math_reward


@REWARDS.register("exact_match")
def make_exact_match_reward(
    *,
    extract: Literal["answer_tag", "boxed", "last_number", "none"] = "answer_tag",
    case_sensitive: bool = False,
    normalize_space: bool = True,
) -> RewardFn:
    """Factory: 1.0 when the extracted answer equals the reference string, else 0.0 (the standard
    exact-match check).

    Both sides are stripped; ``normalize_space`` turns every run of whitespace into one space; without
    ``case_sensitive`` both are case-folded. ``extract="none"`` compares the whole completion.
    """

    def norm(text: str) -> str:
        text = text.strip()
        if normalize_space:
            text = re.sub(r"\s+", " ", text)
        return text if case_sensitive else text.casefold()

    def exact_match_reward(prompt: str, completion: str, answer: str, **meta: Any) -> float:
        pred = completion if extract == "none" else extract_math_answer(completion, mode=extract)
        if pred is None:
            return 0.0
        return 1.0 if norm(pred) == norm(answer) else 0.0

    return exact_match_reward


_THINK_FORMAT = re.compile(
    r"^\s*<think>(?P<think>.*?)</think>\s*<answer>(?P<answer>.*?)</answer>\s*$", re.DOTALL
)
_TAG = re.compile(r"</?(?:think|answer)>")


def think_format_reward(prompt: str, completion: str, answer: str, **meta: Any) -> float:
    """1.0 when the completion is ``<think>...</think>`` then one non-empty ``<answer>...</answer>``.

    Whitespace around and between the blocks is allowed; no other text, and no think/answer tag
    inside either block (so exactly one block of each).
    """
    m = _THINK_FORMAT.match(completion)
    if m is None or _TAG.search(m.group("think")) or _TAG.search(m.group("answer")):
        return 0.0
    return 1.0 if m.group("answer").strip() else 0.0


@REWARDS.register("think_format")
def make_think_format_reward() -> RewardFn:
    """Factory for :func:`think_format_reward`: the think-then-answer format reward of "DeepSeek-R1:
    Incentivizing Reasoning Capability in LLMs via Reinforcement Learning"."""
    return think_format_reward
