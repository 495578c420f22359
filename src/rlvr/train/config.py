"""Recipes: a named choice of components and numbers, validated on load.

A recipe is a TOML (or YAML) file whose sections mirror the dataclasses below. Unknown fields, wrong
types and out-of-range values are refused with a message that names the field and what was expected:
a field's type is its annotation, its range the bound it declares beside its default (``bounded``),
both checked as the registry checks component knobs; checks of one field against another are code in
``validate``.
Extra keys in ``[algo]`` are knobs of the chosen components (for example ``clip_high`` of ``ppo_clip``),
routed by name to every chosen component whose signature accepts them.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from rlvr.algos import (
    ADVANTAGES,
    AGGREGATIONS,
    CREDIT,
    INPUTS,
    KL_ESTIMATORS,
    OBJECTIVES,
    SHAPING,
    TOKEN_WEIGHTS,
)
from rlvr.algos.reward_weights import REWARD_WEIGHTS
from rlvr.algos.weights import IS_CORRECTIONS
from rlvr.data.guidance import GUIDES
from rlvr.data.samplers import SAMPLERS
from rlvr.registry import (
    KnobError,
    Registry,
    UnknownComponentError,
    describe_type,
    in_bounds,
    parse_bound,
    type_matches,
)
from rlvr.rewards import REWARDS
from rlvr.rewards.runner import load_function
from rlvr.rewards.steps import StepReward
from rlvr.rollout.branch_points import BRANCH_POINTS
from rlvr.rollout.branch_points import INPUTS as BRANCH_INPUTS
from rlvr.train.schedule import ScheduleError, flatten_schedule, schedule_fields

__all__ = [
    "RECIPES_DIR",
    "Config",
    "ConfigError",
    "apply_overrides",
    "chosen_components",
    "load_config",
    "read_recipe",
    "recipe_names",
]

RECIPES_DIR = Path(__file__).parent / "recipes"


class ConfigError(ValueError):
    """A bad recipe or command-line value; the message names the field."""


def bounded(default: Any, bound: str, note: str = "") -> Any:
    """A field with a ``default`` and a valid range ``bound`` in the registry's syntax (``">= 1"``,
    ``"(0, 1]"``, ...; see :func:`rlvr.registry.parse_bound`), checked on load by ``validate``;
    ``note`` follows the bound in the error, e.g. ``"(0: never)"``."""
    parse_bound(bound)  # a typo in a bound fails at import
    return field(default=default, metadata={"bounds": bound, "note": note})


@dataclass
class LoraSettings:
    rank: int = bounded(0, ">= 0", note="(0: no adapters, full fine-tuning)")
    """LoRA rank r: low-rank adapters W + (alpha / r) B A on the policy's linear layers (peft), the
    only parameters trained; the reference is the same model with its adapters off (no second copy).
    0: full fine-tuning."""
    alpha: float = bounded(32.0, "> 0")
    """LoRA alpha: the adapters' update is scaled by alpha / rank."""
    dropout: float = bounded(0.0, "[0, 1)")
    """Dropout on the adapters' input while training. 0 keeps the learner's log-probs equal to the
    sampler's (dropout would make them differ at the same weights)."""
    targets: list[str] = field(default_factory=list)
    """Names of the modules that get adapters; empty: every attention and MLP projection the model
    has (q/k/v/o_proj, gate/up/down_proj of Qwen2, Llama, Mistral; c_attn/c_proj/c_fc of GPT-2),
    or peft's 'all-linear' for another architecture."""


@dataclass
class ModelConfig:
    path: str = ""
    """Local Hugging Face causal-LM directory; empty means an embedded tiny base model (`embedded`)."""
    embedded: str = "default"
    """Which embedded tiny base model to build or reuse when `path` is empty: 'default' (trained on
    chain_sum answers), 'calculator' (also shown calculator tool calls, for the calculator env) or
    'reasoner' (writes worked steps before its answer, on the task mixture of the reasoner_grpo
    recipe; built by `rlvr sft`) or 'student' (the default's recipe with a fifth of its warm-up
    training: the same tokenizer, a weaker model, the opd recipes' student)."""
    device: str = "auto"
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    dtype: str = "float32"
    """'float32', or 'bfloat16': mixed precision as TRL's bf16 = true does it, float32 weights and
    optimizer state with the rollout generation and the learner's forwards under bfloat16 autocast
    (log-probs still computed in float32)."""
    gradient_checkpointing: bool = False
    """Recompute each decoder layer's activations in the backward of the learner's forward instead of
    keeping them (transformers' gradient checkpointing, on only during that forward): less memory
    for about one more forward per update. That forward then runs each row with its prompt instead
    of sharing a prompt's KV cache across its group (the same values up to rounding)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Low-rank adapters instead of full fine-tuning (`[model.lora]`, rank 0: off)."""


@dataclass
class TeacherConfig:
    """A frozen teacher model for on-policy distillation (`[teacher]`): loaded once, never trained,
    and only when a chosen component needs its log-probs (`teacher_logp`, e.g. credit = "opd")."""

    path: str = ""
    """Local Hugging Face causal-LM directory of the teacher; it wins over `embedded` when both are
    set. The teacher must use the policy's tokenizer (the same vocabulary, each token the same id):
    a run with another tokenizer is refused."""
    embedded: str = ""
    """An embedded tiny model as the teacher when `path` is empty (a name of `model.embedded`:
    'default', 'calculator', 'reasoner', 'reasoner_teacher', 'student'). Both empty: no teacher."""

    @property
    def enabled(self) -> bool:
        return bool(self.path or self.embedded)

    def describe(self) -> str:
        """The teacher as a user names it: ``teacher.path = '...'`` or ``teacher.embedded = '...'``."""
        return f"teacher.path = {self.path!r}" if self.path else f"teacher.embedded = {self.embedded!r}"


@dataclass
class TaskConfig:
    source: str = "reasoning_gym"
    """Where problems come from: 'reasoning_gym' (generated on the fly from `name`/`kwargs`, or a
    weighted `mixture` of tasks), 'file' (a JSONL / Parquet / CSV file or a `datasets` directory) or
    'env' (multi-turn episodes with the environment `env`, rlvr.envs)."""
    env: str = ""
    """The environment of source = 'env' (`rlvr.envs.ENVS`): 'calculator', 'gridworld', ..."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Knobs of source = 'env': those of the environment's factory go to it, the rest to its problem
    stream (e.g. min_terms / max_digits of the calculator's reasoning-gym task)."""
    name: str = "chain_sum"
    """reasoning-gym task name (source = 'reasoning_gym', no mixture)."""
    kwargs: dict[str, Any] = field(
        default_factory=lambda: {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1}
    )
    """The task's generation knobs (its reasoning-gym config fields; `rlvr tasks show NAME`)."""
    mixture: dict[str, Any] = field(default_factory=dict)
    """A weighted mixture of reasoning-gym tasks instead of `name`: task -> {weight, and the task's
    generation knobs}; each problem is scored by its own task's scorer."""
    path: str = ""
    """The dataset of source = 'file'."""
    prompt_field: str = "prompt"
    """Field with the prompt text (source = 'file')."""
    messages_field: str = ""
    """Field with a chat (a list of {role, content}) used instead of `prompt_field` when set."""
    answer_field: str = "answer"
    """Field with the reference answer (or the tests of a code problem; may be empty for those)."""
    heldout_path: str = ""
    """A separate held-out file; empty: `heldout_size` rows of `path` are held out (by split_seed)."""
    on_bad_row: str = "fail"
    """'fail': a dataset with bad rows is refused, listing them; 'skip': train on the good rows."""
    max_prompt_tokens: int = bounded(0, ">= 0")
    """Rows whose prompt is longer than this (in tokens) are bad rows; 0: no limit."""
    verifier: str = "answer"
    """The reward that decides correctness (evaluation and the accuracy metric): a name in
    `rewards` or the registry, e.g. 'answer' (the reasoning-gym task's own scorer), 'math',
    'exact_match', 'code'. Its knobs come from `rewards.<verifier>` when the run uses it."""
    heldout_size: int = bounded(256, ">= 1")
    """Held-out problems, never seen in training."""
    split_seed: int = 0
    """Seed of the held-out set (independent of train.seed, so every seed is evaluated on the same
    problems). Keep it equal to the base model's seed: the embedded base never saw these questions."""


