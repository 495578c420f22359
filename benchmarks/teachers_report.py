"""teachers.md from the runs of ``benchmarks/teachers.py``: the table, two plots
(``benchmarks/teachers/*.png``) and, per method, its abstract's claim with a verdict by the rule of
``findings_report``: a difference between two arms is taken seed by seed (the arms of one seed share
the base, the prompt stream and the held-out problems) and it "shows" when the 95% t-interval of the
differences excludes 0.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from arms import bases_paragraph
from findings_report import ci, load, shows
from recipes import _settings

ROOT = Path(__file__).resolve().parent
PLOTS = ROOT / "teachers"

LABELS = {
    "grpo": "grpo (`reasoner_grpo`)",
    "sft": "SFT alone (`rlvr sft`)",
    "opd": "on-policy distillation (`credit:opd`)",
    "opd_grpo": "opd + grpo's outcome advantage",
    "scope": "SCOPE (`credit:scope`)",
    "hpt": "HPT (`recipe:hpt`)",
    "rl_plus": "RL-PLUS (`recipe:rl_plus`)",
}

CLAIMS: list[tuple[str, str, str, str]] = [
    # (arm, against, the claim in words, which number: "pass@1" | "pass@16" | "learned")
    (
        "opd",
        "grpo",
        "on-policy distillation learns from a teacher faster than RL from the outcome",
        "pass@1",
    ),
    ("opd_grpo", "grpo", "the teacher's dense signal added to grpo's advantage helps grpo", "pass@1"),
    (
        "scope",
        "opd",
        "SCOPE's routing and perplexity weights beat plain on-policy distillation",
        "pass@1",
    ),
    ("hpt", "grpo", "HPT (SFT where the policy fails, RL elsewhere) beats RL alone", "pass@1"),
    ("hpt", "sft", "HPT beats SFT alone", "pass@1"),
    ("rl_plus", "grpo", "RL-PLUS beats RL alone at pass@1", "pass@1"),
    ("rl_plus", "grpo", "RL-PLUS keeps the capability boundary: higher pass@k than RL alone", "pass@16"),
    ("rl_plus", "grpo", "RL-PLUS solves problems the base never solved more often than RL", "learned"),
]


# ---------------------------------------------------------------- loading


def load_sft(runs: Path) -> list[dict[str, Any]]:
    """The finished SFT runs, by seed, in the shape the report reads from the RL runs."""
    out = []
    for d in sorted((runs / "sft").glob("seed*"), key=lambda p: int(p.name[4:])):
        if not (d / "summary.json").exists():
            continue
        s = json.loads((d / "summary.json").read_text())
        steps = s["steps"]
        after = json.loads((d / f"eval_step{steps}.json").read_text())["models"][0]
        out.append(
            {
                "dir": d,
                "seed": int(d.name[4:]),
                "summary": {"after": s["after"]},
                "after": {"correct": after["correct"], "n": after["summary"].get("n", 16)},
                "curve": {int(k): v["pass@1"] for k, v in s["curve"].items()},
                "wall": s["sft_wall_s"],
                "steps": steps,
                "metrics": [],
            }
        )
    return out


def load_all(runs: Path) -> dict[str, list[dict]]:
    from teachers import ARMS

    return {arm: (load_sft(runs) if arm == "sft" else load(runs, arm)) for arm in ARMS}


# ---------------------------------------------------------------- numbers


def before_by_seed(data: dict[str, list[dict]]) -> dict[int, list[int]]:
    """Seed -> the base's per-problem correct counts from that seed's held-out eval before training
    (every RL arm of a seed evaluates the same base on the same problems with the same seed)."""
    out: dict[int, list[int]] = {}
    for arm, rs in data.items():
        for r in rs:
            if arm != "sft" and r["seed"] not in out:
                out[r["seed"]] = list(r["before"]["correct"])
    return out


def base_p1(run: dict, before: dict[int, list[int]], n: int = 16) -> float:
    c = before.get(run["seed"])
    return statistics.fmean(x / n for x in c) if c else math.nan


def p1_after(run: dict) -> float:
    return run["summary"]["after"]["pass@1"]


def learned(run: dict, before: dict[int, list[int]]) -> tuple[float, float]:
    """(learned, null) for a run of seed S: of the problems that the base never solved in the
    OTHER seeds' evaluations (so a problem is not picked by the same noisy count that is then
    compared), how many the trained model solves at least once in its 16 samples, and how many the
    base itself solves at least once in seed S's evaluation (what re-sampling alone gives)."""
    others = [c for s, c in before.items() if s != run["seed"]]
    mine = before.get(run["seed"])
    if not others or mine is None:
        return math.nan, math.nan
    never = [i for i in range(len(mine)) if all(c[i] == 0 for c in others)]
    after = run["after"]["correct"]
    return float(sum(after[i] > 0 for i in never)), float(sum(mine[i] > 0 for i in never))


