"""LoRA (model.lora): adapters only in the optimizer, the adapter-off reference, merged checkpoints
that load as plain models, exact resume, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
from tests.conftest import micro_run

from rlvr.models.hf import load_model
from rlvr.models.lora import (
    AdapterOffReference,
    add_adapters,
    default_targets,
    merged_weights,
    trainable_parameters,
)
from rlvr.rollout import sequence_logp
from rlvr.train.config import ConfigError, load_config
from rlvr.train.trainer import train

TIMING = {"gen_time", "learn_time", "step_time", "tokens_per_s"}


def _cfg(micro_base, *extra):
    return load_config(
        "grpo",
        micro_run(
            micro_base,
            "model.lora.rank=4",
            "model.lora.alpha=8",
            "eval.samples=2",
            "eval.max_new_tokens=6",
            "train.checkpoint_every=2",
            "optim.lr=1e-2",
            "algo.beta=0.1",  # a KL term: the reference is used
            *extra,
        ),
    )


def _metrics(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _batch(tok):
    prompts = ["<|user|>1 + 2 =<|end|><|assistant|>", "<|user|>7 - 3 =<|end|><|assistant|>"]
    p = [tok(x, add_special_tokens=False)["input_ids"] for x in prompts]
    width = max(map(len, p))
    pid = torch.tensor([[tok.pad_token_id] * (width - len(x)) + x for x in p])  # [2, P]
    pmask = (pid != tok.pad_token_id).long()  # [2, P]
    cid = torch.tensor([[5, 6, 7], [8, 9, 10]])  # [2, 3]
    return pid, pmask, cid, torch.ones_like(cid)


def _perturb(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_default_targets_are_the_qwen2_projections(micro_model):
    model, _ = micro_model
    assert default_targets(model) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert default_targets(torch.nn.Sequential(torch.nn.Linear(2, 2))) == ["all-linear"]


def test_only_adapters_train_and_start_at_the_base(micro_model):
    model, tok = micro_model
    before = sequence_logp(model, *_batch(tok))[0]  # [2, 3]
    lora = add_adapters(model, rank=4, alpha=8.0, dropout=0.0)
    params = trainable_parameters(lora)
    names = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert params and all("lora_" in n for n in names)
    # 2 layers x 7 projections x (A and B)
    assert len(names) == 2 * 7 * 2
    torch.testing.assert_close(sequence_logp(lora, *_batch(tok))[0], before)  # B = 0 at the start


def test_adapter_off_reference_is_the_base_and_merged_weights_are_the_policy(micro_base, tmp_path):
    base, tok = load_model(micro_base)
    want_base = sequence_logp(base, *_batch(tok))[0]  # [2, 3]
    lora = add_adapters(load_model(micro_base)[0], rank=4, alpha=8.0, dropout=0.0)
    _perturb(lora)
    policy = sequence_logp(lora, *_batch(tok))[0]  # [2, 3]
    assert (policy - want_base).abs().max() > 1e-3  # the adapters change the policy
    ref = AdapterOffReference(lora)
    torch.testing.assert_close(sequence_logp(ref, *_batch(tok))[0], want_base)
    for chunk in (1, 0):  # chunked head (decoder with adapters off) and the plain path agree
        got = sequence_logp(ref, *_batch(tok), logit_chunk=chunk)[0]
        torch.testing.assert_close(got, want_base)
        torch.testing.assert_close(sequence_logp(lora, *_batch(tok), logit_chunk=chunk)[0], policy)
    assert not list(ref.parameters())  # no second copy of any weight
    # the merged state dict, loaded into a plain model, is the adapted policy
    merged = merged_weights(lora)
    assert not any("lora_" in k or "base_layer" in k for k in merged)
    plain = load_model(micro_base)[0]
    assert set(merged) == set(plain.state_dict())  # what a rollout worker's load_state_dict takes
    plain.load_state_dict(merged, strict=True)
    torch.testing.assert_close(sequence_logp(plain, *_batch(tok))[0], policy, rtol=1e-5, atol=1e-5)


def test_lora_run_checkpoints_merged_weights_and_resumes_exactly(micro_base, tmp_path, dense_reward):
    from transformers import AutoModelForCausalLM

    extra = ["eval.before=false", *dense_reward]
    full = train(_cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "a", progress=False)
    rows = _metrics(tmp_path / "a")
    assert rows[-1]["kl"] > 0  # the adapter-off reference differs from the trained policy
    step = tmp_path / "a" / "checkpoints" / "step_4"
    assert (step / "adapter" / "adapter_config.json").exists()
    # the checkpoint is a plain Hugging Face model with the adapters merged in
    plain = AutoModelForCausalLM.from_pretrained(step)
    base = AutoModelForCausalLM.from_pretrained(micro_base)
    moved = [n for n, p in plain.state_dict().items() if not torch.equal(p, base.state_dict()[n])]
    assert moved and all("proj" in n for n in moved)  # only the adapted projections changed
    # interrupted after step 2, resumed: the same metrics and weights as the uninterrupted run
    train(_cfg(micro_base, "train.steps=2", *extra), run_dir=tmp_path / "b", progress=False)
    resumed = train(
        _cfg(micro_base, "train.steps=4", *extra), run_dir=tmp_path / "b", resume=True, progress=False
    )
    for ra, rb in zip(rows, _metrics(tmp_path / "b"), strict=True):
        for k in ra:
            if k not in TIMING:
                assert ra[k] == pytest.approx(rb[k], rel=1e-6, abs=1e-7), k
    from safetensors.torch import load_file

    pa = load_file(step / "model.safetensors")
    pb = load_file(tmp_path / "b" / "checkpoints" / "step_4" / "model.safetensors")
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], rtol=1e-6, atol=1e-7)
    assert full["after"] == resumed["after"]


def test_lora_refuses_what_it_cannot_do(micro_base):
    with pytest.raises(ConfigError, match="ref_reset_every"):
        _cfg(micro_base, "algo.ref_reset_every=2")
    with pytest.raises(ConfigError, match=r"scale\.shard"):
        _cfg(micro_base, "scale.shard='fsdp'", "scale.learners=2")
    with pytest.raises(ConfigError, match=r"model\.lora\.rank"):
        _cfg(micro_base, "model.lora.rank=-1")


def test_rollout_worker_takes_the_merged_weights(micro_base):
    from rlvr.rollout.workers import RolloutWorker

    lora = add_adapters(load_model(micro_base)[0], rank=4, alpha=8.0, dropout=0.0)
    _perturb(lora, seed=1)
    worker = RolloutWorker(str(micro_base))  # a plain model, as on a Ray worker (no peft there)
    assert worker.set_weights(merged_weights(lora), 3) == 3  # strict: every key of the plain model
    tok = worker.tokenizer
    want = sequence_logp(lora, *_batch(tok))[0]  # [2, 3]
    torch.testing.assert_close(sequence_logp(worker.model, *_batch(tok))[0], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_trains_the_same_steps(micro_base, tmp_path, dense_reward, lora):
    """model.gradient_checkpointing recomputes the activations in the learner's backward: the same
    rollouts, losses and gradients (up to rounding: rows do not share their prompt's cache then)."""
    extra = ["eval.before=false", "eval.after=false", "train.steps=3", *dense_reward]
    extra += [] if lora else ["model.lora.rank=0"]
    runs = {}
    for on in ("false", "true"):
        cfg = _cfg(micro_base, *extra, f"model.gradient_checkpointing={on}")
        train(cfg, run_dir=tmp_path / on, progress=False)
        runs[on] = _metrics(tmp_path / on)
    for a, b in zip(runs["false"], runs["true"], strict=True):
        assert a["reward_mean"] == b["reward_mean"]  # the sampler ran with its cache both times
        for k in ("loss", "grad_norm", "kl"):
            assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-7), k
    with pytest.raises(ConfigError, match="gradient_checkpointing"):
        _cfg(micro_base, "model.lora.rank=0", "model.gradient_checkpointing=true",
             "scale.shard='fsdp'", "scale.learners=2")  # fmt: skip


def test_checkpointing_recomputes_the_layers_only_inside_the_block(micro_base, monkeypatch):
    from rlvr.models.lora import checkpointing

    model, tok = load_model(micro_base)
    model.train()
    calls = []
    mlp = type(model.model.layers[0].mlp)
    forward = mlp.forward

    def counted(self, x):  # (module hooks do not fire when torch recomputes a checkpoint)
        calls.append(1)
        return forward(self, x)

    monkeypatch.setattr(mlp, "forward", counted)

    def forward_backward(share):
        calls.clear()
        logp = sequence_logp(model, *_batch(tok), share_prompts=share)[0]  # [2, 3]
        logp.sum().backward()
        return len(calls)

    plain = forward_backward(False)
    hooks = len(model.get_input_embeddings()._forward_hooks)
    for _ in range(3):
        with checkpointing(model):
            assert forward_backward(False) == 2 * plain  # the backward ran the layer again
    assert forward_backward(False) == plain  # off again after the block
    assert len(model.get_input_embeddings()._forward_hooks) == hooks  # no hook left behind
    assert forward_backward(True) >= 1  # and the shared-prompt cache path works again
