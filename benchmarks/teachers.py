"""Learning from a teacher and from demonstrations, measured on the embedded reasoner.

    python benchmarks/teachers.py --jobs 2          # teacher, every arm x seeds 0 1 2, evals
    python benchmarks/teachers.py --table-only      # rewrite teachers.md from the finished runs

Every arm starts from the same ``reasoner`` base and trains for ``--steps`` optimizer steps (default
100) on the reasoner's task mixture, evaluated every 25 steps on the same ``--heldout`` problems
(default 128, 16 samples each):

- ``grpo``: ``reasoner_grpo`` as it is (8 prompts x 8 samples, up to 96 tokens, lr 1e-4);
- ``sft``: ``rlvr sft`` alone on the worked solutions (``rlvr.data.solutions``), ``rlvr sft``'s
  defaults (8 packed rows of 256 tokens a step, lr 1e-3, 10 warm-up steps, cosine), its checkpoints
  evaluated by ``rlvr eval``;
- ``opd`` / ``opd_grpo``: on-policy distillation from the teacher (``credit:opd``; ``outcome_coef``
  0 / 1);
- ``scope``: SCOPE's routed distillation (``credit:scope``), when that component is registered;
- ``hpt``: the ``hpt`` recipe (the SFT loss on a worked solution for groups that all failed);
- ``rl_plus``: the ``rl_plus`` recipe (a worked solution in every group, multiple importance
  sampling and the exploration-based advantage).

The teacher is the embedded ``reasoner_teacher``: the reasoner's own recipe trained for 3000 SFT
steps instead of 1400 (the same tokenizer, so it can score the student's tokens); its pass@1 on the
same problems is the ceiling line. The ``grpo`` arm reuses the runs of ``benchmarks/findings.py``
(the same recipe, overrides and seeds) when they exist, linked rather than rerun.

Runs go to ``benchmarks/runs/teachers/<arm>/seed<S>/`` and resume like ``benchmarks/recipes.py``'s
(a finished run is skipped, a cut one resumes from its checkpoint; ``--jobs J`` runs J at a time
with one torch thread each). ``teachers.md`` and its plots (``benchmarks/teachers/*.png``) are
written from whatever has finished (``teachers_report.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
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

from rlvr.utils import atomic_write_text, console

ROOT = Path(__file__).resolve().parent
TEACHER = "reasoner_teacher"
COMMON = ("eval.every=25",)
"""Overrides of every RL arm (after ``run_one``'s seed, steps, threads and ``eval.samples=16``)."""
EVAL_EVERY = 25

_T = f'teacher.embedded="{TEACHER}"'
ARMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "grpo": ("reasoner_grpo", ()),
    "sft": ("", ()),  # rlvr sft, see sft_arm
    "opd": ("reasoner_grpo", ('algo.credit="opd"', _T, "algo.outcome_coef=0.0")),
    "opd_grpo": ("reasoner_grpo", ('algo.credit="opd"', _T, "algo.outcome_coef=1.0")),
    "scope": ("reasoner_grpo", ('algo.credit="scope"', _T)),
    "hpt": ("hpt", ()),
    "rl_plus": ("rl_plus", ()),
}
"""Arm name -> (recipe, its overrides); the empty recipe is the SFT arm. In the order runs are made."""


def run_dir(runs: Path, arm: str, seed: int) -> Path:
    return runs / arm / f"seed{seed}"


def finished(d: Path) -> bool:
    return (d / "summary.json").exists()


def available(arm: str) -> bool:
    """Whether the arm's components are registered (``scope`` lands separately)."""
    recipe, overrides = ARMS[arm]
    if not recipe:
        return True
    from rlvr.train.config import load_config

    try:
        load_config(recipe, list(overrides))
    except (ValueError, KeyError):
        return False
    return True


def rlvr_eval(model: str, out: Path, heldout: int, threads: int, n: int = 16) -> None:
    """``rlvr eval`` of ``model`` on the first ``heldout`` held-out problems of the reasoner's task,
    ``n`` samples each, into ``out`` (JSON; written under another name first, so a cut eval is
    redone)."""
    tmp = out.with_suffix(".part.json")
    cmd = [sys.executable, "-m", "rlvr.cli", "eval", "--recipe", "reasoner_grpo", "--model", model]
    cmd += ["-n", str(n), "--json", str(tmp), "--quiet", f"task.heldout_size={heldout}"]
    cmd += [f"train.threads={threads}"] if threads else []
    subprocess.run(cmd, check=True)
    tmp.replace(out)


def teacher_eval(out: Path, heldout: int, threads: int) -> None:
    """The teacher (built here if it is not cached yet) evaluated on the arms' problems."""
    from rlvr.models.tiny import EMBEDDED, ensure_base

    path = ensure_base(EMBEDDED[TEACHER], progress=False)
    rlvr_eval(str(path), out, heldout, threads)


