"""Committed digests of finished benchmark runs, so that a fresh clone can rewrite a table, add an arm
or a seed, and pair new runs with the old ones without rerunning them.

    python benchmarks/digest.py save benchmarks/runs/teachers benchmarks/teachers/digests
    python benchmarks/digest.py restore benchmarks/teachers/digests benchmarks/runs/teachers

A run directory (``<arm>/seed<S>/`` under a benchmark's ``--runs``) is digested when it has
finished (``summary.json``): the files its report reads are copied with the same names
(``summary.json``, ``metrics.jsonl``, ``config.toml``, ``bench.json``, the wall-time files and
every ``eval*.json``), the evaluations without their sample texts (``samples``), and the model,
checkpoints and logs left out (a few dozen kB a run instead of tens of MB). A linked run
(``teachers.py``'s grpo arm from ``findings.py``'s runs) is digested as the files it links to.
Top-level JSON files of the runs folder (``teacher_eval.json``) are kept too.

``restore`` copies each digested run into a runs folder where that run is missing, so that the
benchmark counts it as finished, skips it, and its report reads it like a run made here; a run that
is there already (finished or cut) is never touched. The benchmarks restore at start and save after
their runs (``teachers.py``, ``findings.py``, ``branching.py``). Every write is atomic.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from rlvr.utils import atomic_write_text

KEEP = (
    "summary.json",
    "metrics.jsonl",
    "config.toml",
    "bench.json",
    "wall_s.txt",
    "sft_wall_s.txt",
)
"""The files of a run that a report reads, besides its evaluations (``eval*.json``,
``wide_eval_n*.json``)."""


def _runs(root: Path) -> list[Path]:
    """The finished run directories ``<arm>/seed<S>`` under ``root``."""
    return sorted(d for d in root.glob("*/seed*") if (d / "summary.json").is_file())


def _evals(d: Path) -> list[Path]:
    return sorted(p for p in d.glob("*eval*.json") if p.is_file() and not p.name.endswith(".part.json"))


def _strip(path: Path) -> str:
    """An evaluation's JSON without its sample texts (``samples``, at the top level or per model)."""
    data = json.loads(path.read_text())
    data.pop("samples", None)
    for m in data.get("models", []) if isinstance(data, dict) else []:
        if isinstance(m, dict):
            m.pop("samples", None)
    return json.dumps(data, separators=(",", ":")) + "\n"


def save(runs: Path, dest: Path) -> int:
    """Digest every finished run under ``runs`` into ``dest`` (the same ``<arm>/seed<S>`` layout),
    replacing an older digest of the same run. Returns the number of runs digested."""
    n = 0
    for d in _runs(runs):
        out = dest / d.relative_to(runs)
        out.mkdir(parents=True, exist_ok=True)
        for name in KEEP:
            if (d / name).is_file():
                atomic_write_text(out / name, (d / name).read_text())
        for p in _evals(d):
            atomic_write_text(out / p.name, _strip(p))
        n += 1
    for p in sorted(runs.glob("*.json")):
        if p.is_file() and not p.name.endswith(".part.json"):
            dest.mkdir(parents=True, exist_ok=True)
            atomic_write_text(dest / p.name, _strip(p))
    return n


def restore(src: Path, runs: Path) -> int:
    """Copy each digested run of ``src`` into ``runs`` where ``runs`` has no such directory (and
    the top-level JSON files ``runs`` lacks). Returns the number of runs restored."""
    if not src.is_dir():
        return 0
    n = 0
    for d in _runs(src):
        out = runs / d.relative_to(src)
        if out.exists() or out.is_symlink():
            continue
        tmp = out.with_name(out.name + ".restoring")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(d, tmp)
        tmp.replace(out)  # the run appears whole or not at all
        n += 1
    for p in sorted(src.glob("*.json")):
        if not (runs / p.name).exists():
            runs.mkdir(parents=True, exist_ok=True)
            atomic_write_text(runs / p.name, p.read_text())
    return n


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("action", choices=("save", "restore"))
    ap.add_argument("src", type=Path, help="save: the runs folder; restore: the digest folder")
    ap.add_argument("dest", type=Path, help="save: the digest folder; restore: the runs folder")
    args = ap.parse_args()
    if not args.src.is_dir():
        ap.error(f"{args.src}: no such directory")
    n = (save if args.action == "save" else restore)(args.src, args.dest)
    print(f"{args.action}: {n} run(s), {args.src} -> {args.dest}")


if __name__ == "__main__":
    main()