@dataclass
class SamplingConfig:
    strategy: str = "uniform"
    """Which prompts a step trains on (rlvr.data.samplers): 'uniform', 'vade', 'difficulty_targeted',
    'curriculum' or 'sec'. Every strategy but 'uniform' picks from a finite pool (`pool_size`)."""
    pool_size: int = bounded(0, ">= 0")
    """Prompts in the pool: the first pool_size problems of a reasoning-gym stream, or of a dataset's
    training rows; 0: the whole dataset, or for reasoning-gym the endless stream ('uniform' only)."""
    dynamic_sampling: bool = False
    """DAPO: drop groups whose rewards are all equal and sample more until the batch is full."""
    filters: list[str] = field(default_factory=list)
    """Group filters (rlvr.data.samplers.GROUP_FILTERS) that every freshly generated group must
    pass, as dynamic sampling's filter ('informative', which dynamic_sampling = true adds): dropped
    groups are re-sampled up to max_rounds."""
    max_rounds: int = bounded(4, ">= 1")
    """Generation rounds per step under dynamic sampling (or group filters); a batch still short after
    them is filled with dropped groups (counted as sampling_filled)."""
    category_field: str = "source_dataset"
    """Metadata field that names a prompt's category (the arms of 'sec')."""
    replay_fraction: float = bounded(0.0, "[0, 1)")
    """Rollout replay: the share of each step's groups drawn from a buffer of recent informative
    groups (rewards not all equal) instead of generated afresh; they keep the behaviour log-probs of
    the policy that sampled them, so use an importance-ratio objective (ppo_clip, ...)."""
    replay_capacity: int = bounded(256, ">= 1")
    """Groups the replay buffer holds (the oldest go first)."""
    replay_max_age: int = bounded(8, ">= 1")
    """Steps a group may stay in the replay buffer (bounds how off-policy a replayed group is)."""
    knobs: dict[str, Any] = field(default_factory=dict)
    """The strategy's knobs (extra keys of [sampling]); filled on load."""


@dataclass
class GuidanceConfig:
    strategy: str = ""
    """Guidance for groups whose samples all fail (rlvr.data.guidance): 'hints' (tiered hints in the
    prompt, Scaf-GRPO) or 'prefix' (continue a prefix of a known solution, PrefixRL); '' for none."""
    max_tier: int = bounded(3, ">= 1")
    """Highest tier tried: a failed group is re-rolled with tier 1, 2, ... until a sample succeeds."""
    traces_per_prompt: int = bounded(4, ">= 1")
    """Successful completions kept per prompt as prefixes' sources."""
    knobs: dict[str, Any] = field(default_factory=dict)
    """The guide's knobs (extra keys of [guidance]); filled on load."""


@dataclass
class RewardWeightsConfig:
    controller: str = ""
    """A reward-weight controller (rlvr.algos.reward_weights.REWARD_WEIGHTS) that adapts the weights
    of the [rewards] components every step from the batch's component means: 'lagrange' (Lagrange
    multipliers that keep components below or above thresholds); '' for the recipe's fixed weights."""
    knobs: dict[str, Any] = field(default_factory=dict)
    """The controller's knobs (extra keys of [reward_weights]); filled on load."""


@dataclass
class DemosConfig:
    """Demonstrations inside the RL step (`[demos]`): when a chosen component reads them (`demo`,
    e.g. objective = "hybrid" or "rl_plus"), the collector appends to a group one row that the policy
    did not sample: the problem's worked solution, scored by the run's rewards and marked off-policy
    (``demo`` = 1; its ``old_logp`` is the policy's own log-prob before the update)."""

    source: str = "auto"
    """Where a problem's demonstration comes from: 'field' (the problem's `solution_field`, a
    dataset column), 'solver' (the task's worked-solution writer, `rlvr.data.solutions.SOLVERS`), or
    'auto' (the field when the problem has it, else the solver). A problem with none gets no row.
    Two sources build the row from the group's first failed sample and the problem's worked
    solution ('auto''s) instead: 'intervention' (InT: the sample's steps before its first error,
    then the worked solution's steps from there, `rlvr.rewards.feedback.intervention`) and
    'refinement' (Critique-GRPO: the policy's own refinement, sampled after the question with
    `critique_template` holding the failed answer and a critique of it). A group without a failed
    sample gets no row from either, nor, from 'intervention', one whose failed samples have no step
    to correct (blank texts, or a problem without a worked solution)."""
    solution_field: str = "solution"
    """The problem's metadata field that holds a demonstration (sources 'field' and 'auto')."""
    step_delimiter: str = "\n"
    """Sources 'intervention' and 'refinement': what separates two steps of a solution (as
    `arith_steps`'s delimiter), for locating a failed sample's first wrong step."""
    intervention_by: str = "reference"
    """Source 'intervention': who writes the step at the error: 'reference' (the worked solution's
    step, then its later steps: the row is a whole solution) or 'policy' (InT's self-proposal: the
    policy, shown the worked solution through `intervention_template`, continues the sample's steps
    before the error with one step of its own, sampled at the run's temperature; the row ends with
    that step, the paper's SFT target, without EOS)."""
    intervention_template: str = "A reference solution:\n{reference}\nCorrect the next step."
    """Source 'intervention' with intervention_by = 'policy': the text appended to the question;
    `{reference}` is replaced by the worked solution."""
    critique_template: str = (
        "An earlier attempt:\n{answer}\nCritique: {critique}\nWrite a corrected solution."
    )
    """Source 'refinement': the text appended to the question to ask for a refinement; `{answer}`
    is replaced by the failed sample's text, `{critique}` by its critique
    (`rlvr.rewards.feedback.critique`)."""
    max_success: float = bounded(1.0, "[0, 1]")
    """A group gets its demonstration when the fraction of its samples that are correct is at most
    this: 1 gives every group one (LUFFY, RL-PLUS, CHORD), 0 only the groups that all failed (HPT's
    switch at gamma = 0)."""


@dataclass
class SelfTeacherConfig:
    """The policy as its own teacher (`[self_teacher]`): when a chosen component reads
    `self_teacher_logp` (e.g. algo.credit = "srpo", algo.objective = "treg"), each failed row
    whose group has a correct sample (or whose problem has a worked solution) is scored once more
    by the policy before its update: the same completion tokens after the row's chat prompt with
    `template` appended to the question. Other rows keep `old_logp` (no signal) and
    `self_teacher_mask` = 0."""

    source: str = "auto"
    """The solution a failed row is conditioned on: 'group' (the first correct sample of its group),
    'solution' (the problem's worked solution: its `solution` field, else the task's solver in
    `rlvr.data.solutions.SOLVERS`), or 'auto' (the group's correct sample, else the worked solution)."""
    template: str = "A correct solution, for reference:\n{solution}"
    """The hint appended to the question (on a new line); `{solution}` is replaced by the solution."""


@dataclass
class ScoringConfig:
    workers: int = bounded(0, ">= 0", note="(0: in the trainer's process)")
    """Processes that run the per-sample reward functions; 0: in the trainer's process."""
    timeout: float = bounded(10.0, ">= 0", note="(0: no limit)")
    """Seconds a reward call may take; 0: no limit."""
    failure_score: float = 0.0
    """Score of a sample whose reward raised, returned a non-number or timed out (counted in the
    metrics as reward_failures)."""


