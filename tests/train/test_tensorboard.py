"""TensorBoard events: every numeric metric of every step, and a resumed run purges what came after
its checkpoint."""

from __future__ import annotations

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tests.conftest import micro_run

from rlvr.train.config import load_config
from rlvr.train.trainer import train


def _scalars(run_dir, tag):
    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def _cfg(micro_base, *extra):
    return load_config(
        "grpo",
        micro_run(
            micro_base, "eval.before=false", "eval.after=false", "train.checkpoint_every=2", *extra
        ),
    )


def test_events_match_metrics_and_resume(micro_base, tmp_path):
    run = tmp_path / "run"
    train(_cfg(micro_base, "train.steps=2"), run_dir=run, progress=False)
    train(_cfg(micro_base, "train.steps=4"), run_dir=run, resume=True, progress=False)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for tag in ("loss", "reward_mean", "accuracy", "reward/answer", "entropy"):
        got = _scalars(run, tag)
        assert sorted(got) == [1, 2, 3, 4], tag
        for r in rows:
            assert got[r["step"]] == pytest.approx(r[tag], rel=1e-6, abs=1e-7), tag


def test_tensorboard_can_be_off(micro_base, tmp_path):
    train(
        _cfg(micro_base, "train.steps=1", "train.tensorboard=false"),
        run_dir=tmp_path / "r",
        progress=False,
    )
    assert not (tmp_path / "r" / "tensorboard").exists()


class _FakeWandb:
    """Stands in for the wandb package: records what the trainer asks of it."""

    def __init__(self):
        self.inits, self.logs, self.finished = [], [], 0

    def init(self, **kw):
        self.inits.append(kw)
        return self

    def log(self, data, step):
        self.logs.append((step, dict(data)))

    def finish(self):
        self.finished += 1


def test_wandb_gets_every_step_and_resumes_the_same_run(micro_base, tmp_path, monkeypatch):
    import sys

    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    run = tmp_path / "run"
    train(
        _cfg(micro_base, "train.steps=2", "train.wandb_project='rlvr-test'"), run_dir=run, progress=False
    )
    train(
        _cfg(micro_base, "train.steps=3", "train.wandb_project='rlvr-test'"),
        run_dir=run,
        resume=True,
        progress=False,
    )
    assert [i["id"] for i in fake.inits] == ["run", "run"] and fake.inits[0]["resume"] == "allow"
    assert fake.inits[0]["project"] == "rlvr-test" and fake.inits[0]["config"]["train"]["steps"] == 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [s for s, _ in fake.logs] == [1, 2, 3] and fake.finished == 2
    for (_, logged), row in zip(fake.logs, rows, strict=True):
        assert logged["loss"] == row["loss"] and "step" not in logged


def test_wandb_without_the_package_is_a_clear_error(micro_base, tmp_path, monkeypatch):
    import sys

    from rlvr.train.config import ConfigError

    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(ConfigError, match="needs the wandb package: pip install wandb"):
        train(
            _cfg(micro_base, "train.steps=1", "train.wandb_project='x'"),
            run_dir=tmp_path / "r",
            progress=False,
        )
    assert not (tmp_path / "r").exists()  # refused before any run directory or model
