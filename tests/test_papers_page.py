"""docs/papers.md, the seed papers against rlvr, is held to the code.

- every component it names as ``registry:name`` (in backticks) exists in that registry; recipes are
  checked against ``recipe_names()``, ``config:section.field`` against the run configuration and
  ``cli:command`` against the ``rlvr`` subcommands;
- the counts at the top equal the statuses of the rows, the A table has the 129 technique papers,
  each row id once, and the README quotes the same counts;
- every place the B table says a finding is measured exists (the file, its section or table row);
- every registered component in scope has a docstring that names its origin (:data:`ORIGIN`).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

import rlvr.rewards  # noqa: F401 - registers the rewards
from rlvr import algos
from rlvr.algos.weights import IS_CORRECTIONS
from rlvr.cli import build_parser
from rlvr.data.guidance import GUIDES
from rlvr.data.samplers import GROUP_FILTERS, SAMPLERS
from rlvr.data.solutions import SOLVERS
from rlvr.envs.base import ENVS
from rlvr.rewards.verifiers import REWARDS
from rlvr.rollout.branch_points import BRANCH_POINTS
from rlvr.train.config import Config, recipe_names

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "papers.md").read_text()
STATUSES = ("built", "partly", "not built")
A_PAPERS = 129
B_PAPERS = 20

REGISTRIES = {
    "advantage": algos.ADVANTAGES,
    "aggregation": algos.AGGREGATIONS,
    "credit": algos.CREDIT,
    "kl": algos.KL_ESTIMATORS,
    "objective": algos.OBJECTIVES,
    "shaping": algos.SHAPING,
    "token_weights": algos.TOKEN_WEIGHTS,
    "reward_weights": algos.REWARD_WEIGHTS,
    "is_correction": IS_CORRECTIONS,
    "reward": REWARDS,
    "sampler": SAMPLERS,
    "group_filter": GROUP_FILTERS,
    "guide": GUIDES,
    "solver": SOLVERS,
    "env": ENVS,
    "branch_points": BRANCH_POINTS,
}

# The registries whose components are techniques: each docstring must name where it comes from.
# Solvers (worked-solution writers) and environments are task infrastructure and are left out.
IN_SCOPE = (
    "advantage",
    "aggregation",
    "credit",
    "kl",
    "objective",
    "shaping",
    "token_weights",
    "reward_weights",
    "is_correction",
    "reward",
    "sampler",
    "group_filter",
    "guide",
    "branch_points",
)

# A docstring names its origin when it contains one of these (whitespace runs read as one space):
ORIGIN = {
    # an arXiv id: arXiv 2602.07078, arXiv:2602.07078
    "arXiv id": re.compile(r"arXiv[: ]?\d{4}\.\d{4,5}"),
    # a title in double quotes, at least three words, starting with a capital or a digit
    "quoted title": re.compile(r'"[A-Z0-9][^"]*? [^"]*? [^"]*"'),
    # an author and a year: Williams, 1992; Xie et al. 2024; Kool et al., 2019
    "author-year": re.compile(
        r"\b[A-Z][A-Za-z'-]+(?: et al\.?| and [A-Z][A-Za-z'-]+)?,? \(?(?:19|20)\d\d\b"
    ),
    # a peer framework's implementation, named in backticks: verl's ``geo_mean``
    "peer's code": re.compile(
        r"\b(?:verl|TRL|OpenRLHF|ms-swift|SkyRL|prime-rl|ROLL|AReaL|Tinker)'s ``[^`]+``"
    ),
    # a textbook piece or one designed here, said so: "standard" (not "standard deviation" or
    # "standard error"), "textbook", or "rlvr's own"
    "standard / rlvr's own": re.compile(r"\b(?:standard|textbook)\b(?! (?:deviation|error))|rlvr's own"),
}

COMPONENT = re.compile(r"`([a-z_]+):([A-Za-z0-9_.]+)`")


def _section(title: str) -> str:
    start = PAGE.index(f"\n## {title}\n")
    end = PAGE.find("\n## ", start + 1)
    return PAGE[start : end if end >= 0 else len(PAGE)]


def _rows(title: str) -> list[list[str]]:
    """The cells of a section's table rows whose first cell is a row id."""
    rows = []
    for line in _section(title).splitlines():
        if re.match(r"\| \d+ \|", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append(cells)
    return rows


def _a_rows() -> list[list[str]]:
    return _rows("A: technique papers")


def _b_rows() -> list[list[str]]:
    return _rows("B: findings papers")


def _counts() -> dict[str, int]:
    counts = {}
    for line in _section("Counts").splitlines():
        m = re.fullmatch(r"\| (built|partly|not built) \| (\d+) \|", line)
        if m:
            counts[m[1]] = int(m[2])
    return counts


def _config_field(path: str) -> bool:
    obj: object = Config
    for part in path.split("."):
        if not dataclasses.is_dataclass(obj):
            return False
        fields = {f.name: f for f in dataclasses.fields(obj)}
        if part not in fields:
            return False
        hint = fields[part].type
        obj = inspect.get_annotations(obj, eval_str=True)[part] if isinstance(hint, str) else hint
    return True


def _cli_commands() -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return set(sub.choices)


def unknown_components(text: str) -> list[str]:
    """The ``registry:name`` references of ``text`` that name nothing in this tree."""
    recipes = set(recipe_names())
    commands = _cli_commands()
    bad = []
    for kind, name in COMPONENT.findall(text):
        if kind in REGISTRIES:
            ok = name in REGISTRIES[kind]
        elif kind == "recipe":
            ok = name in recipes
        elif kind == "config":
            ok = _config_field(name)
        elif kind == "cli":
            ok = name in commands
        else:
            ok = False
        if not ok:
            bad.append(f"{kind}:{name}")
    return bad


def test_every_named_component_exists():
    assert COMPONENT.findall(PAGE), "the page names no component"
    assert unknown_components(PAGE) == []


def test_the_check_catches_a_wrong_name():
    assert unknown_components(
        "`credit:no_such_thing` `recipe:nope` `config:algo.nope` `cli:nope` `foo:grpo`"
    ) == ["credit:no_such_thing", "recipe:nope", "config:algo.nope", "cli:nope", "foo:grpo"]
    assert unknown_components("`credit:gae` `recipe:grpo` `config:model.lora.rank` `cli:sft`") == []


def test_a_table_has_every_technique_paper_once():
    rows = _a_rows()
    ids = [r[0] for r in rows]
    assert len(rows) == A_PAPERS
    assert len(set(ids)) == len(ids), [i for i in ids if ids.count(i) > 1]
    for r in rows:
        assert len(r) == 6, r
        assert r[3] in STATUSES, r
        # a built or partly built paper names what implements it
        if r[3] != "not built":
            assert COMPONENT.search(r[4]), r
        assert r[5], r


def test_counts_match_the_rows():
    rows = _a_rows()
    counts = _counts()
    assert counts == {s: sum(r[3] == s for r in rows) for s in STATUSES}
    assert sum(counts.values()) == A_PAPERS


def test_readme_quotes_the_counts():
    counts = _counts()
    readme = " ".join((ROOT / "README.md").read_text().split())
    line = (
        f"{counts['built']} of the {A_PAPERS} technique papers among the seeds are built, "
        f"{counts['partly']} partly"
    )
    assert line in readme


def test_b_table_points_at_real_measurements():
    rows = _b_rows()
    ids = [r[0] for r in rows]
    assert len(rows) == B_PAPERS and len(set(ids)) == len(ids)
    a_ids = {r[0] for r in _a_rows()}
    assert not a_ids & set(ids)
    for r in rows:
        assert len(r) == 5, r
        where = r[3]
        if where == "—":
            assert r[2] == "not measured", r
            continue
        path, _, rest = where.partition(", ")
        text = (ROOT / path).read_text()
        if m := re.fullmatch(r'"(.+)"', rest):
            assert re.search(rf"^#+ {re.escape(m[1])}$", text, re.M), r
        elif m := re.fullmatch(r"row (\S+)", rest):
            assert re.search(rf"^\| {re.escape(m[1])} \|", text, re.M), r
        else:
            pytest.fail(f"row {r[0]}: cannot read where {where!r}")


def names_origin(doc: str | None) -> bool:
    text = " ".join((doc or "").split())
    return any(p.search(text) for p in ORIGIN.values())


def test_origin_rule():
    assert names_origin('Dr. GRPO ("Understanding R1-Zero-like Training"): A = r - mean.')
    assert names_origin("The optimal token baseline (OTB, arXiv 2602.07078).")
    assert names_origin("REINFORCE (Williams, 1992): L = -A logp.")
    assert names_origin("Geometric-Mean Policy Optimization (GMPO; verl's ``geo_mean``).")
    assert names_origin("The standard mean over tokens.")
    assert not names_origin("Divide by the standard deviation of the group (GRPO).")
    assert not names_origin('GSPO: one "sequence" ratio per response.')
    assert not names_origin(None)


def test_every_component_docstring_names_its_origin():
    missing = [
        f"{kind}:{name}"
        for kind in IN_SCOPE
        for name in REGISTRIES[kind].names()
        if not names_origin(inspect.getdoc(REGISTRIES[kind][name]))
    ]
    assert missing == []