@dataclass
class RolloutConfig:
    prompts_per_step: int = bounded(8, ">= 1")
    """B: prompts sampled per training step."""
    samples_per_prompt: int = bounded(8, ">= 1")
    """G: completions sampled per prompt."""
    max_new_tokens: int = bounded(12, ">= 1")
    """Tokens per completion; in multi-turn episodes, per model turn."""
    temperature: float = bounded(1.0, "> 0", note="for training")
    top_p: float = bounded(1.0, "(0, 1]")
    max_turns: int = bounded(4, ">= 1")
    """Multi-turn episodes (task.source = 'env'): model turns per episode at most."""
    max_episode_tokens: int = bounded(0, ">= 0")
    """Multi-turn episodes: tokens after the first prompt (model and environment turns) at most;
    0: up to the model's context length."""
    branching: str = ""
    """How a group is sampled: '' (G independent samples) or the name of a branch-point rule
    (rlvr.rollout.branch_points.BRANCH_POINTS), which grows the group as a tree: `branch_roots`
    samples, then continuations from the prefixes before their branch points until the group has G
    (rlvr.rollout.branching). The rules: 'entropy' (the highest-entropy tokens, CURE), 'uniform'
    (random positions), 'step' (the starts of reasoning steps, after a `branch_delimiter` token),
    'low_prob' (tokens sampled with probability < `branch_max_prob`, SPO-tree's cuts), 'value' (the
    states of highest critic value plus a `branch_explore` visit bonus, ReST-MCTS* / DeepSearch;
    needs `critic.enabled`)."""
    branch_roots: int = bounded(2, ">= 1")
    """Branching: independent samples per prompt that the tree grows from (>= G: no branching)."""
    branch_width: int = bounded(2, ">= 1")
    """Branching: continuations sampled from each branch point."""
    branch_top_k: int = bounded(1, ">= 1")
    """Branching: branch points per completion at most, the rule's top_k (for 'entropy' its top_k
    highest-entropy tokens)."""
    branch_threshold: float = bounded(0.0, ">= 0")
    """Branching 'entropy': a branch point's entropy (nats) must exceed this."""
    branch_max_prob: float = bounded(0.9, "(0, 1]")
    """Branching 'low_prob': a branch point's sampled token must have had a probability below this
    (SPO's cutpoint threshold)."""
    branch_explore: float = bounded(0.0, ">= 0")
    """Branching 'value': the weight c of the visit bonus, score = V(s_t) + c * sqrt(ln R / n_t)
    (R completions in the layer, n_t of them through the prefix y_<t); 0: the highest values."""
    branch_delimiter: str = "\n"
    """Branching 'step': a token whose text contains this ends a reasoning step (the worked solutions
    and `arith_steps` write one step per line); the next position is a branch point."""
    branch_depth: int = bounded(1, ">= 1")
    """Branching: layers of the tree (2: branches branch again)."""
    branch_steps: int = bounded(0, ">= 0", note="(0: every step)")
    """Branching: only steps 1 .. branch_steps branch, later steps sample i.i.d. (CURE's second
    stage); 0: every step."""


@dataclass
class AlgoConfig:
    advantage: str = "grpo"
    objective: str = "ppo_clip"
    aggregation: str = "token_mean"
    kl: str = "k3"
    """KL estimator used when beta > 0."""
    token_weights: str = "none"
    """Token weighting that multiplies the objective's per-token loss ('none': all ones)."""
    credit: str = ""
    """Token-level credit assigner (e.g. 'tree_td'); when set it replaces the outcome-level
    `advantage` estimator and gives every token its own advantage. Empty: outcome-level only."""
    beta: float = bounded(0.0, ">= 0")
    """KL penalty coefficient (the starting value when adaptive); a reference model is loaded only
    when beta > 0 or a component needs it."""
    kl_in: str = "loss"
    """'loss': beta * KL per token in the loss; 'reward': beta * (sequence KL under the behaviour
    policy) subtracted from each completion's reward before the advantage."""
    kl_target: float = bounded(0.0, ">= 0", note="(0: fixed coefficient)")
    """Adaptive coefficient (Ziegler et al.): steer the per-token KL toward this; 0 keeps beta fixed."""
    kl_horizon: int = bounded(10000, ">= 1")
    """Horizon (in sequences) of the adaptive coefficient's update."""
    ref_reset_every: int = bounded(0, ">= 0", note="(0: never)")
    """Reset the reference model to the current policy every this many steps (ProRL); 0: never."""
    kl_lambda: float = bounded(1.0, "[0, 1]")
    """KL-convex policy constraint (ReMix): the loss's KL term is lambda * KL(pi || ref) +
    (1 - lambda) * KL(pi || behaviour), both with the `kl` estimator, the behaviour policy being the
    one that sampled each token (its `old_logp`; for a replayed group the older policy). 1: the
    reference KL alone (as without it); 0: only the KL to the behaviour policy. Needs beta > 0 and
    kl_in = 'loss' when below 1."""
    reincarnate_at: int = bounded(0, ">= 0", note="(0: never)")
    """Policy reincarnation (ReMix) at this step S: after step S's update the reference becomes the
    current policy (saved as references/step_S, as a ProRL reset), and steps S+1 on train plainly
    on-policy: no replayed groups (sampling.replay_fraction -> 0, nothing more is remembered), one
    epoch per batch (epochs -> 1, the critic's too) and the reference KL alone (kl_lambda -> 1);
    minibatches and everything else stay. 0: never."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (subtracted from the loss)."""
    epochs: int = bounded(1, ">= 1")
    """Passes over each rollout batch."""
    minibatches: int = bounded(1, ">= 1")
    """Optimizer steps per epoch (the batch is split into this many mini-batches)."""
    micro_batches: int = bounded(1, ">= 1")
    """Gradient-accumulation chunks per mini-batch (exact for the linear aggregations)."""
    knobs: dict[str, Any] = field(default_factory=dict)
    """Component knobs (extra keys of [algo]); filled on load."""


@dataclass
class CriticConfig:
    enabled: bool = False
    """Train a value model (the policy's base backbone and a scalar head) beside the policy; it
    supplies `values` to components that need them (e.g. credit = "gae")."""
    kind: str = "model"
    """'model': a value model (the policy's base backbone and a scalar head); 'probe': a linear head
    on the policy's own last hidden state (POISE; `rlvr.models.critic.ProbeValue`), no second model."""
    lr: float = bounded(1e-4, "> 0")
    """The critic's own AdamW learning rate."""
    value_clip: float = bounded(0.2, ">= 0", note="(0 disables)")
    """Clip of the value loss around the critic's previous values; 0 disables."""


@dataclass
class PrmConfig:
    enabled: bool = False
    """Train an implicit process reward model beside the policy (PRIME): a causal LM initialised from
    the policy's base, whose token reward is beta * (log pi_prm - log pi_ref), fitted online to the
    verifier's outcomes (or their preferences, `loss`); it supplies `implicit_rewards` to components that
    need them (credit = "prime", "oprl", "oprl_turns")."""
    lr: float = bounded(1e-4, "> 0")
    """The implicit PRM's own AdamW learning rate."""
    beta: float = bounded(0.05, "> 0")
    """The implicit reward's coefficient: r_t = beta * (log pi_prm(y_t) - log pi_ref(y_t))."""
    loss: str = "ce"
    """The implicit PRM's update objective: 'ce' (PRIME: cross-entropy of sigmoid(beta * sum_t
    (log pi_prm - log pi_ref)) against the verifier's outcomes) or 'dpo' (OPRL: trajectory-level DPO
    on the pairs of a group's trajectories with different rewards, -log sigmoid(s_winner - s_loser))."""


@dataclass
class OptimConfig:
    lr: float = bounded(1e-4, "> 0")
    weight_decay: float = bounded(0.0, ">= 0")
    beta1: float = bounded(0.9, "[0, 1)")
    beta2: float = bounded(0.99, "[0, 1)")
    grad_clip: float = bounded(1.0, ">= 0", note="(0 disables)")
    """Max global gradient norm; 0 disables clipping."""
    warmup_steps: int = bounded(0, ">= 0")
    """Linear warm-up from 0 to lr over this many steps."""
    schedule: str = "constant"
    """After warm-up: 'constant', or 'linear' / 'cosine' decay to min_lr_ratio * lr at train.steps."""
    min_lr_ratio: float = bounded(0.0, "[0, 1]")
    """Final learning rate of a decaying schedule, as a fraction of lr."""


@dataclass
class TrainConfig:
    steps: int = bounded(200, ">= 0")
    seed: int = 0
    checkpoint_every: int = bounded(100, ">= 1")
    keep_checkpoints: int = bounded(2, ">= 1")
    log_every: int = bounded(20, ">= 1")
    """Print a metrics line every this many steps."""
    samples_every: int = bounded(20, ">= 1")
    """Write some rollouts to samples.jsonl every this many steps."""
    tensorboard: bool = True
    """Also write every step's metrics as TensorBoard events under RUN_DIR/tensorboard
    (`tensorboard --logdir runs`)."""
    wandb_project: str = ""
    """Also log to Weights & Biases under this project (needs `pip install wandb`; the W&B run id is
    the run directory's name, so a resumed run continues the same W&B run); empty: off."""
    max_nonfinite_steps: int = bounded(3, ">= 0", note="(0: never)")
    """Stop the run after this many steps in a row whose update was skipped for a non-finite loss or
    gradient (no checkpoint is written during such a streak); 0: never stop."""
    threads: int = bounded(0, ">= 0", note="(0: torch's default)")
    """CPU threads for torch's operators (torch.set_num_threads); 0: torch's default. On a machine
    busy with other work, 1 avoids a many-fold slowdown of the tiny model (benchmarks/vs_trl)."""


