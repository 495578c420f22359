"""Code rewards: extraction, programs, the test harness, the ``code`` reward, VeRPO weights."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import rlvr.rewards.code  # noqa: F401 - registers the rewards
from rlvr.registry import KnobError
from rlvr.rewards.code import (
    WeightedTestsReward,
    build_program,
    extract_code,
    run_tests,
    split_check,
    verpo_weights,
    weighted_tests,
    weighted_tests_batch,
)
from rlvr.rewards.code import tests_of as get_tests  # not "test_*": pytest would collect it
from rlvr.rewards.verifiers import REWARDS, BatchedReward

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]
ADD_META = {"tests": ADD_TESTS}
HE_PROMPT = (
    'def add(a: int, b: int) -> int:\n    """Add two numbers.\n    >>> add(1, 2)\n    3\n    """\n'
)
HE_TEST = (
    "METADATA = {}\n\n\ndef check(candidate):\n    import math\n    assert candidate(1, 2) == 3\n"
    "    k = 5\n    assert candidate(k, k) == 10\n"
    "    for i in range(3):\n        assert candidate(i, 0) == i\n"
)
HE_META = {"task_id": "Toy/0", "entry_point": "add", "code_prompt": HE_PROMPT, "test": HE_TEST}
POS_ONLY = "def add(a, b):\n    return a + b if a > 0 else 1\n"  # fails ADD_TESTS[1] only


def fenced(code: str, tag: str = "python") -> str:
    return f"Here you go:\n```{tag}\n{code}```\nDone."


# --------------------------------------------------------------------------- extraction, programs


def test_extract_code_priorities():
    assert extract_code(fenced("x = 1\n")) == "x = 1\n"
    # the last python block wins over a later block in another language
    text = "```python\na = 1\n```\n```python\nb = 2\n```\n```text\nnot code\n```"
    assert extract_code(text) == "b = 2\n"
    assert extract_code("```\nplain = 3\n```") == "plain = 3\n"
    assert extract_code("<answer>def f():\n    return 1</answer>") == "def f():\n    return 1\n"
    assert extract_code("    return a + b\n") == "    return a + b\n"  # indentation kept
    assert extract_code("```py\nunclosed = 4\n") == "unclosed = 4\n"  # cut at the length limit
    assert extract_code("```Python3 extra\nx = 5\n```") == "x = 5\n"


def test_build_program_continuation_and_full_function():
    body = "    return a + b\n"
    assert build_program(body, prompt=HE_PROMPT, entry_point="add") == HE_PROMPT + body
    full = "def add(a, b):\n    return a + b\n"
    prog = build_program(full, prompt=HE_PROMPT, entry_point="add")
    assert prog.startswith(HE_PROMPT.rstrip("\n")) and prog.endswith(full)
    ns: dict = {}
    exec(prog, ns)
    assert ns["add"](2, 3) == 5
    # an unindented body is indented when that makes the program compile
    prog = build_program("return a + b\n", prompt=HE_PROMPT, entry_point="add")
    ns = {}
    exec(prog, ns)
    assert ns["add"](2, 3) == 5
    assert build_program("x = 1\n") == "x = 1\n"


def test_split_check():
    tests = split_check(HE_TEST, "add")
    assert tests == [
        "candidate = add\nimport math\nassert candidate(1, 2) == 3",
        "candidate = add\nimport math\nk = 5\nassert candidate(k, k) == 10",
        "candidate = add\nimport math\nk = 5\nfor i in range(3):\n    assert candidate(i, 0) == i",
    ]
    assert split_check("def check(c):\n    c(1)\n", "f") == ["check(f)"]
    with pytest.raises(ValueError, match="check"):
        split_check("x = 1\n", "f")


def test_tests_of_formats_and_errors():
    assert get_tests(ADD_META) == ("", ADD_TESTS)
    assert get_tests({"tests": ["assert f()"], "test_setup": "import os"}) == (
        "import os",
        ["assert f()"],
    )
    assert get_tests(HE_META) == (HE_TEST, ["check(add)"])
    assert len(get_tests(HE_META, split=True)[1]) == 3
    with pytest.raises(ValueError, match="meta needs 'tests'"):
        get_tests({"question": "q"})
    with pytest.raises(ValueError, match="non-empty list"):
        get_tests({"tests": "assert True"})
    with pytest.raises(ValueError, match="non-empty list"):
        get_tests({"tests": []})
    with pytest.raises(ValueError, match="identifier"):
        get_tests({"test": HE_TEST, "entry_point": "not an id"})


# --------------------------------------------------------------------------- the harness


def test_run_tests_reports_each_test():
    run = run_tests(POS_ONLY, ADD_TESTS)
    assert run.passed == [True, False, True] and not run.all_passed and run.result.status == "ok"
    assert "test 1 failed: AssertionError" in run.result.stderr


def test_program_that_fails_to_load_fails_every_test():
    for prog in ("def add(a, b) return a\n", "raise SystemExit(0)\n", "import os\nos._exit(0)\n"):
        assert run_tests(prog, ADD_TESTS).passed == [False, False, False]


def test_forged_reports_do_not_count():
    prog = (
        "import os, sys\n"
        "for i in range(3):\n"
        "    print(f'0 {i} 1'); os.write(1, f'\\nnonce {i} 1\\n'.encode())\n"
        "def add(a, b):\n    print('00000000000000000000000000000000 0 1')\n    return None\n"
    )
    assert run_tests(prog, ADD_TESTS).passed == [False, False, False]


def test_hanging_test_keeps_earlier_results():
    prog = "def add(a, b):\n    while a < 0:\n        pass\n    return a + b\n"
    run = run_tests(prog, ADD_TESTS, timeout=1.0)
    assert run.passed == [True, False, False] and run.result.status == "timeout"


def test_program_prints_do_not_break_reports():
    prog = "import sys\ndef add(a, b):\n    sys.stdout.write('x' * 100_000)\n    return a + b\n"
    assert run_tests(prog, ADD_TESTS).passed == [True, True, True]


def test_hostile_solution_is_contained():
    prog = "import os\nos.system('echo hi')\ndef add(a, b):\n    return a + b\n"
    run = run_tests(prog, ADD_TESTS)
    assert run.passed == [False, False, False] and "os.system refused" in run.result.stderr


# --------------------------------------------------------------------------- the code reward


def test_code_reward_all_and_fraction():
    all_ = REWARDS["code"]()
    frac = REWARDS["code"](partial="fraction")
    good = fenced("def add(a, b):\n    return a + b\n")
    half = fenced(POS_ONLY)
    assert all_("p", good, "", **ADD_META) == 1.0
    assert all_("p", half, "", **ADD_META) == 0.0
    assert frac("p", half, "", **ADD_META) == pytest.approx(2 / 3)
    assert frac("p", "no code at all", "", **ADD_META) == 0.0
    # HumanEval style: continuation of the prompt, or a whole function
    assert all_("p", "    return a + b\n", "", **HE_META) == 1.0
    assert all_("p", good, "", **HE_META) == 1.0
    assert all_("p", fenced("def add(a, b):\n    return a - b\n"), "", **HE_META) == 0.0
    wrong_on_zero = fenced("def add(a, b):\n    return a + b if b else 0\n")
    # split check: test 0 passes, test 1 passes, test 2 (b = 0) fails
    assert frac("p", wrong_on_zero, "", **HE_META) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="meta needs"):
        all_("p", good, "", task_id="x")


def test_code_reward_registry_knobs():
    assert REWARDS.knobs("code") == {"timeout": 5.0, "memory_mb": 512, "partial": "all"}
    REWARDS.check_knobs("code", {"timeout": 2, "partial": "fraction"})
    with pytest.raises(KnobError):
        REWARDS.check_knobs("code", {"partial": "half"})
    with pytest.raises(KnobError):
        REWARDS.check_knobs("code", {"timeout": 0})
    assert REWARDS.knobs("weighted_tests")["workers"] == 0
    with pytest.raises(KnobError):
        REWARDS.check_knobs("weighted_tests", {"partial_weight": 1.0})
    assert isinstance(REWARDS["weighted_tests"](), BatchedReward)


def test_code_reward_is_thread_safe():
    fn = REWARDS["code"]()
    completions = [fenced(f"def add(a, b):\n    return a + b + {i % 2}\n") for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        scores = list(pool.map(lambda c: fn("p", c, "", **ADD_META), completions))
    assert scores == [1.0 if i % 2 == 0 else 0.0 for i in range(12)]
    assert threading.active_count() >= 1


# --------------------------------------------------------------------------- VeRPO weights


def test_verpo_weights_hand_computed():
    p = [[1, 0, 0], [1, 1, 0]]  # pass rates 1, 0.5, 0
    np.testing.assert_allclose(verpo_weights(p, smoothing=0.0), [0.0, 1 / 3, 2 / 3])
    np.testing.assert_allclose(verpo_weights(p, smoothing=1.0), [1 / 4.5, 1.5 / 4.5, 2 / 4.5])
    np.testing.assert_allclose(verpo_weights([[1, 1], [1, 1]], smoothing=0.0), [0.5, 0.5])
    with pytest.raises(ValueError, match=r"\[G, J\]"):
        verpo_weights([1, 0])


def test_weighted_tests_hand_computed():
    p = [[1, 0], [1, 1], [0, 0]]  # pass rates 2/3, 1/3
    # a = 0.1: raw = [0.4333, 0.7667], w = raw / 1.2
    w = np.array([1 / 3 + 0.1, 2 / 3 + 0.1]) / 1.2
    r = weighted_tests(p, smoothing=0.1, partial_weight=0.5)
    np.testing.assert_allclose(r, [0.5 * w[0], 1.0, 0.0])
    # a harder test is worth more than an easier one
    r = weighted_tests([[1, 0], [0, 1], [1, 0]], smoothing=0.0, partial_weight=0.5)
    assert r[1] > r[0] == r[2]
    with pytest.raises(ValueError, match="partial_weight"):
        weighted_tests(p, partial_weight=1.0)


def test_weighted_tests_invariants():
    rng = np.random.default_rng(0)
    for _ in range(50):
        g, j = rng.integers(1, 6), rng.integers(1, 6)
        p = rng.random((g, j)) < 0.5  # [G, J]
        a, b = rng.random(), rng.random() * 0.99
        r = weighted_tests(p, smoothing=a, partial_weight=b)  # [G]
        assert r.shape == (g,)
        assert np.all(r[p.all(axis=1)] == 1.0)
        assert np.all((r[~p.all(axis=1)] >= 0) & (r[~p.all(axis=1)] <= b + 1e-12))
        # passing a superset of tests never earns less (same group statistics)
        for x in range(g):
            for y in range(g):
                if np.all(p[x] >= p[y]):
                    assert r[x] >= r[y] - 1e-12


def test_weighted_tests_batch_equals_loop():
    groups = [[[True, False], [False, False]], [[True], [True]], [[1, 0, 1], [0, 0, 1], [1, 1, 1]]]
    batch = weighted_tests_batch(groups, smoothing=0.2, partial_weight=0.4)
    loop = []
    for grp in groups:
        p = np.asarray(grp, dtype=float)  # [G, J]
        rho = p.mean(axis=0)
        w = (1 - rho + 0.2) / (1 - rho + 0.2).sum()
        loop.append([1.0 if row.all() else 0.4 * float(row @ w) for row in p])
    np.testing.assert_allclose(np.concatenate(batch), np.concatenate(loop))


def test_weighted_tests_reward_end_to_end():
    fn = REWARDS["weighted_tests"](workers=2, smoothing=0.0, partial_weight=0.5)
    good = fenced("def add(a, b):\n    return a + b\n")
    pos_only = fenced(POS_ONLY)
    broken = fenced("def add(a, b):\n    return None\n")
    completions = [good, pos_only, broken, pos_only, "    return a + b\n", "    return 0\n"]
    metas = [ADD_META] * 4 + [HE_META] * 2
    scores = fn(["p"] * 6, completions, [""] * 6, metas, group_size=2)
    # group 0 (ADD): pass rates [1, .5, 1] -> w = [0, 1, 0]; pos_only passes only weight-0 tests
    # group 1 (ADD): pass rates [.5, 0, .5] -> w = [.25, .5, .25]; pos_only: 0.5 * (.25 + .25)
    # group 2 (HE, split into 3 tests): 'return 0' passes none (the loop fails at i = 1)
    assert scores == pytest.approx([1.0, 0.0, 0.0, 0.25, 1.0, 0.0])
    with pytest.raises(ValueError, match="groups of 4"):
        fn(["p"] * 6, completions, [""] * 6, metas, group_size=4)
    with pytest.raises(ValueError, match="different numbers of tests"):
        fn(["p"] * 2, [good, good], [""] * 2, [ADD_META, {"tests": ADD_TESTS[:2]}], group_size=2)
    assert isinstance(fn, WeightedTestsReward) and fn.workers == 2
