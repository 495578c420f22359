"""Code rewards: run a completion's program against unit tests in the sandbox.

A problem's ``meta`` gives its tests in one of two formats:

- HumanEval style: ``meta["test"]`` is source that defines ``check(candidate)``, ``meta["entry_point"]``
  names the function under test and ``meta["code_prompt"]`` is the function header with its docstring.
  When the extracted code does not define the entry point, the model continued the body and the
  program is ``prompt + code``; when it does, the program is the prompt, a blank line and the code
  (the prompt's imports and helper functions stay available; the model's definition replaces the
  prompt's stub, a function whose body is its docstring).
- A list of assert statements, ``meta["tests"]`` (for example ``["assert add(1, 2) == 3"]``), with an
  optional ``meta["test_setup"]`` run once before them. ``prompt``/``entry_point``, when present,
  are used as above.

All tests of one program run in ONE sandbox process: a harness executes the program, then each test
separately, catching its exceptions, and reports every result as a line ``<nonce> <i> <0|1>`` written
straight to the stdout file descriptor, where the nonce is a fresh random token per call; lines
without it are ignored, so printing a fake report does not count. Tests that did not report (the
program crashed, hung or was killed) failed. The program's own prints are kept only up to 4 kB.
Known limit: the program runs in the same interpreter as the tests, so a program that inspects the
harness's frames can find the nonce, and one that returns an object whose ``__eq__`` is always true
passes equality asserts (rewriting tests is out of scope here).

For per-test credit a HumanEval ``check`` is split into one test per top-level statement of its body
that contains an ``assert`` (:func:`split_check`); statements without one (imports, assignments) are
set-up repeated before each later test.
"""

from __future__ import annotations

import ast
import os
import re
import secrets
import textwrap
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from rlvr.rewards.sandbox import SandboxResult, run_python
from rlvr.rewards.verifiers import REWARDS, BatchedReward, RewardFn

__all__ = [
    "CodeRun",
    "WeightedTestsReward",
    "build_program",
    "extract_code",
    "make_code_reward",
    "make_weighted_tests_reward",
    "run_completion_tests",
    "run_tests",
    "split_check",
    "tests_of",
    "verpo_weights",
    "weighted_tests",
    "weighted_tests_batch",
]

_FENCE = re.compile(r"```([^\n`]*)\n(.*?)(?:```|\Z)", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "python3", "py", "py3"}


