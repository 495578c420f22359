"""Golden metrics: what the training loop produced, per configuration, before the loop was redesigned.

A run's ``metrics.jsonl`` (timing fields aside), its ``samples.jsonl`` and the keys of its newest
``trainer_state.pt`` are recorded once per case by ``scripts/golden.py record`` from a known-good
commit, into ``tests/train/golden.json``; ``tests/train/test_golden.py`` (and ``scripts/golden.py
check``) run the same cases on today's code and compare: numbers to float round-off, texts exactly.

Every case runs on the micro model of ``tests/conftest.py`` with one torch thread. The in-process cases
(every shipped recipe and the feature combinations) run in the test suite; the scale-out cases (learner
ranks under torchrun, Ray workers, asynchronous rollouts, FSDP) are run by the script, and the scale
tests compare their own runs with the same records.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

GOLDEN = Path(__file__).with_name("golden.json")
TIMING = {"gen_time", "greedy_time", "learn_time", "step_time", "tokens_per_s"}
DENSE = ["rewards.answer.weight=0.0", "rewards.length.weight=0.9"]

# the runs of tests/train/test_recipes.py: 2 steps, a checkpoint at step 2
RECIPE_RUN = [
    "eval.before=false",
    "eval.after=false",
    "eval.every=0",
    "train.steps=2",
    "train.checkpoint_every=2",
    "optim.lr=1e-2",
    "optim.warmup_steps=0",
]

# feature combinations on grpo: 3 steps (checkpoint at 2 and 3), the dense reward unless said
_RUN = [
    "eval.before=false",
    "eval.after=false",
    "train.steps=3",
    "train.checkpoint_every=2",
    "train.samples_every=2",
    "optim.lr=1e-2",
]
_POOL = ["sampling.pool_size=12"]
FEATURES: dict[str, tuple[str, list[str]]] = {
    "dynamic_sampling": ("grpo", [*DENSE, "sampling.dynamic_sampling=true", "sampling.max_rounds=3"]),
    "dynamic_sampling_fill": ("grpo", ["sampling.dynamic_sampling=true", "sampling.max_rounds=2"]),
    "guidance_hints": (
        "grpo",
        ["guidance.strategy='hints'", "guidance.max_tier=3", "guidance.reveal_answer=true"],
    ),
    "guidance_prefix": (
        "grpo",
        ["guidance.strategy='prefix'", "guidance.max_tier=3", "guidance.max_frac=1.0"],
    ),
    "replay": (
        "grpo",
        [
            *DENSE,
            "sampling.replay_fraction=0.5",
            "sampling.replay_max_age=2",
            "rollout.prompts_per_step=4",
        ],
    ),
    "replay_dynamic": (
        "grpo",
        [
            *DENSE,
            "sampling.replay_fraction=0.5",
            "rollout.prompts_per_step=4",
            "sampling.dynamic_sampling=true",
            "sampling.max_rounds=2",
        ],
    ),
    "knapsack": (
        "grpo",
        [
            *DENSE,
            "sampling.strategy='knapsack'",
            "sampling.pool_size=6",
            "sampling.max_rollouts=8",
            "rollout.prompts_per_step=3",
            "algo.minibatches=2",
        ],
    ),
    "vade": ("grpo", [*DENSE, "sampling.strategy='vade'", *_POOL]),
    "difficulty_targeted": ("grpo", [*DENSE, "sampling.strategy='difficulty_targeted'", *_POOL]),
    "curriculum": ("grpo", [*DENSE, "sampling.strategy='curriculum'", *_POOL]),
    "sec": ("grpo", [*DENSE, "sampling.strategy='sec'", *_POOL]),
    "mixture_fit": (
        "grpo",
        [
            *DENSE,
            "sampling.strategy='mixture_fit'",
            *_POOL,
            "task.mixture={chain_sum = {weight = 1.0}, basic_arithmetic = {weight = 1.0}}",
        ],
    ),
    "pool_uniform_dynamic": (
        "grpo",
        [*DENSE, *_POOL, "sampling.dynamic_sampling=true", "sampling.max_rounds=2"],
    ),
    "critic_outcome": ("grpo", [*DENSE, "critic.enabled=true"]),
    "ppo_epochs": ("ppo", [*DENSE, "algo.epochs=2", "algo.minibatches=2"]),
    "kl_loss": ("grpo", [*DENSE, "algo.beta=0.05"]),
    "kl_reward": ("grpo", [*DENSE, "algo.beta=0.05", "algo.kl_in='reward'"]),
    "kl_adaptive": ("grpo", [*DENSE, "algo.beta=0.05", "algo.kl_target=0.001", "algo.kl_horizon=10"]),
    "kl_adaptive_reward": (
        "grpo",
        [*DENSE, "algo.beta=0.05", "algo.kl_in='reward'", "algo.kl_target=0.001", "algo.kl_horizon=10"],
    ),
    "ref_reset": ("grpo", [*DENSE, "algo.beta=0.05", "algo.ref_reset_every=2", "algo.kl='k2'"]),
    "epochs_minibatches": (
        "grpo",
        [*DENSE, "algo.epochs=2", "algo.minibatches=2", "algo.micro_batches=2"],
    ),
    "entropy_coef": ("grpo", [*DENSE, "algo.entropy_coef=0.01"]),
    "lr_cosine": (
        "grpo",
        [*DENSE, "optim.schedule='cosine'", "optim.warmup_steps=1", "optim.min_lr_ratio=0.1"],
    ),
    "lr_linear": ("grpo", [*DENSE, "optim.schedule='linear'", "optim.min_lr_ratio=0.2"]),
    "shaping": (
        "grpo",
        [*DENSE, "shaping.overlong={buffer=2}", "shaping.cosine_length={}"],
    ),
    "mid_eval": ("grpo", [*DENSE, "eval.every=1", "eval.samples=2", "task.heldout_size=4"]),
    "bfloat16": ("grpo", [*DENSE, "model.dtype='bfloat16'"]),
    "env_calculator": (
        "grpo",
        [
            "task.source='env'",
            "task.env='calculator'",
            "task.verifier='env_success'",
            "rewards={answer = {weight = 0.0}, format = {weight = 0.0}, env = {weight = 1.0}}",
            "task.heldout_size=4",
            "rollout.max_new_tokens=8",
            "rollout.max_turns=3",
        ],
    ),
    "env_gigpo_turns": (
        "grpo",
        [
            "task.source='env'",
            "task.env='gridworld'",
            "task.verifier='env_success'",
            "rewards={answer = {weight = 0.0}, format = {weight = 0.0}, env = {weight = 1.0}}",
            "task.heldout_size=4",
            "rollout.max_new_tokens=8",
            "rollout.max_turns=3",
            "algo.credit='gigpo_turns'",
        ],
    ),
    "schedule": (  # [schedule]: the cap, a reward weight and an objective knob change every step
        "grpo",
        [
            *DENSE,
            "schedule.rollout.max_new_tokens=[[1, 6], [3, 2]]",
            "schedule.rewards.length.weight={points = [[1, 0.9], [3, 0.3]], kind = 'cosine'}",
            "schedule.algo.clip_high=[[1, 0.2], [3, 0.3]]",
        ],
    ),
    "reward_weights_lagrange": (  # Lagrange multipliers keep the length reward's mean below 0.2
        "grpo",
        [
            *DENSE,
            "reward_weights.controller='lagrange'",
            "reward_weights.at_most={length = 0.2}",
            "reward_weights.lr=2.0",
        ],
    ),
    "reward_weights_readiness": (  # the next stage's weights once the length reward reaches 0.1
        "grpo",
        [
            *DENSE,
            "reward_weights.controller='readiness'",
            "reward_weights.stages=[{length = 0.3, answer = 0.6}]",
            "reward_weights.track='length'",
            "reward_weights.threshold=0.1",
            "reward_weights.window=2",
        ],
    ),
}


def recipe_extra(name: str, teacher: Path | None = None) -> list[str]:
    """The overrides tests/train/test_recipes.py adds for recipe ``name`` on the micro batch;
    ``teacher``: the micro model's teacher (``tests.conftest.MICRO_TEACHER``), for a recipe with a
    [teacher] (whose own teacher does not share the micro model's tokenizer)."""
    from rlvr.train.config import read_recipe

    data = read_recipe(name)
    algo = data.get("algo", {})
    split = algo.get("minibatches", 1) * algo.get("micro_batches", 1)
    extra = [] if 8 % split == 0 else ["algo.minibatches=1", "algo.micro_batches=1"]
    if "pass_k" in algo:
        extra.append("algo.pass_k=1")
    if "accept_reward" in algo:  # rejection sampling: the dense reward (in [0, 1]) rarely reaches 1
        extra.append("algo.accept_reward=0.5")
    if data.get("rollout", {}).get("branching") and data["rollout"].get("branch_roots", 2) >= 4:
        extra.append("rollout.branch_roots=2")  # the micro group has 4 samples: still a tree
    if "correct_at" in algo:  # SCOPE's correct / wrong routing at the dense reward's midpoint
        extra.append("algo.correct_at=0.5")
    if algo.get("reincarnate_at"):  # ReMix: reincarnated after step 1, on-policy at step 2
        extra.append("algo.reincarnate_at=1")
    if algo.get("credit") == "oprl":  # the first step's implicit rewards are round-off (~1e-8: the
        # PRM is still the reference), and whitening them with eps 1e-6 made a processor-dependent
        # advantage (adv_std off by 1e-3 with other kernels); eps 1e-3 keeps the record portable
        extra.append("algo.eps=0.001")
    if "adora_lambda" in algo:  # ADORA's correct / wrong split at the dense reward's midpoint
        extra.append("algo.success_reward=0.5")
    if data.get("rollout", {}).get("samples_per_prompt") == 1:  # one rollout per prompt (mssr)
        extra += ["rollout.samples_per_prompt=1", "rollout.prompts_per_step=8"]
    if data.get("teacher") and teacher is not None:
        extra.append(f"teacher.path={json.dumps(str(teacher))}")
    return extra


def in_process_cases(teacher: Path | None = None) -> dict[str, tuple[str, list[str]]]:
    """case -> (recipe, overrides after ``micro_run``'s): every shipped recipe, then the features
    (``teacher``: as for :func:`recipe_extra`)."""
    from rlvr.train.config import recipe_names

    cases = {
        f"recipe/{name}": (name, [*RECIPE_RUN, *DENSE, *recipe_extra(name, teacher)])
        for name in recipe_names()
    }
    cases.update({f"feature/{k}": (recipe, [*_RUN, *extra]) for k, (recipe, extra) in FEATURES.items()})
    return cases


def record_of(run_dir: Path) -> dict[str, Any]:
    """What a case keeps of its run directory."""
    metrics = [
        {k: v for k, v in json.loads(ln).items() if k not in TIMING}
        for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
        if ln.strip()
    ]
    samples_path = run_dir / "samples.jsonl"
    samples = (
        [json.loads(ln) for ln in samples_path.read_text().splitlines() if ln.strip()]
        if samples_path.exists()
        else []
    )
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    state = torch.load(run_dir / "checkpoints" / latest / "trainer_state.pt", weights_only=False)
    return {"metrics": metrics, "samples": samples, "state_keys": sorted(state)}


def load_golden() -> dict[str, Any]:
    return json.loads(GOLDEN.read_text())


def differences(
    want: Any, got: Any, where: str = "", rel: float = 1e-4, abs_: float = 1e-6
) -> list[str]:
    """Where ``got`` differs from ``want``: numbers beyond round-off, anything else at all."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        if set(want) != set(got):
            out.append(f"{where}: keys {sorted(set(want) ^ set(got))} in one only")
        for k in sorted(set(want) & set(got)):
            out += differences(want[k], got[k], f"{where}.{k}", rel, abs_)
        return out
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{where}: {len(want)} items recorded, {len(got)} now"]
        out = []
        for i, (a, b) in enumerate(zip(want, got, strict=True)):
            out += differences(a, b, f"{where}[{i}]", rel, abs_)
        return out
    num = (int, float)
    if isinstance(want, num) and isinstance(got, num) and not isinstance(want, bool):
        if math.isnan(want) and math.isnan(got):
            return []
        if math.isclose(want, got, rel_tol=rel, abs_tol=abs_):
            return []
        return [f"{where}: recorded {want!r}, now {got!r}"]
    return [] if want == got else [f"{where}: recorded {want!r}, now {got!r}"]


def check(case: str, run_dir: Path) -> None:
    """Assert that the run in ``run_dir`` repeats the golden record of ``case``."""
    want = load_golden()[case]
    diffs = differences(want, record_of(run_dir), case)
    assert not diffs, "\n".join(diffs[:20])


SCALE_REWARD = '''
def length(prompt, completion, answer, **meta):
    """Dense: the micro model never answers right, so the task reward alone gives no gradient."""
    return min(len(completion), 20) / 20
'''


def scale_overrides(micro_base: Path, tmp_path: Path, *extra: str) -> list[str]:
    """The overrides of the scale-out runs (tests/train/test_scale_runs.py and the scale cases of
    scripts/golden.py): 4 prompts x 4 samples, one thread, the dense reward from a file (the ranks
    and workers are other processes, which a registered test reward does not reach)."""
    fn = tmp_path / "dense.py"
    fn.write_text(SCALE_REWARD)
    return [
        f"model.path={json.dumps(str(micro_base))}",
        "model.device='cpu'",
        "rollout.prompts_per_step=4",
        "rollout.samples_per_prompt=4",
        "rollout.max_new_tokens=6",
        "task.heldout_size=8",
        "eval.samples=2",
        "eval.before=false",
        "eval.after=false",
        "optim.lr=0.003",
        "train.threads=1",
        "rewards.answer.weight=0.0",
        f'rewards.length={{function = "{fn}:length", weight = 0.9}}',
        *extra,
    ]
