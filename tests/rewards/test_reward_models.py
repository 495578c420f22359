"""Reward models, ensembles, PAR, PRM and the likelihood reward, on tiny models the tests build.

A module fixture trains a tiny ``Qwen2ForSequenceClassification`` (the micro base model's tokenizer,
a fresh small config) for 100 steps on a synthetic preference: for the prompt "The answer is d.",
the completion "<answer>d</answer>" beats "<answer>w</answer>" (w != d). It is saved to a temporary
directory and every test loads it by path, as a user would.
"""

from __future__ import annotations

import math
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2ForSequenceClassification,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

from rlvr.data.prompts import format_prompt
from rlvr.models.hf import check_model_dir, load_model
from rlvr.registry import KnobError
from rlvr.rewards.models import (
    EnsembleScorer,
    LikelihoodReward,
    ProcessReward,
    SequenceScorer,
    answer_logprobs,
    combine_scores,
    split_steps,
)
from rlvr.rewards.verifiers import REWARDS, BatchedReward


def _chat(tok, prompt: str, completion: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
        tokenize=False,
    )


def _pair(rng: random.Random) -> tuple[str, str, str]:
    d = rng.randint(0, 9)
    w = rng.choice([x for x in range(10) if x != d])
    return f"The answer is {d}.", f"<answer>{d}</answer>", f"<answer>{w}</answer>"


def _small_rm(tok, seed: int, num_labels: int = 1) -> Qwen2ForSequenceClassification:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        num_labels=num_labels,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    return Qwen2ForSequenceClassification(cfg)


def _gpt2_rm(tok) -> GPT2ForSequenceClassification:
    torch.manual_seed(3)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=128,
        num_labels=1,
        pad_token_id=None,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    return GPT2ForSequenceClassification(cfg).eval()


