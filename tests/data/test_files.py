"""Dataset files: every format, row validation with file:row:field errors, a split that never leaks,
seeded epochs and exact resumption."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlvr.data.files import BadRow, DatasetError, FileDataset, prompt_key, read_problems
from rlvr.data.prompts import INSTRUCTION, format_prompt
from rlvr.data.tasks import Problem
from rlvr.models.tiny import _train_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
BAD_JSONL = str(FIXTURES / "bad_rows.jsonl")
BAD_CSV = str(FIXTURES / "bad_rows.csv")


def words(p: Problem) -> int:
    """A token counter for tests: one token per whitespace-separated word."""
    return len(p.question.split())


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def rows(n: int, **extra) -> list[dict]:
    return [{"prompt": f"What is {i} + 1?", "answer": str(i + 1), **extra} for i in range(n)]


def qs(problems: list[Problem]) -> list[str]:
    return [p.question for p in problems]


# --------------------------------------------------------------------------------------------------
# bad rows


def test_bad_jsonl_fails_with_one_message_listing_the_rows():
    with pytest.raises(DatasetError) as err:
        FileDataset(BAD_JSONL, max_prompt_tokens=32, count_tokens=words)
    f = BAD_JSONL
    assert str(err.value) == (
        f"{f}: 7 bad rows (missing field: 2, wrong type: 2, invalid JSON: 1, empty prompt: 1, "
        "prompt too long: 1):\n"
        f"  {f}:3: expected a JSON object (Expecting ',' delimiter, column 44)\n"
        f"  {f}:4: field 'prompt': expected a value, the row has no such field\n"
        f"  {f}:5: field 'prompt': expected a string, got a list\n"
        f"  {f}:6: field 'prompt': expected a non-empty prompt, got only whitespace\n"
        f"  {f}:7: field 'answer': expected a string or a number, got an object\n"
        f"  {f}:8: field 'prompt': expected at most 32 prompt tokens, got 43\n"
        f"  {f}:11: field 'answer': expected a value, the row has no such field\n"
        "Fix these rows, or set on_bad_row = 'skip' to train on the good rows only."
    )
    assert isinstance(err.value, ValueError)


def test_bad_jsonl_skip_trains_on_the_good_rows_and_warns_once():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = FileDataset(BAD_JSONL, max_prompt_tokens=32, count_tokens=words, on_bad_row="skip")
    assert len(caught) == 1 and "skipped 7 bad row(s)" in str(caught[0].message)
    assert ds.skipped == 7
    assert [(b.row, b.field, b.kind) for b in ds.bad_rows] == [
        (3, None, "invalid JSON"),
        (4, "prompt", "missing field"),
        (5, "prompt", "wrong type"),
        (6, "prompt", "empty prompt"),
        (7, "answer", "wrong type"),
        (8, "prompt", "prompt too long"),
        (11, "answer", "missing field"),
    ]
    assert all(b.file == BAD_JSONL for b in ds.bad_rows)
    good = ["What is 2 + 3?", "What is 7 - 4?", "What is 10 - 1?", "What is 3 * 3?"]
    assert qs(ds.train_problems) == good
    assert [p.answer for p in ds.train_problems] == ["5", "3", "9", "9"]  # 3 (a number) -> "3"
    assert ds.train_problems[2].meta == {"level": 2}
    assert sorted(qs(ds.next(4))) == sorted(good)  # one epoch = the good rows
    assert ds.heldout == []


def test_long_row_is_good_without_a_token_limit():
    with pytest.warns(UserWarning, match="skipped 6 bad row"):
        ds = FileDataset(BAD_JSONL, on_bad_row="skip")
    assert ds.skipped == 6 and len(ds) == 5
    with pytest.raises(ValueError, match="count_tokens"):
        FileDataset(BAD_JSONL, max_prompt_tokens=32)


def test_bad_csv_rows_are_numbered_by_file_line():
    with pytest.raises(DatasetError) as err:
        FileDataset(BAD_CSV, max_prompt_tokens=32, count_tokens=words)
    f = BAD_CSV
    # line 3-4 is one quoted record spanning two lines, so later rows keep their line numbers
    assert str(err.value).splitlines()[:6] == [
        f"{f}: 5 bad rows (empty prompt: 2, missing field: 1, malformed row: 1, prompt too long: 1):",
        f"  {f}:5: field 'prompt': expected a non-empty prompt, got an empty string",
        f"  {f}:6: field 'prompt': expected a non-empty prompt, got only whitespace",
        f"  {f}:7: field 'answer': expected a value, the row has no such field",
        f"  {f}:8: expected at most 3 cells (the header's), got 4",
        f"  {f}:9: field 'prompt': expected at most 32 prompt tokens, got 43",
    ]
    with pytest.warns(UserWarning, match="skipped 5 bad row"):
        ds = FileDataset(BAD_CSV, max_prompt_tokens=32, count_tokens=words, on_bad_row="skip")
    assert qs(ds.train_problems) == ["What is 2 + 3?", "What is\n4 + 4?", "What is 6 / 2?"]
    assert [p.answer for p in ds.train_problems] == ["5", "8", "3"]
    assert ds.train_problems[2].meta == {"level": "2"}  # CSV cells are text


def test_error_lists_the_first_ten_and_counts_all(tmp_path):
    data = rows(3) + [{"prompt": "", "answer": "x"}] * 12 + [{"prompt": 5, "answer": "y"}]
    path = write_jsonl(tmp_path / "d.jsonl", data)
    with pytest.raises(DatasetError) as err:
        FileDataset(path)
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: 13 bad rows (empty prompt: 12, wrong type: 1); the first 10:"
    assert [ln.split(":")[1] for ln in lines[1:11]] == [str(r) for r in range(4, 14)]
    assert len(lines) == 12  # header, 10 rows, the hint


def test_no_good_rows_is_an_error_either_way(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": " ", "answer": "1"}, {"answer": "2"}])
    with pytest.raises(DatasetError, match=r"d\.jsonl: no good rows:\n.*2 bad rows"):
        FileDataset(path, on_bad_row="skip")
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="no good rows \\(the file has no rows\\)"):
        FileDataset(str(empty))


def test_unreadable_paths_and_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl: no such file"):
        FileDataset(str(tmp_path / "nope.jsonl"))
    (tmp_path / "d.txt").write_text("hello\n")
    with pytest.raises(DatasetError, match=r"unknown file type '\.txt'; expected \.jsonl"):
        FileDataset(str(tmp_path / "d.txt"))
    (tmp_path / "d.csv").write_text("question,answer\nhi,1\n")
    with pytest.raises(
        DatasetError, match="no column 'prompt' \\(prompt_field\\); the columns are question"
    ):
        FileDataset(str(tmp_path / "d.csv"))
    assert qs(FileDataset(str(tmp_path / "d.csv"), prompt_field="question").train_problems) == ["hi"]
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match="empty CSV file"):
        FileDataset(str(tmp_path / "empty.csv"))
    (tmp_path / "latin.jsonl").write_bytes(b'{"prompt": "caf\xe9", "answer": "1"}\n')
    with pytest.raises(DatasetError, match="not UTF-8"):
        FileDataset(str(tmp_path / "latin.jsonl"))
    path = write_jsonl(tmp_path / "ok.jsonl", rows(4))
    with pytest.raises(ValueError, match="on_bad_row must be 'fail' or 'skip'"):
        FileDataset(path, on_bad_row="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not both"):
        FileDataset(path, heldout_size=1, heldout_path=path)


# --------------------------------------------------------------------------------------------------
# fields


def test_answers_numbers_and_wrong_types(tmp_path):
    answers = [3, 2.5, 4.0, -0.0, "x", "", 10**20, True, float("nan"), None, [1]]
    path = tmp_path / "d.jsonl"
    path.write_text(
        "".join(json.dumps({"prompt": f"q{i}", "answer": a}) + "\n" for i, a in enumerate(answers))
    )
    with pytest.warns(UserWarning, match="skipped 4 bad row"):
        ds = FileDataset(str(path), on_bad_row="skip")
    assert [p.answer for p in ds.train_problems] == [
        "3",
        "2.5",
        "4",
        "0",
        "x",
        "",
        "100000000000000000000",
    ]
    assert [(b.row, b.kind, b.reason) for b in ds.bad_rows] == [
        (8, "wrong type", "expected a string or a number, got a boolean"),
        (9, "wrong type", "expected a string or a number, got nan"),
        (10, "missing field", "expected a value, got null"),
        (11, "wrong type", "expected a string or a number, got a list"),
    ]


def test_no_answer_field_and_chosen_meta_fields(tmp_path):
    data = [
        {"prompt": "p1", "answer": "a", "tests": ["t"], "id": 1},
        {"prompt": "p2", "answer": "b", "id": 2},
    ]
    path = write_jsonl(tmp_path / "d.jsonl", data)
    ds = FileDataset(path, answer_field="")
    assert [p.answer for p in ds.train_problems] == ["", ""]
    assert ds.train_problems[0].meta == {"answer": "a", "tests": ["t"], "id": 1}
    ds = FileDataset(path, meta_fields=["id"])
    assert [p.meta for p in ds.train_problems] == [{"id": 1}, {"id": 2}]
    # a listed meta field that a row lacks makes it a bad row; source_dataset is never required
    good, bad = read_problems(path, meta_fields=["tests"])
    assert (
        qs(good) == ["p1"]
        and str(bad[0]) == f"{path}:2: field 'tests': expected a value, the row has no such field"
    )
    assert all("source_dataset" not in p.meta for p in good)


def test_json_array_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([*rows(2), "oops"]))
    good, bad = read_problems(str(path))
    assert qs(good) == ["What is 0 + 1?", "What is 1 + 1?"]
    assert (bad[0].row, bad[0].reason) == (2, "expected a JSON object, got a string")  # 0-based index
    (tmp_path / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows(2)))
    assert qs(read_problems(str(tmp_path / "lines.json"))[0]) == qs(good)  # .json with JSON lines
    (tmp_path / "broken.json").write_text('[{"prompt": "a"},\n')
    with pytest.raises(DatasetError, match=r"broken\.json: invalid JSON array at line 2"):
        read_problems(str(tmp_path / "broken.json"))


# --------------------------------------------------------------------------------------------------
# chats


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in turns]


def test_messages_rows_and_their_prompts(tmp_path):
    sys_user = chat(("system", "Be exact."), ("user", "What is 2 + 2?"))
    data = [
        {"messages": sys_user, "answer": 4},
        {"messages": chat(("user", "What is 1 + 2?")), "answer": "3", "prompt": "ignored"},
    ]
    ds = FileDataset(write_jsonl(tmp_path / "c.jsonl", data), messages_field="messages")
    p, q = ds.train_problems
    assert p.question == "What is 2 + 2?" and p.answer == "4" and p.messages == tuple(sys_user)
    assert q.meta == {"prompt": "ignored"}  # the unused prompt field is metadata
    plain = SimpleNamespace(chat_template=None)
    assert format_prompt(plain, p.question, messages=p.messages) == (
        f"System: Be exact.\nWhat is 2 + 2?\n{INSTRUCTION}\nAnswer: "
    )
    # a one-turn chat formats (and is keyed) exactly as the same plain question
    assert format_prompt(plain, q.question, messages=q.messages) == format_prompt(
        plain, "What is 1 + 2?"
    )
    assert prompt_key(q) == prompt_key(Problem("What is 1 + 2?", "3"))
    assert prompt_key(p) == "System: Be exact. What is 2 + 2?"
    tok = _train_tokenizer(["<|system|>a<|end|><|user|>1 + 2 =<|end|><|assistant|>3"] * 4, 300)
    assert format_prompt(tok, p.question, messages=p.messages) == (
        f"<|system|>Be exact.<|end|><|user|>What is 2 + 2?\n{INSTRUCTION}<|end|><|assistant|>"
    )
    assert format_prompt(tok, "", messages=p.messages, instruction="") == (
        "<|system|>Be exact.<|end|><|user|>What is 2 + 2?<|end|><|assistant|>"
    )
    # the messages are not mutated by formatting
    assert p.messages[-1]["content"] == "What is 2 + 2?"


def test_bad_chats(tmp_path):
    data = [
        {"messages": chat(("system", "s")), "answer": "1"},
        {"messages": chat(("user", "q"), ("assistant", "a")), "answer": "1"},
        {"messages": chat(("usr", "q")), "answer": "1"},
        {"messages": [{"role": "user", "text": "q"}], "answer": "1"},
        {"messages": "What is 1 + 1?", "answer": "1"},
        {"messages": [], "answer": "1"},
        {"messages": chat(("user", " ")), "answer": "1"},
        {"messages": chat(("user", "fine")), "answer": "1"},
    ]
    good, bad = read_problems(write_jsonl(tmp_path / "c.jsonl", data), messages_field="messages")
    assert qs(good) == ["fine"]
    assert [(b.row, b.field, b.kind, b.reason) for b in bad] == [
        (1, "messages", "bad chat", "expected a user turn, the chat has none"),
        (
            2,
            "messages",
            "bad chat",
            "expected the last turn to be a user turn, got 'assistant' (an answer in the prompt?)",
        ),
        (
            3,
            "messages",
            "bad chat",
            "expected turn 0's role to be one of assistant, developer, system, tool, user, got 'usr'",
        ),
        (
            4,
            "messages",
            "wrong type",
            "expected turn 0 to have string 'role' and 'content', got keys ['role', 'text']",
        ),
        (5, "messages", "wrong type", "expected a list of {role, content} objects, got a string"),
        (6, "messages", "bad chat", "expected a chat ending with a user turn, got an empty list"),
        (7, "messages", "empty prompt", "expected a non-empty last user turn"),
    ]


def test_csv_chat_is_a_json_string(tmp_path):
    good_chat = json.dumps(chat(("system", "s"), ("user", "q, with a comma")))
    path = tmp_path / "c.csv"
    path.write_text('messages,answer\n"' + good_chat.replace('"', '""') + '",7\n"[not json",1\n')
    good, bad = read_problems(str(path), messages_field="messages")
    assert [(p.question, p.answer) for p in good] == [("q, with a comma", "7")]
    assert (bad[0].row, bad[0].kind) == (3, "invalid JSON")


def test_too_long_counts_the_formatted_chat(tmp_path):
    tok = _train_tokenizer(["<|user|>1 + 2 =<|end|><|assistant|>3"] * 4, 300)

    def count(p: Problem) -> int:
        text = format_prompt(tok, p.question, messages=p.messages)
        return len(tok(text, add_special_tokens=False)["input_ids"])

    data = [
        {"messages": chat(("user", "1 + 2 =")), "answer": "3"},
        {"messages": chat(("system", "9 " * 50), ("user", "1 + 2 =")), "answer": "3"},
    ]
    path = write_jsonl(tmp_path / "c.jsonl", data)
    short = count(Problem("1 + 2 =", "3", messages=tuple(chat(("user", "1 + 2 =")))))
    good, bad = read_problems(
        path, messages_field="messages", max_prompt_tokens=short, count_tokens=count
    )
    assert len(good) == 1 and good[0].messages is not None and len(good[0].messages) == 1
    assert bad[0].row == 2 and bad[0].kind == "prompt too long"
    assert bad[0].reason.startswith(f"expected at most {short} prompt tokens, got ")


# --------------------------------------------------------------------------------------------------
# Parquet and datasets directories


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "prompt": ["What is 1 + 1?", None, "What is 2 + 2?", "   "],
            "answer": [2.0, 3.0, None, 1.0],  # an integer column with nulls, as pandas writes it
            "source": ["a", "b", "c", "d"],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    path = str(tmp_path / "d.parquet")
    good, bad = read_problems(path)
    assert [(p.question, p.answer, p.meta) for p in good] == [("What is 1 + 1?", "2", {"source": "a"})]
    assert [str(b) for b in bad] == [  # rows are 0-based indices
        f"{path}:1: field 'prompt': expected a value, got null",
        f"{path}:2: field 'answer': expected a value, got null",
        f"{path}:3: field 'prompt': expected a non-empty prompt, got only whitespace",
    ]
    with pytest.raises(DatasetError, match="no column 'question' \\(prompt_field\\)"):
        read_problems(path, prompt_field="question")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        read_problems(str(tmp_path / "junk.parquet"))


def test_datasets_directory_and_splits(tmp_path):
    import datasets

    chats = [chat(("user", f"What is {i} * 2?")) for i in range(6)]
    train = datasets.Dataset.from_list([{"messages": c, "answer": 2 * i} for i, c in enumerate(chats)])
    test = datasets.Dataset.from_list(
        [{"messages": chats[0], "answer": 0}, {"messages": chats[5], "answer": 10}]
    )
    train.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "dd"))

    ds = FileDataset(str(tmp_path / "single"), messages_field="messages")
    assert qs(ds.train_problems) == [f"What is {i} * 2?" for i in range(6)]
    assert [p.answer for p in ds.train_problems] == ["0", "2", "4", "6", "8", "10"]
    assert ds.name == "single"

    dd = str(tmp_path / "dd")
    with pytest.raises(
        DatasetError, match="a DatasetDict with splits train, test; name one after a colon"
    ):
        FileDataset(dd, messages_field="messages")
    with pytest.raises(DatasetError, match="no split 'val' \\(the splits are train, test\\)"):
        FileDataset(f"{dd}:val", messages_field="messages")
    with pytest.raises(DatasetError, match="single Dataset, with no splits"):
        FileDataset(f"{tmp_path / 'single'}:train", messages_field="messages")
    with pytest.raises(DatasetError, match="not a dataset saved by datasets' save_to_disk"):
        FileDataset(str(tmp_path), messages_field="messages")
    # the test split is the held-out set, and its prompts are removed from training
    ds = FileDataset(f"{dd}:train", heldout_path=f"{dd}:test", messages_field="messages")
    assert qs(ds.heldout) == ["What is 0 * 2?", "What is 5 * 2?"]
    assert qs(ds.train_problems) == [f"What is {i} * 2?" for i in range(1, 5)]
    assert ds.heldout_duplicates == 2


# --------------------------------------------------------------------------------------------------
# held-out split


def test_heldout_never_leaks_even_with_duplicate_prompts(tmp_path):
    base = rows(30)
    # every prompt again, with other whitespace and another answer, and a third copy of some
    dups = [{"prompt": "  " + r["prompt"].replace(" ", "   ") + "\n", "answer": "dup"} for r in base]
    data = base + dups + base[:10]
    random.Random(0).shuffle(data)
    path = write_jsonl(tmp_path / "d.jsonl", data)
    ds = FileDataset(path, heldout_size=8, split_seed=3)
    held = {prompt_key(p) for p in ds.heldout}
    assert len(ds.heldout) == len(held) == 8  # distinct held-out prompts
    assert not held & {prompt_key(p) for p in ds.train_problems}
    # every copy of a held-out prompt left training: 70 rows, 22 distinct training prompts remain
    n_copies = sum(prompt_key(Problem(r["prompt"], "")) in held for r in data)
    assert len(ds) == 70 - n_copies and len({prompt_key(p) for p in ds.train_problems}) == 22
    assert ds.heldout_duplicates == n_copies - 8
    # the split depends on split_seed only, not on the training seed or the order of the rows
    same = FileDataset(
        write_jsonl(tmp_path / "r.jsonl", data[::-1]), heldout_size=8, split_seed=3, seed=9
    )
    assert {prompt_key(p) for p in same.heldout} == held
    other = FileDataset(path, heldout_size=8, split_seed=4)
    assert {prompt_key(p) for p in other.heldout} != held
    # a smaller held-out set is a prefix of a larger one
    small = FileDataset(path, heldout_size=3, split_seed=3)
    assert [prompt_key(p) for p in small.heldout] == [prompt_key(p) for p in ds.heldout][:3]


def test_heldout_rank_is_the_documented_hash(tmp_path):
    import hashlib

    path = write_jsonl(tmp_path / "d.jsonl", rows(10))
    ds = FileDataset(path, heldout_size=4, split_seed=7)
    keys = [f"What is {i} + 1?" for i in range(10)]
    expect = sorted(keys, key=lambda k: hashlib.blake2b(f"7\0{k}".encode(), digest_size=16).digest())[:4]
    assert qs(ds.heldout) == expect


def test_heldout_file_removes_its_prompts_from_training(tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", rows(6))
    held = write_jsonl(
        tmp_path / "h.jsonl",
        [{"prompt": "What is  2 +\t1?", "answer": "3"}, {"prompt": "new", "answer": "x"}],
    )
    ds = FileDataset(train, heldout_path=held)
    assert qs(ds.heldout) == ["What is  2 +\t1?", "new"]
    assert "What is 2 + 1?" not in qs(ds.train_problems) and len(ds) == 5
    # bad rows of both files are reported together, each with its own file name
    bad_held = write_jsonl(
        tmp_path / "hb.jsonl", [{"prompt": "", "answer": "1"}, {"prompt": "ok", "answer": "1"}]
    )
    with pytest.raises(
        DatasetError, match=f"{train} and {bad_held}: 1 bad row \\(empty prompt: 1\\):\n  {bad_held}:1:"
    ):
        FileDataset(train, heldout_path=bad_held)


def test_heldout_too_large(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", rows(5) + rows(5))
    with pytest.raises(
        DatasetError,
        match="heldout_size = 5 needs more than 5 distinct prompts, and the good rows have 5",
    ):
        FileDataset(path, heldout_size=5)
    assert len(FileDataset(path, heldout_size=4)) == 2  # both copies of the one training prompt


# --------------------------------------------------------------------------------------------------
# order and resumption


def test_each_epoch_is_a_seeded_permutation(tmp_path):
    ds = FileDataset(write_jsonl(tmp_path / "d.jsonl", rows(7)), seed=5)
    n = len(ds)
    stream = ds.next(3 * n + 2)  # crosses two epoch boundaries
    for e in range(3):
        perm = list(range(n))
        random.Random(f"rlvr-file-5-{e}").shuffle(perm)  # the documented order
        assert stream[e * n : (e + 1) * n] == [ds.train_problems[i] for i in perm]
    assert sorted(qs(stream[:n])) == sorted(qs(ds.train_problems))
    assert qs(stream[:n]) != qs(stream[n : 2 * n])  # a new order each epoch
    assert ds.state_dict() == {"epoch": 3, "position": 2}
    other = FileDataset(write_jsonl(tmp_path / "d.jsonl", rows(7)), seed=6)
    assert qs(other.next(n)) != qs(stream[:n])


def test_one_call_equals_many_calls(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", rows(5))
    a, b = FileDataset(path, seed=1), FileDataset(path, seed=1)
    assert a.next(23) == [p for _ in range(23) for p in b.next(1)]
    assert a.state_dict() == b.state_dict() == {"epoch": 4, "position": 3}
    assert a.next(0) == []


def test_resume_continues_the_exact_stream(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", rows(9))
    ref = FileDataset(path, heldout_size=2, seed=3)
    sizes = [4, 7, 1, 5, 7, 3, 8]
    full = [qs(ref.next(b)) for b in sizes]
    for cut in range(1, len(sizes)):
        run = FileDataset(path, heldout_size=2, seed=3)
        for b in sizes[:cut]:
            run.next(b)
        state = json.loads(json.dumps(run.state_dict()))  # as a checkpoint stores it
        resumed = FileDataset(path, heldout_size=2, seed=3)
        resumed.load_state_dict(state)
        assert [qs(resumed.next(b)) for b in sizes[cut:]] == full[cut:]
    with pytest.raises(ValueError, match=r"position = 99 does not fit d\.jsonl's 7 training rows"):
        resumed.load_state_dict({"epoch": 0, "position": 99})


def test_bad_row_str():
    assert str(BadRow("f.jsonl", 3, "prompt", "expected a string, got a list", "wrong type")) == (
        "f.jsonl:3: field 'prompt': expected a string, got a list"
    )
    assert (
        str(BadRow("f.csv", 8, None, "expected at most 3 cells", "malformed row"))
        == "f.csv:8: expected at most 3 cells"
    )
