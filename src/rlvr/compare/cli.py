"""The ``rlvr compare`` command: arguments, the canonical command line, and the run."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rlvr.compare.grid import parse_recipes, parse_seeds, run_grid
from rlvr.compare.report import write_compare
from rlvr.compare.summary import summarize

__all__ = ["add_compare_parser", "run_compare"]


def add_compare_parser(sub: Any) -> None:
    """Add the ``compare`` subcommand to argparse subparsers ``sub`` (sets ``fn=run_compare``)."""
    p = sub.add_parser(
        "compare",
        help="train a grid of recipes x seeds and compare them (HTML report)",
        description="Run every (recipe, seed) one after the other into DIR/<recipe>/seed<S>/, then "
        "write DIR/compare.json and DIR/report.html: mean and 95% t-interval per recipe, learning "
        "curves with bands, pass@k curves and Welch's t-test for each pair of recipes. Give an "
        "existing DIR to resume: finished runs are skipped, interrupted ones continue from their "
        "checkpoint. Overrides (section.field=value) apply to every run.",
    )
    p.add_argument(
        "--recipes",
        default="grpo,dr_grpo,dapo",
        help="comma-separated recipe names or .toml/.yaml paths (default: grpo,dr_grpo,dapo)",
    )
    p.add_argument(
        "--seeds",
        default="3",
        help="a count (3: seeds 0,1,2) or a comma-separated list (0,5; a single seed: 5,)",
    )
    p.add_argument("--steps", type=int, help="training steps of every run (train.steps)")
    p.add_argument(
        "--out", help="grid directory (default: runs/compare-<time>; an existing one resumes)"
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rewrite compare.json and report.html from the finished runs in --out",
    )
    p.add_argument("--quiet", action="store_true", help="no per-step progress bars")
    p.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        help="import this module or .py file first, so its registered components can be named",
    )
    p.add_argument("overrides", nargs="*", help="section.field=value, applied to every run")
    p.set_defaults(fn=run_compare)


def _command(args: argparse.Namespace, out: Path, recipes: list[str], seeds: list[int]) -> str:
    """The canonical command that (re)runs this grid."""
    parts = ["rlvr", "compare", "--recipes", ",".join(recipes), "--seeds", ",".join(map(str, seeds))]
    if len(seeds) == 1:
        parts[-1] += ","
    if args.steps is not None:
        parts += ["--steps", str(args.steps)]
    parts += ["--out", str(out)]
    for plug in args.plugin or []:
        parts += ["--plugin", plug]
    return shlex.join(parts + list(args.overrides))


def run_compare(args: argparse.Namespace) -> int:
    """The ``rlvr compare`` command: run (or resume) the grid, then write the comparison report."""
    from rlvr.train.config import ConfigError
    from rlvr.train.trainer import TrainingInterrupted
    from rlvr.utils import console

    try:
        recipes, seeds = parse_recipes(args.recipes), parse_seeds(args.seeds)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if args.out:
        out = Path(args.out)
    elif args.report_only:
        raise ConfigError("--report-only needs --out DIR (the grid directory to report on)")
    else:
        out = Path("runs") / f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    if args.report_only and not out.is_dir():
        raise FileNotFoundError(f"--out {out}: no such grid directory")
    overrides = list(args.overrides) + ([f"train.steps={args.steps}"] if args.steps is not None else [])
    command = _command(args, out, recipes, seeds)

    def report() -> Path:
        return write_compare(out, summarize(out, recipes, seeds), command)

    t0 = time.perf_counter()
    if not args.report_only:
        console.print(f"[bold]rlvr compare[/bold]: {len(recipes)} recipes × {len(seeds)} seeds -> {out}")
        try:
            run_grid(recipes, seeds, out, overrides, progress=not args.quiet, after_run=report)
        except TrainingInterrupted:
            console.print(f"[yellow]grid interrupted; resume it with:[/yellow] {command}", markup=True)
            raise
    path = report()
    data = json.loads((out / "compare.json").read_text())
    for r in recipes:
        st = data["recipe_stats"][r]
        if st.get("pass@1"):
            m, lo, hi = (st["pass@1"][k] for k in ("mean", "ci_low", "ci_high"))
            ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None else ""
            console.print(f"{r:>12s}: pass@1 {100 * m:.1f}%{ci} over {len(st['seeds_done'])} seeds")
    for t in data["tests"]:
        if t["p"] is not None:
            star = " *" if t["significant"] else ""
            console.print(
                f"{t['a']} − {t['b']}: {100 * t['diff']:+.1f} points, Welch p = {t['p']:.3f}{star}"
            )
    wall = time.perf_counter() - t0
    console.print(f"report: {path}  ({wall / 60:.1f} min)")
    return 0