def _train_rm(tok, seed: int, steps: int) -> Qwen2ForSequenceClassification:
    """Bradley-Terry training on the synthetic preference, right-padded batches of 32 pairs."""
    model = _small_rm(tok, seed)
    rng = random.Random(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        pairs = [_pair(rng) for _ in range(32)]
        texts = [_chat(tok, p, c) for p, c, _ in pairs] + [_chat(tok, p, r) for p, _, r in pairs]
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(len(s) for s in ids)
        x = torch.full((len(ids), width), tok.pad_token_id)  # [2b, L]
        m = torch.zeros((len(ids), width), dtype=torch.long)  # [2b, L]
        for i, s in enumerate(ids):
            x[i, : len(s)] = torch.tensor(s)
            m[i, : len(s)] = 1
        r = model(input_ids=x, attention_mask=m).logits[:, 0]  # [2b]
        loss = -torch.nn.functional.logsigmoid(r[:32] - r[32:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine two threads
    that wait on each other make training ~10x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def rm_dirs(micro_base, tmp_path_factory) -> dict[str, Path]:
    """Reward-model directories: ``main`` (trained), ``other`` (untrained, another seed), ``plain``
    (``main`` whose tokenizer has no chat template), ``two`` (two outputs), ``gpt2`` (untrained GPT-2
    classifier: absolute positions, and no pad id in its config)."""
    root = tmp_path_factory.mktemp("rms")
    tok = AutoTokenizer.from_pretrained(micro_base)
    out = {}
    for name, model in (
        ("main", _train_rm(tok, seed=0, steps=100)),
        ("other", _small_rm(tok, seed=1)),
        ("two", _small_rm(tok, seed=2, num_labels=2)),
        ("gpt2", _gpt2_rm(tok)),
    ):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
        out[name] = root / name
    plain = root / "plain"
    shutil.copytree(out["main"], plain)
    for f in plain.glob("chat_template*"):
        f.unlink()
    plain_tok = AutoTokenizer.from_pretrained(plain)
    plain_tok.chat_template = None
    plain_tok.save_pretrained(plain)
    out["plain"] = plain
    return out


def _samples(n: int, seed: int = 7) -> tuple[list[str], list[str], list[str]]:
    """n (prompt, completion, answer) triples of varied lengths, half right, half wrong."""
    rng = random.Random(seed)
    prompts, comps, answers = [], [], []
    for i in range(n):
        p, good, bad = _pair(rng)
        pad = " and so on" * (i % 4)  # different lengths in one batch
        prompts.append(p)
        comps.append((good if i % 2 == 0 else bad) + pad)
        answers.append(good[len("<answer>") : -len("</answer>")])
    return prompts, comps, answers


# ---------------------------------------------------------------- directories and registry


def test_registered_with_knobs():
    for name in ("reward_model", "ensemble", "prm", "likelihood"):
        assert name in REWARDS
    REWARDS.check_knobs("reward_model", {"path": "x", "normalize": "sigmoid", "par": True})
    REWARDS.check_knobs("ensemble", {"paths": "a,b", "combine": "mean_minus_var", "lam": 0.5})
    with pytest.raises(KnobError, match="normalize"):
        REWARDS.check_knobs("reward_model", {"normalize": "tanh"})
    with pytest.raises(KnobError, match="paths"):
        REWARDS.check_knobs("ensemble", {"paths": ["a", "b"]})
    with pytest.raises(KnobError, match="combine"):
        REWARDS.check_knobs("ensemble", {"combine": "max"})
    with pytest.raises(KnobError, match="shaping"):
        REWARDS.check_knobs("prm", {"shaping": "pure"})
    with pytest.raises(KnobError, match="batch_size"):
        REWARDS.check_knobs("likelihood", {"batch_size": 0})


def test_missing_or_invalid_directory_names_path_and_what(tmp_path, rm_dirs):
    with pytest.raises(FileNotFoundError, match="'path' is empty"):
        REWARDS["reward_model"]()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path / 'nope'} does not exist")):
        REWARDS["reward_model"](path=str(tmp_path / "nope"))
    d = tmp_path / "d"
    d.mkdir()
    with pytest.raises(FileNotFoundError, match=r"has no config\.json"):
        check_model_dir(d)
    (d / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"has no weights"):
        REWARDS["ensemble"](paths=f"{rm_dirs['main']},{d}")
    (d / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="has no tokenizer"):
        REWARDS["prm"](path=str(d))
    with pytest.raises(ValueError, match="device must be"):
        SequenceScorer(rm_dirs["main"], device="gpu0")
    with pytest.raises(ValueError, match="dtype must be"):
        LikelihoodReward(dtype="half")
    with pytest.raises(FileNotFoundError, match="likelihood model"):
        REWARDS["likelihood"](path=str(tmp_path / "nope"))


def test_causal_lm_directory_is_refused_with_the_path(micro_base):
    # loading would give a randomly initialised score head; the architecture is checked first
    scorer = SequenceScorer(micro_base)
    with pytest.raises(ValueError, match=r"is a Qwen2ForCausalLM, not a sequence classification"):
        scorer.score(["p"], ["c"])


# ---------------------------------------------------------------- one reward model


def test_trained_model_prefers_the_right_answer(rm_dirs):
    rng = random.Random(123)
    pairs = [_pair(rng) for _ in range(100)]
    scorer = SequenceScorer(rm_dirs["main"], device="cpu")
    good = scorer.score([p for p, _, _ in pairs], [c for _, c, _ in pairs])
    bad = scorer.score([p for p, _, _ in pairs], [r for _, _, r in pairs])
    acc = sum(g > b for g, b in zip(good, bad, strict=True)) / len(pairs)
    assert acc >= 0.75


def test_batched_equals_one_by_one(rm_dirs):
    prompts, comps, answers = _samples(13)
    fn = REWARDS["reward_model"](path=str(rm_dirs["main"]), batch_size=5, device="cpu")
    assert isinstance(fn, BatchedReward) and not fn.needs_policy
    batched = fn(prompts, comps, answers, [{}] * 13, group_size=1)
    single = REWARDS["reward_model"](path=str(rm_dirs["main"]), batch_size=1, device="cpu")
    alone = single(prompts, comps, answers, [{}] * 13, group_size=1)
    assert len(batched) == 13 and len(set(batched)) > 1
    assert batched == pytest.approx(alone, abs=1e-5)


def test_padding_invariance_and_pooling_at_last_token(rm_dirs):
    scorer = SequenceScorer(rm_dirs["main"], device="cpu")
    model, tok = scorer.load()
    assert tok.padding_side == "left"  # the tokenizer's side does not matter: we pad on the right
    short = scorer.encode("The answer is 3.", "<answer>3</answer>")
    long_ = scorer.encode("The answer is 3.", "<answer>3</answer>" + " and so on" * 10)
    mixed = scorer.score_ids([short, long_, short])
    assert mixed[0] == pytest.approx(scorer.score_ids([short])[0], abs=1e-5)
    assert mixed[2] == pytest.approx(mixed[0], abs=1e-6)
    # the score is the head's output at the last real token of the unpadded sequence
    with torch.no_grad():
        out = model.model(input_ids=torch.tensor([short])).last_hidden_state  # [1, L, H]
        want = model.score(out[:, -1]).item()
    assert mixed[0] == pytest.approx(want, abs=1e-5)


def test_absolute_positions_and_no_pad_id_in_config(rm_dirs):
    # GPT-2 has learned absolute positions: left padding would shift them; right padding does not
    scorer = SequenceScorer(rm_dirs["gpt2"], device="cpu", batch_size=7)
    prompts, comps, _ = _samples(7)
    batched = scorer.score(prompts, comps)
    model, tok = scorer.load()
    assert model.config.pad_token_id == tok.pad_token_id  # taken from the tokenizer
    with torch.no_grad():
        alone = [
            model(input_ids=torch.tensor([scorer.encode(p, c)])).logits[0, 0].item()
            for p, c in zip(prompts, comps, strict=True)
        ]
    assert batched == pytest.approx(alone, abs=1e-5)


def test_no_chat_template_plain_text(rm_dirs):
    scorer = SequenceScorer(rm_dirs["plain"], device="cpu")
    assert scorer.text("Q", "A") == "Q\nA"
    prompts, comps, _ = _samples(6)
    batched = scorer.score(prompts, comps)
    scorer.batch_size = 1
    assert batched == pytest.approx(scorer.score(prompts, comps), abs=1e-5)


def test_normalize_sigmoid_and_truncation(rm_dirs):
    prompts, comps, _ = _samples(4)
    raw = SequenceScorer(rm_dirs["main"], device="cpu").score(prompts, comps)
    sig = SequenceScorer(rm_dirs["main"], device="cpu", normalize="sigmoid").score(prompts, comps)
    assert sig == pytest.approx([1 / (1 + math.exp(-r)) for r in raw], abs=1e-6)
    cut = SequenceScorer(rm_dirs["main"], device="cpu", max_length=8)
    ids = cut.encode(prompts[0], comps[0] + " and so on" * 20)
    full = SequenceScorer(rm_dirs["main"], device="cpu").encode(prompts[0], comps[0] + " and so on" * 20)
    assert len(ids) == 8 and ids == full[-8:]  # the end is kept


def test_several_outputs_need_a_label(rm_dirs):
    scorer = SequenceScorer(rm_dirs["two"], device="cpu")
    with pytest.raises(ValueError, match="set the knob 'label'"):
        scorer.score(["p"], ["c"])
    s1 = SequenceScorer(rm_dirs["two"], device="cpu", label=1)
    model, _ = s1.load()
    ids = s1.encode("p", "c")
    with torch.no_grad():
        want = model(input_ids=torch.tensor([ids])).logits[0, 1].item()
    assert s1.score(["p"], ["c"])[0] == pytest.approx(want, abs=1e-6)


# ---------------------------------------------------------------- ensembles


def test_combine_scores_hand_values():
    s = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, -1.0]])  # [K=2, N=3]
    assert combine_scores(s, "mean").tolist() == pytest.approx([2.0, 2.0, 1.0])
    assert combine_scores(s, "min").tolist() == pytest.approx([1.0, 2.0, -1.0])
    # population variance: [1, 0, 4]
    assert combine_scores(s, "mean_minus_var", lam=0.5).tolist() == pytest.approx([1.5, 2.0, -1.0])
    one = torch.tensor([[0.3, -0.7]])
    for c in ("mean", "min", "mean_minus_var"):
        assert combine_scores(one, c, lam=3.0).tolist() == pytest.approx([0.3, -0.7])
    with pytest.raises(ValueError, match="combine must be"):
        combine_scores(s, "max")