def wall_s(run: dict) -> float:
    """Seconds of training steps (generation and update; evaluations left out)."""
    if "wall" in run:
        return run["wall"]
    return sum(r.get("step_time", 0.0) for r in run["metrics"])


def points(run: dict, before: dict[int, list[int]]) -> list[tuple[int, float, float]]:
    """(step, seconds of training so far, held-out pass@1) at each evaluation, step 0 the base."""
    pts = [(0, 0.0, base_p1(run, before))]
    if "curve" in run:  # SFT: steps take equal time, so the time at step k is wall * k / steps
        for k, v in sorted(run["curve"].items()):
            pts.append((k, run["wall"] * k / run["steps"], v))
        return pts
    t = 0.0
    for r in run["metrics"]:
        t += r.get("step_time", 0.0)
        if "heldout_pass@1" in r:
            pts.append((r["step"], t, r["heldout_pass@1"]))
    return pts


def paired(a: list[dict], b: list[dict], fn) -> list[float]:
    bs = {r["seed"]: r for r in b}
    return [fn(r) - fn(bs[r["seed"]]) for r in a if r["seed"] in bs]


def verdict(diffs: list[float], seeds_needed: int = 3) -> str:
    if len(diffs) < seeds_needed:
        return f"not run yet ({len(diffs)} of {seeds_needed} paired seeds)"
    s = shows(diffs)
    return "**shows**" if s > 0 else "**contradicted**" if s < 0 else "inconclusive"


# ---------------------------------------------------------------- output


