"""Reasoning-SQL's partial rewards: hand-computed values on tiny sqlite databases, the read-only and
time limits, bad metadata, the example data file, and a zero weight that leaves the reward as it was."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rlvr.data.files import FileDataset
from rlvr.rewards import REWARDS
from rlvr.rewards.runner import RewardComponent, RewardRunner
from rlvr.rewards.sql import (
    bigram_jaccard,
    execution_match,
    extract_sql,
    jaccard,
    open_db,
    run_query,
    schema_items,
    schema_names,
    sql_tokens,
)

DB = (
    "CREATE TABLE emp(id INT, name TEXT, dept TEXT, salary INT);"
    "CREATE TABLE dept(code TEXT, title TEXT);"
    "INSERT INTO emp VALUES (1, 'ann', 'a', 10), (2, 'bob', 'b', 20), (3, 'cy', 'a', 30);"
    "INSERT INTO dept VALUES ('a', 'Art'), ('b', 'Bio');"
)
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "tiny_sql.jsonl"
NAMES = ("sql_exec", "sql_syntax", "sql_schema", "sql_ngram")


def score(name: str, completion: str, gold: str, db: str = DB, **knobs) -> float:
    return REWARDS[name](**knobs)("question", completion, gold, db=db)


def ans(sql: str) -> str:
    return f"<think>...</think><answer>{sql}</answer>"


# ---------------------------------------------------------------- extraction and tokens


def test_extract_sql_prefers_the_last_sql_block_then_the_answer_tag():
    text = "```sql\nSELECT 1;\n```\nbetter:\n```sql\nSELECT 2 ;\n```<answer>SELECT 3</answer>"
    assert extract_sql(text) == "SELECT 2"
    assert extract_sql(text, mode="answer_tag") == "SELECT 3"
    assert extract_sql("<answer>```sqlite\nSELECT 4;\n```</answer>", mode="answer_tag") == "SELECT 4"
    assert extract_sql("```\nSELECT 5\n```", mode="sql_block") == "SELECT 5"
    assert extract_sql("SELECT 6;", mode="none") == "SELECT 6"
    assert extract_sql("no query here") is None
    assert extract_sql("<answer> ; </answer>") is None


def test_tokens_case_fold_outside_literals_and_drop_comments():
    q = "select Name, \"Dept\" FROM emp -- c\nWHERE x>=1.5 AND y = 'Ann' /* d */"
    assert sql_tokens(q) == [
        "select", "name", ",", "dept", "from", "emp", "where", "x", ">=", "1.5", "and", "y", "=",
        "'Ann'",
    ]  # fmt: skip


def test_jaccard_and_bigram_hand_values():
    assert jaccard({1, 2, 3}, {2, 3, 4}) == 2 / 4
    assert jaccard(set(), set()) == 1.0
    # pred {(select,a),(a,from),(from,t)}, gold {(select,b),(b,from),(from,t)}: 1 shared of 5
    assert bigram_jaccard("SELECT a FROM t", "select b from T") == 1 / 5
    # pred {(select,a),(a,from),(from,t)}, gold adds (t,where),(where,x): 3 shared of 5
    assert bigram_jaccard("SELECT a FROM t", "SELECT a FROM t WHERE x") == 3 / 5
    assert bigram_jaccard("SELECT a FROM t", "SELECT a FROM t") == 1.0
    assert bigram_jaccard("x", "x") == 1.0 and bigram_jaccard("x", "y") == 0.0
    assert bigram_jaccard("SELECT 'A'", "SELECT 'a'") == 0.0  # literals keep their case


def test_schema_items_of_a_query_hand_values():
    conn = open_db(DB)
    tables, columns = schema_names(conn)
    assert tables == {"emp", "dept"}
    assert columns == {"id", "name", "dept", "salary", "code", "title"}
    items = schema_items("SELECT e.name FROM EMP e WHERE e.salary > 'code'", tables, columns)
    assert items == {("table", "emp"), ("column", "name"), ("column", "salary")}  # not the literal
    # 'dept' is a table and a column: both
    assert schema_items("SELECT dept FROM emp", tables, columns) == {
        ("table", "emp"), ("table", "dept"), ("column", "dept")
    }  # fmt: skip


# ---------------------------------------------------------------- the four rewards


def test_execution_accuracy_multiset_unless_gold_orders():
    gold = "SELECT name FROM emp WHERE dept = 'a'"  # ann, cy
    assert score("sql_exec", ans("SELECT name FROM emp WHERE salary <> 20"), gold) == 1.0
    assert score("sql_exec", ans("SELECT name FROM emp WHERE dept='a' ORDER BY id DESC"), gold) == 1.0
    assert score("sql_exec", ans("SELECT name FROM emp"), gold) == 0.0
    assert score("sql_exec", ans("SELECT name, id FROM emp WHERE dept = 'a'"), gold) == 0.0
    ordered = "SELECT name FROM emp ORDER BY salary DESC"  # cy, bob, ann
    assert score("sql_exec", ans("SELECT name FROM emp ORDER BY id DESC"), ordered) == 1.0
    assert score("sql_exec", ans("SELECT name FROM emp"), ordered) == 0.0
    assert score("sql_exec", "no query", gold) == 0.0
    # a multiset: duplicates count
    assert execution_match([(1,), (1,)], [(1,)], ordered=False) is False
    assert execution_match([(1,), (2,)], [(2,), (1,)], ordered=False) is True
    assert execution_match([(1,), (2,)], [(2,), (1,)], ordered=True) is False


def test_syntax_reward_runs_the_query_but_ignores_its_result():
    gold = "SELECT name FROM emp"
    assert score("sql_syntax", ans("SELECT title FROM dept"), gold) == 1.0
    assert score("sql_syntax", ans("SELEC title FROM dept"), gold) == 0.0
    assert score("sql_syntax", ans("SELECT nope FROM dept"), gold) == 0.0
    assert score("sql_syntax", ans("SELECT 1; SELECT 2"), gold) == 0.0  # one statement only


def test_schema_and_ngram_rewards_hand_values():
    gold = "SELECT name FROM emp WHERE dept = 'a'"  # items: emp, dept(t), name, dept(c)
    pred = "SELECT nam FROM emp WHERE dept = 'a'"  # a typo: does not run; items: emp, dept(t+c)
    assert score("sql_schema", ans(pred), gold) == 3 / 4
    assert score("sql_syntax", ans(pred), gold) == 0.0
    # bigrams of gold: 7 pairs over 8 tokens; pred shares all but (select,name),(name,from)
    # and adds (select,nam),(nam,from): 5 shared of 9
    assert score("sql_ngram", ans(pred), gold) == 5 / 9
    assert score("sql_schema", ans("SELECT 1"), "SELECT 2") == 1.0  # no schema on either side


def test_writes_attach_and_pragma_are_refused(tmp_path):
    gold = "SELECT name FROM emp"
    target = tmp_path / "x.db"
    for q in [
        "DELETE FROM emp",
        "INSERT INTO emp VALUES (4, 'd', 'a', 1)",
        "DROP TABLE emp",
        f"ATTACH DATABASE '{target}' AS x",
        "PRAGMA table_info(emp)",
    ]:
        assert score("sql_syntax", ans(q), gold) == 0.0, q
        assert score("sql_exec", ans(q), gold) == 0.0, q
    assert not target.exists()
    with pytest.raises(ValueError, match="'db': the script fails: not authorized"):
        open_db(f"ATTACH DATABASE '{target}' AS x;")
    assert not target.exists()


def test_a_runaway_query_is_stopped_at_the_time_limit():
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    t0 = time.monotonic()
    assert score("sql_syntax", ans(forever), "SELECT 1", timeout_s=0.2) == 0.0
    assert time.monotonic() - t0 < 5.0
    res = run_query(open_db(DB), forever, timeout_s=0.1)
    assert not res.ok and res.error == "timed out"
    assert run_query(open_db(DB), "SELECT id FROM emp", max_rows=2).error == "more than 2 rows"
    big = run_query(open_db(DB), "SELECT length(zeroblob(100000000))")
    assert not big.ok and "too big" in big.error


@pytest.mark.parametrize("name", NAMES)
def test_bad_metadata_and_gold_raise_errors_naming_the_field(name):
    fn = REWARDS[name]()
    good = ans("SELECT 1")
    with pytest.raises(ValueError, match=r"metadata has no 'db'.*present keys: other"):
        fn("q", good, "SELECT 1", other=1)
    with pytest.raises(ValueError, match="field 'db' must be a non-empty SQL script string, got int"):
        fn("q", good, "SELECT 1", db=3)
    with pytest.raises(ValueError, match="field 'db': the script fails: near \"TABL\""):
        fn("q", good, "SELECT 1", db="CREATE TABL t(a);")
    with pytest.raises(ValueError, match=r"reference answer .*is empty"):
        fn("q", good, "  ", db=DB)
    with pytest.raises(ValueError, match="metadata has no 'schema'"):
        REWARDS[name](db_field="schema")("q", good, "SELECT 1", db=DB)
    assert REWARDS[name](db_field="schema")("q", good, "SELECT 1", schema=DB) >= 0.0
    if name in ("sql_exec", "sql_syntax"):
        with pytest.raises(ValueError, match=r"gold SQL .*fails: no such column: zz"):
            fn("q", good, "SELECT zz FROM emp", db=DB)


# ---------------------------------------------------------------- the example data and the runner


def test_example_file_loads_and_its_gold_queries_score_full_marks():
    data = FileDataset(str(EXAMPLE), answer_field="answer", heldout_size=2, seed=0)
    rows = [json.loads(x) for x in EXAMPLE.read_text().splitlines()]
    problems = data.next(len(rows) - 2) + list(data.heldout)
    assert sorted(p.answer for p in problems) == sorted(r["answer"] for r in rows)
    fns = {n: REWARDS[n]() for n in NAMES}
    partial = 0
    for p in problems:
        assert set(p.meta) == {"id", "db"}
        for name, fn in fns.items():
            assert fn(p.question, ans(p.answer), p.answer, **p.meta) == 1.0, (name, p.answer)
        wrong = ans("SELECT 1 FROM " + p.answer.split(" FROM ")[1].split()[0])
        assert fns["sql_exec"](p.question, wrong, p.answer, **p.meta) == 0.0
        assert fns["sql_syntax"](p.question, wrong, p.answer, **p.meta) == 1.0
        linked = fns["sql_schema"](p.question, wrong, p.answer, **p.meta)
        assert 0.0 < linked <= 1.0  # the table is right (COUNT(*) FROM t names no column: 1.0)
        partial += linked < 1.0
    assert partial == 7  # all but "SELECT COUNT(*) FROM orders"


def test_a_component_at_weight_zero_leaves_the_reward_bit_for_bit():
    rows = [json.loads(x) for x in EXAMPLE.read_text().splitlines()]
    completions = [ans(r["answer"]) if i % 2 else ans("SELECT name FROM customers") for i, r in
                   enumerate(rows)]  # fmt: skip
    args = ([r["prompt"] for r in rows], completions, [r["answer"] for r in rows],
            [{"db": r["db"]} for r in rows])  # fmt: skip
    base = RewardRunner([RewardComponent("sql_exec", 3.0)], log=lambda m: None).score(*args)
    mixed = RewardRunner(
        [RewardComponent("sql_exec", 3.0)] + [RewardComponent(n, 0.0) for n in NAMES[1:]],
        log=lambda m: None,
    ).score(*args)
    assert mixed.rewards == base.rewards and not any(mixed.failures.values())
    assert base.rewards == [3.0 * (i % 2) for i in range(len(rows))]
    assert any(0.0 < row[2] < 1.0 for row in mixed.parts)  # schema linking gives partial credit
