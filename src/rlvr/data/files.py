"""User datasets from files, validated row by row before training starts.

A :class:`FileDataset` reads prompts and reference answers from one of

- JSON lines (``.jsonl``, ``.ndjson``, or ``.json`` with one object per line; a ``.json`` file that
  is one JSON array of objects is read too),
- Parquet (``.parquet``, through pyarrow),
- CSV (``.csv``, a header line then one row per record, through the stdlib ``csv`` module; a chat
  field holds the chat as a JSON string),
- a directory written by ``datasets``' ``save_to_disk``. A ``DatasetDict`` must name its split after
  a colon: ``path = "my_data:train"`` (a path that exists as written is never split at a colon).

and offers the interface of :class:`rlvr.data.tasks.ReasoningGymTask` (``next``, ``heldout``,
``state_dict``, ``load_state_dict``, ``name``), so the trainer takes either.

**Fields.** The prompt is a string field (``prompt_field``) or a chat (``messages_field``: a list of
{role, content} turns ending with a user turn); the answer (``answer_field``) is a string, or a number
that is converted to text (a float with an integral value is written without ``.0``, as Parquet stores
integer columns with nulls as floats); the metadata are the ``meta_fields`` (None: every other field).

**Rows** in messages are numbered as the file's line number for JSON lines and CSV (the header is
line 1), and as the 0-based row index for Parquet, a ``datasets`` directory and a JSON array.

**Held-out split.** With ``heldout_size`` = H, the held-out set is one row for each of the H distinct
prompt keys k with the smallest ``blake2b(f"{split_seed}\\0{k}")`` (so a smaller set is a prefix of a
larger one, and it does not depend on the order of the rows); with ``heldout_path`` it is that file's
good rows. The key of a row is its prompt text with whitespace normalised (:func:`prompt_key`); every
training row whose key is a held-out key is removed, so duplicates never leak into training.

**Training order.** Epoch e visits the training rows in the order of a Fisher-Yates shuffle driven by
``random.Random(f"rlvr-file-{seed}-{e}")``; ``next(b)`` crosses epoch boundaries, and the state
{epoch, position} resumes the exact same stream.
"""

from __future__ import annotations

import csv
import decimal
import hashlib
import heapq
import io
import json
import math
import random
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlvr.data.tasks import Problem

__all__ = ["BadRow", "DatasetError", "FileDataset", "prompt_key", "read_problems"]

ROLES = ("assistant", "developer", "system", "tool", "user")
MAX_LISTED = 10  # bad rows listed in an error message
_JSONL = {".jsonl", ".ndjson"}
_SUFFIXES = ".jsonl, .ndjson, .json, .parquet, .csv"

# kinds of bad rows (the error message counts bad rows by kind)
INVALID_JSON = "invalid JSON"
BAD_RECORD = "malformed row"
MISSING = "missing field"
WRONG_TYPE = "wrong type"
EMPTY = "empty prompt"
BAD_CHAT = "bad chat"
TOO_LONG = "prompt too long"


class DatasetError(ValueError):
    """A dataset that cannot be trained on: unreadable, or with bad rows under ``on_bad_row='fail'``."""


@dataclass(frozen=True)
class BadRow:
    """One rejected row: where it is, which field, what was expected, and its kind (for counting)."""

    file: str
    row: int
    field: str | None  # None: the row as a whole (not a JSON object, too many CSV cells)
    reason: str
    kind: str

    def __str__(self) -> str:
        where = f"field '{self.field}': " if self.field is not None else ""
        return f"{self.file}:{self.row}: {where}{self.reason}"


@dataclass(frozen=True)
class _Spec:
    """How a row maps to a Problem, and the checks on it."""

    prompt_field: str
    messages_field: str
    answer_field: str
    meta_fields: tuple[str, ...] | None
    max_prompt_tokens: int
    count_tokens: Callable[[Problem], int] | None

    @property
    def text_field(self) -> str:
        return self.messages_field or self.prompt_field

    def required(self) -> list[tuple[str, str]]:
        """(field, parameter that names it) for every field each row must have."""
        out = [(self.text_field, "messages_field" if self.messages_field else "prompt_field")]
        if self.answer_field:
            out.append((self.answer_field, "answer_field"))
        out += [(f, "meta_fields") for f in self.meta_fields or ()]
        return out


