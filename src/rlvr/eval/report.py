"""A self-contained HTML report of one run: config, learning curves, pass@k before and after."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from rlvr.eval.evaluate import summary_ks

__all__ = ["write_report"]


CURVES = [  # metric key in metrics.jsonl, chart title; a chart is drawn when some step logged it
    ("reward_mean", "reward"),
    ("accuracy", "train accuracy"),
    ("heldout_pass@1", "held-out pass@1"),
    ("entropy", "entropy"),
    ("response_length", "response length"),
    ("kl", "KL to reference"),
    ("clip_frac", "clip fraction"),
]


def _curves(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """One small chart per logged metric, as (title, base64 PNG): separate images, so that the page
    lays them out in as many columns as the window has room for. Points are drawn in step order."""
    import numpy as np
    from matplotlib.figure import Figure

    from rlvr.eval.plots import png_base64

    charts = []
    for key, title in CURVES:
        pts = sorted((r["step"], r[key]) for r in rows if r.get(key) is not None)
        if not pts:
            continue
        fig = Figure(figsize=(3.4, 2.6))
        ax = fig.subplots()
        x, y = np.array(pts, dtype=float).T  # [T], [T]
        ax.plot(x, y, lw=0.6, alpha=0.4 if len(x) > 50 else 1.0)
        if len(x) > 50:  # moving average over ~2% of the run
            w = max(5, len(x) // 50)
            ax.plot(x[w - 1 :], np.convolve(y, np.ones(w) / w, mode="valid"), lw=1.5)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        fig.tight_layout()
        charts.append((title, png_base64(fig)))
    return charts


def _passk_plot(before: dict[str, float] | None, after: dict[str, float] | None) -> str:
    """Both pass@k curves on one axis, the crossover k marked (rlvr.eval.plots)."""
    from rlvr.eval.boundary import crossover_k
    from rlvr.eval.plots import passk_figure, png_base64

    curves = {label: s for label, s in (("base", before), ("trained", after)) if s}
    cross = None
    if before and after:
        ks = sorted(set(summary_ks(before)) & set(summary_ks(after)))
        cross = crossover_k({k: before[f"pass@{k}"] for k in ks}, {k: after[f"pass@{k}"] for k in ks})
    return png_base64(passk_figure(curves, crossovers={"base": cross}))


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from the run's files; returns its path."""
    run_dir = Path(run_dir)
    rows = []
    if (run_dir / "metrics.jsonl").exists():
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x]

    def load(name: str) -> dict[str, Any] | None:
        p = run_dir / name
        return json.loads(p.read_text()) if p.exists() else None

    before, after = load("eval_before.json"), load("eval_after.json")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rlvr run report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;"
        "font-size:13px}pre{background:#f6f6f6;padding:8px;font-size:12px;white-space:pre-wrap}"
        "img{max-width:100%}.charts{display:flex;flex-wrap:wrap;gap:6px}.charts img{width:360px}"
        "</style></head><body>",
        f"<h1>rlvr run: {html.escape(run_dir.name)}</h1>",
    ]
    if before or after:
        parts.append("<h2>Held-out pass@k</h2><table><tr><th>k</th><th>base</th><th>trained</th>")
        ref = (after or before)["summary"]
        ks = summary_ks(ref)
        for k in ks:
            cells = []
            for rec in (before, after):
                if rec is None:
                    cells.append("–")
                    continue
                s = rec["summary"]
                cells.append(
                    f"{100 * s[f'pass@{k}']:.1f}% [{100 * s[f'pass@{k}_ci_low']:.1f}, "
                    f"{100 * s[f'pass@{k}_ci_high']:.1f}]"
                )
            parts.append(f"<tr><td>{k}</td><td>{cells[0]}</td><td>{cells[1]}</td></tr>")
        parts.append("</table><p>95% bootstrap intervals over problems.</p>")
        summaries = (before and before["summary"], after and after["summary"])
        parts.append(f"<img alt='pass@k curves' src='data:image/png;base64,{_passk_plot(*summaries)}'>")
    if rows and before and after:  # held-out pass@1 from the evaluations before and after, too
        last = max(r["step"] for r in rows)
        rows = [
            {"step": 0, "heldout_pass@1": before["summary"]["pass@1"]},
            *rows,
            {"step": last, "heldout_pass@1": after["summary"]["pass@1"]},
        ]
    if rows:
        parts.append("<h2>Learning curves</h2><div class=charts>")
        for title, png in _curves(rows):
            parts.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
        parts.append("</div>")
    if after and after.get("samples"):
        parts.append(
            "<h2>Sample completions (trained)</h2><table><tr><th>question</th>"
            "<th>answer</th><th>completion</th><th>reward</th></tr>"
        )
        for s in after["samples"]:
            parts.append(
                f"<tr><td>{html.escape(s['question'])}</td><td>{html.escape(s['answer'])}</td>"
                f"<td><code>{html.escape(s['completion'])}</code></td><td>{s['reward']:.2f}</td></tr>"
            )
        parts.append("</table>")
    if (run_dir / "config.toml").exists():
        cfg = html.escape((run_dir / "config.toml").read_text())
        parts.append(f"<h2>Config</h2><pre>{cfg}</pre>")
    parts.append("</body></html>")
    out = run_dir / "report.html"
    from rlvr.utils import atomic_write_text

    atomic_write_text(out, "\n".join(parts))
    return out
