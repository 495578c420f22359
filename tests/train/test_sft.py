"""``rlvr sft``: packing, the loss mask, exact resume, a short run whose output loads as a model."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr.models.hf import load_model
from rlvr.train.sft import encode, pack, packed_loss, sft, sft_config


def _cfg(micro_base, *extra):
    return sft_config(
        [
            f"model_path={json.dumps(str(micro_base))}",
            "heldout_size=4",
            "rows=2",
            "seq_len=96",
            "steps=4",
            "warmup=1",
            "lr=0.003",
            "checkpoint_every=2",
            "eval_samples=1",
            "eval_max_new_tokens=24",
            *extra,
        ]
    )


def test_pack_fills_rows_and_masks_prompts():
    ex = [([1, 2, 3], [-100, 2, 3]), ([4, 5], [-100, 5]), ([6, 7, 8, 9], [-100, -100, 8, 9])]
    batch, rest = pack(ex, rows=2, seq_len=5, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]]
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5], [-100, -100, 8, 9, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    m = batch["attention_mask"][0, 0]  # [L, L]: token 3 (second example) sees only itself
    assert m[3].tolist() == [False, False, False, True, False] and m[2].tolist()[:3] == [True] * 3
    assert rest == []
    _, rest = pack(ex, rows=1, seq_len=5, pad_id=0)
    assert rest == ex[2:]  # what does not fit waits for the next step


def test_packed_equals_alone_and_prompt_tokens_do_not_count(micro_model):
    model, tok = micro_model
    from rlvr.data.tasks import Problem

    a = encode(tok, Problem("1 + 2 =", "3"), "1 + 2 = 3\n<answer>3</answer>")
    b = encode(tok, Problem("4 - 1 =", "3"), "4 - 1 = 3\n<answer>3</answer>")
    assert a[1][: a[1].index(next(x for x in a[1] if x != -100))] == [-100] * a[1].count(-100)
    together, _ = pack([a, b], 1, len(a[0]) + len(b[0]), tok.pad_token_id)
    alone_a, _ = pack([a], 1, len(a[0]), tok.pad_token_id)
    alone_b, _ = pack([b], 1, len(b[0]), tok.pad_token_id)
    la, na = packed_loss(model, alone_a)
    lb, nb = packed_loss(model, alone_b)
    lt, nt = packed_loss(model, together)
    assert nt == na + nb  # the loss counts the assistant's tokens only, same in both layouts
    torch.testing.assert_close(lt, (la * na + lb * nb) / nt, rtol=1e-5, atol=1e-5)
    # changing a prompt token changes no label: the count of counted tokens stays the same
    assert sum(x != -100 for x in a[1]) == na


def test_sft_resume_is_exact_and_output_loads(micro_base, tmp_path):
    full = sft(_cfg(micro_base), run_dir=tmp_path / "full", progress=False)
    half = sft(_cfg(micro_base, "steps=2"), run_dir=tmp_path / "half", progress=False)
    assert half["losses"] == full["losses"][:2]
    resumed = sft(_cfg(micro_base), run_dir=tmp_path / "half", resume=True, progress=False)
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-6)
    assert full["losses"][-1] < full["losses"][0]
    for k in ("heldout_loss", "pass@1"):
        assert k in full["before"] and k in full["after"]
    assert full["after"]["heldout_loss"] < full["before"]["heldout_loss"]
    model, _ = load_model(full["model"])
    assert model.config.vocab_size > 0
    lines = (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [1, 2, 3, 4]


def test_sft_with_lora_resumes_exactly_and_writes_the_merged_model(micro_base, tmp_path):
    from safetensors.torch import load_file

    lora = ("lora_rank=4", "lr=1e-2")
    full = sft(_cfg(micro_base, *lora), run_dir=tmp_path / "full", progress=False)
    sft(_cfg(micro_base, *lora, "steps=2"), run_dir=tmp_path / "half", progress=False)
    resumed = sft(_cfg(micro_base, *lora), run_dir=tmp_path / "half", resume=True, progress=False)
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-6)
    assert full["after"]["heldout_loss"] < full["before"]["heldout_loss"]
    before = load_file(micro_base / "model.safetensors")
    after = load_file(tmp_path / "full" / "model" / "model.safetensors")  # merged, plain names
    assert set(after) == set(before)
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all("proj" in k for k in moved)  # only the adapted projections
    assert (tmp_path / "full" / "checkpoints" / "step_4" / "adapter" / "adapter_config.json").exists()


def test_sft_on_samples_of_a_run(micro_base, tmp_path):
    """Rejection-sampling fine-tuning: only the samples with reward >= min_reward are trained on."""
    from rlvr.train.config import load_config

    run = tmp_path / "rl"
    run.mkdir()
    rl = load_config("grpo", ["task.heldout_size=4"])
    (run / "config.toml").write_text(rl.to_toml())
    rows = [
        {
            "question": "State: 1 + 2 + 3 =",
            "answer": "6",
            "completion": "<answer>6</answer>",
            "reward": 1.0,
        },
        {
            "question": "State: 1 + 1 + 3 =",
            "answer": "5",
            "completion": "<answer>4</answer>",
            "reward": 0.1,
        },
    ]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(
        micro_base, "source='samples'", f"path={json.dumps(str(run))}", "steps=1", "eval_samples=0"
    )
    from rlvr.train.setup import build_task
    from rlvr.train.sft import Examples, _rl_config

    ex = Examples(cfg, build_task(_rl_config(cfg)))
    assert [t for _, t in ex.rows] == ["<answer>6</answer>"]
    out = sft(cfg, run_dir=tmp_path / "rft", progress=False)
    assert len(out["losses"]) == 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown sft setting"):
        sft_config(["stepz=3"])
    with pytest.raises(ValueError, match="expected int"):
        sft_config(["steps='a'"])
    with pytest.raises(ValueError, match="needs 'path'"):
        sft_config(["source='file'"])


def test_cli_sft_then_train_takes_the_model(micro_base, tmp_path):
    """`rlvr sft` writes RUN_DIR/model, and `rlvr train model.path=...` trains from it."""
    from rlvr.cli import main

    run = tmp_path / "s"
    args = ["sft", "--quiet", "--model", str(micro_base), "--steps", "2", "--run-dir", str(run)]
    assert main([*args, "heldout_size=4", "rows=2", "seq_len=96", "eval_samples=0"]) == 0
    assert (run / "model" / "config.json").exists() and (run / "checkpoints" / "latest").exists()
    assert main(["sft", "--quiet", "--run-dir", str(run), "stepz=1"]) == 2  # refused, named
    over = [
        f"model.path={json.dumps(str(run / 'model'))}",
        "model.device='cpu'",
        "rollout.prompts_per_step=2",
        "rollout.samples_per_prompt=2",
        "rollout.max_new_tokens=4",
        "task.heldout_size=4",
        "eval.before=false",
        "eval.after=false",
    ]
    rl = ["train", "--quiet", "--steps", "1", "--run-dir", str(tmp_path / "rl"), *over]
    assert main(rl) == 0


def test_sft_on_a_dataset_solution_field(micro_base, tmp_path):
    """source = 'file': the target is the row's solution field; pass@1 by the chosen verifier."""
    from rlvr.train.setup import build_task
    from rlvr.train.sft import Examples, _rl_config

    rows = [
        {
            "prompt": f"{a} + {b} =",
            "answer": str(a + b),
            "solution": f"{a} + {b} = {a + b}\n<answer>{a + b}</answer>",
        }
        for a in range(4)
        for b in range(4)
    ]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _cfg(
        micro_base, "source='file'", f"path={json.dumps(str(data))}", "verifier='exact_match'", "steps=1"
    )
    ex = Examples(cfg, build_task(_rl_config(cfg)))
    p, target = next(ex)
    assert target == p.meta["solution"] and len(ex.heldout()) == 4
    out = sft(cfg, run_dir=tmp_path / "f", progress=False)
    assert set(out["after"]) == {"heldout_loss", "pass@1"}


def test_sigint_finishes_the_step_checkpoints_and_resumes(micro_base, tmp_path, monkeypatch):
    import signal

    from rlvr.train.trainer import TrainingInterrupted

    full = sft(
        _cfg(micro_base, "eval_samples=0", "checkpoint_every=10"), run_dir=tmp_path / "a", progress=False
    )
    clip = torch.nn.utils.clip_grad_norm_
    calls = []

    def clip_then_signal(*args, **kw):  # Ctrl-C arrives during step 1's update
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)
        return clip(*args, **kw)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_then_signal)
    cfg = _cfg(micro_base, "eval_samples=0", "checkpoint_every=10")
    with pytest.raises(TrainingInterrupted, match="rlvr sft --resume") as err:
        sft(cfg, run_dir=tmp_path / "b", progress=False)
    assert err.value.step == 1 and (tmp_path / "b" / "checkpoints" / "step_1").is_dir()
    resumed = sft(cfg, run_dir=tmp_path / "b", resume=True, progress=False)
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-6)
