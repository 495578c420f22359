"""One-Token Rollout (``rlvr sft`` with ``loss = 'otr'``): the surrogate's gradient by hand, its
Monte-Carlo mean against the exact policy gradient grad p(y*), and a short run that resumes exactly."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr.train.sft import otr_loss, otr_surrogate, sft, sft_config


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
            "eval_samples=0",
            "loss='otr'",
            "otr_samples=4",
            *extra,
        ]
    )


def test_surrogate_gradient_by_hand():
    # V = 3, uniform policy (logits 0), y* = 0
    z = torch.zeros(2, 3, requires_grad=True)
    logp = torch.log_softmax(z, dim=-1)  # [2, 3]
    target = torch.tensor([0, 0])
    # position 0 samples (0, 1): r = (1, 0), b = (0, 1), r - b = (1, -1)
    #   L_0 = -(log p0 - log p1) / 2, dL_0/dz = -(e0 - e1) / 2 = (-1/2, 1/2, 0)
    # position 1 samples (1, 2): no sample hits y*, r - b = 0, no gradient
    samples = torch.tensor([[0, 1], [1, 2]])
    loss = otr_surrogate(logp, target, samples)  # mean over the 2 positions
    loss.backward()
    torch.testing.assert_close(z.grad, torch.tensor([[-0.25, 0.25, 0.0], [0.0, 0.0, 0.0]]))
    # its value: -(log 1/3 - log 1/3) / 2 at position 0, 0 at position 1
    assert float(loss.detach()) == 0.0
    # a descent step raises the ground-truth token's logit and lowers the sampled wrong one
    assert z.grad[0, 0] < 0 < z.grad[0, 1]
    # every sample the ground truth: r = b = 1, no gradient (nothing to learn at this position)
    z.grad = None
    otr_surrogate(torch.log_softmax(z, -1), target, torch.tensor([[0, 0], [0, 0]])).backward()
    assert torch.count_nonzero(z.grad) == 0


def test_many_samples_approach_the_exact_policy_gradient():
    """E[-grad L] = grad p(y*): with K large the sampled gradient matches -grad softmax(z)[y*]."""
    torch.manual_seed(0)
    z = torch.randn(3, 5, requires_grad=True)  # [M, V]
    target = torch.tensor([2, 0, 4])
    exact = torch.autograd.grad(-torch.softmax(z, -1).gather(1, target[:, None]).mean(), z)[0]
    gen = torch.Generator().manual_seed(1)
    loss, nll = otr_loss(z, target, k=200_000, generator=gen)
    sampled = torch.autograd.grad(loss, z)[0]
    torch.testing.assert_close(sampled, exact, atol=2e-3, rtol=0)
    torch.testing.assert_close(nll, torch.nn.functional.cross_entropy(z.detach(), target))
    # a few samples are unbiased: the mean over many seeds approaches the same gradient
    grads = []
    for seed in range(400):
        lo, _ = otr_loss(z, target, k=4, generator=torch.Generator().manual_seed(seed))
        grads.append(torch.autograd.grad(lo, z)[0])
    torch.testing.assert_close(torch.stack(grads).mean(0), exact, atol=1.5e-2, rtol=0)


def test_uncounted_positions_are_ignored():
    z = torch.randn(2, 4, 6, requires_grad=True)  # [R, L, V]
    target = torch.full((2, 4), -100)
    target[0, 1], target[1, 3] = 3, 5
    gen = torch.Generator().manual_seed(0)
    loss, _ = otr_loss(z, target, k=8, generator=gen)
    (g,) = torch.autograd.grad(loss, z)
    counted = target != -100
    assert torch.count_nonzero(g[~counted]) == 0
    none, nll = otr_loss(z, torch.full((2, 4), -100), k=8, generator=gen)
    assert float(none.detach()) == 0.0 and float(nll) == 0.0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="'loss'"):
        sft_config(["loss='mse'"])
    with pytest.raises(ValueError, match="'otr_samples'"):
        sft_config(["loss='otr'", "otr_samples=1"])


def test_otr_run_learns_and_resumes_exactly(micro_base, tmp_path):
    full = sft(_cfg(micro_base), run_dir=tmp_path / "full", progress=False)
    sft(_cfg(micro_base, "steps=2"), run_dir=tmp_path / "half", progress=False)
    resumed = sft(_cfg(micro_base), run_dir=tmp_path / "half", resume=True, progress=False)
    assert resumed["losses"] == pytest.approx(full["losses"], rel=1e-6)
    assert full["after"]["heldout_loss"] < full["before"]["heldout_loss"]
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3, 4] and all("otr_loss" in x for x in lines)
    # a different loss: not the NLL run's numbers
    nll = sft(_cfg(micro_base, "loss='nll'", "steps=2"), run_dir=tmp_path / "nll", progress=False)
    assert nll["losses"][0] == pytest.approx(full["losses"][0], rel=1e-6)  # same start, same batch
    assert nll["losses"][1] != pytest.approx(full["losses"][1], rel=1e-6)