@dataclass
class ScaleConfig:
    """Scale-out (docs/scaling.md): Ray rollout workers, torch.distributed learners, async rollouts."""

    workers: int = bounded(0, ">= 0", note="(0: generate in the trainer)")
    """Ray rollout workers, each a process with a copy of the policy that gets the new weights after
    every update; the step's prompts are spread over them (0: generate in the training process)."""
    worker_threads: int = bounded(1, ">= 1")
    """torch CPU threads of each rollout worker."""
    learners: int = bounded(1, ">= 1")
    """Data-parallel learner ranks in one torch.distributed group (gloo on CPU, NCCL on GPU). More
    than 1 on one machine: `rlvr train` starts them with torchrun; each rank trains on its share of
    every mini-batch and the gradients are summed, so the update equals one rank's on the whole batch."""
    shard: str = "none"
    """'fsdp': shard the policy's parameters, gradients and AdamW state over the learner ranks with
    FSDP2 (one unit per decoder layer), for a model whose training state does not fit one device;
    'none': every rank holds all of it. Needs learners >= 2; the rollouts and the update are the same
    either way."""
    ray_address: str = ""
    """Address of a running Ray cluster (`ray start --head` prints it); empty: a local Ray instance."""
    staleness: int = bounded(0, ">= 0", note="(0: synchronous)")
    """Asynchronous rollouts: the workers generate up to this many steps ahead while the learner
    trains (1: one-step-off policy); 0: synchronous. Needs workers >= 1."""
    is_cap: float = bounded(2.0, ">= 1")
    """Importance sampling of stale rollouts: each token's loss is weighted by a function of
    pi_prox / pi_behaviour (pi_prox being the learner's policy when the step starts) chosen by
    `is_mode`; is_cap is its upper bound (the default mode: min(pi_prox / pi_behaviour, is_cap))."""
    is_mode: str = "token_truncate"
    """How stale rollouts are corrected (rlvr.algos.weights.IS_CORRECTIONS): 'token_truncate'
    (truncated IS per token), 'token_mask' (IcePop: tokens outside [is_low, is_cap] dropped),
    'sequence_truncate' / 'sequence_mask' (the same on the product of a sequence's ratios) or
    'seq_mask_tis' (rows whose geometric-mean ratio leaves the band dropped, token ratios kept) or
    'm2po' (M2PO: the tokens of largest squared log ratio dropped until the mean square of the rest
    is below `m2_threshold`, then IcePop's band)."""
    is_low: float = bounded(0.0, "[0, 1]", note="(0: no lower bound)")
    """Lower bound of the importance weights for `is_mode` (truncated up to it, or masked below it)."""
    m2_threshold: float = bounded(0.04, "> 0")
    """`is_mode = 'm2po'`: the bound on the mean squared log ratio pi_prox / pi_behaviour of the kept
    stale tokens (AReaL's `actor.m2_threshold`; 0.04 in its M2PO example)."""


@dataclass
class EvalConfig:
    samples: int = bounded(8, ">= 1")
    """n completions per held-out problem (pass@k for every power of two k <= n)."""
    max_new_tokens: int = bounded(12, ">= 1")
    temperature: float = bounded(1.0, ">= 0", note="(0 is greedy)")
    top_p: float = bounded(1.0, "(0, 1]")
    before: bool = True
    after: bool = True
    every: int = bounded(0, ">= 0", note="(0 disables)")
    """Also evaluate on the held-out set every this many steps (0: only before and after)."""


@dataclass
class Config:
    name: str = "grpo"
    """The recipe's name."""
    description: str = ""
    """One line on what the recipe does (shown by `rlvr recipes`)."""
    paper: str = ""
    """The paper the recipe follows (title)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """A frozen teacher whose log-probs a distillation component reads (`[teacher]`; empty: none)."""
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"answer": {"weight": 1.0}, "format": {"weight": 0.1}}
    )
    """Reward components: name -> {weight, and the component's knobs}; a user function is
    `{function = "module:fn" or "file.py:fn", weight = ..., and keyword arguments}`."""
    shaping: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Reward shaping applied, in order, to the combined reward before the advantage: name ->
    {the component's knobs} (see `rlvr.algos.shaping`)."""
    reward_weights: RewardWeightsConfig = field(default_factory=RewardWeightsConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    """Demonstration rows beside the policy's samples, for components that read `demo`."""
    self_teacher: SelfTeacherConfig = field(default_factory=SelfTeacherConfig)
    """The self-teacher's contexts, for components that read `self_teacher_logp` (SRPO)."""
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    prm: PrmConfig = field(default_factory=PrmConfig)
    """An implicit PRM trained online beside the policy, for components that read `implicit_rewards`."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    schedule: dict[str, Any] = field(default_factory=dict)
    """Step-dependent settings: dotted field -> [[step, value], ...] or {points, kind = 'linear' |
    'cosine' | 'step'} (see `rlvr.train.schedule`)."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for section in ("algo", "sampling", "guidance", "reward_weights"):
            d[section].update(d[section].pop("knobs"))
        return d

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


# ---------------------------------------------------------------------------------------------------
# loading and validation


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        # extra keys are component knobs
        routes_knobs = cls in (AlgoConfig, SamplingConfig, GuidanceConfig, RewardWeightsConfig)
        if key not in names or (routes_knobs and key == "knobs"):
            if routes_knobs:
                extra[key] = value
                continue
            raise ConfigError(f"unknown field {path!r}; valid fields: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{path!r} must be a table (section), got {value!r}")
            kwargs[key] = _build(hint, value, path)
        else:
            if not type_matches(value, hint):
                raise ConfigError(f"{path!r} must be {describe_type(hint)}, got {value!r}")
            kwargs[key] = float(value) if hint is float else value
    obj = cls(**kwargs)
    if cls in (AlgoConfig, SamplingConfig, GuidanceConfig, RewardWeightsConfig):
        obj.knobs = extra
    return obj


def _check_bounds(obj: Any, where: str = "") -> None:
    """Refuse the first field of ``obj`` (and of its sections, in order) outside its declared bound."""
    for f in dataclasses.fields(obj):
        value, path = getattr(obj, f.name), f"{where}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_bounds(value, f"{path}.")
        elif "bounds" in f.metadata and not in_bounds(value, f.metadata["bounds"]):
            bound, note = f.metadata["bounds"], f.metadata["note"]
            expected = ("in " if bound.lstrip().startswith(("[", "(")) else "") + bound
            raise ConfigError(
                f"{path!r} = {value!r} is out of range; expected {expected}"
                + (f" {note}" if note else "")
            )


def _validate_self_teacher(cfg: Config, chosen: dict[str, tuple[Registry, str]]) -> None:
    """[self_teacher]: its source and template, a component that reads it, and what it cannot run
    with (the contexts are the plain chat prompts of the policy's completions, scored in-process)."""
    st = cfg.self_teacher
    if st.source not in ("auto", "group", "solution"):
        raise ConfigError(
            f"'self_teacher.source' = {st.source!r}; expected 'auto', 'group' or 'solution'"
        )
    try:
        st.template.format(solution="")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"'self_teacher.template' = {st.template!r} is not a template with only '{{solution}}' "
            f"({type(err).__name__}: {err}); write literal braces as '{{{{' and '}}}}'"
        ) from None
    if "{solution}" not in st.template:
        raise ConfigError(
            f"'self_teacher.template' = {st.template!r} must contain '{{solution}}', where the "
            "correct solution goes"
        )
    readers = [n for reg, n in chosen.values() if "self_teacher_logp" in reg.needs(n)]
    if not readers:
        if st != SelfTeacherConfig():
            raise ConfigError(
                "[self_teacher] is set but no chosen component reads the self-teacher's log-probs "
                f"({', '.join(n for _, n in chosen.values())}); choose one that does (e.g. "
                "algo.credit = 'srpo') or leave [self_teacher] at its defaults"
            )
        return
    if cfg.task.source == "env" or cfg.scale.shard == "fsdp" or cfg.guidance.strategy:
        raise ConfigError(
            f"{readers[0]!r} reads the self-teacher's log-probs, a forward of the whole policy on "
            "the plain chat prompts of the batch: not with multi-turn episodes (task.source = "
            "'env'), a sharded policy (scale.shard = 'fsdp') or guidance (guidance.strategy)"
        )


def _validate_demos(cfg: Config, chosen: dict[str, tuple[Registry, str]]) -> None:
    """[demos]: its source, a component that reads the rows, and the settings it cannot run with."""
    d = cfg.demos
    if d.source not in ("auto", "field", "solver", "intervention", "refinement"):
        raise ConfigError(
            f"'demos.source' = {d.source!r}; expected 'auto', 'field', 'solver', 'intervention' or "
            "'refinement'"
        )
    if not d.step_delimiter:
        raise ConfigError("'demos.step_delimiter' = ''; expected a non-empty separator of steps")
    try:
        d.critique_template.format(answer="", critique="")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"'demos.critique_template' = {d.critique_template!r} is not a template with only "
            f"'{{answer}}' and '{{critique}}' ({type(err).__name__}: {err}); write literal braces "
            "as '{{{{' and '}}}}'"
        ) from None
    missing = [k for k in ("{answer}", "{critique}") if k not in d.critique_template]
    if missing:
        raise ConfigError(
            f"'demos.critique_template' = {d.critique_template!r} must contain {' and '.join(missing)}"
            ", where the failed answer and its critique go"
        )
    if d.intervention_by not in ("reference", "policy"):
        raise ConfigError(
            f"'demos.intervention_by' = {d.intervention_by!r}; expected 'reference' or 'policy'"
        )
    try:
        d.intervention_template.format(reference="")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"'demos.intervention_template' = {d.intervention_template!r} is not a template with "
            f"only '{{reference}}' ({type(err).__name__}: {err}); write literal braces as '{{{{' and "
            "'}}}}'"
        ) from None
    if "{reference}" not in d.intervention_template:
        raise ConfigError(
            f"'demos.intervention_template' = {d.intervention_template!r} must contain "
            "{reference}, where the worked solution goes"
        )
    proposes = d.source == "intervention" and d.intervention_by == "policy"
    if not proposes and d.intervention_template != DemosConfig.intervention_template:
        raise ConfigError(
            "'demos.intervention_template' is set but the policy proposes no intervention; set "
            "demos.source = 'intervention' and demos.intervention_by = 'policy', or leave the "
            "template at its default"
        )
    if d.source != "intervention" and d.intervention_by != DemosConfig.intervention_by:
        raise ConfigError(
            f"'demos.intervention_by' is set but demos.source = {d.source!r} writes no "
            "intervention; set demos.source = 'intervention' or leave it at its default"
        )
    if d.source != "refinement" and d.critique_template != DemosConfig.critique_template:
        raise ConfigError(
            f"'demos.critique_template' is set but demos.source = {d.source!r} asks for no "
            "refinement; set demos.source = 'refinement' or leave the template at its default"
        )
    readers = [n for reg, n in chosen.values() if {"demo", "demo_group"} & reg.needs(n)]
    if not readers:
        if d != DemosConfig():
            raise ConfigError(
                "[demos] is set but no chosen component reads demonstration rows "
                f"({', '.join(n for _, n in chosen.values())}); choose one that does (e.g. "
                "algo.objective = 'hybrid' or 'rl_plus') or leave [demos] at its defaults"
            )
        return
    if cfg.task.source == "env" or cfg.scale.shard == "fsdp":
        raise ConfigError(
            f"{readers[0]!r} reads demonstration rows, which the collector builds for plain "
            "completions with the whole policy: not with multi-turn episodes (task.source = 'env') "
            "or a sharded policy (scale.shard = 'fsdp')"
        )
    paired = [n for reg, n in chosen.values() if {"demo", "group"} <= reg.needs(n)]
    if paired and cfg.algo.micro_batches > 1:
        raise ConfigError(
            f"'algo.micro_batches' = {cfg.algo.micro_batches}: {paired[0]!r} compares each sample "
            "with its group's demonstration row, so a micro-batch must hold whole groups of G + 1 "
            "rows, which a split of the varying batch does not keep; set algo.micro_batches = 1"
        )
    if cfg.algo.minibatches > 1 or cfg.scale.learners > 1:
        raise ConfigError(
            f"{readers[0]!r} reads demonstration rows, which make a step's batch B*G plus one row "
            "per demonstrated group: its size varies, so it is not split into mini-batches or over "
            "learner ranks; set algo.minibatches = 1 and scale.learners = 1 (algo.micro_batches "
            "may be > 1)"
        )


