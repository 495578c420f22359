"""Text-to-SQL partial rewards of "Reasoning-SQL: Reinforcement Learning with SQL Tailored Partial
Rewards for Reasoning-Enhanced Text-to-SQL", with the standard library's ``sqlite3``.

Each problem carries its gold SQL as the reference answer and its database in the metadata field
``db`` (knob ``db_field``): one SQL script that creates the tables and inserts the rows, e.g.
``"CREATE TABLE t(a INT, b TEXT); INSERT INTO t VALUES (1, 'x');"``. Every call builds a fresh
in-memory database from that script, so no state is carried between samples.

The completion's query is the last fenced ```` ```sql ```` block (or plain ```` ``` ```` block), else
the last ``<answer>...</answer>`` (:func:`extract_sql`). Four components score it; each is a reward
of its own, so the recipe weighs them (``[rewards.sql_exec] weight = 3.0`` and so on):

- ``sql_exec``: execution accuracy, 1.0 when the query's result equals the gold query's result on
  the database, as a multiset of rows, or as a list when the gold query has an ``ORDER BY``;
- ``sql_syntax``: 1.0 when the query prepares and runs on the database without error;
- ``sql_schema``: schema linking, the Jaccard index of the schema items (tables and columns of the
  database) named in the query and in the gold query;
- ``sql_ngram``: the Jaccard index of the token bigrams of the query and of the gold query.

A query is run with a time limit (a ``sqlite3`` progress handler that aborts it past ``timeout_s``
seconds), must be one statement, builds no value over 1 MiB, and may only read (an authorizer
refuses writes, ``ATTACH``, ``PRAGMA`` and everything else that is not a ``SELECT``); a refused,
failing or timed-out query scores 0.0 on ``sql_exec`` and ``sql_syntax``. A problem whose metadata
has no usable database, or whose gold query fails, raises a ValueError naming the field (the runner
counts it as the component's failure).

What is rlvr's: the abstract names the rewards (execution accuracy, syntax, schema linking, n-gram
similarity, AI feedback) but gives no formulas. The forms above are rlvr's simple choices; schema
items are matched as case-folded identifier tokens (so a query that fails to parse still gets
partial credit); the AI-feedback reward is ``reward:llm_judge``; the weights are the recipe's.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from itertools import pairwise
from typing import Any, Literal

from rlvr.rewards.verifiers import REWARDS, RewardFn, extract_answer

__all__ = [
    "SqlResult",
    "bigram_jaccard",
    "execution_match",
    "extract_sql",
    "jaccard",
    "make_sql_exec_reward",
    "make_sql_ngram_reward",
    "make_sql_schema_reward",
    "make_sql_syntax_reward",
    "open_db",
    "run_query",
    "schema_items",
    "schema_names",
    "sql_tokens",
]

MAX_VALUE_BYTES = 1 << 20  # the longest string or blob a completion's query may build
ExtractMode = Literal["auto", "sql_block", "answer_tag", "none"]

_FENCE = re.compile(r"```[ \t]*(?:sql|sqlite)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
# tokens: string literals, quoted identifiers, words, numbers, two-char operators, any other symbol
_TOKEN = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]|[A-Za-z_][A-Za-z0-9_$]*"
    r"|\d+(?:\.\d*)?|\.\d+|<=|>=|<>|!=|==|\|\||\S"
)
_READ_ONLY = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}


def extract_sql(completion: str, *, mode: ExtractMode = "auto") -> str | None:
    """The SQL query of a completion, stripped, without a trailing ``;``; None when there is none.

    ``sql_block``: the last fenced block (```` ```sql ````, ```` ```sqlite ```` or bare
    ```` ``` ````); ``answer_tag``: the last ``<answer>...</answer>`` (a fenced block inside it is
    unwrapped); ``auto``: the first of the two that is found; ``none``: the whole completion.
    """
    if mode == "none":
        text: str | None = completion
    elif mode == "sql_block":
        blocks = _FENCE.findall(completion)
        text = blocks[-1] if blocks else None
    elif mode == "answer_tag":
        text = extract_answer(completion)
        if text is not None:
            blocks = _FENCE.findall(text)
            text = blocks[-1] if blocks else text
    elif mode == "auto":
        text = extract_sql(completion, mode="sql_block")
        if text is None:
            text = extract_sql(completion, mode="answer_tag")
    else:
        raise ValueError(f"extract: expected 'auto', 'sql_block', 'answer_tag' or 'none', got {mode!r}")
    if text is None:
        return None
    text = text.strip().rstrip(";").strip()
    return text or None


def _db_script(meta: dict[str, Any], db_field: str) -> str:
    """The database script of a problem's metadata; ValueError naming the field when unusable."""
    if db_field not in meta:
        raise ValueError(
            f"sql reward: problem metadata has no {db_field!r} (expected an SQL script that creates "
            f"and fills the tables); present keys: {', '.join(sorted(meta)) or 'none'}"
        )
    script = meta[db_field]
    if not isinstance(script, str) or not script.strip():
        raise ValueError(
            f"sql reward: metadata field {db_field!r} must be a non-empty SQL script string, "
            f"got {type(script).__name__} {script!r:.60}"
        )
    return script


def _no_files(action: int, *args: Any) -> int:
    """The database script may do anything but attach (create or read) a database file."""
    return sqlite3.SQLITE_DENY if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH) else 0


def open_db(script: str, *, field: str = "db", timeout_s: float = 1.0) -> sqlite3.Connection:
    """A fresh in-memory sqlite database built by running ``script``.

    Raises ValueError naming ``field`` when the script fails or runs past ``timeout_s`` seconds.
    """
    conn = sqlite3.connect(":memory:")
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    conn.set_authorizer(_no_files)
    try:
        conn.executescript(script)
    except sqlite3.Error as err:
        conn.close()
        reason = "timed out" if time.monotonic() > deadline else str(err)
        raise ValueError(f"sql reward: metadata field {field!r}: the script fails: {reason}") from None
    conn.set_authorizer(None)
    conn.set_progress_handler(None, 0)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)  # no query builds a huge value
    return conn


class SqlResult:
    """The outcome of one query: its rows, or the error that stopped it (``rows`` is None then)."""

    __slots__ = ("error", "rows")

    def __init__(self, rows: list[tuple[Any, ...]] | None, error: str | None) -> None:
        self.rows = rows
        self.error = error

    @property
    def ok(self) -> bool:
        return self.rows is not None


def _authorize(action: int, *args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ONLY else sqlite3.SQLITE_DENY


def run_query(
    conn: sqlite3.Connection, query: str, *, timeout_s: float = 1.0, max_rows: int = 100_000
) -> SqlResult:
    """Run one read-only statement on ``conn`` with a time limit; never raises for a bad query.

    The error is set when the query does not prepare, is not a single read-only statement (the
    authorizer denies anything but ``SELECT``: writes, ``ATTACH``, ``PRAGMA``), fails, runs past
    ``timeout_s`` seconds, or returns more than ``max_rows`` rows.
    """
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 1000)
    conn.set_authorizer(_authorize)
    try:
        cur = conn.execute(query)
        rows = cur.fetchmany(max_rows + 1)
        if len(rows) > max_rows:
            return SqlResult(None, f"more than {max_rows} rows")
        return SqlResult([tuple(r) for r in rows], None)
    except (sqlite3.Error, sqlite3.Warning, ValueError, OverflowError) as err:
        reason = "timed out" if time.monotonic() > deadline else str(err)
        return SqlResult(None, reason)
    finally:
        conn.set_authorizer(None)
        conn.set_progress_handler(None, 0)


def _gold(conn: sqlite3.Connection, answer: str, timeout_s: float) -> list[tuple[Any, ...]]:
    if not answer.strip():
        raise ValueError("sql reward: the reference answer (the gold SQL) is empty")
    gold = run_query(conn, answer.strip().rstrip(";"), timeout_s=timeout_s)
    if gold.rows is None:
        raise ValueError(f"sql reward: the gold SQL (the reference answer) fails: {gold.error}")
    return gold.rows


def execution_match(pred: list[tuple[Any, ...]], gold: list[tuple[Any, ...]], *, ordered: bool) -> bool:
    """Whether two results are the same: as lists when ``ordered``, else as multisets of rows."""
    return pred == gold if ordered else Counter(pred) == Counter(gold)


def sql_tokens(query: str) -> list[str]:
    """The tokens of a query, case-folded except inside string literals: words, numbers, quoted
    names (unquoted), literals and operators; whitespace and comments are dropped."""
    query = re.sub(r"--[^\n]*|/\*.*?\*/", " ", query, flags=re.DOTALL)
    out = []
    for tok in _TOKEN.findall(query):
        if tok.startswith("'"):
            out.append(tok)
        elif tok[0] in '"`[':
            out.append(tok[1:-1].casefold())
        else:
            out.append(tok.casefold())
    return out


def jaccard(a: set[Any], b: set[Any]) -> float:
    """|a & b| / |a | b|; 1.0 when both sets are empty."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def bigram_jaccard(pred: str, gold: str) -> float:
    """The Jaccard index of the sets of adjacent token pairs (:func:`sql_tokens`) of two queries.

    Two queries of fewer than two tokens each have no bigrams: 1.0 when their tokens are equal,
    else 0.0.
    """
    p, g = sql_tokens(pred), sql_tokens(gold)
    pb, gb = set(pairwise(p)), set(pairwise(g))
    if not pb and not gb:
        return 1.0 if p == g else 0.0
    return jaccard(pb, gb)


def schema_names(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
    """The case-folded table names and column names of a database."""
    tables = {
        r[0].casefold()
        for r in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")
        if not r[0].startswith("sqlite_")
    }
    columns: set[str] = set()
    for t in tables:
        columns |= {r[1].casefold() for r in conn.execute(f'PRAGMA table_info("{t}")')}
    return tables, columns


def schema_items(query: str, tables: set[str], columns: set[str]) -> set[tuple[str, str]]:
    """The schema items a query names: ("table", name) and ("column", name) for each of its
    identifier tokens that is a table or a column of the database (a name that is both counts as
    both)."""
    items: set[tuple[str, str]] = set()
    for tok in sql_tokens(query):
        if tok.startswith("'"):
            continue
        if tok in tables:
            items.add(("table", tok))
        if tok in columns:
            items.add(("column", tok))
    return items


def _factory(
    name: str,
    score: Callable[[str, str, sqlite3.Connection, float], float],
    *,
    extract: ExtractMode,
    db_field: str,
    timeout_s: float,
) -> RewardFn:
    def sql_reward(prompt: str, completion: str, answer: str, **meta: Any) -> float:
        conn = open_db(_db_script(meta, db_field), field=db_field, timeout_s=timeout_s)
        try:
            gold = answer.strip().rstrip(";").strip()
            if not gold:
                raise ValueError("sql reward: the reference answer (the gold SQL) is empty")
            pred = extract_sql(completion, mode=extract)
            if pred is None:
                return 0.0
            return score(pred, gold, conn, timeout_s)
        finally:
            conn.close()

    sql_reward.__name__ = sql_reward.__qualname__ = f"{name}_reward"
    return sql_reward


_BOUNDS = {"timeout_s": "> 0"}


@REWARDS.register("sql_exec", bounds=_BOUNDS)
def make_sql_exec_reward(
    *, extract: ExtractMode = "auto", db_field: str = "db", timeout_s: float = 1.0
) -> RewardFn:
    """Factory: execution accuracy of Reasoning-SQL's partial rewards ("Reasoning-SQL: Reinforcement
    Learning with SQL Tailored Partial Rewards for Reasoning-Enhanced Text-to-SQL").

    r = 1[ result(pred) == result(gold) ] on the problem's database (``meta[db_field]``), the results
    compared as multisets of rows, or as ordered lists when the gold SQL has ``ORDER BY``. A missing
    query, or one that fails, is refused or times out (``timeout_s`` seconds), gives 0.0.
    """

    def score(pred: str, gold: str, conn: sqlite3.Connection, timeout_s: float) -> float:
        gold_rows = _gold(conn, gold, timeout_s)
        res = run_query(conn, pred, timeout_s=timeout_s)
        if res.rows is None:
            return 0.0
        ordered = _ORDER_BY.search(gold) is not None
        return 1.0 if execution_match(res.rows, gold_rows, ordered=ordered) else 0.0

    return _factory("sql_exec", score, extract=extract, db_field=db_field, timeout_s=timeout_s)


@REWARDS.register("sql_syntax", bounds=_BOUNDS)
def make_sql_syntax_reward(
    *, extract: ExtractMode = "auto", db_field: str = "db", timeout_s: float = 1.0
) -> RewardFn:
    """Factory: the syntax reward of Reasoning-SQL ("Reasoning-SQL: Reinforcement Learning with SQL
    Tailored Partial Rewards for Reasoning-Enhanced Text-to-SQL").

    r = 1[ the query is one read-only statement that prepares and runs on ``meta[db_field]`` within
    ``timeout_s`` seconds ]; its result is not compared. The gold SQL must run too (else ValueError),
    so that a broken problem is reported rather than silently rewarded.
    """

    def score(pred: str, gold: str, conn: sqlite3.Connection, timeout_s: float) -> float:
        _gold(conn, gold, timeout_s)
        return 1.0 if run_query(conn, pred, timeout_s=timeout_s).ok else 0.0

    return _factory("sql_syntax", score, extract=extract, db_field=db_field, timeout_s=timeout_s)


@REWARDS.register("sql_schema", bounds=_BOUNDS)
def make_sql_schema_reward(
    *, extract: ExtractMode = "auto", db_field: str = "db", timeout_s: float = 1.0
) -> RewardFn:
    """Factory: the schema-linking reward of Reasoning-SQL ("Reasoning-SQL: Reinforcement Learning
    with SQL Tailored Partial Rewards for Reasoning-Enhanced Text-to-SQL").

    r = |S(pred) & S(gold)| / |S(pred) | S(gold)| (1.0 when both are empty), where S(q) is the set of
    the database's tables and columns that q names (:func:`schema_items`: identifier tokens matched
    case-folded against ``meta[db_field]``'s schema). The query is not run, so a query with a typo
    still earns the items it names right. The matching by tokens is rlvr's form.
    """

    def score(pred: str, gold: str, conn: sqlite3.Connection, timeout_s: float) -> float:
        tables, columns = schema_names(conn)
        return jaccard(schema_items(pred, tables, columns), schema_items(gold, tables, columns))

    return _factory("sql_schema", score, extract=extract, db_field=db_field, timeout_s=timeout_s)


@REWARDS.register("sql_ngram", bounds=_BOUNDS)
def make_sql_ngram_reward(
    *, extract: ExtractMode = "auto", db_field: str = "db", timeout_s: float = 1.0
) -> RewardFn:
    """Factory: the n-gram similarity reward of Reasoning-SQL ("Reasoning-SQL: Reinforcement Learning
    with SQL Tailored Partial Rewards for Reasoning-Enhanced Text-to-SQL").

    r = |B(pred) & B(gold)| / |B(pred) | B(gold)|, B(q) the set of token bigrams of q
    (:func:`bigram_jaccard`; tokens case-folded outside string literals). The database is built
    only to check the problem's metadata, so that every component refuses the same bad problems.
    """

    def score(pred: str, gold: str, conn: sqlite3.Connection, timeout_s: float) -> float:
        return bigram_jaccard(pred, gold)

    return _factory("sql_ngram", score, extract=extract, db_field=db_field, timeout_s=timeout_s)
