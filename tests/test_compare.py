"""`rlvr compare`: t distribution and Welch test against hand values, the statistics of a synthetic
grid, the resumable grid on the micro model, and the report's images (Chromium when installed)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from rlvr.compare import (
    add_compare_parser,
    holm,
    mean_ci,
    parse_recipes,
    parse_seeds,
    summarize,
    t_cdf,
    t_ppf,
    welch_test,
    write_compare,
)
from rlvr.train.config import ConfigError
from tests.conftest import micro_run

ROOT = Path(__file__).resolve().parents[1]


def _screenshot_module():
    spec = importlib.util.spec_from_file_location("rlvr_screenshot", ROOT / "scripts" / "screenshot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


shot = _screenshot_module()


# ------------------------------------------------------------------------------------ t distribution


@pytest.mark.parametrize(
    ("df", "t975"),
    [(1, 12.706204736), (2, 4.302652730), (3, 3.182446305), (4, 2.776445105), (10, 2.228138852)],
)
def test_t_quantile_matches_table(df, t975):
    assert t_ppf(0.975, df) == pytest.approx(t975, abs=1e-8)
    assert t_ppf(0.025, df) == pytest.approx(-t975, abs=1e-8)


def test_t_quantile_tends_to_normal():
    assert t_ppf(0.975, 1e7) == pytest.approx(1.959963985, abs=1e-5)


@pytest.mark.parametrize("t", [-7.0, -1.3, -0.2, 0.0, 0.4, 1.0, 2.5, 30.0])
def test_t_cdf_closed_forms(t):
    # df = 1 is the Cauchy distribution; df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2))
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_t_cdf_equals_integrated_density():
    """A fractional df (as Welch gives): the CDF equals the numerically integrated t density."""
    df = 3.7
    x = np.linspace(-400.0, 2.1, 2_000_001)  # [X]
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    pdf = np.exp(logc - (df + 1) / 2 * np.log1p(x**2 / df))  # [X]
    area = float(np.sum((pdf[1:] + pdf[:-1]) / 2 * np.diff(x)))  # mass below -400: ~1e-10
    assert t_cdf(2.1, df) == pytest.approx(area, abs=1e-7)


# ------------------------------------------------------------------------------- mean CI and Welch


def test_mean_ci_hand_values():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])  # sd 1, se 1/sqrt(3), t_{0.975, 2} = 4.302653
    assert m == 2.0
    assert hi - m == pytest.approx(4.302652730 / math.sqrt(3), abs=1e-8)
    assert m - lo == pytest.approx(hi - m)
    m, lo, hi = mean_ci([0.4])
    assert m == 0.4 and math.isnan(lo) and math.isnan(hi)


def test_welch_hand_values():
    # a: mean 2, var 1; b: mean 5.5, var 5/3. se^2 = 1/3 + 5/12 = 3/4, t = -3.5 / sqrt(3/4)
    # df = (3/4)^2 / ((1/3)^2 / 2 + (5/12)^2 / 3) = 0.5625 / (1/18 + 25/432) = 243/49
    r = welch_test([1, 2, 3], [4, 5, 6, 7])
    assert r.diff == -3.5
    assert r.t == pytest.approx(-3.5 / math.sqrt(0.75), abs=1e-12)
    assert r.df == pytest.approx(243 / 49, abs=1e-12)
    assert r.p == pytest.approx(2 * t_cdf(r.t, r.df), abs=1e-14)
    assert r.p == pytest.approx(0.0100769, abs=1e-6)
    half = t_ppf(0.975, 243 / 49) * math.sqrt(0.75)
    assert (r.ci_low, r.ci_high) == pytest.approx((-3.5 - half, -3.5 + half))


def test_welch_obvious_difference_is_significant():
    r = welch_test([0.50, 0.51, 0.49], [0.20, 0.21, 0.19])
    assert r.p < 1e-4 and r.ci_low > 0.25 and r.ci_high < 0.35
    assert welch_test([0.20, 0.21, 0.19], [0.50, 0.51, 0.49]).p == pytest.approx(r.p)


def test_welch_overlapping_seeds_are_not_significant():
    r = welch_test([0.30, 0.50, 0.40], [0.35, 0.45, 0.41])
    assert r.p > 0.9 and r.ci_low < 0 < r.ci_high


def test_welch_degenerate_cases():
    assert welch_test([0.3, 0.3], [0.3, 0.3]).p == 1.0
    same_spread_zero = welch_test([0.3, 0.3], [0.2, 0.2])
    assert same_spread_zero.p == 0.0 and same_spread_zero.t == math.inf
    one_seed = welch_test([0.3], [0.2, 0.25])
    assert one_seed.diff == pytest.approx(0.075) and math.isnan(one_seed.p)


def test_holm_hand_values():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    out = holm([0.01, 0.04, 0.03, math.nan])
    assert out[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(out[3])


def test_parse_seeds_and_recipes():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("0,5") == [0, 5]
    assert parse_seeds("7,") == [7]
    for bad in ("0", "-1,2", "a", "1,1"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    assert parse_recipes("grpo, dapo") == ["grpo", "dapo"]
    assert parse_recipes("a/x.toml,y") == ["a/x.toml", "y"]
    with pytest.raises(ValueError, match="share a directory"):
        parse_recipes("grpo,b/grpo.toml")


# ------------------------------------------------------------------------ a synthetic grid's numbers


def _fake_run(rdir: Path, before: float, after: float, accs: list[float]) -> None:
    rdir.mkdir(parents=True)
    ev = {
        "pass@1": after,
        "pass@1_ci_low": after - 0.01,
        "pass@1_ci_high": after + 0.01,
        "pass@2": min(1.0, after + 0.1),
        "pass@2_ci_low": 0.0,
        "pass@2_ci_high": 1.0,
        "mean_length": 4.0,
    }
    base = {**ev, "pass@1": before, "pass@2": before + 0.2}
    summary = {
        "steps": len(accs),
        "before": base,
        "after": ev,
        "pass@1_gain": after - before,
        "pass@1_gain_ci": [after - before - 0.02, after - before + 0.02],
        "boundary": {"gained": 2, "lost": 1, "kept": 5, "neither": 8},
    }
    (rdir / "summary.json").write_text(json.dumps(summary))
    rows = [
        {"step": i + 1, "reward_mean": a, "accuracy": a, "entropy": 0.5, "response_length": 4.0}
        for i, a in enumerate(accs)
    ]
    (rdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (rdir / "config.toml").write_text('name = "x"\n')
    (rdir / "wall_s.txt").write_text("10.0\n")


@pytest.fixture(scope="module")
def fake_grid(tmp_path_factory):
    out = tmp_path_factory.mktemp("fake-grid")
    for s, (a, b) in enumerate([(0.50, 0.20), (0.52, 0.22), (0.48, 0.19)]):
        _fake_run(out / "good" / f"seed{s}", 0.1, a, [0.1 * s, 0.2, 0.3 + s])
        _fake_run(out / "bad" / f"seed{s}", 0.1, b, [0.0, 0.1, 0.1])
    data = summarize(out, ["good", "bad", "missing"], [0, 1, 2])
    write_compare(out, data, "rlvr compare --recipes good,bad,missing")
    return out, data


def test_summary_statistics_of_a_synthetic_grid(fake_grid):
    _, data = fake_grid
    st = data["recipe_stats"]["good"]
    assert st["seeds_done"] == [0, 1, 2]
    assert (st["pass@1"]["mean"], st["pass@1"]["ci_low"]) == pytest.approx(
        mean_ci([0.50, 0.52, 0.48])[:2]
    )
    assert st["gain"]["mean"] == pytest.approx(0.40)
    assert data["k_max"] == 2 and st["pass@2"]["mean"] == pytest.approx(0.60)
    assert st["boundary_gained"] == 2
    assert data["recipe_stats"]["missing"]["seeds_done"] == []
    (test,) = data["tests"]  # 'missing' has no seeds: only good vs bad
    assert (test["a"], test["b"]) == ("good", "bad")
    assert test["diff"] == pytest.approx(0.50 - 0.2033333, abs=1e-6) and test["significant"]
    # accuracy curve (3 steps, not smoothed): mean and min-max over seeds, per step
    acc = data["curves"]["accuracy"]["good"]
    assert acc["step"] == [1, 2, 3]
    assert acc["mean"] == pytest.approx([0.1, 0.2, statistics.fmean([0.3, 1.3, 2.3])])
    assert acc["low"] == pytest.approx([0.0, 0.2, 0.3]) and acc["high"] == pytest.approx([0.2, 0.2, 2.3])
    # held-out pass@1 curve: the base at step 0, the trained model at the last step
    held = data["curves"]["heldout_pass@1"]["bad"]
    assert held["step"] == [0, 3] and held["mean"] == pytest.approx([0.1, 0.2033333], abs=1e-6)


def test_compare_json_is_standard_json(fake_grid):
    out, _ = fake_grid
    text = (out / "compare.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["command"].startswith("rlvr compare")
    assert [r["finished"] for r in data["runs"]].count(True) == 6


def test_report_images_are_valid_pngs(fake_grid):
    out, _ = fake_grid
    n, problems = shot.check_images(out / "report.html")
    assert problems == []
    assert n == 2 + 5  # seeds, pass@k; curves: reward, accuracy, held-out pass@1, entropy, length
    html = (out / "report.html").read_text()
    assert "rlvr compare --recipes good,bad,missing" in html and "not finished" in html


def test_image_check_catches_broken_images(tmp_path):
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    png = buf.getvalue()
    assert shot.check_png(png) == (100, 100)
    flipped = png[:60] + bytes([png[60] ^ 0xFF]) + png[61:]
    page = (
        f"<img alt=ok src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        f"<img alt=crc src='data:image/png;base64,{base64.b64encode(flipped).decode()}'>"
        f"<img alt=cut src='data:image/png;base64,{base64.b64encode(png[:-30]).decode()}'>"
        "<img alt=file src='plot.png'>"
    )
    (tmp_path / "p.html").write_text(page)
    n, problems = shot.check_images(tmp_path / "p.html")
    assert n == 4 and len(problems) == 3
    assert "'crc'" in problems[0] and "CRC" in problems[0]
    assert "'cut'" in problems[1] and "'file'" in problems[2] and "not a data:image/png" in problems[2]


@pytest.mark.skipif(
    shot.find_chromium() is None, reason="chromium is not installed (apt-get install chromium)"
)
def test_chromium_screenshot(fake_grid, tmp_path):
    out, _ = fake_grid
    png = shot.screenshot(out / "report.html", tmp_path / "report.png", width=1000, height=1400)
    w, h = shot.check_png(png.read_bytes())
    assert (w, h) == (1000, 1400)
    from PIL import Image

    pixels = np.asarray(Image.open(png).convert("L"))  # [H, W]
    assert (pixels < 100).mean() > 0.002  # not a blank page: dark text and lines ...
    assert (pixels > 245).mean() > 0.5  # ... on a white background
    assert shot.page_width(out / "report.html", 1280) <= 1280  # no horizontal scroll bar


# ----------------------------------------------------------------------- the resumable grid (micro)


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rlvr")
    add_compare_parser(ap.add_subparsers(dest="command", required=True))
    return ap.parse_args(["compare", *argv])


def test_report_only_rewrites_the_report_from_finished_runs(fake_grid, tmp_path):
    import shutil

    src, _ = fake_grid
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    (out / "report.html").unlink()
    args = _parse(["--recipes", "good,bad", "--seeds", "0,1", "--out", str(out), "--report-only"])
    assert args.fn(args) == 0
    data = json.loads((out / "compare.json").read_text())
    assert data["recipes"] == ["good", "bad"] and data["seeds"] == [0, 1]
    assert data["recipe_stats"]["good"]["pass@1"]["values"] == [0.50, 0.52]
    assert shot.check_images(out / "report.html")[1] == []
    with pytest.raises(ConfigError, match="--report-only needs --out"):
        args = _parse(["--report-only"])
        args.fn(args)
    with pytest.raises(ConfigError, match="--seeds"):
        args = _parse(["--seeds", "two", "--out", str(out)])
        args.fn(args)


@pytest.fixture()
def one_thread():
    """One torch thread: on a small shared machine, the micro model's tiny matmuls run several times
    faster without intra-op threads competing for the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_grid_skips_finished_runs_and_resumes_interrupted_ones(
    micro_base, tmp_path, monkeypatch, one_thread
):
    import signal

    from rlvr.train import metrics, trainer
    from rlvr.train.trainer import TrainingInterrupted

    over = micro_run(micro_base, "eval.samples=2", "eval.max_new_tokens=6", "train.tensorboard=false")
    out = tmp_path / "grid"
    calls: list[tuple[str, int, bool]] = []
    real_train, real_append = trainer.train, metrics.append_jsonl

    def recording_train(cfg, **kw):
        calls.append((cfg.name, cfg.train.seed, kw["resume"]))
        return real_train(cfg, **kw)

    def append_then_sigterm(path, record, **kw):  # SIGTERM arrives in grpo seed 1's first step
        real_append(path, record, **kw)
        if Path(path).name == "metrics.jsonl" and Path(path).parent == out / "grpo" / "seed1":
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(trainer, "train", recording_train)
    monkeypatch.setattr(metrics, "append_jsonl", append_then_sigterm)
    base = ["--recipes", "grpo,dr_grpo", "--steps", "2", "--out", str(out), "--quiet"]
    # 1. a subset: seed 0 of both recipes
    args = _parse([*base, "--seeds", "0,", *over])
    assert args.fn(args) == 0
    assert calls == [("grpo", 0, False), ("dr_grpo", 0, False)]
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/summary.json")}
    assert len(done) == 2
    # 2. the full grid, stopped by SIGTERM in grpo seed 1 after its step-1 checkpoint
    calls.clear()
    args = _parse([*base, "--seeds", "2", *over])
    with pytest.raises(TrainingInterrupted):
        args.fn(args)
    assert calls == [("grpo", 1, False)]
    cut = out / "grpo" / "seed1"
    assert not (cut / "summary.json").exists() and (cut / "checkpoints" / "step_1").is_dir()
    first_session = float((cut / "wall_s.partial").read_text())
    # 3. the same command again: seed 0 runs are skipped, grpo seed 1 resumes, dr_grpo seed 1 is new
    monkeypatch.setattr(metrics, "append_jsonl", real_append)
    calls.clear()
    assert args.fn(args) == 0
    assert calls == [("grpo", 1, True), ("dr_grpo", 1, False)]
    assert {p: p.stat().st_mtime_ns for p in done} == done
    steps = [json.loads(x)["step"] for x in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    assert float((cut / "wall_s.txt").read_text()) > first_session > 0  # both sessions counted
    assert not (cut / "wall_s.partial").exists()
    data = json.loads((out / "compare.json").read_text())
    assert all(r["finished"] for r in data["runs"]) and len(data["runs"]) == 4
    assert data["recipe_stats"]["grpo"]["seeds_done"] == [0, 1]
    assert len(data["tests"]) == 1
    assert "--seeds 0,1" in data["command"] and "train.tensorboard=false" in data["command"]
    n, problems = shot.check_images(out / "report.html")
    assert n >= 6 and problems == []
    # 4. a grid resumed with other settings is refused, naming the field, before anything trains
    calls.clear()
    args = _parse([*base[:2], "--steps", "3", *base[4:], "--seeds", "2", *over])
    with pytest.raises(ConfigError, match=r"train\.steps"):
        args.fn(args)
    assert calls == []