def chosen_components(a: AlgoConfig) -> dict[str, tuple[Registry, str]]:
    """The algorithm components a recipe chooses: role -> (registry, name); ``credit`` only if set."""
    chosen = {
        "advantage": (ADVANTAGES, a.advantage),
        "objective": (OBJECTIVES, a.objective),
        "aggregation": (AGGREGATIONS, a.aggregation),
        "kl": (KL_ESTIMATORS, a.kl),
        "token_weights": (TOKEN_WEIGHTS, a.token_weights),
    }
    if a.credit:
        chosen["credit"] = (CREDIT, a.credit)
    return chosen


def validate(cfg: Config) -> Config:
    """Check bounds, cross-field constraints and component names; route component knobs. Returns
    ``cfg``."""
    _check_bounds(cfg)  # every field's own range first: the checks below may assume them
    r, a, o = cfg.rollout, cfg.algo, cfg.optim
    if cfg.model.dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"'model.dtype' = {cfg.model.dtype!r}; expected 'float32' or 'bfloat16'")
    if cfg.model.dtype == "bfloat16" and cfg.scale.workers:
        raise ConfigError(
            "'model.dtype' = 'bfloat16' is not supported with Ray rollout workers (scale.workers = "
            f"{cfg.scale.workers}): they generate in float32; use 'float32' or scale.workers = 0"
        )
    if cfg.model.lora.rank:
        _validate_lora(cfg)
    if a.kl_in not in ("loss", "reward"):
        raise ConfigError(f"'algo.kl_in' = {a.kl_in!r}; expected 'loss' or 'reward'")
    if a.kl_lambda < 1.0:
        if a.kl_in != "loss":
            raise ConfigError(
                f"'algo.kl_lambda' = {a.kl_lambda} with 'algo.kl_in' = {a.kl_in!r}: the KL-convex "
                "constraint weighs the loss's KL term (at the behaviour policy's own tokens its "
                "behaviour KL is 0); set kl_in = 'loss' or kl_lambda = 1"
            )
        if a.beta <= 0 and "algo.beta" not in flatten_schedule(cfg.schedule):
            raise ConfigError(
                f"'algo.kl_lambda' = {a.kl_lambda} with 'algo.beta' = 0: the KL-convex constraint "
                "has no weight; set beta > 0 or kl_lambda = 1"
            )
    if a.kl_target > 0 and a.beta <= 0:
        raise ConfigError(
            "'algo.kl_target' > 0 adapts the KL coefficient, which starts at 'algo.beta': set beta > 0"
        )
    n = r.prompts_per_step * r.samples_per_prompt
    split = a.minibatches * a.micro_batches * cfg.scale.learners  # pieces of one step's batch
    if n % split != 0:
        raise ConfigError(
            "'algo.minibatches' x 'algo.micro_batches'"
            + (" x 'scale.learners'" if cfg.scale.learners > 1 else "")
            + f" = {split} must divide the batch of B*G = {n} sequences"
        )
    if cfg.critic.kind not in ("model", "probe"):
        raise ConfigError(f"'critic.kind' = {cfg.critic.kind!r}; expected 'model' or 'probe'")
    if o.schedule not in ("constant", "linear", "cosine"):
        raise ConfigError(
            f"'optim.schedule' = {o.schedule!r}; expected one of 'constant', 'linear', 'cosine'"
        )

    chosen = chosen_components(a)
    for fld, (reg, name) in chosen.items():
        if name not in reg:
            raise ConfigError(
                f"'algo.{fld}': unknown {reg.kind} {name!r}; valid names: {', '.join(reg.names())}"
            )
    if cfg.prm.loss not in ("ce", "dpo"):
        raise ConfigError(f"'prm.loss' = {cfg.prm.loss!r}; expected 'ce' or 'dpo'")
    reads_prm = any("implicit_rewards" in reg.needs(name) for reg, name in chosen.values())
    if cfg.prm.enabled and not reads_prm:
        raise ConfigError(
            "'prm.enabled' trains an implicit PRM for a component that reads implicit_rewards "
            "(e.g. algo.credit = 'prime'); none of this run's components does"
        )
    for fld, (reg, name) in chosen.items():
        missing = reg.needs(name) - INPUTS.get(fld, frozenset())
        if "implicit_rewards" in reg.needs(name) and not cfg.prm.enabled:
            raise ConfigError(
                f"'algo.{fld}': {reg.kind} {name!r} needs implicit_rewards from an implicit PRM; "
                "set prm.enabled = true"
            )
        if "values" in reg.needs(name) and not cfg.critic.enabled:
            raise ConfigError(
                f"'algo.{fld}': {reg.kind} {name!r} needs values from a critic; "
                "set critic.enabled = true"
            )
        if "process_rewards" in reg.needs(name):
            steps = [r for r in cfg.rewards if is_step_reward(r)]
            if len(steps) != 1:
                raise ConfigError(
                    f"'algo.{fld}': {reg.kind} {name!r} needs process rewards from exactly one step "
                    f"reward in [rewards] (arith_steps, prm), found {len(steps)}"
                    + (f" ({', '.join(steps)})" if steps else "")
                    + "; add one, e.g. `rewards.arith_steps.weight=0.0` to use it for credit only"
                )
            if cfg.task.source == "env" or cfg.guidance.strategy:
                raise ConfigError(
                    f"'algo.{fld}': {reg.kind} {name!r} (process rewards) works on plain "
                    "completions; it cannot be combined with multi-turn episodes (task.source = "
                    "'env') or guidance"
                )
        if "greedy_rewards" in reg.needs(name) and (
            cfg.task.source == "env" or cfg.scale.shard == "fsdp"
        ):
            raise ConfigError(
                f"'algo.{fld}': {reg.kind} {name!r} needs a greedy rollout of each prompt, generated "
                "in the training process: not with multi-turn episodes (task.source = 'env') or a "
                "sharded policy (scale.shard = 'fsdp')"
            )
        if "sum_pi_sq" in reg.needs(name) and cfg.scale.shard == "fsdp":
            raise ConfigError(
                f"'algo.{fld}': {reg.kind} {name!r} needs a forward of the policy over the batch "
                "before its update, not built for a sharded policy (scale.shard = 'fsdp')"
            )
        if missing:
            raise ConfigError(
                f"'algo.{fld}': {reg.kind} {name!r} needs {', '.join(sorted(missing))}, which the "
                f"trainer cannot supply to a {fld} component"
            )
        if "teacher_logp" in reg.needs(name) and not cfg.teacher.enabled:
            raise ConfigError(
                f"'algo.{fld}': {reg.kind} {name!r} needs the log-probs of a teacher model, and the "
                "[teacher] section names none: set teacher.path (a local Hugging Face model "
                "directory with the policy's tokenizer) or teacher.embedded"
            )
        if "group" in reg.needs(name):
            rows = n // split
            if rows % r.samples_per_prompt:
                raise ConfigError(
                    f"'algo.micro_batches': {reg.kind} {name!r} needs whole groups, but a micro-batch "
                    f"of {rows} sequences splits the groups of G = {r.samples_per_prompt}"
                )
    _validate_demos(cfg, chosen)
    _validate_self_teacher(cfg, chosen)
    if cfg.teacher.enabled and not any("teacher_logp" in reg.needs(n) for reg, n in chosen.values()):
        raise ConfigError(
            f"[teacher] is set ({cfg.teacher.describe()}) but no chosen component reads a teacher's "
            f"log-probs ({', '.join(n for _, n in chosen.values())}); choose one that does (e.g. "
            "algo.credit = 'opd') or clear the section (teacher.path = '', teacher.embedded = '')"
        )
    accepted: dict[str, list[str]] = {}
    for _, (reg, name) in chosen.items():
        for knob in reg.knobs(name):
            accepted.setdefault(knob, []).append(name)
    for knob in a.knobs:
        if knob not in accepted:
            valid = ", ".join(sorted(accepted)) or "none"
            raise ConfigError(
                f"'algo.{knob}' is not a knob of the chosen components "
                f"({', '.join(name for _, name in chosen.values())}); their knobs: {valid}"
            )
    for knob, value in a.knobs.items():
        for reg, name in chosen.values():
            if knob in reg.knobs(name):
                try:
                    reg.check_knobs(name, {knob: value})
                except KnobError as err:
                    raise ConfigError(f"'algo.{knob}': {err}") from None
    # a group estimator compares a prompt's samples with each other; a group-free one (registered
    # with group_free=True: mssr's batch baseline, gae's critic values) also takes one sample per
    # prompt
    estimator = CREDIT[a.credit] if a.credit else ADVANTAGES[a.advantage]
    group_free = getattr(estimator, "group_free", False)
    if r.samples_per_prompt < 2 and not group_free:
        raise ConfigError(
            f"'rollout.samples_per_prompt' = {r.samples_per_prompt}: the group estimator "
            f"{a.credit or a.advantage!r} needs at least 2 samples per prompt"
        )

    _validate_task(cfg)
    _validate_rewards(cfg)
    _validate_shaping(cfg)
    _validate_sampling(cfg)
    _validate_scale(cfg)
    _validate_branching(cfg)
    _validate_reward_weights(cfg)
    if cfg.schedule:
        cfg.schedule = flatten_schedule(cfg.schedule)  # dotted keys, however the recipe wrote them
        try:
            schedule_fields(cfg)
        except ScheduleError as err:
            raise ConfigError(str(err)) from None
    return cfg


