"""The embedded reasoning base: a registered recipe with a stable hash, built by rlvr sft on worked
solutions of a task mixture, chosen by ``model.embedded = "reasoner"`` and ``rlvr base --embedded``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from tests.conftest import skip_where_unportable
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.models.tiny import EMBEDDED, REASONER_MIXTURE, TinyRecipe, build_base

# the shipped recipe at test sizes: the same code path (a tokenizer on worked solutions, rlvr sft's
# packed loop on a mixture) with a 64-wide model, 120 steps of 4 rows (about 6 s) and a one-family
# mixture whose steps such a model learns to write in that time
MINI = dataclasses.replace(
    EMBEDDED["reasoner"],
    mixture={"chain_sum": {"weight": 1.0, "min_terms": 2, "max_terms": 3, "max_digits": 1}},
    vocab_size=400,
    hidden_size=64,
    num_layers=2,
    num_heads=2,
    intermediate_size=128,
    sft_steps=120,
    sft_batch=4,
    sft_lr=1e-2,
    sft_warmup=5,
    tokenizer_corpus=300,
    heldout_size=16,
)


@pytest.fixture(scope="module")
def mini_reasoner(tmp_path_factory):
    return build_base(MINI, tmp_path_factory.mktemp("reasoner") / "base", progress=False)


def test_the_reasoner_recipe_is_registered_and_hashes_stably():
    r = EMBEDDED["reasoner"]
    assert r.demos == "solutions" and r.mixture == REASONER_MIXTURE
    assert r.key() == TinyRecipe(**json.loads(json.dumps(dataclasses.asdict(r)))).key()
    assert r.key() == "bfa5f6d3f1049740"  # changes only with the recipe (or _SOLUTIONS_VERSION)
    assert len({e.key() for e in EMBEDDED.values()}) == len(EMBEDDED)
    assert dataclasses.replace(r, mixture={**REASONER_MIXTURE, "gcd": {"weight": 2.0}}).key() != r.key()
    # the train recipe trains it on the same mixture, so its held-out problems are the base's
    from rlvr.train.config import load_config

    cfg = load_config("reasoner_grpo")
    assert cfg.model.embedded == "reasoner" and cfg.task.mixture == REASONER_MIXTURE
    assert cfg.task.split_seed == r.seed and cfg.task.heldout_size == r.heldout_size


def test_a_mini_build_loads_and_writes_steps_before_its_answer(mini_reasoner):
    skip_where_unportable("the mini reasoner's greedy answers")
    from rlvr.data.prompts import format_prompt
    from rlvr.data.tasks import ReasoningGymTask, mixture_kwargs
    from rlvr.rewards.verifiers import extract_answer

    info = json.loads((mini_reasoner / "rlvr_base.json").read_text())
    assert info["key"] == MINI.key() and info["recipe"]["demos"] == "solutions"
    assert info["sft"]["after"]["heldout_loss"] < info["sft"]["before"]["heldout_loss"]
    tok = AutoTokenizer.from_pretrained(mini_reasoner)
    model = AutoModelForCausalLM.from_pretrained(mini_reasoner)
    task = ReasoningGymTask("composite", heldout_size=MINI.heldout_size, **mixture_kwargs(MINI.mixture))
    stepped = 0
    for p in task.heldout[:8]:
        ids = tok(format_prompt(tok, p.question), add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=96, do_sample=False)
        text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        head = text.split("<answer>")[0]
        stepped += extract_answer(text) is not None and "=" in head and "\n" in head
    assert stepped >= 6, "the mini reasoner should write its steps, then <answer>...</answer>"


def test_model_embedded_reasoner_resolves_to_the_reasoner_base(monkeypatch, tmp_path):
    from rlvr.train import setup
    from rlvr.train.config import load_config

    asked = []
    monkeypatch.setattr(setup, "ensure_base", lambda recipe, **kw: asked.append(recipe) or tmp_path)
    assert setup._base_path(load_config("reasoner_grpo"), progress=False) == tmp_path
    assert setup._base_path(load_config("grpo", ["model.embedded='reasoner'"]), False) == tmp_path
    assert asked == [EMBEDDED["reasoner"]] * 2


def test_cli_base_embedded_flag(monkeypatch, tmp_path, capsys):
    import rlvr.models.tiny as tiny
    from rlvr.cli import main

    asked = []
    monkeypatch.setattr(tiny, "ensure_base", lambda recipe, **kw: asked.append(recipe) or tmp_path)
    assert main(["base", "--embedded", "reasoner"]) == 0
    assert main(["base"]) == 0
    assert asked == [EMBEDDED["reasoner"], EMBEDDED["default"]]
    assert f"base model: {tmp_path}" in capsys.readouterr().out
    assert main(["base", "--embedded", "nope"]) == 2
    assert (
        "--embedded 'nope'; valid names: default, calculator, reasoner, reasoner_teacher, student"
        in capsys.readouterr().out
    )


def test_a_mixtures_evaluation_reports_each_family():
    from rlvr.data.tasks import Problem
    from rlvr.train.evaluation import by_family

    probs = [Problem("q", "1", {"source_dataset": f}) for f in ("gcd", "chain_sum", "gcd")]
    got = by_family(probs, [4, 0, 1], n=4)
    assert got == {
        "chain_sum": {"problems": 1, "pass@1": 0.0, "pass@4": 0.0},
        "gcd": {"problems": 2, "pass@1": 5 / 8, "pass@4": 1.0},
    }
    assert by_family(probs[:1], [2], n=4) == {}  # one family: nothing to split