def extract_code(completion: str) -> str:
    """The code of a completion: the last ```python fenced block, else the last ``` block (any
    language), else the text inside the last ``<answer>...</answer>``, else the whole completion.

    A fence left open at the end (generation cut at the length limit) counts as closed there.
    Indentation is kept (a block may be the continuation of a function body); surrounding blank
    lines are dropped.
    """
    blocks = [((m.group(1).split() or [""])[0].lower(), m.group(2)) for m in _FENCE.finditer(completion)]
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    if python:
        code = python[-1]
    elif blocks:
        code = blocks[-1][1]
    elif found := _ANSWER.findall(completion):
        code = found[-1]
    else:
        code = completion
    return code.strip("\n").rstrip() + "\n"


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def _compiles(source: str) -> bool:
    try:
        compile(source, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
        return False
    return True


def _defines(code: str, name: str) -> bool:
    tree = _parse(code)
    if tree is None:
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
    return False


def build_program(code: str, *, prompt: str | None = None, entry_point: str | None = None) -> str:
    """The program to test from extracted ``code``.

    Without ``prompt``/``entry_point``: ``code`` itself. With them: the prompt, a blank line and
    ``code`` when ``code`` defines ``entry_point`` at top level, else ``prompt + code`` (a
    continuation of the body; when that does not compile and the code is not indented, its lines are
    indented by 4 spaces).
    """
    if not prompt or not entry_point:
        return code
    if _defines(code, entry_point):
        return prompt.rstrip("\n") + "\n\n" + code
    program = prompt + code
    if not _compiles(program) and code[:1] not in (" ", "\t"):
        indented = prompt + textwrap.indent(code, "    ")
        if _compiles(indented):
            return indented
    return program


def split_check(test: str, entry_point: str) -> list[str]:
    """One test per top-level statement of ``check``'s body that contains an ``assert``.

    Each test binds ``check``'s parameter (``candidate``) to ``entry_point`` and repeats the body's
    earlier statements without asserts (imports, helper variables). Falls back to the single test
    ``check(<entry_point>)`` when ``check`` has no such statement.
    """
    tree = _parse(test)
    if tree is None:
        raise ValueError("code reward: meta['test'] is not valid Python")
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        raise ValueError("code reward: meta['test'] defines no function check(candidate)")
    if not check.args.args:
        raise ValueError("code reward: check() in meta['test'] takes no argument")
    param = check.args.args[0].arg
    setup: list[str] = [f"{param} = {entry_point}"]
    tests: list[str] = []
    for stmt in check.body:
        src = ast.unparse(stmt)
        has_assert = not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and any(
            isinstance(n, ast.Assert) for n in ast.walk(stmt)
        )
        if has_assert:
            tests.append("\n".join([*setup, src]))
        else:
            setup.append(src)
    return tests or [f"check({entry_point})"]


def tests_of(meta: dict[str, Any], *, split: bool = False) -> tuple[str, list[str]]:
    """(preamble, tests) of a problem. HumanEval style: the preamble is ``meta["test"]`` and the tests
    are ``check(<entry_point>)``, or with ``split`` the statements of :func:`split_check`. Assert
    list: the preamble is ``meta.get("test_setup", "")`` and the tests are ``meta["tests"]``."""
    if "tests" in meta:
        tests = meta["tests"]
        if (
            isinstance(tests, str)
            or not isinstance(tests, Sequence)
            or not tests
            or not all(isinstance(t, str) and t.strip() for t in tests)
        ):
            raise ValueError(
                f"code reward: meta['tests'] must be a non-empty list of test statements (str), "
                f"got {tests!r:.200}"
            )
        setup = meta.get("test_setup", "")
        if not isinstance(setup, str):
            raise ValueError(f"code reward: meta['test_setup'] must be str, got {type(setup).__name__}")
        return setup, list(tests)
    if "test" in meta and "entry_point" in meta:
        test, entry = meta["test"], meta["entry_point"]
        if not isinstance(test, str) or not isinstance(entry, str) or not entry.isidentifier():
            raise ValueError(
                f"code reward: meta['test'] must be source (str) and meta['entry_point'] an "
                f"identifier, got {type(test).__name__} and {entry!r}"
            )
        return test, split_check(test, entry) if split else [f"check({entry})"]
    raise ValueError(
        "code reward: the problem's meta needs 'tests' (a list of assert statements) or 'test' and "
        f"'entry_point' (HumanEval style); its keys are {sorted(meta)}"
    )


# The harness: runs in the sandbox. It binds what it uses before the program runs, runs the program
# in a module of its own, then each test; results go to fd 1 as "\n<nonce> <i> <0|1>\n".
_HARNESS = r"""
def _rlvr_harness(nonce, solution, preamble, tests):
    import io, os, sys, types
    write, exit_, exec_, compile_, enum_, base, type_ = (
        os.write, os._exit, exec, compile, enumerate, BaseException, type)

    def describe(e):
        try:
            return ("%s: %s" % (type_(e).__name__, e))[:500]
        except base:
            return "exception"

    class Sink(io.TextIOBase):  # the program's prints: first `keep` bytes pass, the rest is dropped
        def __init__(self, fd, keep):
            self.fd, self.keep = fd, keep

        def writable(self):
            return True

        def write(self, s):
            if self.keep > 0:
                b = str(s).encode("utf-8", "replace")[: self.keep]
                self.keep -= len(b)
                write(self.fd, b)
            return len(s)

    sys.stdout, sys.stderr = Sink(1, 4096), Sink(2, 4096)
    mod = types.ModuleType("__solution__")
    mod.__dict__["__builtins__"] = __builtins__
    sys.modules["__solution__"] = mod
    g = mod.__dict__
    try:
        exec_(compile_(solution, "<solution>", "exec"), g)
    except base as e:
        write(2, ("\nthe program failed: %s\n" % describe(e)).encode("utf-8", "replace"))
        exit_(3)
    try:
        if preamble:
            exec_(compile_(preamble, "<tests>", "exec"), g)
        codes = [compile_(t, "<test %d>" % i, "exec") for i, t in enum_(tests)]
    except base as e:
        write(2, ("\nthe tests failed to load: %s\n" % describe(e)).encode("utf-8", "replace"))
        exit_(4)
    for i, code in enum_(codes):
        try:
            exec_(code, g)
            ok = 1
        except base as e:
            ok = 0
            write(2, ("\ntest %d failed: %s\n" % (i, describe(e))).encode("utf-8", "replace"))
        write(1, ("\n%s %d %d\n" % (nonce, i, ok)).encode())
    exit_(0)
"""


@dataclass(frozen=True)
class CodeRun:
    """Which tests a program passed (``passed`` [J]) and the sandbox's result of the run."""

    passed: list[bool]
    result: SandboxResult

    @property
    def all_passed(self) -> bool:
        return bool(self.passed) and all(self.passed)


def run_tests(
    program: str,
    tests: Sequence[str],
    *,
    preamble: str = "",
    timeout: float = 5.0,
    memory_mb: int = 512,
) -> CodeRun:
    """Run ``program`` and then each of ``tests`` (separately) in one sandbox process."""
    if not tests:
        raise ValueError("run_tests: no tests")
    nonce = secrets.token_hex(16)
    source = _HARNESS + f"\n_rlvr_harness({nonce!r}, {program!r}, {preamble!r}, {list(tests)!r})\n"
    result = run_python(source, timeout=timeout, memory_mb=memory_mb)
    passed = [False] * len(tests)
    pattern = re.compile(rf"^{nonce} (\d+) ([01])$", re.MULTILINE)
    for m in pattern.finditer(result.stdout):
        i = int(m.group(1))
        if i < len(passed):
            passed[i] = m.group(2) == "1"
    return CodeRun(passed, result)


def run_completion_tests(
    completion: str,
    meta: dict[str, Any],
    *,
    split: bool = False,
    timeout: float = 5.0,
    memory_mb: int = 512,
) -> CodeRun:
    """Extract the code of ``completion``, build its program from ``meta`` and run its tests."""
    preamble, tests = tests_of(meta, split=split)
    program = build_program(
        extract_code(completion), prompt=meta.get("code_prompt"), entry_point=meta.get("entry_point")
    )
    return run_tests(program, tests, preamble=preamble, timeout=timeout, memory_mb=memory_mb)


@REWARDS.register("code", bounds={"timeout": "> 0", "memory_mb": ">= 64"})
def make_code_reward(
    *, timeout: float = 5.0, memory_mb: int = 512, partial: Literal["all", "fraction"] = "all"
) -> RewardFn:
    """Factory: run the completion's code against the problem's tests in the sandbox (the standard
    unit-test reward of code RL).

    ``partial="all"``: 1.0 when every test passes, else 0.0 (a HumanEval ``check`` is one test).
    ``partial="fraction"``: passed / total, a HumanEval ``check`` split by :func:`split_check`.
    ``timeout`` (wall-clock seconds) and ``memory_mb`` bound the whole run of one completion. The
    function is safe to call from several threads at once.
    """
    if partial not in ("all", "fraction"):
        raise ValueError(f"code reward: partial must be 'all' or 'fraction', got {partial!r}")

    # positional-only, so that no metadata key can collide with them
    def code_reward(prompt: str, completion: str, answer: str, /, **meta: Any) -> float:
        run = run_completion_tests(
            completion, meta, split=partial == "fraction", timeout=timeout, memory_mb=memory_mb
        )
        if partial == "all":
            return 1.0 if run.all_passed else 0.0
        return sum(run.passed) / len(run.passed)

    return code_reward


# ------------------------------------------------------------------------------------- VeRPO


def verpo_weights(passed: Any, *, smoothing: float = 0.1) -> np.ndarray:
    """Per-test difficulty weights of one group, from its pass matrix ``passed`` [G, J].

    rho_j = (1/G) sum_g passed[g, j]              (pass rate of test j in the group)
    w_j   = (1 - rho_j + a) / sum_k (1 - rho_k + a)  (a = ``smoothing`` >= 0; sum_j w_j = 1)

    Harder tests (lower pass rate) weigh more. With a = 0 a test that every sample passes weighs
    nothing; when all weights would be 0/0 (a = 0 and every test passed by all) they are uniform.
    """
    p = np.asarray(passed, dtype=np.float64)  # [G, J]
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"verpo_weights: passed must be a non-empty [G, J] matrix, got shape {p.shape}")
    if smoothing < 0:
        raise ValueError(f"verpo_weights: smoothing must be >= 0, got {smoothing}")
    rho = p.mean(axis=0)  # [J]
    raw = 1.0 - rho + smoothing  # [J]
    total = raw.sum()
    if total <= 0:
        return np.full(p.shape[1], 1.0 / p.shape[1])  # [J]
    return raw / total  # [J]