def _validate_lora(cfg: Config) -> None:
    """What low-rank adapters do not combine with (yet), said before any work."""
    if cfg.scale.shard != "none":
        raise ConfigError(
            f"'model.lora.rank' = {cfg.model.lora.rank} with 'scale.shard' = {cfg.scale.shard!r}: "
            "adapters are not sharded; use scale.shard = 'none' (learner ranks still work)"
        )
    if cfg.algo.ref_reset_every:
        raise ConfigError(
            f"'model.lora.rank' = {cfg.model.lora.rank} with 'algo.ref_reset_every' = "
            f"{cfg.algo.ref_reset_every}: the reference of a LoRA run is the base (the policy with "
            "its adapters off), which a reset cannot move; set algo.ref_reset_every = 0"
        )
    if cfg.algo.reincarnate_at:
        raise ConfigError(
            f"'model.lora.rank' = {cfg.model.lora.rank} with 'algo.reincarnate_at' = "
            f"{cfg.algo.reincarnate_at}: policy reincarnation resets the reference, and the "
            "reference of a LoRA run is the base (the policy with its adapters off), which a reset "
            "cannot move; set algo.reincarnate_at = 0"
        )


# the rollout fields that are knobs of branch-point rules: field -> the rule's knob
BRANCH_KNOBS = {
    "branch_threshold": "threshold",
    "branch_max_prob": "max_prob",
    "branch_explore": "explore",
}


def _validate_branching(cfg: Config) -> None:
    r, s = cfg.rollout, cfg.scale
    if r.branching and r.branching not in BRANCH_POINTS:
        raise ConfigError(
            f"'rollout.branching' = {r.branching!r}; expected '' (i.i.d. groups) or a branch-point "
            f"rule: {', '.join(repr(n) for n in BRANCH_POINTS.names())}"
        )
    if not r.branch_delimiter:
        raise ConfigError("'rollout.branch_delimiter' = ''; expected a non-empty string")
    if not r.branching:
        return
    unknown = BRANCH_POINTS.needs(r.branching) - BRANCH_INPUTS
    if unknown:
        raise ConfigError(
            f"'rollout.branching' = {r.branching!r} needs {', '.join(sorted(unknown))}, which a "
            f"branching rollout cannot supply; it supplies {', '.join(sorted(BRANCH_INPUTS))}"
        )
    if "values" in BRANCH_POINTS.needs(r.branching) and not cfg.critic.enabled:
        raise ConfigError(
            f"'rollout.branching' = {r.branching!r} needs values from a critic; "
            "set critic.enabled = true"
        )
    defaults = RolloutConfig()
    for name, knob in BRANCH_KNOBS.items():
        if getattr(r, name) != getattr(defaults, name) and knob not in BRANCH_POINTS.knobs(r.branching):
            users = [n for n in BRANCH_POINTS.names() if knob in BRANCH_POINTS.knobs(n)]
            raise ConfigError(
                f"'rollout.{name}' = {getattr(r, name)!r} is a knob of the branch-point rule(s) "
                f"{', '.join(repr(n) for n in users)}, not of 'rollout.branching' = {r.branching!r}"
            )
    _refuse_together(
        f"'rollout.branching' = {r.branching!r}",
        [
            (f"scale.workers = {s.workers}", s.workers > 0),
            (f"scale.learners = {s.learners}", s.learners > 1),
            ("task.source = 'env'", cfg.task.source == "env"),
        ],
        "branching rollouts are generated in the trainer's process, from single-turn prompts",
    )