def test_ensemble_reward_equals_combined_member_scores(rm_dirs):
    prompts, comps, answers = _samples(6)
    a = SequenceScorer(rm_dirs["main"], device="cpu").score(prompts, comps)
    b = SequenceScorer(rm_dirs["other"], device="cpu").score(prompts, comps)
    both = torch.tensor([a, b])  # [2, N]
    for combine in ("mean", "min", "mean_minus_var"):
        fn = REWARDS["ensemble"](
            paths=f"{rm_dirs['main']}, {rm_dirs['other']}", combine=combine, lam=2.0, device="cpu"
        )
        got = fn(prompts, comps, answers, [{}] * 6, group_size=2)
        assert got == pytest.approx(combine_scores(both, combine, lam=2.0).tolist(), abs=1e-5)
    listed = REWARDS["ensemble"](paths=[str(rm_dirs["main"])], device="cpu")
    assert listed(prompts, comps, answers, [{}] * 6, group_size=2) == pytest.approx(a, abs=1e-5)
    with pytest.raises(ValueError, match="'paths' is empty"):
        REWARDS["ensemble"](paths=" , ")
    with pytest.raises(ValueError, match="combine must be"):
        EnsembleScorer([SequenceScorer(rm_dirs["main"])], "max")


# ---------------------------------------------------------------- PAR