def sft_arm(seed: int, steps: int, out: Path, threads: int, heldout: int) -> None:
    """``rlvr sft`` from the reasoner base on the worked solutions of its mixture, with the base's
    own held-out split kept out (256 problems, split seed 0: the arms' ``heldout`` are its first),
    a checkpoint every ``EVAL_EVERY`` steps, each evaluated like the RL arms' held-out evals; then
    ``summary.json`` (the last eval, and the wall time of the SFT steps)."""
    import torch

    from rlvr.models.tiny import EMBEDDED
    from rlvr.train.sft import sft, sft_config

    if threads:
        torch.set_num_threads(threads)
    base = EMBEDDED["reasoner"]
    cfg = sft_config(
        [],
        {
            "embedded": "reasoner",
            "mixture": dict(base.mixture),
            "heldout_size": base.heldout_size,
            "split_seed": base.seed,
            "seed": seed,
            "steps": steps,
            "checkpoint_every": EVAL_EVERY,
            "keep_checkpoints": steps // EVAL_EVERY + 1,
            "eval_samples": 0,
        },
    )
    train_dir = out / "sft"
    timing = out / "sft_wall_s.txt"
    if not (train_dir / "summary.json").exists():
        t0 = time.perf_counter()
        sft(cfg, run_dir=train_dir, resume=(train_dir / "checkpoints").exists(), progress=False)
        timing.write_text(f"{time.perf_counter() - t0:.1f}\n")
    evals = {}
    for step in range(EVAL_EVERY, steps + 1, EVAL_EVERY):
        model = train_dir / ("model" if step == steps else f"checkpoints/step_{step}")
        dest = out / f"eval_step{step}.json"
        if not dest.exists():
            rlvr_eval(str(model), dest, heldout, threads)
        evals[step] = json.loads(dest.read_text())["models"][0]["summary"]
    wall = float(timing.read_text()) if timing.exists() else float("nan")
    summary = {"steps": steps, "after": evals[steps], "curve": evals, "sft_wall_s": wall}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def link_findings_grpo(runs: Path, findings: Path, seeds: list[int]) -> None:
    """Link the findings benchmark's finished grpo runs (the same recipe, overrides and seeds)."""
    for seed in seeds:
        dest, src = run_dir(runs, "grpo", seed), run_dir(findings, "grpo", seed)
        if not dest.exists() and finished(src):
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(os.path.relpath(src, dest.parent))


def tasks_to_run(args: argparse.Namespace, threads: int) -> list[tuple[str, object, tuple]]:
    extra = (*COMMON, f"task.heldout_size={args.heldout}")
    tasks: list[tuple[str, object, tuple]] = []
    for arm in args.arms or ARMS:
        if not available(arm):
            console.print(f"[yellow]{arm}: its components are not registered; skipped[/yellow]")
            continue
        recipe, overrides = ARMS[arm]
        for seed in args.seeds:
            d = run_dir(args.runs, arm, seed)
            if finished(d):
                continue
            if not recipe:
                tasks.append((f"sft seed {seed}", sft_arm, (seed, args.steps, d, threads, args.heldout)))
            else:
                job = (recipe, seed, args.steps, d, threads, args.jobs, (*extra, *overrides))
                tasks.append((f"{arm} seed {seed}", run_one, job))
    return tasks


def main() -> None:
    ap = arm_parser(__doc__, "teachers")
    ap.add_argument("--findings-runs", type=Path, default=ROOT / "runs" / "findings")
    args = parse_arm_args(ap, ARMS, EVAL_EVERY)
    from teachers_report import report

    write, write_quietly = writers(args, report)
    restore_digests(args, ("reasoner", TEACHER))
    if args.table_only:
        write()
        return
    threads = run_threads(args.jobs)
    if not (args.runs / "bases.json").exists():
        record_bases(args.runs / "bases.json", ("reasoner", TEACHER))
    link_findings_grpo(args.runs, args.findings_runs, args.seeds)
    teacher_json = args.runs / "teacher_eval.json"
    tasks = (
        []
        if teacher_json.exists()
        else [("teacher eval", teacher_eval, (teacher_json, args.heldout, threads))]
    )
    tasks += tasks_to_run(args, threads)
    console.print(f"teachers: {len(tasks)} task(s) to run at {commit()}")
    failures = run_jobs(args.jobs, tasks, lambda: save_digests(args))
    save_digests(args)
    write_quietly()
    if failures:
        raise SystemExit(f"{len(failures)} task(s) failed: {', '.join(failures)}")


if __name__ == "__main__":
    main()
