"""The papers' headline findings, reproduced (or not) on the embedded reasoner.

    python benchmarks/findings.py --jobs 2          # every arm x seeds 0 1 2, then the wide evals
    python benchmarks/findings.py --table-only      # rewrite findings.md from the finished runs

Every arm is the ``reasoner_grpo`` recipe (GRPO on the reasoning base, 8 prompts x 8 samples, up to
96 tokens) at a common budget (``--steps``, default 100 optimizer steps) with one change (the
overrides in :data:`ARMS`), so each finding compares arms that differ in the one thing it is about.
Every run of seed S starts from the same base, trains on the same seeded prompt stream and is
evaluated on the same held-out problems (``task.heldout_size``, default 128, 16 samples each).
Arms reuse the baseline ``grpo`` where a finding compares a method with plain GRPO.

Runs go to ``benchmarks/runs/findings/<arm>/seed<S>/`` and resume like ``benchmarks/recipes.py``'s
(same ``run_one``: a finished run is skipped, a cut one resumes from its checkpoint; ``--jobs J`` runs
J at a time with one torch thread each). Then the wide evaluations (pass@k up to k = ``--wide-n``,
default 256, on the first ``--wide-problems`` held-out problems, default 64) of the base and of the
runs that finding 1 needs, each a ``rlvr eval`` JSON beside its run (skipped when it exists).
``findings.md`` is written from whatever has finished: each finding's table, its plot
(``benchmarks/findings/*.png``) and a verdict in words; a finding whose runs are not all there says
so instead of a verdict.
"""

from __future__ import annotations

import json
import subprocess
import sys
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
COMMON = ("eval.every=0",)
"""Overrides of every arm (after ``run_one``'s seed, steps, threads and ``eval.samples=16``)."""

ARMS: dict[str, tuple[str, ...]] = {
    # the baseline, with held-out evaluations every 25 steps for the steps-to-target finding
    "grpo": ("eval.every=25",),
    # clipping only acts when the ratio moves from 1: four mini-batch updates per rollout batch
    "grpo_mb4": ("algo.minibatches=4",),
    "clip_higher_mb4": ("algo.minibatches=4", "algo.clip_high=0.28"),
    "kl_cov": ('algo.objective="kl_cov"',),
    "dynamic": ("sampling.dynamic_sampling=true", "eval.every=25"),
    "grpo_seq_std": ('algo.aggregation="seq_mean_token_mean"',),
    "dr_grpo": ('algo.advantage="dr_grpo"', 'algo.aggregation="constant"'),
    "psr": ('algo.advantage="nsr_psr"', "algo.positive_weight=1.0", "algo.negative_weight=0.0"),
    "nsr": ('algo.advantage="nsr_psr"', "algo.positive_weight=0.0"),
    "nsr_lr3e-5": ('algo.advantage="nsr_psr"', "algo.positive_weight=0.0", "optim.lr=3e-5"),
    "pure": ("rewards.arith_steps.weight=0.0", 'algo.credit="pure_min"', "algo.vr_coef=1.0"),
    # GRPO-VPS: the policy's own likelihood probes after each line as process credit (no PRM)
    "vps": ("rewards.likelihood_steps.weight=0.0", 'algo.credit="vps_progress"'),
    "cosine_length": ("shaping.cosine_length.coef=1.0",),
    "random_reward": ("rewards.answer.weight=0.0", "rewards.random.weight=1.0"),
    "inverted_reward": ("rewards.answer.weight=-1.0",),
}
"""Arm name -> its overrides of the recipe. Listed in the order the runs are made."""

WIDE_ARMS = ("grpo",)
"""Arms whose runs get the wide evaluation (pass@k up to --wide-n), with the base."""


def run_dir(runs: Path, arm: str, seed: int) -> Path:
    return runs / arm / f"seed{seed}"


def finished(d: Path) -> bool:
    return (d / "summary.json").exists()


def wide_eval(model: str, base: str | None, out: Path, n: int, problems: int, threads: int) -> None:
    """``rlvr eval`` of ``model`` (and of ``base`` beside it) with n samples on the first
    ``problems`` held-out problems, into ``out`` (JSON); the same task and seed as the runs."""
    tmp = out.with_suffix(".part.json")  # renamed when complete: a cut eval is redone
    cmd = [sys.executable, "-m", "rlvr.cli", "eval", "--recipe", RECIPE, "--model", model]
    cmd += ["--base", base] if base is not None else []
    cmd += ["-n", str(n), "--json", str(tmp), "--quiet", f"task.heldout_size={problems}"]
    cmd += [f"train.threads={threads}"] if threads else []
    subprocess.run(cmd, check=True)
    tmp.replace(out)


def main() -> None:
    ap = arm_parser(__doc__, "findings")
    ap.add_argument("--wide-n", type=int, default=256)
    ap.add_argument("--wide-problems", type=int, default=64)
    ap.add_argument("--no-wide", action="store_true", help="skip the wide evaluations")
    args = parse_arm_args(ap, ARMS)
    from findings_report import report  # the analysis: tables, plots and verdicts

    write, write_quietly = writers(args, report)
    restore_digests(args, ("reasoner",))
    if args.table_only:
        write()
        return
    threads = run_threads(args.jobs)
    if not (args.runs / "bases.json").exists():
        record_bases(args.runs / "bases.json", ("reasoner",))
    extra = (*COMMON, f"task.heldout_size={args.heldout}")
    tasks = [
        (
            f"{arm} seed {seed}",
            run_one,
            (RECIPE, seed, args.steps, d, threads, args.jobs, (*extra, *ARMS[arm])),
        )
        for arm in args.arms or ARMS
        for seed in args.seeds
        if not finished(d := run_dir(args.runs, arm, seed))
    ]
    console.print(f"findings: {len(tasks)} run(s) to make at {commit()}")
    failures = run_jobs(args.jobs, tasks, lambda: save_digests(args))
    if not args.no_wide:
        wide = []
        for arm in WIDE_ARMS:
            for seed in args.seeds:
                d = run_dir(args.runs, arm, seed)
                out = d / f"wide_eval_n{args.wide_n}.json"
                if finished(d) and not out.exists():
                    base = json.loads((d / "summary.json").read_text())["model"] if seed == 0 else None
                    wide.append(
                        (
                            f"wide eval {arm} seed {seed}",
                            wide_eval,
                            (str(d), base, out, args.wide_n, args.wide_problems, threads),
                        )
                    )
        failures += run_jobs(args.jobs, wide, lambda: save_digests(args))
    save_digests(args)
    write_quietly()
    if failures:
        raise SystemExit(f"{len(failures)} task(s) failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