def weighted_tests(passed: Any, *, smoothing: float = 0.1, partial_weight: float = 0.5) -> np.ndarray:
    """VeRPO-style dense code reward of one group: pass matrix ``passed`` [G, J] -> rewards [G].

    d_g = sum_j w_j passed[g, j]        (weighted partial success, w from :func:`verpo_weights`)
    r_g = 1                  if sample g passes every test (the global execution outcome)
    r_g = b * d_g            otherwise, with b = ``partial_weight`` in [0, 1)

    so that any fully correct program outranks every partial one, and among partial ones a program
    that passes the tests few others pass earns more. VeRPO (Verifiable Dense Reward Policy
    Optimization, 2026) builds "dense rewards from weighted partial success: by dynamically
    estimating the difficulty weight of each unit test based on the execution statistics during
    training, a dense reward is derived from the sum of weights of the passed unit tests", and
    "integrates the dense signal with global execution outcomes" (abstract). The paper's exact weight
    function was not available to us; the formulas above are this implementation's.
    """
    if not 0.0 <= partial_weight < 1.0:
        raise ValueError(f"weighted_tests: partial_weight must be in [0, 1), got {partial_weight}")
    p = np.asarray(passed, dtype=bool)  # [G, J]
    w = verpo_weights(p, smoothing=smoothing)  # [J]
    dense = p.astype(np.float64) @ w  # [G]
    full = p.all(axis=1)  # [G]
    return np.where(full, 1.0, partial_weight * dense)  # [G]


