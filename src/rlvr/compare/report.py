"""The comparison's HTML report: tables, the per-seed plot, pass@k curves (drawn by
:func:`rlvr.eval.plots.passk_figure`) and learning curves, every image embedded as base64 PNG."""

from __future__ import annotations

import html
import json
import math
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from rlvr.compare.summary import CURVE_METRICS, json_safe

__all__ = ["passk_curves", "write_compare"]


PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


RC = {"font.size": 10, "axes.titlesize": 11, "legend.fontsize": 9}  # the report's plots
DPI = 100


def _png(fig: Any) -> str:
    """The figure as base64 PNG (:func:`rlvr.eval.plots.png_base64`, imported on first use: it
    brings torch and matplotlib, which the ``rlvr`` command line should not load to start)."""
    from rlvr.eval.plots import png_base64 as encode

    return encode(fig, dpi=DPI)


def _figure(size: tuple[float, float]) -> tuple[Any, Any]:
    """A matplotlib Figure of one axis (the object API: no pyplot state, nothing to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.subplots()


def _legend_below(fig: Any, ax: Any, n: int) -> None:
    fig.legend(
        *ax.get_legend_handles_labels(),
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=min(n, 4),
        frameon=False,
    )


def _curve_plot(key: str, per: dict[str, Any], colors: dict[str, str]) -> str:
    """One metric over training steps: per recipe, the mean over seeds and the min-max band."""
    import matplotlib

    with matplotlib.rc_context(RC):
        fig, ax = _figure((5.0, 2.9))
        for recipe, c in per.items():
            marker = "o" if key == "heldout_pass@1" else None
            ax.plot(
                c["step"], c["mean"], color=colors[recipe], lw=1.6, marker=marker, ms=4, label=recipe
            )
            ax.fill_between(c["step"], c["low"], c["high"], color=colors[recipe], alpha=0.18, lw=0)
        ax.set_title(CURVE_METRICS[key])
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.margins(x=0.01)
        _legend_below(fig, ax, len(per))
        fig.tight_layout()
        return _png(fig)


def passk_curves(data: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The report's pass@k curves as :func:`rlvr.eval.plots.passk_figure` takes them: the base model
    (mean over every run's evaluation before training) and, per recipe, the mean over seeds after
    training with the min and max over seeds as the band (``pass@k``, ``pass@k_ci_low`` /
    ``_ci_high``)."""
    ks = data["ks"]
    stats = data["recipe_stats"].values()
    curves: dict[str, dict[str, float]] = {}
    base = [st["passk"]["before"] for st in stats if "before" in st.get("passk", {})]
    if base:
        curves["base model"] = {
            f"pass@{k}": statistics.fmean(b[str(k)]["mean"] for b in base) for k in ks
        }
    for recipe, st in data["recipe_stats"].items():
        after = st.get("passk", {}).get("after")
        if after is None:
            continue
        curves[recipe] = {}
        for k in ks:
            a = after[str(k)]
            curves[recipe] |= {
                f"pass@{k}": a["mean"],
                f"pass@{k}_ci_low": a["min"],
                f"pass@{k}_ci_high": a["max"],
            }
    return curves


def _passk_plot(data: dict[str, Any], colors: dict[str, str]) -> str:
    import matplotlib

    from rlvr.eval.plots import passk_figure

    curves = passk_curves(data)
    with matplotlib.rc_context(RC):
        fig = passk_figure(
            curves,
            colors={**colors, "base model": "#444444"},
            band=True,
            dashed=("base model",),
            xlabel="k (samples per problem)",
            legend_below=True,
            size=(5.6, 3.4),
        )
        fig.axes[0].set_ylabel("held-out pass@k")
        return _png(fig)


