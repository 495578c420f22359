"""What the arm benchmarks (``findings.py``, ``teachers.py``, ``branching.py``) share: their command
line, the check of its values, the threads of a run, the report writers and the committed digests
(``digest.py``) restored before the runs and saved after them.

Each benchmark is a dictionary of arms (a name -> a recipe and its overrides) run at seeds 0 1 2 for
``--steps`` optimizer steps into ``benchmarks/runs/<name>/<arm>/seed<S>/``; a finished run is
skipped, a cut one resumes from its checkpoint, and the report is written from whatever has
finished. The digests of the finished runs (``benchmarks/<name>/digests/``, committed) come back into
the runs folder at start, so a fresh clone rewrites the table, or adds an arm or a seed that is
paired with the others, without rerunning them (``--no-digest``: use only the runs folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from digest import restore, save

from rlvr.utils import atomic_write_text, console

ROOT = Path(__file__).resolve().parent


def arm_parser(doc: str | None, name: str, *, heldout: int = 128) -> argparse.ArgumentParser:
    """The command line every arm benchmark takes; its own flags are added by the caller."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", nargs="*", default=None, help="default: every arm")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--heldout", type=int, default=heldout, help="held-out problems (16 samples each)")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / name)
    ap.add_argument("--out", type=Path, default=ROOT / f"{name}.md")
    ap.add_argument(
        "--digest",
        type=Path,
        default=ROOT / name / "digests",
        help="committed digests of finished runs, restored before the runs and saved after them",
    )
    ap.add_argument("--no-digest", action="store_true", help="neither restore nor save digests")
    ap.add_argument("--table-only", action="store_true", help=f"rewrite {name}.md from finished runs")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, one torch thread each")
    return ap


def parse_arm_args(
    ap: argparse.ArgumentParser, arms: Iterable[str], every: int | None = None
) -> argparse.Namespace:
    """Parse the command line and refuse what the benchmark cannot run: ``--jobs`` < 1, ``--steps``
    not a multiple of the evaluation interval ``every``, an arm it does not have."""
    args = ap.parse_args()
    arms = list(arms)
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if every and args.steps % every:
        ap.error(f"--steps must be a multiple of {every}, got {args.steps}")
    unknown = sorted(set(args.arms or ()) - set(arms))
    if unknown:
        ap.error(f"unknown arm(s) {', '.join(unknown)}; arms: {', '.join(arms)}")
    return args


def run_threads(jobs: int) -> int:
    """``train.threads`` of each run: 0 (torch's default) for one run at a time, else the cores
    shared out between the ``jobs`` runs (at least one each)."""
    return 0 if jobs == 1 else max(1, (os.cpu_count() or 1) // jobs)


def writers(
    args: argparse.Namespace, report: Callable[[Path, Any], str]
) -> tuple[Callable[[], None], Callable[[], None]]:
    """(write, write_quietly): the report from ``args.runs`` into ``args.out``, atomically; the
    quiet one prints an error instead of raising (after each run: the runs must go on, and they are
    kept, so ``--table-only`` rewrites the file)."""

    def write() -> None:
        atomic_write_text(args.out, report(args.runs, args))

    def write_quietly() -> None:
        try:
            write()
        except Exception as err:
            console.print(f"[red]{args.out.name} not written[/red]: {type(err).__name__}: {err}")

    return write, write_quietly


def restore_digests(args: argparse.Namespace, bases: Iterable[str] = ()) -> None:
    """The committed digests of ``args.digest`` into ``args.runs`` where a run is missing. With
    ``bases`` (the embedded bases the arms train from), before new runs are made (not for
    ``--table-only``): the bases here are recorded (``bases.json``, built when missing) and the
    digests are restored only when they were made on the same builds, so that a new run is never
    paired with one from other weights (``rlvr.numerics``: some processors build other weights)."""
    if args.no_digest:
        return
    theirs = args.digest / "bases.json"
    if bases and not args.table_only and theirs.exists():
        mine = args.runs / "bases.json"
        if not mine.exists():
            record_bases(mine, bases)
        if json.loads(mine.read_text()) != json.loads(theirs.read_text()):
            console.print(
                f"[yellow]the digests in {args.digest} were made on other builds of the bases "
                f"({theirs} against {mine}): not restored, so every run is made here[/yellow]"
            )
            return
    n = restore(args.digest, args.runs)
    if n:
        console.print(f"{n} finished run(s) restored from the digests in {args.digest}")


def save_digests(args: argparse.Namespace) -> None:
    """Every finished run of ``args.runs`` digested into ``args.digest`` (to be committed). Digests
    of other builds of the bases (``bases.json`` differs) are removed first, so that one digest
    folder never mixes runs of two builds (the old ones stay in the repository's history)."""
    if args.no_digest:
        return
    theirs, mine = args.digest / "bases.json", args.runs / "bases.json"
    other = theirs.exists() and mine.exists()
    if other and json.loads(theirs.read_text()) != json.loads(mine.read_text()):
        console.print(f"[yellow]{args.digest}: digests of other bases replaced[/yellow]")
        shutil.rmtree(args.digest)
    save(args.runs, args.digest)


def record_bases(out: Path, names: Iterable[str]) -> None:
    """``bases.json``: the weights hash of each embedded base the arms use (built here when missing)
    against its reference build's (``REFERENCE_WEIGHTS``), so that the report can say when its
    numbers come from other builds than the README's."""
    from rlvr.models.tiny import EMBEDDED, REFERENCE_WEIGHTS, ensure_base, weights_sha

    bases = {}
    for name in names:
        recipe = EMBEDDED[name]
        bases[name] = {
            "weights": weights_sha(ensure_base(recipe, progress=False)),
            "reference": REFERENCE_WEIGHTS.get(recipe.key()),
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(bases, indent=2) + "\n")


def bases_paragraph(runs: Path) -> list[str]:
    """A paragraph on the embedded bases the runs used (``bases.json``), when they are not the
    reference builds: their numbers then differ from tables made on those."""
    path = runs / "bases.json"
    if not path.exists():
        return []
    bases = json.loads(path.read_text())
    off = {k: v for k, v in bases.items() if v.get("reference") and v["weights"] != v["reference"]}
    if not off:
        return ["The bases are the reference builds (`rlvr.models.tiny.REFERENCE_WEIGHTS`).", ""]
    names = ", ".join(
        f"`{k}` weights {v['weights']} (reference {v['reference']})" for k, v in off.items()
    )
    return [
        f"**These runs used other builds of the bases than the reference ones**: {names}. The "
        "machine that built them did not reproduce the reference weights under rlvr's portable "
        "numerics (`rlvr.numerics`), so the numbers here are comparable with each other but not "
        "with tables made on the reference builds.",
        "",
    ]
