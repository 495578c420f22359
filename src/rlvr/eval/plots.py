"""Plots of evaluation results (matplotlib, Agg: no display needed), as files or base64 PNG.

Figures are built with the object API (``matplotlib.figure.Figure``), never pyplot, so no global
backend or figure state is touched and nothing needs closing. Curves come as summary dicts in the
form that :meth:`rlvr.eval.EvalResult.summary` writes (``pass@k``, ``pass@k_ci_low``,
``pass@k_ci_high``), which is also what a run's ``eval_before.json`` / ``eval_after.json`` hold.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from rlvr.eval.evaluate import summary_ks

__all__ = ["figure_png", "passk_figure", "png_base64", "save_passk_plot"]


def passk_figure(
    curves: Mapping[str, Mapping[str, float]],
    *,
    crossovers: Mapping[str, int | None] | None = None,
    metric: str = "pass",
    title: str = "",
    size: tuple[float, float] = (5.0, 3.6),
    colors: Mapping[str, str] | None = None,
    band: bool = False,
    dashed: Collection[str] = (),
    xlabel: str = "k (log2 scale)",
    legend_below: bool = False,
) -> Any:
    """One axis: ``{metric}@k`` against k (log2 scale) for each labelled summary, with its interval
    (``{metric}@k_ci_low`` / ``_ci_high``) as error bars, or as a shaded band when ``band``; a dashed
    vertical line at each non-None crossover k (keyed by the label of the curve it belongs to, drawn
    in that curve's colour). ``colors`` fixes a label's colour (others take matplotlib's cycle);
    the curves named in ``dashed`` are drawn dashed with square markers, above the others (a
    reference such as the base model). ``legend_below`` puts the legend under the axis, for many
    curves. Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    ax = fig.subplots()
    colours: dict[str, Any] = {}
    all_ks: set[int] = set()
    for i, (label, s) in enumerate(curves.items()):
        ks = [k for k in summary_ks(dict(s)) if f"{metric}@{k}" in s]
        if not ks:
            continue
        ys = [s[f"{metric}@{k}"] for k in ks]
        lows = [s.get(f"{metric}@{k}_ci_low", y) for k, y in zip(ks, ys, strict=True)]
        highs = [s.get(f"{metric}@{k}_ci_high", y) for k, y in zip(ks, ys, strict=True)]
        style: dict[str, Any] = {"marker": "o", "ms": 4, "label": label}
        if colors and label in colors:
            style["color"] = colors[label]
        if label in dashed:
            style.update(ls="--", marker="s", zorder=4)
        if band:
            (line,) = ax.plot(ks, ys, lw=1.6, **style)
            colour = line.get_color()
            ax.fill_between(ks, lows, highs, color=colour, alpha=0.15, lw=0)
        else:
            lo = [max(0.0, y - v) for y, v in zip(ys, lows, strict=True)]
            hi = [max(0.0, v - y) for y, v in zip(ys, highs, strict=True)]
            shift = 2 ** (0.04 * (i - (len(curves) - 1) / 2))  # side by side: CI bars stay apart
            xs = [k * shift for k in ks]
            colour = ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, **style).lines[0].get_color()
        colours[label] = colour
        all_ks.update(ks)
    for label, k in (crossovers or {}).items():
        if k is None:
            continue
        colour = colours.get(label, "grey")
        ax.axvline(k, color=colour, ls="--", lw=1)
        ax.annotate(
            f"crossover k={k} ",
            xy=(k, 0.02),
            color=colour,
            fontsize=8,
            ha="right",
            va="bottom",
        )
    ax.set_xscale("log", base=2)
    ticks = sorted(all_ks) or [1]
    ax.set_xticks(ticks, labels=[str(k) for k in ticks])
    ax.minorticks_off()
    ax.set_xlim(ticks[0] / 1.3, ticks[-1] * 1.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric}@k")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if curves and legend_below:
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            ncol=min(len(labels), 4),
            frameon=False,
        )
    elif curves:
        ax.legend(fontsize=8, loc="upper left")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def figure_png(fig: Any, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def png_base64(fig: Any, *, dpi: int = 110) -> str:
    """The figure as base64 PNG, for ``<img src="data:image/png;base64,...">`` in a report."""
    return base64.b64encode(figure_png(fig, dpi=dpi)).decode()


def save_passk_plot(
    path: str | Path,
    curves: Mapping[str, Mapping[str, float]],
    *,
    crossovers: Mapping[str, int | None] | None = None,
    title: str = "",
) -> Path:
    """Write :func:`passk_figure` to ``path`` as PNG (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(passk_figure(curves, crossovers=crossovers, title=title)))
    return path
