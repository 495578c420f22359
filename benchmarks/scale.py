"""Scale-out on one machine: synchronous vs asynchronous rollouts (quality), and step time per mode.

    python benchmarks/scale.py                          # quality arms x seeds 0 1 2, then speed
    python benchmarks/scale.py --part speed             # only the step-time table
    python benchmarks/scale.py --arms sync async --seeds 0 --steps 500

Quality arms (the grpo recipe on the embedded task, `--steps` steps, held-out pass@1 on 256 problems x
8 samples before and after, and every `--every` steps for the learning curve): `sync` has one Ray
rollout worker that gets the new weights before each step's generation; `async` has the same worker
generating one step ahead (scale.staleness = 1) while the learner trains, with truncated importance
sampling of the one-update-old rollouts. Both sample from the same per-row seed streams. The question
the issue asks: is async pass@1 within noise of sync?

Speed modes (`--speed-steps` steps each, no evaluation, median over the steps after the first 10):
`local` (generation in the trainer's process, the default), `workers=1`, `workers=1 + staleness=1`, and
`learners=2` (two torch.distributed ranks with gloo, started by torchrun). On a 2-core machine the
rollout worker and the learner each get one core.

Runs go to benchmarks/runs/scale/<arm>/seed<S>/ and are skipped when finished, so the command resumes;
benchmarks/scale.md and benchmarks/results/scale.json are rewritten after every run. Runs are
sequential: two training processes on 2 cores slow each other.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from rlvr.compare import mean_ci, welch_test
from rlvr.utils import atomic_write_text, console

ROOT = Path(__file__).resolve().parent

ARMS: dict[str, list[str]] = {
    "sync": ["scale.workers=1"],
    "async": ["scale.workers=1", "scale.staleness=1"],
}
SPEED: dict[str, list[str]] = {
    "local": [],
    "workers=1": ["--workers", "1"],
    "workers=1, staleness=1": ["--workers", "1", "--staleness", "1"],
    "learners=2": ["--learners", "2"],
}


def _rlvr(args: list[str]) -> float:
    """Run `rlvr train ARGS` in a fresh process (torchrun needs its own); returns the wall time."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlvr.cli", "train", "--quiet", *args], check=True)
    return time.perf_counter() - t0


def run_quality(arm: str, seed: int, steps: int, every: int, out: Path) -> None:
    if (out / "summary.json").exists():
        return
    console.print(f"[bold]{arm} seed {seed}")
    wall = _rlvr(
        [
            "--run-dir",
            str(out),
            "--seed",
            str(seed),
            "--steps",
            str(steps),
            "train.threads=1",
            f"eval.every={every}",
            "train.checkpoint_every=100000",
            *ARMS[arm],
        ]
    )
    atomic_write_text(out / "wall.json", json.dumps({"wall_s": wall}))


def run_speed(mode: str, steps: int, out: Path) -> None:
    if (out / "metrics.jsonl").exists() and (out / "wall.json").exists():
        return
    console.print(f"[bold]speed: {mode}")
    wall = _rlvr(
        [
            "--run-dir",
            str(out),
            "--steps",
            str(steps),
            "train.threads=1",
            "eval.before=false",
            "eval.after=false",
            *SPEED[mode],
        ]
    )
    atomic_write_text(out / "wall.json", json.dumps({"wall_s": wall}))


def _median(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows[10:] if key in r]
    return statistics.median(vals) if vals else float("nan")


def _curve(rows: list[dict]) -> list[list[float]]:
    """[step, held-out pass@1, training seconds so far] at every mid-run evaluation; training seconds
    sum the steps' times, so the evaluations themselves do not count."""
    out, t = [], 0.0
    for r in rows:
        t += r["step_time"]
        if "heldout_pass@1" in r:
            out.append([r["step"], r["heldout_pass@1"], t])
    return out


def collect(runs: Path, arms: list[str], seeds: list[int]) -> dict:
    quality = {}
    for arm in arms:
        done = []
        for s in seeds:
            d = runs / arm / f"seed{s}"
            if (d / "summary.json").exists():
                summ = json.loads((d / "summary.json").read_text())
                rows = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
                train_s = sum(r["step_time"] for r in rows)  # training seconds, evaluations excluded
                done.append(
                    {
                        "seed": s,
                        "before": summ["before"]["pass@1"],
                        "after": summ["after"]["pass@1"],
                        "pass@8": summ["after"]["pass@8"],
                        "wall_s": json.loads((d / "wall.json").read_text())["wall_s"],
                        "step_s": _median(rows, "step_time"),
                        "staleness": _median(rows, "staleness"),
                        "is_weight_mean": _median(rows, "is_weight_mean"),
                        "is_truncated_frac": _median(rows, "is_truncated_frac"),
                        # the mid-run evaluations, then the final one
                        "curve": [*_curve(rows), [len(rows), summ["after"]["pass@1"], train_s]],
                    }
                )
        quality[arm] = done
    speed = {}
    for mode in SPEED:
        d = runs / "speed" / mode.replace(", ", "_").replace("=", "")
        if (d / "wall.json").exists():
            rows = [json.loads(ln) for ln in (d / "metrics.jsonl").read_text().splitlines()]
            speed[mode] = {
                "steps": len(rows),
                "wall_s": json.loads((d / "wall.json").read_text())["wall_s"],
                "step_s": _median(rows, "step_time"),
                "gen_s": _median(rows, "gen_time"),
                "learn_s": _median(rows, "learn_time"),
            }
    return {"quality": quality, "speed": speed}


