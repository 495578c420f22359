"""branching.md from the runs of ``benchmarks/branching.py``: the table, the plot
(``benchmarks/branching/pass1.png``) and the verdicts, by the rule of ``findings_report``: a
difference between two arms is taken seed by seed (the arms of one seed share the base, the prompt
stream and the held-out problems) and it "shows" when the 95% t-interval of the differences
excludes 0.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from pathlib import Path
from typing import Any

from arms import bases_paragraph
from findings_report import ci, load, paired, shows
from recipes import _settings

ROOT = Path(__file__).resolve().parent
PLOTS = ROOT / "branching"


# ---------------------------------------------------------------- numbers


def rows_per_step(run: dict) -> int:
    """Sequences a step samples: prompts_per_step x samples_per_prompt of the run's config."""
    cfg = tomllib.loads((run["dir"] / "config.toml").read_text()).get("rollout", {})
    return int(cfg.get("prompts_per_step", 8)) * int(cfg.get("samples_per_prompt", 8))


def sampled(row: dict, rows: int) -> float:
    """Tokens the sampler generated at one step: rows x mean length, less the prefixes that the
    branches copied (``copied_tokens``, logged only with branching)."""
    return rows * row["response_length"] - row.get("copied_tokens", 0.0)


def points(run: dict) -> list[tuple[int, float, float]]:
    """(step, tokens sampled so far, held-out pass@1) at each evaluation, step 0 the base."""
    rows = rows_per_step(run)
    pts = [(0, 0.0, run["summary"]["before"]["pass@1"])]
    tokens = 0.0
    for r in run["metrics"]:
        tokens += sampled(r, rows)
        if "heldout_pass@1" in r:
            pts.append((r["step"], tokens, r["heldout_pass@1"]))
    return pts


def per_step(run: dict) -> float:
    """Mean tokens sampled per step."""
    rows = rows_per_step(run)
    return statistics.fmean(sampled(r, rows) for r in run["metrics"])


def copied_share(run: dict) -> float:
    """The share of the rows' tokens that were copied from a parent rather than sampled."""
    rows = rows_per_step(run)
    total = sum(rows * r["response_length"] for r in run["metrics"])
    return sum(r.get("copied_tokens", 0.0) for r in run["metrics"]) / total if total else math.nan


def tokens_to(run: dict, target: float) -> float | None:
    """Tokens sampled by the first evaluation at or above ``target`` (None: never reached)."""
    return next((t for s, t, v in points(run)[1:] if v >= target), None)


def p1_after(run: dict) -> float:
    return run["summary"]["after"]["pass@1"]


def gain(run: dict) -> float:
    return p1_after(run) - run["summary"]["before"]["pass@1"]


def verdict(diffs: list[float], seeds_needed: int = 3) -> str:
    if len(diffs) < seeds_needed:
        return f"not run yet ({len(diffs)} of {seeds_needed} paired seeds)"
    s = shows(diffs)
    return "**shows**" if s > 0 else "**contradicted**" if s < 0 else "inconclusive"


def wall_s(run: dict) -> float:
    return sum(r.get("step_time", 0.0) for r in run["metrics"])


# ---------------------------------------------------------------- output


