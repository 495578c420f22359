"""Rollout.cat: rounds of different prompt and completion widths make one batch, log-probs unchanged."""

from __future__ import annotations

import pytest
import torch

from rlvr.rollout import Rollout, generate, sequence_logp


def _roll(model, tok, prompts, seed, max_new):
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return generate(
        model,
        ids,
        num_samples=2,
        max_new_tokens=max_new,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        generator=torch.Generator().manual_seed(seed),
    )


def test_cat_pads_and_keeps_logprobs(micro_model):
    model, tok = micro_model
    model.eval()
    a = _roll(model, tok, ["<|user|>1 + 2 =<|end|><|assistant|>"], 0, 3)
    b = _roll(
        model,
        tok,
        ["<|user|>7 - 3 + 4 - 1 =<|end|><|assistant|>", "<|user|>5 =<|end|><|assistant|>"],
        1,
        6,
    )
    a.rewards, b.rewards = torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5, 0.0, 1.0])
    c = Rollout.cat([a, b])
    assert len(c) == 6 and c.group.tolist() == [0, 0, 1, 1, 2, 2]
    assert c.finish == a.finish + b.finish
    assert c.rewards.tolist() == [1.0, 0.0, 0.5, 0.5, 0.0, 1.0]
    assert c.prompt_ids.shape[1] == max(a.prompt_ids.shape[1], b.prompt_ids.shape[1])
    assert c.completion_ids.shape[1] == max(a.completion_ids.shape[1], b.completion_ids.shape[1])
    with torch.no_grad():
        lc, _ = sequence_logp(model, c.prompt_ids, c.prompt_mask, c.completion_ids, c.mask)
        for part, rows in ((a, slice(0, 2)), (b, slice(2, 6))):
            lp, _ = sequence_logp(
                model, part.prompt_ids, part.prompt_mask, part.completion_ids, part.mask
            )
            t = part.completion_ids.shape[1]
            torch.testing.assert_close(
                lc[rows, :t] * c.mask[rows, :t], lp * part.mask, atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(c.old_logp[rows, :t], part.old_logp)
            assert c.mask[rows, t:].sum() == 0


def test_cat_refuses_partly_set_fields(micro_model):
    model, tok = micro_model
    a = _roll(model, tok, ["<|user|>1 =<|end|><|assistant|>"], 0, 2)
    b = _roll(model, tok, ["<|user|>2 =<|end|><|assistant|>"], 1, 2)
    a.rewards = torch.zeros(2)
    with pytest.raises(ValueError, match="'rewards' is set in some parts only"):
        Rollout.cat([a, b])
