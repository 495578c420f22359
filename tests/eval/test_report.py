"""A run's report.html: one valid embedded PNG per learning curve, the held-out curve's base and final
points, and (when Chromium is installed) a page that fits a 1,280-pixel window."""

from __future__ import annotations

import base64
import importlib.util
import json
import math
from pathlib import Path

import pytest

from rlvr.eval.report import CURVES, write_report

ROOT = Path(__file__).resolve().parents[2]


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("rlvr_screenshot", ROOT / "scripts" / "screenshot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shot = _screenshot_module()


def _summary(p1: float) -> dict[str, float]:
    out = {}
    for k in (1, 2, 4, 8):
        v = 1 - (1 - p1) ** k
        out |= {f"pass@{k}": v, f"pass@{k}_ci_low": v - 0.02, f"pass@{k}_ci_high": v + 0.02}
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory with every metric that the report charts, 60 steps, evaluations before,
    at steps 20 and 40, and after."""
    d = tmp_path_factory.mktemp("run")
    rows = []
    for step in range(1, 61):
        row = {key: 0.5 + 0.3 * math.sin(step / 7 + i) for i, (key, _) in enumerate(CURVES)}
        row["step"] = step
        if step % 20:
            del row["heldout_pass@1"]
        rows.append(row)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sample = {"question": "1 + 2 =", "answer": "3", "completion": "<answer>3</answer>", "reward": 1.0}
    for name, p1 in (("eval_before.json", 0.2), ("eval_after.json", 0.4)):
        (d / name).write_text(json.dumps({"summary": _summary(p1), "samples": [sample]}))
    (d / "config.toml").write_text('name = "grpo"\n')
    write_report(d)
    return d


def test_one_valid_png_per_curve(run_dir):
    n, problems = shot.check_images(run_dir / "report.html")
    assert problems == []
    assert n == 1 + len(CURVES)  # the pass@k plot, then one chart per metric
    text = (run_dir / "report.html").read_text()
    for _, title in CURVES:
        assert f"alt='{title}'" in text
    assert "<div class=charts>" in text


def test_heldout_curve_gets_base_and_final_points(run_dir, tmp_path, monkeypatch):
    import shutil

    import rlvr.eval.report as report

    copy = shutil.copytree(run_dir, tmp_path / "run")
    seen = {}

    def record(rows):
        seen["rows"] = [r for r in rows if "heldout_pass@1" in r]
        return []

    monkeypatch.setattr(report, "_curves", record)
    write_report(copy)
    steps = [(r["step"], r["heldout_pass@1"]) for r in seen["rows"]]
    assert steps[0] == (0, pytest.approx(0.2)) and steps[-1] == (60, pytest.approx(0.4))
    assert [s for s, _ in steps[1:-1]] == [20, 40, 60]


def test_charts_are_separate_images(run_dir):
    text = (run_dir / "report.html").read_text()
    pngs = [base64.b64decode(s.split("'")[0]) for s in text.split("data:image/png;base64,")[1:]]
    sizes = [shot.check_png(p) for p in pngs[1:]]
    assert all(w < 500 for w, _ in sizes)  # small charts that wrap, not one row wider than a window


@pytest.mark.skipif(
    shot.find_chromium() is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_report_fits_a_1280_pixel_window(run_dir):
    assert shot.page_width(run_dir / "report.html", 1280) <= 1280
    assert shot.page_width(run_dir / "report.html", 800) <= 800  # the charts wrap on a narrow one
