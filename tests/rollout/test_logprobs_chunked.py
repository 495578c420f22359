"""Chunked log-probs (the output head over row chunks of the decoder's hidden states, checkpointed)
against the plain path that lets the model compute the whole [N, T, V] logits."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

import rlvr.rollout.logprobs as lp
from rlvr.rollout.logprobs import chunk_rows, sequence_logp

V = 4096  # a vocabulary large enough that the head dominates the parameters


def _qwen2(vocab: int = V, hidden: int = 32) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return Qwen2ForCausalLM(cfg).float()


@pytest.fixture(scope="module")
def model() -> Qwen2ForCausalLM:
    return _qwen2()


def _batch(b: int = 3, g: int = 4, p: int = 6, t: int = 7, vocab: int = V):
    """B prompts of different lengths (left-padded) x G samples; completions right-padded."""
    gen = torch.Generator().manual_seed(1)
    lens = [p, p - 2, p - 4][:b]
    prompt_ids = torch.zeros((b, p), dtype=torch.long)  # [B, P]
    prompt_mask = torch.zeros((b, p), dtype=torch.long)  # [B, P]
    for i, n in enumerate(lens):
        prompt_ids[i, p - n :] = torch.randint(1, vocab, (n,), generator=gen)
        prompt_mask[i, p - n :] = 1
    prompt_ids = prompt_ids.repeat_interleave(g, 0)  # [N, P]
    prompt_mask = prompt_mask.repeat_interleave(g, 0)  # [N, P]
    n = b * g
    comp = torch.randint(1, vocab, (n, t), generator=gen)  # [N, T]
    length = torch.randint(1, t + 1, (n,), generator=gen)  # [N]
    length[0] = t
    mask = (torch.arange(t).unsqueeze(0) < length.unsqueeze(1)).float()  # [N, T]
    return prompt_ids, prompt_mask, comp * mask.long(), mask


def _run(model, batch, **kw):
    return sequence_logp(model, *batch, **kw)


class _HeadCalls:
    """Counts the output head's forward calls and the rows each saw."""

    def __init__(self, head: torch.nn.Module) -> None:
        self.rows: list[int] = []
        self.handle = head.register_forward_hook(lambda m, i, o: self.rows.append(i[0].shape[0]))

    def close(self) -> None:
        self.handle.remove()


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("rows", [1, 5, 12])
def test_chunked_values_equal_plain(model, share, rows):
    batch = _batch()
    with torch.no_grad():
        ref_lp, ref_ent = _run(model, batch, temperature=0.7, share_prompts=share, logit_chunk=0)
        lp_, ent = _run(model, batch, temperature=0.7, share_prompts=share, logit_chunk=rows)
    assert lp_.shape == ent.shape == batch[3].shape
    torch.testing.assert_close(lp_, ref_lp, rtol=0, atol=1e-5)
    torch.testing.assert_close(ent, ref_ent, rtol=0, atol=1e-5)
    assert bool((ent > 0).all()) and bool((ent <= math.log(V) + 1e-4).all())
    assert bool((lp_ <= 0).all())


@pytest.mark.parametrize("share", [True, False])
def test_chunked_gradients_equal_plain(model, share):
    """d/dθ of sum(mask * (logp + 0.1 * entropy)): every parameter, chunked (checkpointed) == plain."""
    batch = _batch()
    grads, values = [], []
    for rows in (0, 5):
        model.zero_grad(set_to_none=True)
        logp, ent = _run(model, batch, temperature=0.9, share_prompts=share, logit_chunk=rows)
        total = ((logp + 0.1 * ent) * batch[3]).sum()
        total.backward()
        values.append(float(total.detach()))
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    assert values[1] == pytest.approx(values[0], rel=1e-6)
    for k in grads[0]:
        g0, g1 = grads[0][k], grads[1][k]
        scale = float(g0.norm())
        assert scale > 0, k  # every parameter takes part
        assert float((g1 - g0).norm()) <= 1e-5 * scale, k


def test_forced_chunks_run_the_head_per_chunk(model):
    """logit_chunk=k: the head sees ceil(N/k) chunks of k rows (and again in the backward), never N."""
    batch = _batch()  # N = 12
    calls = _HeadCalls(model.lm_head)
    try:
        logp, _ = _run(model, batch, logit_chunk=5, share_prompts=False)
        assert calls.rows == [5, 5, 2]
        logp.sum().backward()  # checkpointed: the backward recomputes each chunk's logits
        assert calls.rows == [5, 5, 2, 2, 5, 5]
        calls.rows.clear()
        _run(model, batch, logit_chunk=0)
        assert calls.rows == [3, 12]  # plain, shared prompts: the U prompts, then the N rows
    finally:
        calls.close()


def test_automatic_choice_by_the_byte_budget(model, monkeypatch):
    n, t = 12, 7
    row_bytes = t * V * 4  # one row's float32 logits
    assert n * row_bytes <= lp.LOGIT_BUDGET_BYTES
    assert chunk_rows(model, n, t) is None  # small logits: the plain path
    assert chunk_rows(model, 64, 32) is None  # the default job's batch (64 x 32) stays plain
    assert chunk_rows(model, n, t, 3) == 3  # forced
    assert chunk_rows(model, 10**6, t, 0) is None  # never
    with pytest.raises(ValueError, match="logit_chunk"):
        chunk_rows(model, n, t, -1)
    monkeypatch.setattr(lp, "LOGIT_BUDGET_BYTES", 3 * row_bytes + 7)
    assert chunk_rows(model, n, t) == 3  # budget // row bytes
    monkeypatch.setattr(lp, "LOGIT_BUDGET_BYTES", row_bytes - 1)
    assert chunk_rows(model, n, t) == 1  # at least one row
    monkeypatch.setattr(lp, "LOGIT_BUDGET_BYTES", 3 * row_bytes + 7)
    calls = _HeadCalls(model.lm_head)
    try:
        with torch.no_grad():
            auto = _run(model, _batch(), share_prompts=False)
        assert calls.rows == [3, 3, 3, 3]
    finally:
        calls.close()
    with torch.no_grad():
        plain = _run(model, _batch(), share_prompts=False, logit_chunk=0)
    torch.testing.assert_close(auto[0], plain[0], rtol=0, atol=1e-5)


