"""LoRA vs full fine-tuning on the embedded reasoner: held-out pass@1 after the same GRPO steps.

    python benchmarks/lora_quality.py               # 3 arms x seeds 0 1 2, reasoner_grpo's 200 steps
    python benchmarks/lora_quality.py --jobs 2           # two runs at a time, one torch thread each
    python benchmarks/lora_quality.py --table-only       # rewrite the table from the finished runs

Arms (each the ``reasoner_grpo`` recipe with these overrides; everything else equal):

- ``full``: full fine-tuning at the recipe's learning rate (1e-4);
- ``lora r=8`` and ``lora r=64``: ``model.lora.rank`` 8 / 64, alpha 32 (the default, so the update's
  scale alpha / r differs between the two), on every attention and MLP projection, at 10 x the
  learning rate (1e-3): LoRA's best learning rate is commonly reported to be about ten times full
  fine-tuning's ("LoRA Without Regret", Thinking Machines, 2025), and at full fine-tuning's rate an
  adapter starting from B = 0 barely moves in 200 steps.

A run of seed S uses the same held-out problems and the same base in every arm, so the arms are
compared seed by seed: the table gives each arm's held-out pass@1 after training (mean over seeds
with a 95% t-interval), its gain over the base (the run's own paired before/after difference), and
the per-seed difference from ``full`` with its t-interval. Runs go to
``benchmarks/runs/lora_quality/<arm>/seed<S>/`` and resume like ``benchmarks/recipes.py``'s (same
``run_one``). Results: ``benchmarks/lora_quality.json``, and the table is a section of
``benchmarks/memory.md`` (``memory.py`` keeps it when it rewrites that file).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

from recipes import _late_pass1, _pm, _settings, _whole, commit, mean_half, run_jobs, run_one

from rlvr.utils import atomic_write_text, console

ROOT = Path(__file__).resolve().parent
RECIPE = "reasoner_grpo"
ARMS: dict[str, tuple[str, ...]] = {
    "full": (),
    "lora r=8": ("model.lora.rank=8", "optim.lr=1e-3"),
    "lora r=64": ("model.lora.rank=64", "optim.lr=1e-3"),
}
"""Arm name -> its overrides of the recipe."""
SECTION = "## LoRA vs full fine-tuning on the embedded reasoner"  # = memory.QUALITY


def _dir(runs: Path, arm: str, seed: int) -> Path:
    return runs / arm.replace(" ", "_").replace("=", "") / f"seed{seed}"


def collect(runs: Path, seeds: list[int]) -> dict:
    """Per arm and seed: pass@1 before/after, pass@16, the last 3 evaluations, wall time."""
    arms: dict[str, dict] = {}
    for arm in ARMS:
        per_seed = {}
        for seed in seeds:
            d = _dir(runs, arm, seed)
            if not (d / "summary.json").exists():
                continue
            s = json.loads((d / "summary.json").read_text())
            wall = float((d / "wall_s.txt").read_text()) if (d / "wall_s.txt").exists() else math.nan
            per_seed[str(seed)] = {
                "before": s["before"]["pass@1"],
                "after": s["after"]["pass@1"],
                "late3": _late_pass1(d, s),
                "gain": s["pass@1_gain"],
                "pass@16": s["after"].get("pass@16", math.nan),
                "wall_s": wall if _whole(d) else math.nan,
            }
        arms[arm] = {
            "overrides": list(ARMS[arm]),
            "seeds": per_seed,
            "settings": _settings([_dir(runs, arm, int(k)) for k in per_seed]) if per_seed else "",
        }
    return arms


def render(res: dict) -> str:
    """The markdown section of ``benchmarks/memory.md`` for ``res`` (lora_quality.json)."""
    arms = res["arms"]
    full = arms.get("full", {}).get("seeds", {})
    lines = [
        SECTION,
        "",
        f"Produced by `python benchmarks/lora_quality.py` (see its docstring) on {res['date']}: the "
        f"`{RECIPE}` recipe ({res['steps']} steps of 8 prompts x 8 samples, up to 96 new tokens) "
        "from the reasoner base, seeds "
        f"{', '.join(map(str, res['seeds']))}; held-out: 256 problems of its mixture x 16 samples; "
        "numbers in %. LoRA arms: alpha 32 on every attention and MLP projection, lr 1e-3 (full: "
        "1e-4). 'vs full' is the per-seed difference of pass@1 after from the full arm's run of the "
        "same seed (same base, same held-out problems).",
        "",
        "| arm | seeds | pass@1 after | pass@1, last 3 evaluations | gain over base | vs full | "
        "pass@16 | wall time / run | commit, threads x jobs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, a in arms.items():
        ss = a["seeds"]
        if not ss:
            continue
        after = mean_half([100 * v["after"] for v in ss.values()])
        late = mean_half([100 * v["late3"] for v in ss.values()])
        gain = mean_half([100 * v["gain"] for v in ss.values()])
        diffs = [100 * (v["after"] - full[k]["after"]) for k, v in ss.items() if k in full]
        vs = "—" if arm == "full" or not diffs else _pm(*mean_half(diffs), sign="+")
        p16 = statistics.fmean(100 * v["pass@16"] for v in ss.values())
        walls = [v["wall_s"] for v in ss.values() if v["wall_s"] == v["wall_s"]]
        wall = f"{statistics.fmean(walls) / 60:.1f} min" if walls else "n/a (resumed)"
        lines.append(
            f"| {arm} | {len(ss)} | {_pm(*after)} | {_pm(*late)} | {_pm(*gain, sign='+')} | {vs} "
            f"| {p16:.1f} | {wall} | {a['settings']} |"
        )
    base = sorted({round(100 * v["before"], 1) for a in arms.values() for v in a["seeds"].values()})
    lines += ["", f"The base's held-out pass@1 in these runs: {', '.join(map(str, base))} (per seed)."]
    if res.get("verdict"):
        lines += ["", res["verdict"]]
    return "\n".join(lines) + "\n"


def write(runs: Path, seeds: list[int], steps: int) -> dict:
    """Save lora_quality.json and rewrite its section of memory.md (keeping the memory table)."""
    path = ROOT / "lora_quality.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    res = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit(),
        "recipe": RECIPE,
        "steps": steps,
        "seeds": seeds,
        "arms": collect(runs, seeds),
        "verdict": old.get("verdict", ""),  # written by hand from the numbers; kept across reruns
    }
    atomic_write_text(path, json.dumps(res, indent=2) + "\n")
    md = ROOT / "memory.md"
    text = md.read_text() if md.exists() else ""
    head = text.split(SECTION)[0].rstrip("\n")
    atomic_write_text(md, (head + "\n\n" if head else "") + render(res))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=200, help="train.steps of every run")
    ap.add_argument("--arms", nargs="*", default=list(ARMS), help=f"some of {list(ARMS)}")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "lora_quality")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    if unknown := set(args.arms) - set(ARMS):
        ap.error(f"unknown arms {sorted(unknown)}; expected some of {list(ARMS)}")
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if not args.table_only:
        todo = [
            (arm, seed, _dir(args.runs, arm, seed))
            for seed in args.seeds
            for arm in args.arms
            if not (_dir(args.runs, arm, seed) / "summary.json").exists()
        ]
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        run_jobs(
            args.jobs,
            [
                (
                    f"{arm} seed {seed}",
                    run_one,
                    (RECIPE, seed, args.steps, out, threads, args.jobs, ARMS[arm]),
                )
                for arm, seed, out in todo
            ],
            lambda: write(args.runs, args.seeds, args.steps),
        )
    res = write(args.runs, args.seeds, args.steps)
    console.print(render(res))


if __name__ == "__main__":
    main()