def test_par_against_the_reference_answer(rm_dirs):
    prompts, comps, answers = _samples(8)
    fn = REWARDS["reward_model"](path=str(rm_dirs["main"]), par=True, device="cpu")
    got = fn(prompts, comps, answers, [{}] * 8, group_size=2)
    scorer = SequenceScorer(rm_dirs["main"], device="cpu")
    s = scorer.score(prompts, comps)
    ref = scorer.score(prompts, [f"<answer>{a}</answer>" for a in answers])
    want = [1 / (1 + math.exp(-(x - y))) for x, y in zip(s, ref, strict=True)]
    assert got == pytest.approx(want, abs=1e-5)
    assert all(0 < v < 1 for v in got)
    # the reference answer itself scores exactly 0.5
    refs = [f"<answer>{a}</answer>" for a in answers]
    assert fn(prompts, refs, answers, [{}] * 8, group_size=2) == pytest.approx([0.5] * 8, abs=1e-6)
    with pytest.raises(ValueError, match="ref_template"):
        REWARDS["reward_model"](path=str(rm_dirs["main"]), par=True, ref_template="<answer>")


# ---------------------------------------------------------------- PRM


def test_split_steps():
    assert split_steps("a\n\nb") == ["a", "a\n\nb"]
    assert split_steps("a\n\n\n\nb\n\n") == ["a", "a\n\n\n\nb"]
    assert split_steps("  \n\n") == []
    assert split_steps("one") == ["one"]
    assert split_steps("x|y|z", "|") == ["x", "x|y", "x|y|z"]
    with pytest.raises(ValueError, match="delimiter"):
        split_steps("x", "")


def test_prm_steps_shaping_and_sums(rm_dirs):
    prompts = ["The answer is 4.", "The answer is 2.", "The answer is 9."]
    comps = ["First\n\nthen <answer>4</answer>", "<answer>5</answer>", "\n\n"]
    scorer = SequenceScorer(rm_dirs["main"], device="cpu", normalize="sigmoid")
    r, m = ProcessReward(scorer).step_rewards(prompts, comps)
    assert r.shape == (3, 2) and m.tolist() == [[1, 1], [1, 0], [0, 0]]
    by_hand = scorer.score(
        [prompts[0], prompts[0], prompts[1]],
        ["First", "First\n\nthen <answer>4</answer>", "<answer>5</answer>"],
    )
    assert [r[0, 0].item(), r[0, 1].item(), r[1, 0].item()] == pytest.approx(by_hand, abs=1e-5)
    r1, r2, q = by_hand
    meta = [{}] * 3
    clip = REWARDS["prm"](path=str(rm_dirs["main"]), eta=0.5, device="cpu")
    assert clip(prompts, comps, ["4", "2", "9"], meta, group_size=1) == pytest.approx(
        [min(r1 - 0.5, 0) + min(r2 - 0.5, 0), min(q - 0.5, 0), 0.0], abs=1e-5
    )
    delta = REWARDS["prm"](path=str(rm_dirs["main"]), shaping="delta", device="cpu")
    assert delta(prompts, comps, ["4", "2", "9"], meta, group_size=1) == pytest.approx(
        [r1, q, 0.0], abs=1e-5
    )
    none = REWARDS["prm"](path=str(rm_dirs["main"]), shaping="none", device="cpu")
    assert none(prompts, comps, ["4", "2", "9"], meta, group_size=1) == pytest.approx(
        [r1 + r2, q, 0.0], abs=1e-5
    )