def _fmt(rows: list[dict], key: str, spec: str) -> str:
    """The mean of ``key`` over seeds, or a dash where the arm has no such metric (sync: no IS)."""
    vals = [r[key] for r in rows if r[key] == r[key]]  # drop nan
    return spec.format(statistics.mean(vals)) if vals else "–"


def write(res: dict, args: argparse.Namespace) -> None:
    res["meta"] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads available, "
        f"Python {platform.python_version()}, torch {torch.__version__}",
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:]),
        "steps": args.steps,
        "every": args.every,
    }
    (ROOT / "results").mkdir(exist_ok=True)
    atomic_write_text(ROOT / "results" / "scale.json", json.dumps(res, indent=2))
    lines = [
        "# Scale-out on one machine: sync vs async rollouts, and step time per mode",
        "",
        f"Produced by `{res['meta']['command']}` on {res['meta']['date']} ({res['meta']['machine']}). "
        "See the script's docstring for the arms; numbers in %.",
        "",
        f"## Quality: held-out pass@1 after {args.steps} steps of grpo (256 problems x 8 samples)",
        "",
        "| arm | seeds | pass@1 before | pass@1 after (mean ± 95% CI) | per seed | pass@8 after "
        "| staleness | IS weight mean | truncated | s/step | wall / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, rows in res["quality"].items():
        if not rows:
            continue
        after = [100 * r["after"] for r in rows]
        m, lo, hi = mean_ci(after)
        lines.append(
            f"| {arm} | {len(rows)} | {100 * statistics.mean(r['before'] for r in rows):.1f} "
            f"| {m:.1f} ± {(hi - lo) / 2:.1f} | {', '.join(f'{a:.1f}' for a in after)} "
            f"| {100 * statistics.mean(r['pass@8'] for r in rows):.1f} "
            f"| {_fmt(rows, 'staleness', '{:.2f}')} "
            f"| {_fmt(rows, 'is_weight_mean', '{:.3f}')} "
            f"| {_fmt(rows, 'is_truncated_frac', '{:.2%}')} "
            f"| {statistics.mean(r['step_s'] for r in rows):.3f} "
            f"| {statistics.mean(r['wall_s'] for r in rows) / 60:.1f} min |"
        )
    q = res["quality"]
    if len(q.get("sync", [])) >= 2 and len(q.get("async", [])) >= 2:
        w = welch_test([100 * r["after"] for r in q["async"]], [100 * r["after"] for r in q["sync"]])
        lines += [
            "",
            f"async − sync, pass@1 after: {w.diff:+.1f} points, 95% CI [{w.ci_low:+.1f}, "
            f"{w.ci_high:+.1f}], Welch p = {w.p:.3f}.",
        ]
    curves = {arm: rows for arm, rows in res["quality"].items() if rows and len(rows[0]["curve"]) > 1}
    if curves:
        arms = list(curves)
        lines += [
            "",
            "## Held-out pass@1 during training (mean ± 95% CI over seeds; training minutes so far, "
            "evaluations excluded)",
            "",
            "| step | " + " | ".join(f"{a} pass@1 | {a} minutes" for a in arms) + " |",
            "|---|" + "---|---|" * len(arms),
        ]
        steps = sorted({int(p[0]) for rows in curves.values() for r in rows for p in r["curve"]})
        for st in steps:
            cells = []
            for a in arms:
                pts = [p for r in curves[a] for p in r["curve"] if int(p[0]) == st]
                m, lo, hi = mean_ci([100 * p[1] for p in pts])
                half = "" if hi != hi else f" ± {(hi - lo) / 2:.1f}"  # nan for one seed
                cells.append(f"{m:.1f}{half} | {statistics.mean(p[2] for p in pts) / 60:.2f}")
            lines.append(f"| {st} | " + " | ".join(cells) + " |")
    if res["speed"]:
        lines += [
            "",
            "## Step time per mode (medians after 10 warm-up steps; no evaluation)",
            "",
            "`gen` is the time the step waited for its rollouts (with async, they were generated during "
            "the previous step); `learn` the policy update.",
            "",
            "| mode | steps | s/step | gen wait | learn | wall |",
            "|---|---|---|---|---|---|",
        ]
        for mode, r in res["speed"].items():
            lines.append(
                f"| {mode} | {r['steps']} | {r['step_s']:.3f} | {r['gen_s']:.3f} | {r['learn_s']:.3f} "
                f"| {r['wall_s']:.0f} s |"
            )
    atomic_write_text(ROOT / "scale.md", "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--part",
        choices=["all", "quality", "speed", "table"],
        default="all",
        help="table: only rewrite scale.md from the finished runs",
    )
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--speed-steps", type=int, default=150)
    ap.add_argument("--every", type=int, default=250, help="held-out evaluation every this many steps")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "scale"))
    args = ap.parse_args()
    runs = Path(args.runs)
    if args.part in ("all", "quality"):
        for seed in args.seeds:  # seed-major: an interrupted benchmark has every arm at equal depth
            for arm in args.arms:
                run_quality(arm, seed, args.steps, args.every, runs / arm / f"seed{seed}")
                write(collect(runs, args.arms, args.seeds), args)
    if args.part in ("all", "speed"):
        for mode in SPEED:
            run_speed(mode, args.speed_steps, runs / "speed" / mode.replace(", ", "_").replace("=", ""))
            write(collect(runs, args.arms, args.seeds), args)
    if args.part == "table":
        write(collect(runs, args.arms, args.seeds), args)


if __name__ == "__main__":
    main()