def _plot(data: dict[str, list[dict]], before: dict[int, list[int]], teacher: float | None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for arm, rs in data.items():
        if not rs:
            continue
        series = [points(r, before) for r in rs]
        k = min(len(s) for s in series)
        steps = [s[0] for s in series[0][:k]]
        secs = [statistics.fmean(s[i][1] for s in series) for i in range(k)]
        ys = [100 * statistics.fmean(s[i][2] for s in series) for i in range(k)]
        label = f"{arm} ({len(rs)} seeds)"
        axes[0].plot(steps, ys, marker="o", label=label)
        axes[1].plot(secs, ys, marker="o", label=label)
    for ax, xl in zip(axes, ("optimizer step", "seconds of training (shared 2-core CPU)"), strict=True):
        if teacher is not None:
            ax.axhline(100 * teacher, ls="--", color="k", lw=1, label="teacher")
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out pass@1 (%)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    tmp = PLOTS / ".pass1.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(PLOTS / "pass1.png")
    return "![pass@1 against steps and time](teachers/pass1.png)"


def report(runs: Path, args: Any) -> str:
    data = load_all(runs)
    before = before_by_seed(data)
    tj = runs / "teacher_eval.json"
    teacher = json.loads(tj.read_text())["models"][0]["summary"] if tj.exists() else None
    grpo = data["grpo"]
    rl_dirs = [r["dir"] for arm, rs in data.items() if arm != "sft" for r in rs]
    lines = [
        "# Learning from a teacher and from demonstrations on the reasoner",
        "",
        "Written by `python benchmarks/teachers.py` (resumable; `--table-only` rewrites this file). "
        f"Every arm starts from the embedded `reasoner` base and trains for {args.steps} optimizer "
        f"steps; held-out pass@1 is on the same {args.heldout} problems × 16 samples (temperature 1), "
        "evaluated every 25 steps. The teacher is the embedded `reasoner_teacher` (the reasoner's "
        "recipe with 3000 SFT steps instead of 1400, the same tokenizer). Means over seeds with 95% "
        "t-intervals; differences are paired by seed.",
        "",
    ]
    if rl_dirs:
        lines += [_settings(rl_dirs), ""]
    lines += bases_paragraph(runs)
    lines += [
        "| method | seeds | pass@1 after (%) | gain over base (points) | vs grpo (points) "
        "| pass@16 after (%) | base-unsolved problems solved (base re-sampled) | training s / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if teacher is not None:
        lines.append(
            f"| teacher (`reasoner_teacher`, ceiling) | — | {100 * teacher['pass@1']:.1f} | | | "
            f"{100 * teacher['pass@16']:.1f} | | |"
        )
    if before:
        b = [statistics.fmean(x / 16 for x in c) for c in before.values()]
        lines.append(f"| base (`reasoner`) | {len(b)} | {ci(b, 100, nd=1)} | | | | | |")
    for arm, rs in data.items():
        if not rs:
            lines.append(f"| {LABELS[arm]} | 0 | not run yet | | | | | |")
            continue
        gain = [p1_after(r) - base_p1(r, before) for r in rs]
        vs = paired(rs, grpo, p1_after) if arm != "grpo" else []
        p16 = [r["summary"]["after"].get("pass@16", math.nan) for r in rs]
        ln = [learned(r, before) for r in rs]
        lines.append(
            f"| {LABELS[arm]} | {len(rs)} | {ci([p1_after(r) for r in rs], 100, nd=1)} | "
            f"{ci(gain, 100, '+', 1)} | {ci(vs, 100, '+', 1) if vs else '—'} | {ci(p16, 100, nd=1)} | "
            f"{ci([x for x, _ in ln], nd=1)} ({ci([y for _, y in ln], nd=1)}) | "
            f"{ci([wall_s(r) for r in rs], nd=0)} |"
        )
    lines += [
        "",
        "*base-unsolved problems solved*: of the held-out problems that the base solved in none of "
        "the other seeds' 16-sample evaluations, how many the trained model solves at least once in "
        "16 samples; in brackets, how many the base itself solves at least once in this seed's "
        "evaluation (re-sampling alone). *training s*: the seconds of generation and update steps, "
        "evaluations left out, on the shared CPU (two runs at a time and other work beside them).",
        "",
    ]
    if any(data.values()):
        lines += [_plot(data, before, teacher["pass@1"] if teacher else None), ""]
    kl = [(arm, r) for arm in ("opd", "opd_grpo", "scope") for r in data.get(arm, [])]
    if kl:
        lines += ["Teacher KL (mean per-token log π_old − log π_teacher, first → last 10 steps):", ""]
        for arm in ("opd", "opd_grpo", "scope"):
            rs = data.get(arm, [])
            first = [_mean(r, "teacher_kl", head=True) for r in rs]
            last = [_mean(r, "teacher_kl", head=False) for r in rs]
            if rs:
                lines.append(f"- {arm}: {ci(first)} → {ci(last)} nats")
        lines.append("")
    lines += [
        "## The abstracts' claims, here",
        "",
        "| claim | difference (points or problems) | verdict |",
        "|---|---|---|",
    ]
    for arm, other, claim, what in CLAIMS:
        a, b = data.get(arm, []), data.get(other, [])
        if what == "pass@1":
            d = [100 * x for x in paired(a, b, p1_after)]
        elif what == "pass@16":
            d = [100 * x for x in paired(a, b, lambda r: r["summary"]["after"].get("pass@16", math.nan))]
        else:
            d = paired(a, b, lambda r: learned(r, before)[0])
        lines.append(f"| {claim} ({arm} − {other}, {what}) | {ci(d, nd=1, sign='+')} | {verdict(d)} |")
    lines += [
        "",
        f"The {len(CLAIMS)} claims are each tested at 95% with no correction for their number: if none "
        f"held, at least one would still show by chance with probability 1 − 0.95^{len(CLAIMS)} = "
        f"{100 * (1 - 0.95 ** len(CLAIMS)):.0f}%, so a single borderline verdict is weak evidence.",
        "",
    ]
    return "\n".join(lines) + "\n"


def _mean(run: dict, key: str, head: bool, n: int = 10) -> float:
    vals = [r[key] for r in run["metrics"] if key in r and r[key] == r[key]]
    vals = vals[:n] if head else vals[-n:]
    return statistics.fmean(vals) if vals else math.nan