def test_pure_takes_its_process_rewards_from_a_prm(rm_dirs, micro_base, tmp_path, monkeypatch):
    """A PRM (weight 0) as the pure recipe's step reward: its sigmoid step scores reach pure_min."""
    import json

    from tests.conftest import micro_run

    import rlvr.train.advantage as trainer_mod  # where the credit inputs are supplied
    from rlvr.train.config import load_config
    from rlvr.train.trainer import train

    seen = []
    real = trainer_mod.credit_inputs

    def spy(roll, needs, kl):
        out = real(roll, needs, kl)
        seen.append(out["process_rewards"].clone())
        return out

    monkeypatch.setattr(trainer_mod, "credit_inputs", spy)
    prm = f'prm={{path="{rm_dirs["main"]}", weight=0.0, device="cpu"}}'
    cfg = load_config(
        "pure",
        micro_run(
            micro_base,
            "eval.before=false",
            "eval.after=false",
            "train.steps=2",
            f"rewards={{answer={{weight=1.0}}, {prm}}}",
        ),
    )
    train(cfg, run_dir=tmp_path / "r", progress=False)
    assert len(seen) == 2
    for p in seen:  # sigmoid probabilities on step ends, 0 elsewhere
        nz = p[p != 0]
        assert nz.numel() > 0 and bool(((nz > 0) & (nz < 1)).all())
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows)


# ---------------------------------------------------------------- likelihood


def _hand_logprobs(model, tok, context: str, target: str) -> list[float]:
    """One forward per target token on the unpadded prefix."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    tgt = tok(target, add_special_tokens=False)["input_ids"]
    out = []
    with torch.no_grad():
        for j, token in enumerate(tgt):
            ids = torch.tensor([ctx + tgt[:j]])
            logits = model(input_ids=ids).logits[0, -1].double()  # [V]
            out.append((logits.log_softmax(-1)[token]).item())
    return out


def test_likelihood_equals_hand_loop(micro_base):
    model, tok = load_model(micro_base)
    model.train()
    prompts = ["What is 1 + 2 + 3?", "What is 4 + 4 + 1?", "What is 9 + 0 + 5?"]
    comps = ["Adding up. <answer>7</answer>", "<answer>9</answer>", "no tags here"]
    answers = ["6", "9", "14"]
    fn = REWARDS["likelihood"](batch_size=2)
    assert fn.needs_policy
    got = fn(prompts, comps, answers, [{}] * 3, group_size=1, policy=(model, tok))
    assert model.training  # restored
    contexts = [
        format_prompt(tok, prompts[0]) + "Adding up. ",  # own answer stripped
        format_prompt(tok, prompts[1]),
        format_prompt(tok, prompts[2]) + "no tags here",
    ]
    hand = [
        _hand_logprobs(model.eval(), tok, c, f"<answer>{a}</answer>")
        for c, a in zip(contexts, answers, strict=True)
    ]
    assert got == pytest.approx([sum(h) / len(h) for h in hand], abs=1e-4)
    summed = REWARDS["likelihood"](reduce="sum", batch_size=3)
    assert summed(prompts, comps, answers, [{}] * 3, group_size=1, policy=(model, tok)) == (
        pytest.approx([sum(h) for h in hand], abs=1e-4)
    )
    per_token = answer_logprobs(model, tok, contexts, [f"<answer>{a}</answer>" for a in answers])
    assert [len(x) for x in per_token] == [len(h) for h in hand]
    assert all(v <= 0 for x in per_token for v in x)


def test_likelihood_own_model_and_errors(micro_base):
    model, tok = load_model(micro_base)
    prompts, comps, answers = ["What is 1 + 1 + 1?"], ["<answer>3</answer>"], ["3"]
    via_policy = LikelihoodReward()(prompts, comps, answers, [{}], group_size=1, policy=(model, tok))
    own = REWARDS["likelihood"](path=str(micro_base), device="cpu")
    assert not own.needs_policy
    assert own(prompts, comps, answers, [{}], group_size=1) == pytest.approx(via_policy, abs=1e-5)
    with pytest.raises(ValueError, match="no policy was passed"):
        LikelihoodReward()(prompts, comps, answers, [{}], group_size=1)
    with pytest.raises(ValueError, match="template must contain"):
        LikelihoodReward(template="<answer>")
    with pytest.raises(ValueError, match="target 0"):
        answer_logprobs(model, tok, ["x"], [""])