def _seeds_plot(data: dict[str, Any], colors: dict[str, str]) -> str:
    """Final held-out pass@1 of every seed (dots), the mean (bar) and its 95% t-interval (whisker)."""
    import matplotlib

    names = [r for r, st in data["recipe_stats"].items() if "pass@1" in st]
    with matplotlib.rc_context(RC):
        fig, ax = _figure((1.2 + 1.3 * len(names), 3.2))
        for i, recipe in enumerate(names):
            st = data["recipe_stats"][recipe]["pass@1"]
            vals = [100 * v for v in st["values"]]
            jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else np.zeros(1)  # [S]
            ax.scatter(i + jitter, vals, color=colors[recipe], s=28, zorder=3, edgecolor="white", lw=0.5)
            ax.hlines(100 * st["mean"], i - 0.25, i + 0.25, color=colors[recipe], lw=2.2)
            if not math.isnan(st["ci_low"]):
                ax.vlines(i + 0.3, 100 * st["ci_low"], 100 * st["ci_high"], color=colors[recipe], lw=1.2)
        base = [
            v
            for st in data["recipe_stats"].values()
            if "base_pass@1" in st
            for v in st["base_pass@1"]["values"]
            if v is not None and not math.isnan(v)
        ]
        if base:
            ax.axhline(100 * statistics.fmean(base), color="#555555", ls="--", lw=1.0)
            ax.text(  # outside the axes, on the right, at the base model's height
                1.01,
                100 * statistics.fmean(base),
                "base",
                transform=ax.get_yaxis_transform(),
                fontsize=9,
                color="#555555",
                va="center",
                ha="left",
            )
        ax.set_xticks(range(len(names)), names)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel("held-out pass@1 (%)")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return _png(fig)


def _pct(x: float | None, sign: str = "") -> str:
    return "–" if x is None or math.isnan(x) else f"{100 * x:{sign}.1f}"


def _pm(st: dict[str, Any], sign: str = "") -> str:
    """'m [lo, hi]' in percent."""
    if math.isnan(st["ci_low"]):
        return f"{_pct(st['mean'], sign)} (1 seed)"
    lo, hi = _pct(st["ci_low"], sign), _pct(st["ci_high"], sign)
    return f"{_pct(st['mean'], sign)} <span class=ci>[{lo}, {hi}]</span>"


def _num(x: float | None, digits: int) -> str:
    return "–" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _pval(p: float) -> str:
    if math.isnan(p):
        return "–"
    return "&lt;0.001" if p < 0.001 else f"{p:.3f}"


CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1120px;margin:1.5em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:0.2em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd;
padding-bottom:0.2em}.meta{color:#555;font-size:0.92em}
table{border-collapse:collapse;margin:0.6em 0}
td,th{border:1px solid #ccc;padding:4px 9px;font-size:13.5px;text-align:right}td{white-space:nowrap}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.ci{color:#666;font-size:12px}.sig{font-weight:bold;color:#b00020}.note{font-size:13px;color:#444;
max-width:60em}pre{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto;white-space:pre-wrap}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:10px 18px;align-items:start}
img{max-width:100%}
.swatch{display:inline-block;width:0.8em;height:0.8em;border-radius:2px;margin-right:0.3em}
details{margin:0.4em 0}summary{cursor:pointer}
"""


def write_compare(out: str | Path, data: dict[str, Any], command: str = "") -> Path:
    """Write ``out/compare.json`` (``data`` plus the command) and ``out/report.html``; returns the
    path of the report."""
    from rlvr.utils import atomic_write_text

    out = Path(out)
    data = {**data, "command": command, "created": datetime.now().isoformat(timespec="seconds")}
    atomic_write_text(out / "compare.json", json.dumps(json_safe(data), indent=1))
    recipes = data["recipes"]
    colors = {r: PALETTE[i % len(PALETTE)] for i, r in enumerate(recipes)}
    stats, kmax = data["recipe_stats"], data["k_max"]
    done = [r for r in data["runs"] if r["finished"]]
    esc = html.escape
    steps = sorted({r["summary"].get("steps") for r in done if r["summary"].get("steps") is not None})
    p = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rlvr compare</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>rlvr compare: {esc(', '.join(recipes))}</h1>",
        f"<p class=meta>{len(recipes)} recipes × {len(data['seeds'])} seeds (seeds "
        f"{', '.join(map(str, data['seeds']))}); {len(done)} of {len(data['runs'])} runs finished"
        + (f"; {', '.join(map(str, steps))} training steps" if steps else "")
        + f"; written {esc(data['created'])}; directory <code>{esc(str(out))}</code></p>",
    ]
    if not done:
        p.append("<p>No finished run yet.</p></body></html>")
        atomic_write_text(out / "report.html", "\n".join(p))
        return out / "report.html"

    def swatch(r: str) -> str:
        return f"<span class=swatch style='background:{colors[r]}'></span>{esc(r)}"

    p.append(
        "<h2>Recipes</h2><table><tr><th>recipe</th><th>seeds</th><th>pass@1 after</th>"
        f"<th>pass@{kmax} after</th><th>gain over base</th><th>gained / lost (k={kmax})</th>"
        "<th>entropy (end)</th><th>length (end)</th><th>wall / run</th></tr>"
    )
    for r in recipes:
        st = stats[r]
        n_done, n_plan = len(st["seeds_done"]), len(st["seeds_planned"])
        if not n_done:
            p.append(f"<tr><td>{swatch(r)}</td><td>0/{n_plan}</td>" + "<td>–</td>" * 7 + "</tr>")
            continue
        p.append(
            f"<tr><td>{swatch(r)}</td><td>{n_done}/{n_plan}</td><td>{_pm(st['pass@1'])}</td>"
            f"<td>{_pm(st[f'pass@{kmax}'])}</td><td>{_pm(st['gain'], '+')}</td>"
            f"<td>{_num(st['boundary_gained'], 1)} / {_num(st['boundary_lost'], 1)}</td>"
            f"<td>{st['entropy_end']:.3f}</td><td>{st['length_end']:.2f}</td>"
            f"<td>{st['wall_s']:.0f} s</td></tr>"
        )
    p.append(
        "</table><p class=note>Held-out pass@k in %, mean over seeds with its 95% t-interval in "
        "brackets. Gain: the trained model's pass@1 minus the base model's, on the same problems. "
        f"Problems gained / lost: held-out problems that the trained model solves at least once in "
        f"{kmax} samples and the base never does, and the reverse (mean over seeds). Entropy and "
        "length: mean over the last 10% of training steps.</p>"
    )
    tests = data["tests"]
    if tests:
        p.append(
            "<h2>Pairwise tests on final pass@1</h2><table><tr><th>A − B</th><th>difference "
            "(points)</th><th>95% CI</th><th>t</th><th>df</th><th>p</th><th>p (Holm)</th></tr>"
        )
        for t in tests:
            cls = " class=sig" if t["significant"] else ""
            mark = " *" if t["significant"] else ""
            df = "–" if t["df"] is None or math.isnan(t["df"]) else f"{t['df']:.1f}"
            tv = "–" if t["t"] is None or math.isnan(t["t"]) else f"{t['t']:.2f}"
            p.append(
                f"<tr{cls}><td>{esc(t['a'])} − {esc(t['b'])}</td><td>{_pct(t['diff'], '+')}</td>"
                f"<td>[{_pct(t['ci_low'], '+')}, {_pct(t['ci_high'], '+')}]</td><td>{tv}</td>"
                f"<td>{df}</td><td>{_pval(t['p'])}{mark}</td><td>{_pval(t['p_holm'])}</td></tr>"
            )
        n_min = min(len(stats[r]["seeds_done"]) for r in recipes if stats[r]["seeds_done"])
        p.append(
            "</table><p class=note>Welch's t-test over seeds (unequal variances), two-sided; "
            "* marks p &lt; 0.05 (not adjusted); Holm's adjustment for the number of pairs beside it. "
            f"With {n_min} seed{'s' if n_min != 1 else ''} per recipe this test is weak: it has few "
            "degrees of freedom, cannot check its normality assumption, and misses any difference "
            "that is not several times the seed-to-seed spread, so a missing star does not mean the "
            "recipes are equal. (A permutation test over 3 + 3 seeds could not go below p = 0.1 at "
            "all.) Fewer than 2 seeds on a side: no test.</p>"
        )
    p.append(
        "<h2>Final pass@1 by seed</h2><div class=grid>"
        f"<img alt='final pass@1 per seed' src='data:image/png;base64,{_seeds_plot(data, colors)}'>"
        f"<img alt='pass@k curves' src='data:image/png;base64,{_passk_plot(data, colors)}'></div>"
        "<p class=note>Left: one dot per seed, the bar is the mean and the whisker its 95% "
        "t-interval; dashed: the base model. Right: held-out pass@k after training, mean over seeds "
        "with a min–max band; dashed: the base model (mean over the runs' evaluations).</p>"
    )
    if data["curves"]:
        p.append("<h2>Learning curves</h2><div class=grid>")
        for key, per in data["curves"].items():
            p.append(
                f"<img alt='{esc(CURVE_METRICS[key])}' "
                f"src='data:image/png;base64,{_curve_plot(key, per, colors)}'>"
            )
        p.append(
            "</div><p class=note>Mean over seeds (line) with the min–max band across seeds. "
            "Per-step metrics are smoothed per seed first, with a trailing mean over 4% of the run "
            "(at least 5 steps); "
            "held-out pass@1 is measured before training, every eval.every steps and after "
            "training.</p>"
        )
    p.append(
        "<h2>Runs</h2><table><tr><th>recipe</th><th>seed</th><th>pass@1 base</th><th>pass@1 after"
        f"</th><th>pass@{kmax} after</th><th>gain (95% CI over problems)</th><th>wall</th>"
        "<th>report</th></tr>"
    )
    for r in data["runs"]:
        if not r["finished"]:
            p.append(
                f"<tr><td>{swatch(r['recipe'])}</td><td>{r['seed']}</td>"
                "<td colspan=6 style='text-align:left'>not finished</td></tr>"
            )
            continue
        s = r["summary"]
        gain = "–"
        if "pass@1_gain" in s:
            lo, hi = s["pass@1_gain_ci"]
            gain = (
                f"{_pct(s['pass@1_gain'], '+')} <span class=ci>[{_pct(lo, '+')}, {_pct(hi, '+')}]</span>"
            )
        wall = r.get("wall_s")
        link = f"{r['dir']}/report.html"
        p.append(
            f"<tr><td>{swatch(r['recipe'])}</td><td>{r['seed']}</td>"
            f"<td>{_pct(s.get('before', {}).get('pass@1'))}</td><td>{_pct(s['after']['pass@1'])}</td>"
            f"<td>{_pct(s['after'].get(f'pass@{kmax}'))}</td><td>{gain}</td>"
            f"<td>{'–' if wall is None or math.isnan(wall) else f'{wall:.0f} s'}</td>"
            f"<td><a href='{esc(link)}'>{esc(r['dir'])}</a></td></tr>"
        )
    p.append("</table>")
    p.append("<h2>Command and configs</h2>")
    if command:
        p.append(f"<pre>{esc(command)}</pre>")
    p.append(
        "<p class=note>The resolved config of each recipe's first finished seed (the seeds differ "
        "only in train.seed).</p>"
    )
    for recipe, text in data["configs"].items():
        p.append(f"<details><summary>{swatch(recipe)}</summary><pre>{esc(text)}</pre></details>")
    p.append("</body></html>")
    atomic_write_text(out / "report.html", "\n".join(p))
    return out / "report.html"