def weighted_tests_batch(
    passed: Sequence[Sequence[Sequence[bool]]], *, smoothing: float = 0.1, partial_weight: float = 0.5
) -> list[list[float]]:
    """:func:`weighted_tests` for B groups: ``passed`` [B][G][J_b] (J may differ between prompts)
    -> rewards [B][G]."""
    return [
        weighted_tests(group, smoothing=smoothing, partial_weight=partial_weight).tolist()
        for group in passed
    ]


class WeightedTestsReward(BatchedReward):
    """The ``weighted_tests`` reward: runs the tests of all N = B*G completions of a step in parallel
    (a thread pool over sandbox calls, each its own process), then scores each group by
    :func:`weighted_tests`. Tests are the per-test split (:func:`tests_of` with ``split=True``)."""

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        memory_mb: int = 512,
        workers: int = 0,
        smoothing: float = 0.1,
        partial_weight: float = 0.5,
    ) -> None:
        if not 0.0 <= partial_weight < 1.0:
            raise ValueError(f"weighted_tests: partial_weight must be in [0, 1), got {partial_weight}")
        if smoothing < 0:
            raise ValueError(f"weighted_tests: smoothing must be >= 0, got {smoothing}")
        self.timeout, self.memory_mb = timeout, memory_mb
        self.workers = workers or os.cpu_count() or 1
        self.smoothing, self.partial_weight = smoothing, partial_weight

    def run_all(self, completions: Sequence[str], metas: Sequence[dict[str, Any]]) -> list[list[bool]]:
        """Pass lists [N][J_i] of every completion, run in parallel."""

        def one(i: int) -> list[bool]:
            return run_completion_tests(
                completions[i], metas[i], split=True, timeout=self.timeout, memory_mb=self.memory_mb
            ).passed

        with ThreadPoolExecutor(max_workers=min(self.workers, max(1, len(completions)))) as pool:
            return list(pool.map(one, range(len(completions))))

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
        n = len(completions)
        if group_size < 1 or n % group_size:
            raise ValueError(f"weighted_tests: {n} samples do not split into groups of {group_size}")
        if len(metas) != n:
            raise ValueError(f"weighted_tests: {len(metas)} metas for {n} completions")
        passed = self.run_all(completions, metas)  # [N][J]
        rewards: list[float] = []
        for b in range(n // group_size):
            group = passed[b * group_size : (b + 1) * group_size]  # [G][J]
            if len({len(row) for row in group}) != 1:
                raise ValueError(
                    f"weighted_tests: the samples of group {b} have different numbers of tests "
                    f"({sorted({len(row) for row in group})}); a group must share one problem"
                )
            rewards += weighted_tests(
                group, smoothing=self.smoothing, partial_weight=self.partial_weight
            ).tolist()
        return rewards


@REWARDS.register(
    "weighted_tests",
    bounds={
        "timeout": "> 0",
        "memory_mb": ">= 64",
        "workers": ">= 0",
        "smoothing": ">= 0",
        "partial_weight": "[0, 1)",
    },
)
def make_weighted_tests_reward(
    *,
    timeout: float = 5.0,
    memory_mb: int = 512,
    workers: int = 0,
    smoothing: float = 0.1,
    partial_weight: float = 0.5,
) -> BatchedReward:
    """Factory of :class:`WeightedTestsReward` (weighted partial credit after "VeRPO: Verifiable Dense
    Reward Policy Optimization for Code Generation", see
    :func:`weighted_tests`); ``workers = 0`` means ``os.cpu_count()`` parallel sandboxes."""
    return WeightedTestsReward(
        timeout=timeout,
        memory_mb=memory_mb,
        workers=workers,
        smoothing=smoothing,
        partial_weight=partial_weight,
    )
