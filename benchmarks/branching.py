"""Branching (tree) rollouts against i.i.d. groups on the embedded reasoner.

    python benchmarks/branching.py --jobs 2          # every arm x seeds 0 1 2
    python benchmarks/branching.py --table-only      # rewrite branching.md from the finished runs

Every arm is ``reasoner_grpo`` (8 prompts x 8 samples, up to 96 tokens, lr 1e-4) from the same
``reasoner`` base for ``--steps`` optimizer steps (default 100), evaluated every 25 steps on the same
``--heldout`` problems (default 128, 16 samples each), with two changes crossed:

- the credit assigner: ``grpo``'s outcome advantage, or one of the prefix-tree assigners
  ``tree_td`` (TEMPO), ``gigpo``, ``rover`` and ``spo_segment`` with its ``tree`` estimator
  (arm name ``spo_tree``);
- the rollout: ``iid`` (G independent samples) or ``tree`` (CURE's tree, :data:`TREE`: 4 samples,
  then 2 continuations from the highest-entropy token of each, the copied prefix not sampled again;
  ``rlvr.rollout.branching``).

A tree group samples fewer tokens than an i.i.d. group of the same G (its branches copy their
prefix), so the report sets held-out pass@1 against the tokens each run sampled as well as against
steps, and counts the sampled tokens each arm needs to reach a target pass@1. The runs log
``copied_tokens`` (the prefixes copied into branches) beside ``response_length``.

The ``grpo/iid`` arm is the ``grpo`` arm of ``benchmarks/teachers.py`` and ``benchmarks/findings.py``
(the same recipe, overrides and seeds): their finished runs are linked rather than rerun. Runs go
to ``benchmarks/runs/branching/<credit>_<rollout>/seed<S>/`` and resume like
``benchmarks/recipes.py``'s (``--jobs J`` runs J at a time with one torch thread each);
``branching.md`` and ``benchmarks/branching/*.png`` are written from whatever has finished
(``branching_report.py``).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from arms import (
    arm_parser,
    parse_arm_args,
    record_bases,
    restore_digests,
    run_threads,
    save_digests,
    writers,
)
from recipes import commit, run_jobs, run_one

from rlvr.utils import console

ROOT = Path(__file__).resolve().parent
RECIPE = "reasoner_grpo"
COMMON = ("eval.every=25",)
"""Overrides of every arm (after ``run_one``'s seed, steps, threads and ``eval.samples=16``)."""
EVAL_EVERY = 25

CREDITS: dict[str, tuple[str, ...]] = {
    "grpo": (),
    "tree_td": ('algo.credit="tree_td"',),
    "gigpo": ('algo.credit="gigpo"',),
    "rover": ('algo.credit="rover"',),
    "spo_tree": ('algo.credit="spo_segment"', 'algo.estimator="tree"'),
}
"""Credit assigner -> its overrides of the recipe."""

TREE = (
    'rollout.branching="entropy"',
    "rollout.branch_roots=4",
    "rollout.branch_width=2",
    "rollout.branch_top_k=1",
    "rollout.branch_depth=1",
)
"""The tree rollout: CURE's settings (``recipe:cure``) at G = 8."""

ROLLOUTS: dict[str, tuple[str, ...]] = {"iid": (), "tree": TREE}

ARMS: dict[str, tuple[str, ...]] = {
    f"{credit}_{mode}": (*c, *m) for mode, m in ROLLOUTS.items() for credit, c in CREDITS.items()
}
"""Arm ``<credit>_<rollout>`` -> its overrides; the i.i.d. arms first, in the order runs are made."""


def run_dir(runs: Path, arm: str, seed: int) -> Path:
    return runs / arm / f"seed{seed}"


def finished(d: Path) -> bool:
    return (d / "summary.json").exists()


def link_grpo(runs: Path, sources: list[Path], seeds: list[int]) -> None:
    """Link the finished grpo runs of the teachers or findings benchmark as ``grpo_iid``."""
    for seed in seeds:
        dest = run_dir(runs, "grpo_iid", seed)
        if dest.exists() or dest.is_symlink():
            continue
        for src in sources:
            d = (src / "grpo" / f"seed{seed}").resolve()
            if finished(d):
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(os.path.relpath(d, dest.parent))
                break


def tasks_to_run(args: argparse.Namespace, threads: int) -> list[tuple[str, object, tuple]]:
    extra = (*COMMON, f"task.heldout_size={args.heldout}")
    tasks: list[tuple[str, object, tuple]] = []
    for arm in args.arms or ARMS:
        for seed in args.seeds:
            d = run_dir(args.runs, arm, seed)
            if not finished(d):
                job = (RECIPE, seed, args.steps, d, threads, args.jobs, (*extra, *ARMS[arm]))
                tasks.append((f"{arm} seed {seed}", run_one, job))
    if args.seed_major:  # every arm's seed 0 first: a cut benchmark has paired arms
        tasks.sort(key=lambda t: int(t[0].rsplit(" ", 1)[1]))
    return tasks


def main() -> None:
    ap = arm_parser(__doc__, "branching")
    ap.add_argument(
        "--grpo-runs",
        type=Path,
        nargs="*",
        default=[ROOT / "runs" / "teachers", ROOT / "runs" / "findings"],
        help="benchmark run folders whose grpo/seed<S> runs are linked as grpo_iid",
    )
    ap.add_argument("--seed-major", action="store_true", help="run every arm's seed 0, then seed 1, ...")
    args = parse_arm_args(ap, ARMS, EVAL_EVERY)
    from branching_report import report

    write, write_quietly = writers(args, report)
    restore_digests(args, ("reasoner",))
    if args.table_only:
        write()
        return
    threads = run_threads(args.jobs)
    if not (args.runs / "bases.json").exists():
        record_bases(args.runs / "bases.json", ("reasoner",))
    link_grpo(args.runs, args.grpo_runs, args.seeds)
    tasks = tasks_to_run(args, threads)
    console.print(f"branching: {len(tasks)} run(s) to make at {commit()}")

    def after_each() -> None:
        save_digests(args)
        write_quietly()

    failures = run_jobs(args.jobs, tasks, after_each)
    after_each()
    if failures:
        raise SystemExit(f"{len(failures)} run(s) failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