def test_issue8_gpu_shape_is_chunked():
    """The Qwen2-0.5B vocabulary (151,936) at 128 rows x 256 tokens: 19.9 GB of float32 logits, so
    chunks of one row (155.6 MB each); the head's parts only matter, so the model is narrow."""
    big = _qwen2(vocab=151936, hidden=8)
    assert chunk_rows(big, 128, 256) == 1
    assert chunk_rows(big, 128, 16) == 6  # 64 MiB // (16 x 151936 x 4 B) rows


def test_a_model_type_off_the_allowlist_keeps_the_plain_path(monkeypatch):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    ).float()
    gpt2.eval()  # no dropout
    monkeypatch.setattr(lp, "LOGIT_BUDGET_BYTES", 1)  # any logits would be chunked if allowed
    assert chunk_rows(gpt2, 12, 7) is None
    with pytest.raises(ValueError, match="'gpt2'"):
        chunk_rows(gpt2, 12, 7, 4)
    calls = _HeadCalls(gpt2.lm_head)
    try:
        with torch.no_grad():
            logp, ent = _run(gpt2, _batch(), share_prompts=False)
        assert calls.rows == [12]  # one call over all rows: the model's own forward
    finally:
        calls.close()
    assert bool(torch.isfinite(logp).all()) and bool(torch.isfinite(ent).all())


def test_a_soft_capped_qwen2_config_keeps_the_plain_path(model, monkeypatch):
    monkeypatch.setattr(model.config, "final_logit_softcapping", 30.0, raising=False)
    assert chunk_rows(model, 10**6, 7) is None


def test_chunked_under_bf16_autocast_matches_and_backpropagates(model):
    """Mixed precision: the checkpointed recomputation runs under the same autocast, and the values
    stay within bfloat16 rounding of the plain path's."""
    batch = _batch()
    outs = []
    for rows in (0, 4):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logp, ent = _run(model, batch, logit_chunk=rows)
        assert logp.dtype == ent.dtype == torch.float32
        (logp * batch[3]).sum().backward()
        outs.append((logp.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=0, atol=2e-2)
    for g0, g1 in zip(outs[0][1], outs[1][1], strict=True):
        assert bool(torch.isfinite(g1).all())
        assert float((g1 - g0).norm()) <= 0.05 * float(g0.norm()) + 1e-6


# ---------------------------------------------------------------- sum_v pi(v)^2 (stat="sum_pi_sq")


def _full_logits(model, batch, temperature):
    """[N, T, V] the logits of every completion position from one plain forward over prompt +
    completion (the next-token logits of positions P-1 .. P+T-2), divided by the temperature."""
    prompt_ids, prompt_mask, comp, mask = batch
    ids = torch.cat([prompt_ids, comp], 1)  # [N, P+T]
    attn = torch.cat([prompt_mask, mask.long()], 1)  # [N, P+T]
    pos = (attn.cumsum(-1) - 1).clamp(min=0)  # [N, P+T]
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits  # [N, P+T, V]
    p, t = prompt_ids.shape[1], comp.shape[1]
    return logits[:, p - 1 : p + t - 1].float() / temperature  # [N, T, V]


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("rows", [0, 1, 5])
def test_sum_pi_sq_equals_softmax_squares_of_the_full_logits(model, share, rows):
    batch = _batch()
    with torch.no_grad():
        want = torch.softmax(_full_logits(model, batch, 0.7), -1).pow(2).sum(-1)  # [N, T]
        logp, got = _run(
            model, batch, temperature=0.7, share_prompts=share, logit_chunk=rows, stat="sum_pi_sq"
        )
        plain_lp, _ = _run(model, batch, temperature=0.7, share_prompts=share, logit_chunk=rows)
    m = batch[3].bool()
    assert got.shape == batch[3].shape
    torch.testing.assert_close(got[m], want[m], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(logp, plain_lp, rtol=0, atol=1e-6)  # the log-probs are unchanged
    assert bool((got > 0).all()) and bool((got <= 1 + 1e-6).all())
    assert bool((got >= 1 / V - 1e-7).all())  # >= 1/V, the uniform distribution's


def test_sum_pi_sq_hand_values_and_unknown_stat():
    # softmax([0, ln 3]) = (1/4, 3/4): 1/16 + 9/16 = 5/8; a uniform row over 2 tokens: 1/2
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, 5.0]]])  # [1, 2, 2]
    _, s = lp.token_logp(logits, torch.zeros(1, 2, dtype=torch.long), stat="sum_pi_sq")
    torch.testing.assert_close(s, torch.tensor([[5 / 8, 1 / 2]]))
    with pytest.raises(ValueError, match="stat"):
        lp.token_logp(logits, torch.zeros(1, 2, dtype=torch.long), stat="variance")  # type: ignore[arg-type]