def _validate_scale(cfg: Config) -> None:
    s, sp = cfg.scale, cfg.sampling
    if cfg.model.gradient_checkpointing and s.shard != "none":
        raise ConfigError(
            f"'model.gradient_checkpointing' with 'scale.shard' = {s.shard!r}: not supported (not "
            "tested with sharded layers); set one of them off"
        )
    if s.is_mode not in IS_CORRECTIONS:
        raise ConfigError(
            f"'scale.is_mode' = {s.is_mode!r}: valid names: {', '.join(IS_CORRECTIONS.names())}"
        )
    if s.shard not in ("none", "fsdp"):
        raise ConfigError(f"'scale.shard' = {s.shard!r}: expected 'none' or 'fsdp'")
    if s.shard == "fsdp" and s.learners < 2:
        raise ConfigError(
            f"'scale.shard' = 'fsdp' shards over the learner ranks, but scale.learners = "
            f"{s.learners}: set scale.learners >= 2"
        )
    if s.ray_address and not s.workers:
        raise ConfigError("'scale.ray_address' is set but scale.workers = 0: no Ray workers to place")
    if (s.workers or s.learners > 1) and cfg.task.source == "env":
        raise ConfigError(
            "scale.workers / scale.learners > 1 do not combine with task.source = 'env' yet: "
            "multi-turn episodes are played in the trainer's process"
        )
    if s.staleness:
        if not s.workers:
            raise ConfigError(
                "'scale.staleness' > 0 generates the next steps' rollouts while the learner trains, "
                "on Ray workers: set scale.workers >= 1"
            )
        _refuse_together(
            "'scale.staleness' > 0 (asynchronous rollouts)",
            [
                (f"sampling.strategy = {sp.strategy!r}", sp.strategy != "uniform"),
                ("sampling.pool_size", sp.pool_size > 0),
                ("sampling.dynamic_sampling", sp.dynamic_sampling),
                ("sampling.filters", bool(sp.filters)),
                ("sampling.replay_fraction", sp.replay_fraction > 0),
                ("guidance.strategy", bool(cfg.guidance.strategy)),
            ],
            "the next step's prompts are picked before this step's results are known",
        )


def _refuse_together(subject: str, settings: list[tuple[str, bool]], why: str = "") -> None:
    """A ConfigError naming every setting that is on (``settings``: (name, on) pairs) and cannot be
    used with ``subject``, with the reason."""
    clash = [name for name, on in settings if on]
    if clash:
        raise ConfigError(
            f"{subject} does not combine with {', '.join(clash)}" + (f": {why}" if why else "")
        )


def _validate_sampling(cfg: Config) -> None:
    sp = cfg.sampling
    if sp.strategy not in SAMPLERS:
        raise ConfigError(
            f"'sampling.strategy': unknown sampler {sp.strategy!r}; "
            f"valid names: {', '.join(SAMPLERS.names())}"
        )
    b = cfg.rollout.prompts_per_step
    if sp.pool_size and sp.pool_size < b:
        raise ConfigError(
            f"'sampling.pool_size' = {sp.pool_size} is smaller than rollout.prompts_per_step = {b}"
        )
    if sp.strategy != "uniform" and cfg.task.source == "reasoning_gym" and not sp.pool_size:
        raise ConfigError(
            f"'sampling.strategy' = {sp.strategy!r} picks prompts from a finite pool by their "
            "statistics; set sampling.pool_size (the first pool_size problems of the task)"
        )
    _check_table_knobs(
        SAMPLERS,
        sp.strategy,
        sp.knobs,
        "sampling.",
        f"a field of [sampling] nor a knob of sampler {sp.strategy!r}",
    )
    if "group_size" in SAMPLERS[sp.strategy].needs:  # type: ignore[attr-defined]
        _refuse_together(
            f"'sampling.strategy' = {sp.strategy!r} (rollouts allocated per prompt: groups of "
            "different sizes)",
            [
                ("sampling.dynamic_sampling", sp.dynamic_sampling),
                ("sampling.filters", bool(sp.filters)),
                ("sampling.replay_fraction", sp.replay_fraction > 0),
                ("guidance.strategy", bool(cfg.guidance.strategy)),
            ],
            "they assume groups of rollout.samples_per_prompt",
        )
    from rlvr.data.samplers import GROUP_FILTERS

    for name in sp.filters:
        if name not in GROUP_FILTERS:
            raise ConfigError(
                f"'sampling.filters': unknown group filter {name!r}; valid names: "
                f"{', '.join(GROUP_FILTERS.names())}"
            )
        unknown = GROUP_FILTERS.needs(name) - {"correct", "lengths", "truncated", "max_len"}
        if unknown:
            raise ConfigError(
                f"'sampling.filters': group filter {name!r} needs {', '.join(sorted(unknown))}, "
                "which the trainer does not supply (correct, lengths, truncated, max_len)"
            )
    # a dry run on a dummy pool catches knobs that conflict with the batch (for example knapsack's
    # min_rollouts above rollout.samples_per_prompt) with the sampler's own check, before any work
    import numpy as np

    from rlvr.data.samplers import PromptStats

    sampler, b = SAMPLERS[sp.strategy], cfg.rollout.prompts_per_step
    inputs = {"group_size": cfg.rollout.samples_per_prompt} if "group_size" in sampler.needs else {}  # type: ignore[attr-defined]
    try:
        sampler(PromptStats(b), b, 0, np.random.default_rng(0), **inputs, **sp.knobs)
    except ValueError as err:
        raise ConfigError(f"'sampling' knobs of sampler {sp.strategy!r}: {err}") from None
    gd = cfg.guidance
    if gd.strategy and gd.strategy not in GUIDES:
        raise ConfigError(
            f"'guidance.strategy': unknown guide {gd.strategy!r}; valid names: "
            f"{', '.join(GUIDES.names())} (or '' for none)"
        )
    if gd.strategy:
        _check_table_knobs(
            GUIDES,
            gd.strategy,
            gd.knobs,
            "guidance.",
            f"a field of [guidance] nor a knob of guide {gd.strategy!r}",
        )
    elif gd.knobs:
        raise ConfigError(
            f"'guidance.{next(iter(gd.knobs))}' is not a field of [guidance]; knobs need a "
            "guidance.strategy"
        )


def _check_table_knobs(reg: Registry, name: str, values: dict[str, Any], prefix: str, what: str) -> None:
    """Every key of ``values`` must be a knob of component ``name`` of ``reg`` and fit its type and
    bounds; the error names the field as ``prefix + key``."""
    knobs = reg.knobs(name)
    for k, v in values.items():
        if k not in knobs:
            raise ConfigError(
                f"'{prefix}{k}' is not {what}; its knobs: {', '.join(sorted(knobs)) or 'none'}"
            )
        try:
            reg.check_knobs(name, {k: v})
        except KnobError as err:
            raise ConfigError(f"'{prefix}{k}': {err}") from None


def _validate_task(cfg: Config) -> None:
    task = cfg.task
    if task.source not in ("reasoning_gym", "file", "env"):
        raise ConfigError(f"'task.source' = {task.source!r}; expected 'reasoning_gym', 'file' or 'env'")
    if task.source == "env":
        from rlvr.envs import ENVS

        if task.env not in ENVS:
            raise ConfigError(
                f"'task.env' = {task.env!r}: task.source = 'env' needs an environment; valid names: "
                f"{', '.join(ENVS.names())}"
            )
    turn_inputs = {"turn", "turn_rewards", "turn_states"}
    credit = cfg.algo.credit
    if credit in CREDIT and turn_inputs & CREDIT[credit].needs and task.source != "env":  # type: ignore[attr-defined]
        raise ConfigError(
            f"'algo.credit' = {cfg.algo.credit!r} assigns credit to the turns of multi-turn episodes; "
            "it needs task.source = 'env'"
        )
    if task.source == "env":
        _refuse_together(
            "task.source = 'env' (multi-turn episodes)",
            [
                ("guidance.strategy", bool(cfg.guidance.strategy)),
                ("sampling.replay_fraction", cfg.sampling.replay_fraction > 0),
                (
                    f"sampling.strategy = {cfg.sampling.strategy!r}",
                    cfg.sampling.strategy in SAMPLERS
                    and "group_size" in SAMPLERS[cfg.sampling.strategy].needs,  # type: ignore[attr-defined]
                ),
            ],
        )
    from rlvr.models.tiny import EMBEDDED

    if cfg.model.embedded not in EMBEDDED:
        raise ConfigError(
            f"'model.embedded' = {cfg.model.embedded!r}; valid names: {', '.join(EMBEDDED)}"
        )
    if cfg.teacher.embedded and not cfg.teacher.path and cfg.teacher.embedded not in EMBEDDED:
        raise ConfigError(
            f"'teacher.embedded' = {cfg.teacher.embedded!r}; valid names: {', '.join(EMBEDDED)} "
            "(or '' for none)"
        )
    if task.on_bad_row not in ("fail", "skip"):
        raise ConfigError(f"'task.on_bad_row' = {task.on_bad_row!r}; expected 'fail' or 'skip'")
    if task.source == "file" and not task.path:
        raise ConfigError("'task.path' is empty; source = 'file' needs a dataset file or directory")
    for tname, spec in task.mixture.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"'task.mixture.{tname}' must be a table like {{weight = 1.0}}")
        w = spec.get("weight", 1.0)
        if not type_matches(w, float) or not w > 0:
            raise ConfigError(f"'task.mixture.{tname}.weight' must be a number > 0, got {w!r}")
    if not task.verifier:
        raise ConfigError("'task.verifier' is empty; name the reward that decides correctness")
    if task.verifier not in cfg.rewards and task.verifier not in REWARDS:
        raise ConfigError(
            f"'task.verifier' = {task.verifier!r} is neither a reward of this run ("
            f"{', '.join(cfg.rewards)}) nor a registered reward ({', '.join(REWARDS.names())})"
        )