def prompt_key(problem: Problem) -> str:
    """The text that decides whether two rows are the same prompt: whitespace runs become one space.

    A chat's key is its earlier turns as ``Role: content`` lines followed by the last user turn (so a
    one-turn chat has the key of the same question given as a plain prompt).
    """
    text = problem.question
    if problem.messages:
        earlier = [f"{m['role'].capitalize()}: {m['content']}" for m in problem.messages[:-1]]
        text = "\n".join([*earlier, problem.messages[-1]["content"]])
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------------
# reading records: (row number, dict) or (row number, BadRow) for a row that is not even a record

_Record = tuple[int, dict[str, Any] | BadRow]


def _resolve(path: str) -> tuple[Path, str | None]:
    """The file or directory of ``path`` and the ``datasets`` split named after a colon, if any."""
    p = Path(path)
    if p.exists():
        return p, None
    head, sep, split = path.rpartition(":")
    if sep and head and split and Path(head).is_dir():
        return Path(head), split
    raise FileNotFoundError(f"{path}: no such file or directory")


def _json_lines(label: str, lines: Iterator[str]) -> Iterator[_Record]:
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            why = f"expected a JSON object ({e.msg}, column {e.colno})"
            yield lineno, BadRow(label, lineno, None, why, INVALID_JSON)
            continue
        if isinstance(obj, dict):
            yield lineno, obj
        else:
            why = f"expected a JSON object, got {_type(obj)}"
            yield lineno, BadRow(label, lineno, None, why, WRONG_TYPE)


def _json_array(label: str, items: list[Any]) -> Iterator[_Record]:
    for i, obj in enumerate(items):
        if isinstance(obj, dict):
            yield i, obj
        else:
            yield i, BadRow(label, i, None, f"expected a JSON object, got {_type(obj)}", WRONG_TYPE)


def _read_json(label: str, p: Path) -> Iterator[_Record]:
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of line 1
    except UnicodeDecodeError as e:
        raise DatasetError(f"{label}: not UTF-8 text ({e})") from None
    if p.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{label}: invalid JSON array at line {e.lineno}, column {e.colno}: {e.msg} "
                "(write one object per line, JSON lines, to have bad rows reported one by one)"
            ) from None
        return _json_array(label, items)
    return _json_lines(label, iter(text.split("\n")))


def _read_csv(label: str, p: Path) -> tuple[list[str], Iterator[_Record]]:
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{label}: not UTF-8 text ({e})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{label}: empty CSV file (expected a header line)") from None
    except csv.Error as e:
        raise DatasetError(f"{label}:1: unreadable CSV header ({e})") from None
    dup = sorted(name for name, c in Counter(header).items() if c > 1)
    if dup:
        raise DatasetError(f"{label}:1: the header names a column more than once: {', '.join(dup)}")

    def rows() -> Iterator[_Record]:
        while True:
            start = reader.line_num + 1  # the line where the next record begins
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                yield start, BadRow(label, start, None, f"expected a CSV record ({e})", BAD_RECORD)
                continue
            if not cells:  # a blank line
                continue
            if len(cells) > len(header):
                why = f"expected at most {len(header)} cells (the header's), got {len(cells)}"
                yield start, BadRow(label, start, None, why, BAD_RECORD)
                continue
            yield start, dict(zip(header, cells, strict=False))  # a short row lacks the last fields

    return header, rows()