def _plot(data: dict[str, list[dict]], target: float | None) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from branching import CREDITS

    PLOTS.mkdir(exist_ok=True)
    colours = dict(zip(CREDITS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for arm, rs in data.items():
        if not rs:
            continue
        credit, mode = arm.rsplit("_", 1)
        series = [points(r) for r in rs]
        k = min(len(s) for s in series)
        steps = [s[0] for s in series[0][:k]]
        toks = [statistics.fmean(s[i][1] for s in series) / 1e3 for i in range(k)]
        ys = [100 * statistics.fmean(s[i][2] for s in series) for i in range(k)]
        style = {"color": colours.get(credit), "ls": "-" if mode == "iid" else "--", "marker": "o"}
        label = f"{credit} {mode} ({len(rs)} seeds)"
        axes[0].plot(steps, ys, label=label, **style)
        axes[1].plot(toks, ys, label=label, **style)
    for ax, xl in zip(axes, ("optimizer step", "tokens sampled (thousands)"), strict=True):
        if target is not None:
            ax.axhline(100 * target, ls=":", color="k", lw=1, label="target")
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out pass@1 (%)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    tmp = PLOTS / ".pass1.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(PLOTS / "pass1.png")
    return "![pass@1 against steps and sampled tokens](branching/pass1.png)"


def _reached(rs: list[dict], target: float) -> str:
    got = [tokens_to(r, target) for r in rs]
    hit = [t / 1e3 for t in got if t is not None]
    if not hit:
        return f"0 of {len(rs)}"
    return f"{len(hit)} of {len(rs)}, {statistics.fmean(hit):.1f} k"


def report(runs: Path, args: Any) -> str:
    from branching import ARMS, CREDITS, TREE

    data = {arm: load(runs, arm) for arm in ARMS}
    everything = [r for rs in data.values() for r in rs]
    base = [r["summary"]["before"]["pass@1"] for r in data["grpo_iid"]] or [
        r["summary"]["before"]["pass@1"] for r in everything
    ]
    grpo = data["grpo_iid"]
    target = max(statistics.fmean(base), statistics.fmean(p1_after(r) for r in grpo)) if grpo else None
    lines = [
        "# Branching rollouts against i.i.d. groups on the reasoner",
        "",
        "Written by `python benchmarks/branching.py` (resumable; `--table-only` rewrites this file). "
        f"Every arm is `reasoner_grpo` from the embedded `reasoner` base for {args.steps} optimizer "
        "steps (8 prompts × 8 samples, up to 96 tokens, lr 1e-4) with one credit assigner and one "
        f"rollout mode; held-out pass@1 is on the same {args.heldout} problems × 16 samples, every 25 "
        "steps. The tree rollout is CURE's (`" + " ".join(TREE) + "`): 4 samples per prompt, then 2 "
        "continuations from the highest-entropy token of each; a branch copies its parent's prefix, "
        "which is not sampled again. Means over seeds with 95% t-intervals; differences are paired "
        "by seed.",
        "",
    ]
    if everything:
        lines += [_settings([r["dir"] for r in everything]), ""]
    lines += bases_paragraph(runs)
    tgt = f"{100 * target:.1f}%" if target is not None else "n/a (no grpo_iid run yet)"
    lines += [
        f"Target for *tokens to target*: held-out pass@1 ≥ {tgt}, the larger of the base's mean and "
        "grpo_iid's final mean.",
        "",
        "| credit | rollout | seeds | pass@1 after (%) | gain over base (points) | tree − iid "
        "(points) | pass@16 after (%) | tokens sampled / step | copied share | reached target "
        "(runs, mean k tokens) | training s / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, rs in data.items():
        credit, mode = arm.rsplit("_", 1)
        if not rs:
            lines.append(f"| `{credit}` | {mode} | 0 | not run yet | | | | | | | |")
            continue
        vs = (
            ci([100 * d for d in paired(rs, data[f"{credit}_iid"], p1_after)], sign="+", nd=1)
            if mode == "tree"
            else "—"
        )
        p16 = [r["summary"]["after"].get("pass@16", math.nan) for r in rs]
        lines.append(
            f"| `{credit}` | {mode} | {len(rs)} | {ci([p1_after(r) for r in rs], 100, nd=1)} | "
            f"{ci([gain(r) for r in rs], 100, '+', 1)} | {vs} | {ci(p16, 100, nd=1)} | "
            f"{ci([per_step(r) for r in rs], nd=0)} | {ci([copied_share(r) for r in rs], nd=2)} | "
            f"{_reached(rs, target) if target is not None else 'n/a'} | "
            f"{ci([wall_s(r) for r in rs], nd=0)} |"
        )
    lines += [
        "",
        "*tokens sampled / step*: rows × mean completion length − the prefixes copied into branches. "
        "*copied share*: the copied prefixes' share of the rows' tokens. *training s*: seconds of "
        "generation and update steps, evaluations left out, on the shared 2-core CPU (two runs at a "
        "time and other work beside them).",
        "",
    ]
    if everything:
        lines += [_plot(data, target), ""]
    lines += [
        "## What the tree changes, here",
        "",
        "| comparison | difference in pass@1 after (points) | verdict |",
        "|---|---|---|",
    ]
    claims = 0
    for credit in CREDITS:
        d = [100 * x for x in paired(data[f"{credit}_tree"], data[f"{credit}_iid"], p1_after)]
        lines.append(f"| `{credit}`: tree − iid | {ci(d, nd=1, sign='+')} | {verdict(d)} |")
        claims += 1
    for credit in CREDITS:
        if credit == "grpo":
            continue
        d = [100 * x for x in paired(data[f"{credit}_tree"], data["grpo_tree"], p1_after)]
        lines.append(
            f"| tree rollouts: `{credit}` − `grpo` (its token credit where the tree exists) | "
            f"{ci(d, nd=1, sign='+')} | {verdict(d)} |"
        )
        claims += 1
    lines += [
        "",
        f"The {claims} comparisons are each tested at 95% with no correction for their number: if no "
        f"difference were real, at least one would still show by chance with probability "
        f"1 − 0.95^{claims} = {100 * (1 - 0.95**claims):.0f}%.",
        "",
    ]
    return "\n".join(lines) + "\n"