def _validate_rewards(cfg: Config) -> None:
    if not cfg.rewards:
        raise ConfigError("'rewards' is empty; name at least one reward component")
    for rname, spec in cfg.rewards.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"'rewards.{rname}' must be a table like {{weight = 1.0}}")
        w = spec.get("weight", 1.0)
        if not type_matches(w, float):
            raise ConfigError(f"'rewards.{rname}.weight' must be a number, got {w!r}")
        if "function" in spec:  # a user's function: its other keys are its keyword arguments
            if not isinstance(spec["function"], str):
                raise ConfigError(
                    f"'rewards.{rname}.function' must be a string 'module:function', "
                    f"got {spec['function']!r}"
                )
            try:
                load_function(spec["function"])
            except ValueError as err:
                raise ConfigError(f"'rewards.{rname}.function': {err}") from None
            continue
        if rname not in REWARDS:
            raise ConfigError(
                f"'rewards.{rname}': unknown reward; valid names: {', '.join(REWARDS.names())} "
                "(or give a user function: function = 'module:function')"
            )
        knobs = {k: v for k, v in spec.items() if k != "weight"}
        _check_table_knobs(REWARDS, rname, knobs, f"rewards.{rname}.", f"a knob of reward {rname!r}")


def _validate_reward_weights(cfg: Config) -> None:
    rw = cfg.reward_weights
    if not rw.controller:
        if rw.knobs:
            raise ConfigError(
                f"[reward_weights] has knobs ({', '.join(rw.knobs)}) but no controller; set "
                f"reward_weights.controller (one of {', '.join(REWARD_WEIGHTS.names())})"
            )
        return
    if rw.controller not in REWARD_WEIGHTS:
        raise ConfigError(
            f"'reward_weights.controller': unknown reward-weight controller {rw.controller!r}; "
            f"valid names: {', '.join(REWARD_WEIGHTS.names())}"
        )
    _check_table_knobs(
        REWARD_WEIGHTS, rw.controller, rw.knobs, "reward_weights.", f"a knob of {rw.controller!r}"
    )
    scheduled = [k for k in flatten_schedule(cfg.schedule) if k.startswith("rewards.")]
    if scheduled:
        raise ConfigError(
            f"'reward_weights.controller' = {rw.controller!r} sets the reward weights every step; "
            f"they cannot also follow [schedule] ({', '.join(scheduled)})"
        )
    # a dry run at the recipe's weights catches knobs that name no reward component
    import torch

    base = torch.tensor([float(spec.get("weight", 1.0)) for spec in cfg.rewards.values()])
    try:
        REWARD_WEIGHTS[rw.controller](
            {"weights": base}, torch.zeros_like(base), base=base, names=tuple(cfg.rewards), **rw.knobs
        )
    except (ValueError, TypeError) as err:
        raise ConfigError(f"'reward_weights': {err}") from None


def _validate_shaping(cfg: Config) -> None:
    for sname, spec in cfg.shaping.items():
        if sname not in SHAPING:
            raise ConfigError(
                f"'shaping.{sname}': unknown reward shaping; valid names: {', '.join(SHAPING.names())}"
            )
        if not isinstance(spec, dict):
            raise ConfigError(f"'shaping.{sname}' must be a table of its knobs (may be empty)")
        missing = SHAPING.needs(sname) - INPUTS["shaping"]
        if missing:
            raise ConfigError(
                f"'shaping.{sname}' needs {', '.join(sorted(missing))}, which the trainer cannot supply"
            )
        _check_table_knobs(SHAPING, sname, spec, f"shaping.{sname}.", f"a knob of {sname!r}")
        # a dry run on a dummy group catches knobs that conflict with the rest of the recipe (for
        # example an overlong buffer longer than rollout.max_new_tokens) before any work
        import torch

        dummy = {
            "lengths": torch.tensor([[1.0, 2.0]]),
            "correct": torch.tensor([[1.0, 0.0]]),
            "max_len": cfg.rollout.max_new_tokens,
        }
        fn = SHAPING[sname]
        try:
            fn(torch.tensor([[1.0, 0.0]]), **{k: dummy[k] for k in fn.needs}, **spec)  # type: ignore[attr-defined]
        except (ValueError, TypeError) as err:
            raise ConfigError(f"'shaping.{sname}': {err}") from None


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.toml"))


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read recipe {path}: {err.strerror}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as err:  # parse errors of either format
        raise ConfigError(f"recipe {path} is not valid {path.suffix.lstrip('.')}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a table of sections")
    return data


def is_step_reward(name: str) -> bool:
    """Whether the registered reward ``name`` builds a :class:`~rlvr.rewards.steps.StepReward`
    (by its factory's return annotation; the trainer checks the built component again)."""
    if name not in REWARDS:
        return False
    try:
        ret = typing.get_type_hints(REWARDS[name]).get("return")
    except Exception:  # an annotation that does not resolve: not declared a step reward
        return False
    return isinstance(ret, type) and issubclass(ret, StepReward)


def resolve_recipe(recipe: str) -> Path:
    """A recipe name (shipped in rlvr/train/recipes) or a path to a TOML/YAML file. A directory is
    never a recipe: a run directory named like a recipe (``--run-dir opd``) does not hide it."""
    p = Path(recipe)
    if p.suffix in (".toml", ".yaml", ".yml") or p.is_file():
        if not p.exists():
            raise ConfigError(f"recipe file {p} does not exist")
        return p
    shipped = RECIPES_DIR / f"{recipe}.toml"
    if not shipped.exists():
        raise ConfigError(
            f"unknown recipe {recipe!r}; shipped recipes: {', '.join(recipe_names())}"
            " (or give a path to a .toml/.yaml file)"
        )
    return shipped


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare string


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``section.field=value`` overrides (values in TOML syntax) to a recipe dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_value(value.strip())
    return data


def config_from_dict(data: dict[str, Any]) -> Config:
    try:
        return validate(_build(Config, data, ""))
    except UnknownComponentError as err:
        raise ConfigError(str(err)) from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section (tables merge, other values replace)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_recipe(recipe: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """The recipe's data with ``extends = "other"`` resolved: the other recipe's data, then this one's.

    ``extends`` names a shipped recipe or a file path (relative paths from the extending file's folder).
    """
    path = resolve_recipe(recipe)
    key = str(path.resolve())
    if key in _seen:
        raise ConfigError(f"recipe {path} extends itself (through {' -> '.join(_seen)})")
    data = _read(path)
    data.setdefault("name", path.stem)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"recipe {path}: 'extends' must be a recipe name or path, got {parent!r}")
    if (path.parent / parent).suffix in (".toml", ".yaml", ".yml"):
        parent = str(path.parent / parent)
    base = read_recipe(parent, (*_seen, key))
    for own in ("name", "description", "paper"):  # a recipe's identity is not inherited
        base.pop(own, None)
    return _merge(base, data)


def load_config(recipe: str = "grpo", overrides: list[str] | None = None) -> Config:
    """Load a shipped recipe by name, or a TOML/YAML file, apply overrides, validate."""
    data = read_recipe(recipe)
    return config_from_dict(apply_overrides(data, overrides or []))