def _read_parquet(label: str, p: Path) -> tuple[list[str], Iterator[_Record]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{label}: not a readable Parquet file ({e})") from None
    return table.column_names, iter(enumerate(table.to_pylist()))


def _read_saved(label: str, p: Path, split: str | None) -> tuple[list[str], Iterator[_Record]]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except FileNotFoundError as e:
        raise DatasetError(
            f"{label}: a directory that is not a dataset saved by datasets' save_to_disk ({e})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        splits = ", ".join(ds)
        if split is None:
            raise DatasetError(
                f"{label}: a DatasetDict with splits {splits}; name one after a colon, "
                f"e.g. '{p}:{next(iter(ds), 'train')}'"
            )
        if split not in ds:
            raise DatasetError(f"{label}: no split '{split}' (the splits are {splits})")
        ds = ds[split]
    elif split is not None:
        raise DatasetError(f"{label}: {p} is a single Dataset, with no splits; drop ':{split}'")
    return list(ds.column_names), iter(enumerate(ds))


def _records(path: str) -> tuple[list[str] | None, Iterator[_Record], bool]:
    """(column names of a tabular format, else None; the records; whether the file is CSV)."""
    p, split = _resolve(path)
    if p.is_dir():
        return (*_read_saved(path, p, split), False)
    suffix = p.suffix.lower()
    if suffix in _JSONL or suffix == ".json":
        return None, _read_json(path, p), False
    if suffix == ".csv":
        return (*_read_csv(path, p), True)
    if suffix == ".parquet":
        return (*_read_parquet(path, p), False)
    raise DatasetError(
        f"{path}: unknown file type '{p.suffix}'; expected {_SUFFIXES} "
        "or a directory saved by datasets' save_to_disk"
    )


# --------------------------------------------------------------------------------------------------
# checking one record


def _type(v: Any) -> str:
    return {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
    }.get(type(v), f"a {type(v).__name__}")


def _answer_text(v: Any) -> str | None:
    """A reference answer as text: strings as they are, numbers converted; None for other types."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return None
    if isinstance(v, int | decimal.Decimal):
        return str(v)
    if isinstance(v, float) and math.isfinite(v):
        return str(int(v)) if v.is_integer() else repr(v)
    return None


def _chat(v: Any, from_csv: bool) -> tuple[tuple[dict[str, str], ...] | None, str, str]:
    """(turns, reason, kind): the checked chat, or None with what was expected."""
    if from_csv and isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as e:
            return None, f"expected a JSON list of {{role, content}} objects ({e.msg})", INVALID_JSON
    if not isinstance(v, list | tuple):
        return None, f"expected a list of {{role, content}} objects, got {_type(v)}", WRONG_TYPE
    if not v:
        return None, "expected a chat ending with a user turn, got an empty list", BAD_CHAT
    turns = []
    for i, m in enumerate(v):
        if not (
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        ):
            why = f"expected turn {i} to be an object with string 'role' and 'content', got {_type(m)}"
            if isinstance(m, dict):
                why = f"expected turn {i} to have string 'role' and 'content', got keys {sorted(m)}"
            return None, why, WRONG_TYPE
        if m["role"] not in ROLES:
            return (
                None,
                f"expected turn {i}'s role to be one of {', '.join(ROLES)}, got {m['role']!r}",
                BAD_CHAT,
            )
        turns.append({"role": m["role"], "content": m["content"]})
    if all(m["role"] != "user" for m in turns):
        return None, "expected a user turn, the chat has none", BAD_CHAT
    if turns[-1]["role"] != "user":
        last = turns[-1]["role"]
        why = f"expected the last turn to be a user turn, got {last!r} (an answer in the prompt?)"
        return None, why, BAD_CHAT
    if not turns[-1]["content"].strip():
        return None, "expected a non-empty last user turn", EMPTY
    return tuple(turns), "", ""


def _check(label: str, row: int, rec: dict[str, Any], spec: _Spec, from_csv: bool) -> Problem | BadRow:
    """The Problem of one record, or the first thing wrong with it."""

    def bad(field: str, reason: str, kind: str) -> BadRow:
        return BadRow(label, row, field, reason, kind)

    for field, _ in spec.required():
        if rec.get(field) is None:
            return bad(
                field,
                "expected a value, got null"
                if field in rec
                else "expected a value, the row has no such field",
                MISSING,
            )
    messages = None
    if spec.messages_field:
        messages, why, kind = _chat(rec[spec.messages_field], from_csv)
        if messages is None:
            return bad(spec.messages_field, why, kind)
        question = messages[-1]["content"]
    else:
        question = rec[spec.prompt_field]
        if not isinstance(question, str):
            return bad(spec.prompt_field, f"expected a string, got {_type(question)}", WRONG_TYPE)
        if not question.strip():
            what = "only whitespace" if question else "an empty string"
            return bad(spec.prompt_field, f"expected a non-empty prompt, got {what}", EMPTY)
    answer = ""
    if spec.answer_field:
        answer = _answer_text(rec[spec.answer_field])
        if answer is None:
            got = _type(rec[spec.answer_field])
            if isinstance(rec[spec.answer_field], float):
                got = repr(rec[spec.answer_field])
            return bad(spec.answer_field, f"expected a string or a number, got {got}", WRONG_TYPE)
    if spec.meta_fields is None:
        used = {spec.text_field, spec.answer_field}
        meta = {k: v for k, v in rec.items() if k not in used}
    else:
        meta = {k: rec[k] for k in spec.meta_fields}
    problem = Problem(question=question, answer=answer, meta=meta, messages=messages)
    if spec.max_prompt_tokens and spec.count_tokens is not None:
        n = spec.count_tokens(problem)
        if n > spec.max_prompt_tokens:
            why = f"expected at most {spec.max_prompt_tokens} prompt tokens, got {n}"
            return bad(spec.text_field, why, TOO_LONG)
    return problem


def _read(path: str, spec: _Spec) -> tuple[list[Problem], list[BadRow]]:
    columns, records, from_csv = _records(path)
    for field, param in spec.required() if columns is not None else ():
        if field not in columns:  # one error for the file, not one per row
            raise DatasetError(
                f"{path}: no column '{field}' ({param}); the columns are {', '.join(columns)}"
            )
    good: list[Problem] = []
    bad: list[BadRow] = []
    for row, rec in records:
        r = rec if isinstance(rec, BadRow) else _check(path, row, rec, spec, from_csv)
        (bad if isinstance(r, BadRow) else good).append(r)
    return good, bad


def read_problems(
    path: str,
    *,
    prompt_field: str = "prompt",
    messages_field: str = "",
    answer_field: str = "answer",
    meta_fields: Sequence[str] | None = None,
    max_prompt_tokens: int = 0,
    count_tokens: Callable[[Problem], int] | None = None,
) -> tuple[list[Problem], list[BadRow]]:
    """Every row of ``path`` checked: the good rows as Problems (in file order) and the bad rows.

    Raises FileNotFoundError for a missing path and :class:`DatasetError` for a file that cannot be
    read at all (unknown type, not UTF-8, a missing column of a tabular file, a bad DatasetDict split).
    """
    if max_prompt_tokens < 0:
        raise ValueError(f"max_prompt_tokens must be >= 0, got {max_prompt_tokens}")
    if max_prompt_tokens and count_tokens is None:
        raise ValueError("max_prompt_tokens needs count_tokens (a function Problem -> token count)")
    if not (prompt_field or messages_field):
        raise ValueError("prompt_field or messages_field must name a field")
    spec = _Spec(
        prompt_field,
        messages_field,
        answer_field,
        None if meta_fields is None else tuple(meta_fields),
        max_prompt_tokens,
        count_tokens,
    )
    return _read(path, spec)


def _kinds(bad: list[BadRow]) -> str:
    """'kind: count, ...', the most frequent kind first."""
    return ", ".join(f"{k}: {c}" for k, c in Counter(b.kind for b in bad).most_common())


def _summary(label: str, bad: list[BadRow]) -> str:
    """'<label>: N bad rows (kind: count, ...)' and the first MAX_LISTED of them, one per line."""
    shown = bad[:MAX_LISTED]
    head = f"{label}: {len(bad)} bad row{'s' if len(bad) != 1 else ''} ({_kinds(bad)})"
    more = f"; the first {len(shown)}" if len(bad) > len(shown) else ""
    return head + more + ":\n" + "\n".join(f"  {b}" for b in shown)


# --------------------------------------------------------------------------------------------------
# the dataset


class FileDataset:
    """Training problems and a held-out set from a dataset file, checked before training starts.

    ``next(b)`` walks the training rows in a seeded shuffle per epoch; ``heldout`` never shares a
    prompt (:func:`prompt_key`) with a training row. See the module docstring for the formats, the
    row numbers of messages, the split rule and the order.

    After construction: ``train_problems`` (the training rows, file order), ``heldout``,
    ``bad_rows`` (list of :class:`BadRow`: file, row, field, reason, kind), ``skipped`` (their count),
    ``heldout_duplicates`` (training rows dropped because their prompt is a held-out prompt).
    """

    def __init__(
        self,
        path: str,
        *,
        prompt_field: str = "prompt",
        messages_field: str = "",
        answer_field: str = "answer",
        meta_fields: Sequence[str] | None = None,
        heldout_size: int = 0,
        heldout_path: str = "",
        split_seed: int = 0,
        seed: int = 0,
        max_prompt_tokens: int = 0,
        count_tokens: Callable[[Problem], int] | None = None,
        on_bad_row: Literal["fail", "skip"] = "fail",
    ) -> None:
        """Reads and checks ``path`` (and ``heldout_path``). Raises :class:`DatasetError` for bad
        rows under ``on_bad_row='fail'`` (a count by kind and the first rows), for a file with no
        good rows, or for too few distinct prompts to hold ``heldout_size`` out; FileNotFoundError
        for a missing path; ValueError for bad arguments."""
        if on_bad_row not in ("fail", "skip"):
            raise ValueError(f"on_bad_row must be 'fail' or 'skip', got {on_bad_row!r}")
        if heldout_size < 0:
            raise ValueError(f"heldout_size must be >= 0, got {heldout_size}")
        if heldout_size and heldout_path:
            raise ValueError("give heldout_size (rows of path held out) or heldout_path, not both")
        read = {
            "prompt_field": prompt_field,
            "messages_field": messages_field,
            "answer_field": answer_field,
            "meta_fields": meta_fields,
            "max_prompt_tokens": max_prompt_tokens,
            "count_tokens": count_tokens,
        }
        rows, bad = read_problems(path, **read)
        held_rows: list[Problem] = []
        if heldout_path:
            held_rows, held_bad = read_problems(heldout_path, **read)
            bad += held_bad
        label = f"{path} and {heldout_path}" if heldout_path else path
        if bad and on_bad_row == "fail":
            raise DatasetError(
                f"{_summary(label, bad)}\n"
                "Fix these rows, or set on_bad_row = 'skip' to train on the good rows only."
            )
        for file, good in [(path, rows)] + ([(heldout_path, held_rows)] if heldout_path else []):
            if not good:
                file_bad = [b for b in bad if b.file == file]
                detail = f":\n{_summary(file, file_bad)}" if file_bad else " (the file has no rows)"
                raise DatasetError(f"{file}: no good rows{detail}")
        self.bad_rows: list[BadRow] = bad
        self.skipped = len(bad)
        if bad:  # one warning for the whole dataset
            warnings.warn(
                f"{label}: skipped {len(bad)} bad row(s) ({_kinds(bad)}); the first: {bad[0]}",
                UserWarning,
                stacklevel=2,
            )

        keys = [prompt_key(p) for p in rows]
        if heldout_path:
            self.heldout: list[Problem] = held_rows
            held_keys = {prompt_key(p) for p in held_rows}
        else:
            first: dict[str, Problem] = {}
            for k, p in zip(keys, rows, strict=True):
                first.setdefault(k, p)
            if heldout_size and heldout_size >= len(first):
                raise DatasetError(
                    f"{path}: heldout_size = {heldout_size} needs more than {heldout_size} distinct "
                    f"prompts, and the good rows have {len(first)}"
                )
            chosen = heapq.nsmallest(heldout_size, first, key=lambda k: _rank(split_seed, k))
            self.heldout = [first[k] for k in chosen]
            held_keys = set(chosen)
        self.train_problems: list[Problem] = [
            p for k, p in zip(keys, rows, strict=True) if k not in held_keys
        ]
        if not self.train_problems:
            raise DatasetError(f"{path}: no training rows left: every prompt is a held-out prompt")
        dropped = len(rows) - len(self.train_problems)
        self.heldout_duplicates = dropped - (0 if heldout_path else len(self.heldout))
        self.name = Path(path).name or path
        self.seed = seed
        self.epoch = 0
        self.position = 0  # index into the current epoch's order of the next training row
        self._order: tuple[int, list[int]] | None = None  # (epoch, permutation) cache

    def __len__(self) -> int:
        """The number of training rows (one epoch)."""
        return len(self.train_problems)

    def order(self, epoch: int) -> list[int]:
        """Indices into ``train_problems`` in the order epoch ``epoch`` visits them.

        Fisher-Yates shuffle of 0..n-1 driven by ``random.Random(f"rlvr-file-{seed}-{epoch}")``
        (a string seed is hashed with SHA-512, so the order does not depend on PYTHONHASHSEED).
        """
        if self._order is None or self._order[0] != epoch:
            perm = list(range(len(self.train_problems)))  # [n]
            random.Random(f"rlvr-file-{self.seed}-{epoch}").shuffle(perm)
            self._order = (epoch, perm)
        return self._order[1]

    def next(self, b: int) -> list[Problem]:
        """The next ``b`` training problems; an epoch that runs out continues into the next one."""
        if b < 0:
            raise ValueError(f"next(b) needs b >= 0, got {b}")
        n = len(self.train_problems)
        out: list[Problem] = []
        while len(out) < b:
            if self.position == n:
                self.epoch, self.position = self.epoch + 1, 0
            take = min(b - len(out), n - self.position)
            perm = self.order(self.epoch)
            out.extend(self.train_problems[i] for i in perm[self.position : self.position + take])
            self.position += take
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the stream at ``state`` (from :meth:`state_dict`); a position past the end of an
        epoch means the dataset changed since the checkpoint, which is an error."""
        epoch, position = int(state["epoch"]), int(state["position"])
        n = len(self.train_problems)
        if epoch < 0 or not 0 <= position <= n:
            raise ValueError(
                f"data state epoch = {epoch}, position = {position} does not fit {self.name}'s "
                f"{n} training rows (was the dataset changed since the checkpoint?)"
            )
        self.epoch, self.position = epoch, position


def _rank(split_seed: int, key: str) -> bytes:
    """The order in which distinct prompts are held out: blake2b of the split seed and the key."""
    return hashlib.blake2b(f"{split_seed}\0{key}".encode(), digest_size=16).digest()
