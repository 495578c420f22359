"""Rewards computed by models: reward models, ensembles, PAR, process reward models, likelihood.

Every reward here is a :class:`~rlvr.rewards.verifiers.BatchedReward`: the trainer calls it once per
step with the N = B*G samples, so a model scores them in batches. Models load lazily, at the first
call, on ``device`` (``"auto"``: CUDA when available, else CPU); the directory is checked when the
reward is built, so a wrong path fails when the run starts, with the path and what is missing.

Unlike the verifiers, this module uses torch; it imports torch and transformers only when a model
is loaded, so that registering these rewards stays cheap.

Registered rewards (knobs in each factory's docstring):

- ``reward_model``: the score of a local ``AutoModelForSequenceClassification`` directory;
  optionally PAR-shaped against the score of the reference answer.
- ``ensemble``: several reward models combined by mean, min or mean - lam * var.
- ``prm``: a process reward model applied to every step prefix, shaped by clip or delta, summed.
- ``likelihood``: log p(reference answer | prompt, reasoning) under a causal LM (default: the policy).
- ``likelihood_steps``: the same probe after every step, a step reward (its gain or value per step).
- ``relevance``: R^3's relevance, log p(prompt | response) - log p(prompt) under a causal LM, plus a
  length incentive and a repetition penalty.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rlvr.models.hf import check_model_dir, quiet_progress_bars
from rlvr.rewards.steps import StepReward, split_steps
from rlvr.rewards.verifiers import REWARDS, BatchedReward

if TYPE_CHECKING:
    import torch

__all__ = [
    "EnsembleScorer",
    "LikelihoodReward",
    "LikelihoodSteps",
    "ProcessReward",
    "RelevanceReward",
    "RewardModelReward",
    "SequenceScorer",
    "answer_logprobs",
    "combine_scores",
    "make_ensemble",
    "make_likelihood",
    "make_likelihood_steps",
    "make_prm",
    "make_relevance",
    "make_reward_model",
    "relevance_regularizer",
    "split_steps",
]

Normalize = Literal["none", "sigmoid"]
DType = Literal["auto", "float32", "bfloat16", "float16"]


# ---------------------------------------------------------------- loading


def _device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from err


def _dtype(dtype: str) -> Any:
    import torch

    table = {
        "auto": "auto",
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }
    if dtype not in table:
        raise ValueError(f"dtype must be one of {', '.join(table)}, got {dtype!r}")
    return table[dtype]


# ---------------------------------------------------------------- one reward model


class SequenceScorer:
    """Scores (prompt, completion) pairs with a local ``AutoModelForSequenceClassification``.

    Text: the tokenizer's chat template over ``[user: prompt, assistant: completion]`` when it has
    one, else ``prompt + "\\n" + completion`` with the tokenizer's special tokens. Sequences longer
    than ``max_length`` tokens lose their beginning (the score is read at the end).

    Batching and padding: each batch is padded on the right with the model's pad token id (the
    tokenizer's padding side does not matter), so every real token keeps its position and, with causal
    attention, never sees a pad. Decoder classifiers (``*ForSequenceClassification`` of Llama, Qwen2,
    ...) pool the logits of the rightmost token that is not the pad id, which is then the last real
    token; encoders pool their first token and use the attention mask. A model whose config has no pad
    id gets the tokenizer's pad (or EOS) id; a text that ends in that id is then read at its last other
    token, alone as in a batch. Batched scores equal one-by-one scores.

    Score: the logit of ``label`` (``-1``: the model must have a single output), passed through a
    sigmoid when ``normalize = "sigmoid"``.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 32,
        max_length: int = 512,
        device: str = "auto",
        dtype: str = "auto",
        normalize: str = "none",
        label: int = -1,
    ) -> None:
        self.path = check_model_dir(path, what="reward model")
        if batch_size < 1 or max_length < 2:
            raise ValueError(
                f"reward model {self.path}: batch_size must be >= 1 and max_length >= 2, "
                f"got {batch_size} and {max_length}"
            )
        if normalize not in ("none", "sigmoid"):
            raise ValueError(f"normalize must be 'none' or 'sigmoid', got {normalize!r}")
        _device(device), _dtype(dtype)  # a bad value fails when the reward is built
        self.batch_size, self.max_length = batch_size, max_length
        self.device_name, self.dtype_name = device, dtype
        self.normalize, self.label = normalize, label
        self._model: Any = None
        self._tok: Any = None
        self._pad = 0

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer), loaded on the first call; errors name the directory."""
        if self._model is not None:
            return self._model, self._tok
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        quiet_progress_bars()
        try:
            archs = list(getattr(AutoConfig.from_pretrained(self.path), "architectures", None) or [])
        except Exception as err:
            raise ValueError(f"reward model {self.path}: cannot read config.json: {err}") from err
        if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
            raise ValueError(
                f"reward model {self.path} is a {', '.join(archs)}, not a sequence classification "
                "model (*ForSequenceClassification); its score head would be untrained"
            )
        try:
            tok = AutoTokenizer.from_pretrained(self.path)
        except Exception as err:
            raise ValueError(f"reward model {self.path}: cannot load its tokenizer: {err}") from err
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                self.path, dtype=_dtype(self.dtype_name)
            )
        except Exception as err:
            raise ValueError(
                f"reward model {self.path}: cannot load it as AutoModelForSequenceClassification: {err}"
            ) from err
        n = int(model.config.num_labels)
        if self.label == -1 and n != 1:
            raise ValueError(
                f"reward model {self.path} has {n} outputs (num_labels); set the knob 'label' to the "
                "index of the one to use as the score"
            )
        if self.label >= n or self.label < -1:
            raise ValueError(f"reward model {self.path}: label {self.label} is not in [0, {n})")
        pad = model.config.pad_token_id
        if pad is None:
            pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
            if pad is None:
                raise ValueError(
                    f"reward model {self.path}: neither model nor tokenizer has a pad/eos id"
                )
            model.config.pad_token_id = pad  # lets the model find the last real token of each row
        tok.truncation_side = "left"
        model.to(_device(self.device_name)).eval()
        self._model, self._tok, self._pad = model, tok, int(pad)
        return model, tok

    def text(self, prompt: str, completion: str) -> str:
        """The text that the model scores for one (prompt, completion) pair."""
        _, tok = self.load()
        if getattr(tok, "chat_template", None):
            return tok.apply_chat_template(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
                tokenize=False,
            )
        return f"{prompt}\n{completion}"

    def encode(self, prompt: str, completion: str) -> list[int]:
        """Token ids of one pair, truncated on the left to ``max_length``."""
        _, tok = self.load()
        templated = bool(getattr(tok, "chat_template", None))
        return tok(
            self.text(prompt, completion),
            add_special_tokens=not templated,
            truncation=True,
            max_length=self.max_length,
        )["input_ids"]

    def score_ids(self, seqs: Sequence[Sequence[int]]) -> list[float]:
        """Scores of token-id sequences, in batches of ``batch_size`` (right-padded)."""
        import torch

        model, _ = self.load()
        device = next(model.parameters()).device
        out: list[float] = []
        for start in range(0, len(seqs), self.batch_size):
            chunk = seqs[start : start + self.batch_size]
            width = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), width), self._pad, dtype=torch.long)  # [b, L]
            attn = torch.zeros((len(chunk), width), dtype=torch.long)  # [b, L]
            for i, s in enumerate(chunk):
                ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
                attn[i, : len(s)] = 1
            with torch.no_grad():
                logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits  # [b, C]
            s = logits[:, max(self.label, 0)].float()  # [b]
            if self.normalize == "sigmoid":
                s = torch.sigmoid(s)
            out.extend(s.cpu().tolist())
        return out

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """One score per (prompt, completion) pair."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return self.score_ids([self.encode(p, c) for p, c in zip(prompts, completions, strict=True)])


# ---------------------------------------------------------------- ensembles


def combine_scores(scores: torch.Tensor, combine: str = "mean", *, lam: float = 1.0) -> torch.Tensor:
    """Combine the scores of K reward models, [K, N] -> [N].

    - ``mean``: (1/K) sum_k s_k
    - ``min``: min_k s_k (worst case over the ensemble)
    - ``mean_minus_var``: mean - lam * var, var = (1/K) sum_k (s_k - mean)^2 (population variance, so
      one model gives var = 0): disagreement between the models lowers the reward.
    """
    if scores.dim() != 2 or scores.shape[0] < 1:
        raise ValueError(f"scores must be [K, N] with K >= 1, got {tuple(scores.shape)}")
    s = scores.float()
    if combine == "mean":
        return s.mean(0)
    if combine == "min":
        return s.min(0).values
    if combine == "mean_minus_var":
        return s.mean(0) - lam * s.var(0, unbiased=False)
    raise ValueError(f"combine must be 'mean', 'min' or 'mean_minus_var', got {combine!r}")


class EnsembleScorer:
    """Several :class:`SequenceScorer` combined by :func:`combine_scores`."""

    def __init__(self, scorers: Sequence[SequenceScorer], combine: str = "mean", lam: float = 1.0):
        if not scorers:
            raise ValueError("an ensemble needs at least one reward model")
        if combine not in ("mean", "min", "mean_minus_var"):
            raise ValueError(f"combine must be 'mean', 'min' or 'mean_minus_var', got {combine!r}")
        self.scorers, self.combine, self.lam = list(scorers), combine, lam

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        import torch

        each = torch.tensor([m.score(prompts, completions) for m in self.scorers])  # [K, N]
        return combine_scores(each, self.combine, lam=self.lam).tolist()


# ---------------------------------------------------------------- the reward-model reward


class RewardModelReward(BatchedReward):
    """Reward = the scorer's score of (prompt, completion); with ``par``, PAR-shaped:
    r = sigmoid(s(prompt, completion) - s(prompt, ref_template.format(answer=answer))).

    The reference score is computed once per distinct (prompt, answer) of the step.
    """

    def __init__(
        self,
        scorer: SequenceScorer | EnsembleScorer,
        *,
        par: bool = False,
        ref_template: str = "<answer>{answer}</answer>",
    ) -> None:
        if par and "{answer}" not in ref_template:
            raise ValueError(f"ref_template must contain '{{answer}}', got {ref_template!r}")
        self.scorer, self.par, self.ref_template = scorer, par, ref_template

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        scores = self.scorer.score(prompts, completions)
        if not self.par:
            return scores
        import torch

        from rlvr.algos.shaping import preference_as_reward

        keys = list(dict.fromkeys(zip(prompts, answers, strict=True)))  # distinct, in order
        refs = self.scorer.score(
            [p for p, _ in keys], [self.ref_template.format(answer=a) for _, a in keys]
        )
        ref_of = dict(zip(keys, refs, strict=True))
        r = torch.tensor(scores)  # [N]
        r_ref = torch.tensor([ref_of[k] for k in zip(prompts, answers, strict=True)])  # [N]
        return preference_as_reward(r, r_ref).tolist()


@REWARDS.register("reward_model", bounds={"batch_size": ">= 1", "max_length": ">= 2", "label": ">= -1"})
def make_reward_model(
    *,
    path: str = "",
    batch_size: int = 32,
    max_length: int = 512,
    device: str = "auto",
    dtype: DType = "auto",
    normalize: Normalize = "none",
    label: int = -1,
    par: bool = False,
    ref_template: str = "<answer>{answer}</answer>",
) -> BatchedReward:
    """A reward model, the standard scalar RM of RLHF: any local ``AutoModelForSequenceClassification``
    directory (``path``).

    Reward = the model's score of (prompt, completion) (see :class:`SequenceScorer`), optionally
    ``normalize = "sigmoid"``. ``par = true`` gives Preference As Reward instead:
    sigmoid(s(completion) - s(reference)), where the reference completion is ``ref_template`` filled
    with the problem's answer (the format the policy is asked for); PAR already bounds the score, so
    it ignores ``normalize``. ``label``: which logit is the score when the model has several outputs.
    """
    scorer = SequenceScorer(
        path,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        dtype=dtype,
        normalize="none" if par else normalize,
        label=label,
    )
    return RewardModelReward(scorer, par=par, ref_template=ref_template)


def _split_paths(paths: str | Sequence[str]) -> list[str]:
    items = paths.split(",") if isinstance(paths, str) else list(paths)
    out = [str(p).strip() for p in items if str(p).strip()]
    if not out:
        raise ValueError("ensemble: the knob 'paths' is empty; give comma-separated model directories")
    return out


@REWARDS.register(
    "ensemble", bounds={"batch_size": ">= 1", "max_length": ">= 2", "label": ">= -1", "lam": ">= 0"}
)
def make_ensemble(
    *,
    paths: str = "",
    combine: Literal["mean", "min", "mean_minus_var"] = "mean",
    lam: float = 1.0,
    batch_size: int = 32,
    max_length: int = 512,
    device: str = "auto",
    dtype: DType = "auto",
    normalize: Normalize = "none",
    label: int = -1,
    par: bool = False,
    ref_template: str = "<answer>{answer}</answer>",
) -> BatchedReward:
    """An ensemble of reward models ("Reward Model Ensembles Help Mitigate Overoptimization"):
    ``paths`` is a comma-separated list of model directories (a
    string, which the recipe check verifies; a Python list is also accepted when called directly).

    Each model scores like ``reward_model`` (``normalize`` per model), then the K scores combine
    (:func:`combine_scores`): mean, min, or mean - lam * var. With ``par``, the combined score of the
    completion is PAR-shaped against the combined score of the reference answer.
    """
    scorers = [
        SequenceScorer(
            p,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            dtype=dtype,
            normalize=normalize,
            label=label,
        )
        for p in _split_paths(paths)
    ]
    return RewardModelReward(EnsembleScorer(scorers, combine, lam), par=par, ref_template=ref_template)


# ---------------------------------------------------------------- process reward model


class ProcessReward(StepReward):
    """A process reward model (PRM) used as an outcome reward.

    For a completion with steps 1..S (:func:`split_steps`), the PRM (a sequence classifier, see
    :class:`SequenceScorer`) scores each prefix: r_k = s(prompt, prefix_k), [N, S] with a step mask.
    The step rewards are shaped (Gao et al. 2024) and summed::

        clip:  R = sum_k min(r_k - eta, 0)          (<= 0; repeating steps cannot raise it)
        delta: R = sum_k (r_k - r_{k+1}) + r_S = r_1 (telescopes to the first step's score)
        none:  R = sum_k r_k

    A completion with no step gets 0. The delta form keeps its bounded-return property per step, but
    summed to one sequence reward it is just r_1: it is meant for per-step (token-level) credit.
    As a :class:`~rlvr.rewards.steps.StepReward` its step scores are also the ``process_rewards`` of
    token-level credit (``pure_min``), placed on each step's last token.
    """

    def __init__(
        self, scorer: SequenceScorer, *, delimiter: str = "\n\n", shaping: str = "clip", eta: float = 0.5
    ) -> None:
        if shaping not in ("clip", "delta", "none"):
            raise ValueError(f"prm: shaping must be 'clip', 'delta' or 'none', got {shaping!r}")
        if not delimiter:
            raise ValueError("prm: the knob 'delimiter' must not be empty")
        self.scorer, self.delimiter, self.shaping, self.eta = scorer, delimiter, shaping, eta

    def score_steps(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(step rewards [N, S], step mask [N, S]) with S the most steps of any completion."""
        import torch

        prefixes = [split_steps(c, self.delimiter) for c in completions]
        flat_p = [p for p, steps in zip(prompts, prefixes, strict=True) for _ in steps]
        flat_c = [s for steps in prefixes for s in steps]
        flat = self.scorer.score(flat_p, flat_c) if flat_c else []
        n, s = len(completions), max((len(x) for x in prefixes), default=0)
        rewards = torch.zeros((n, s))  # [N, S]
        mask = torch.zeros((n, s))  # [N, S]
        at = 0
        for i, steps in enumerate(prefixes):
            k = len(steps)
            rewards[i, :k] = torch.tensor(flat[at : at + k])
            mask[i, :k] = 1.0
            at += k
        return rewards, mask

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        from rlvr.algos.shaping import prm_clip, prm_delta

        r, m = self.step_rewards(prompts, completions)  # [N, S]
        if self.shaping == "clip":
            shaped = prm_clip(r, m, eta=self.eta)
        elif self.shaping == "delta":
            shaped = prm_delta(r, m)
        else:
            shaped = r * m
        return shaped.sum(dim=1).tolist()


@REWARDS.register("prm", bounds={"batch_size": ">= 1", "max_length": ">= 2", "label": ">= -1"})
def make_prm(
    *,
    path: str = "",
    delimiter: str = "\n\n",
    shaping: Literal["clip", "delta", "none"] = "clip",
    eta: float = 0.5,
    normalize: Normalize = "sigmoid",
    batch_size: int = 32,
    max_length: int = 512,
    device: str = "auto",
    dtype: DType = "auto",
    label: int = -1,
) -> ProcessReward:
    """A process reward model (:class:`ProcessReward`; its clip and delta shaping from "On Designing
    Effective RL Reward at Training Time for LLM Reasoning"): a sequence classifier at ``path``
    scores every step prefix (steps split by ``delimiter``), the step scores are shaped by ``clip``
    (threshold ``eta``) or ``delta`` and summed. ``normalize`` defaults to ``sigmoid`` so that step
    scores are probabilities, the scale on which ``eta = 0.5`` is meant."""
    scorer = SequenceScorer(
        path,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        dtype=dtype,
        normalize=normalize,
        label=label,
    )
    return ProcessReward(scorer, delimiter=delimiter, shaping=shaping, eta=eta)


# ---------------------------------------------------------------- likelihood reward


def answer_logprobs(
    model: Any,
    tokenizer: Any,
    contexts: Sequence[str],
    targets: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int = 1024,
) -> list[list[float]]:
    """log p(target token j | context, target tokens < j) for every token of every target.

    Context and target are tokenized separately (no special tokens) and concatenated, so the target
    tokens are the same whatever the context. A context is cut on the left so that context + target
    fit in ``max_length`` tokens (at least one context token is kept). Batches are left-padded
    contexts and right-padded targets with explicit positions (``rlvr.rollout.logprobs``), in eval
    mode without gradients; the model's training mode is restored afterwards. Temperature 1.
    """
    import torch

    from rlvr.rollout.logprobs import sequence_logp

    if len(contexts) != len(targets):
        raise ValueError(f"{len(contexts)} contexts but {len(targets)} targets")
    ctx_ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"] if contexts else []
    tgt_ids = tokenizer(list(targets), add_special_tokens=False)["input_ids"] if targets else []
    for i, t in enumerate(tgt_ids):
        if not t:
            raise ValueError(f"likelihood: target {i} ({targets[i]!r}) has no tokens")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad = 0 if pad is None else int(pad)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[list[float]] = []
    try:
        for start in range(0, len(tgt_ids), batch_size):
            cs = ctx_ids[start : start + batch_size]
            ts = tgt_ids[start : start + batch_size]
            cs = [c[-max(1, max_length - len(t)) :] if c else c for c, t in zip(cs, ts, strict=True)]
            if any(not c for c in cs):
                raise ValueError("likelihood: a context has no tokens (nothing to condition on)")
            p, t = max(len(c) for c in cs), max(len(x) for x in ts)
            p_ids = torch.full((len(cs), p), pad, dtype=torch.long)  # [b, P] left-padded
            p_mask = torch.zeros((len(cs), p), dtype=torch.long)  # [b, P]
            c_ids = torch.full((len(cs), t), pad, dtype=torch.long)  # [b, T] right-padded
            c_mask = torch.zeros((len(cs), t), dtype=torch.long)  # [b, T]
            for i, (c, x) in enumerate(zip(cs, ts, strict=True)):
                p_ids[i, p - len(c) :] = torch.tensor(c)
                p_mask[i, p - len(c) :] = 1
                c_ids[i, : len(x)] = torch.tensor(x)
                c_mask[i, : len(x)] = 1
            with torch.no_grad():
                logp, _ = sequence_logp(
                    model,
                    p_ids.to(device),
                    p_mask.to(device),
                    c_ids.to(device),
                    c_mask.to(device),
                    share_prompts=False,
                )  # [b, T]
            logp = logp.float().cpu()
            out.extend(logp[i, : len(x)].tolist() for i, x in enumerate(ts))
    finally:
        model.train(was_training)
    return out


class LikelihoodReward(BatchedReward):
    """Reward = log-likelihood of the reference answer given the prompt and the completion's
    reasoning, under a causal LM (the policy when ``path`` is empty)::

        context = format_prompt(tokenizer, prompt) + reasoning
        target  = template.format(answer=answer)              # default "<answer>{answer}</answer>"
        R       = (1/|target|) sum_j log p(target_j | context, target_<j)   (reduce = "mean")
                  or the sum over j                                         (reduce = "sum")

    ``format_prompt`` is the prompt the policy is sampled from (chat template and instruction).
    The reasoning is the completion up to its last ``<answer>`` tag when ``strip_answer`` (the
    policy's own answer is replaced by the reference one, where it would have been written), else
    the whole completion. R <= 0; it is higher when the reasoning makes the right answer likely.
    """

    name = "likelihood"  # in the messages about the model (a subclass scores something else)

    def __init__(
        self,
        path: str = "",
        *,
        reduce: str = "mean",
        template: str = "<answer>{answer}</answer>",
        strip_answer: bool = True,
        batch_size: int = 16,
        max_length: int = 1024,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        if reduce not in ("mean", "sum"):
            raise ValueError(f"likelihood: reduce must be 'mean' or 'sum', got {reduce!r}")
        if "{answer}" not in template:
            raise ValueError(f"likelihood: template must contain '{{answer}}', got {template!r}")
        self.path = check_model_dir(path, what=f"{self.name} model") if path else None
        self.needs_policy = self.path is None
        self.reduce, self.template, self.strip_answer = reduce, template, strip_answer
        _device(device), _dtype(dtype)  # a bad value fails when the reward is built
        self.batch_size, self.max_length = batch_size, max_length
        self.device_name, self.dtype_name = device, dtype
        self._own: tuple[Any, Any] | None = None

    def _model(self, policy: tuple[Any, Any] | None) -> tuple[Any, Any]:
        if self.path is None:
            if policy is None:
                raise ValueError(
                    f"{self.name} reward with path = '' scores under the policy, but no policy was "
                    "passed (call it with policy=(model, tokenizer))"
                )
            return policy
        if self._own is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            quiet_progress_bars()
            try:
                tok = AutoTokenizer.from_pretrained(self.path)
                model = AutoModelForCausalLM.from_pretrained(self.path, dtype=_dtype(self.dtype_name))
            except Exception as err:
                raise ValueError(f"{self.name} model {self.path}: cannot load it: {err}") from err
            model.to(_device(self.device_name)).eval()
            self._own = (model, tok)
        return self._own

    def context(self, tokenizer: Any, prompt: str, completion: str) -> str:
        from rlvr.data.prompts import format_prompt

        reasoning = completion
        if self.strip_answer and "<answer>" in completion:
            reasoning = completion[: completion.rfind("<answer>")]
        return format_prompt(tokenizer, prompt) + reasoning

    def _reduced(self, model: Any, tok: Any, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """The ``reduce`` (sum or mean) of log p(target | context) over the target's tokens, for
        each distinct (context, target) pair in ``pairs``, in their order; scored in order of length
        (:func:`answer_logprobs` batches neighbours, so like lengths share a batch)."""
        order = sorted(range(len(pairs)), key=lambda j: len(pairs[j][0]) + len(pairs[j][1]))
        per_token = answer_logprobs(
            model,
            tok,
            [pairs[j][0] for j in order],
            [pairs[j][1] for j in order],
            batch_size=self.batch_size,
            max_length=self.max_length,
        )
        value = [0.0] * len(pairs)
        for j, lp in zip(order, per_token, strict=True):
            value[j] = float(sum(lp)) if self.reduce == "sum" else float(sum(lp) / len(lp))
        return value

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        model, tok = self._model(policy)
        contexts = [self.context(tok, p, c) for p, c in zip(prompts, completions, strict=True)]
        targets = [self.template.format(answer=a) for a in answers]
        per_token = answer_logprobs(
            model, tok, contexts, targets, batch_size=self.batch_size, max_length=self.max_length
        )
        if self.reduce == "sum":
            return [float(sum(x)) for x in per_token]
        return [float(sum(x) / len(x)) for x in per_token]


@REWARDS.register("likelihood", bounds={"batch_size": ">= 1", "max_length": ">= 2"})
def make_likelihood(
    *,
    path: str = "",
    reduce: Literal["mean", "sum"] = "mean",
    template: str = "<answer>{answer}</answer>",
    strip_answer: bool = True,
    batch_size: int = 16,
    max_length: int = 1024,
    device: str = "auto",
    dtype: DType = "auto",
) -> BatchedReward:
    """Likelihood reward (:class:`LikelihoodReward`, "Likelihood-Based Reward Designs for General LLM
    Reasoning"): mean (or sum) log p(reference answer | prompt,
    reasoning) under the causal LM at ``path``, or under the current policy when ``path`` is empty
    (the reward then sets ``needs_policy``)."""
    return LikelihoodReward(
        path,
        reduce=reduce,
        template=template,
        strip_answer=strip_answer,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        dtype=dtype,
    )


# ---------------------------------------------------------------- likelihood probes at every step


class LikelihoodSteps(LikelihoodReward, StepReward):
    """``likelihood_steps``: the likelihood probe of :class:`LikelihoodReward` read at every step
    boundary, a step reward without a trained PRM.

    For a completion with steps 1..K (:func:`split_steps` by ``delimiter``) the probe's value after
    step k is the likelihood reward of the prefix that ends there::

        v_k = (1/|target|) sum_j log p(target_j | format_prompt(prompt) + reasoning(prefix_k), ...)
              (the sum over j with reduce = "sum"; exp(v_k) with scale = "prob")
        v_0 = the same with the prompt alone; prefix_K is the whole completion
        step score s_k = v_k - v_{k-1}   (score = "gain": the progress step k makes, telescoping to
                                            v_K - v_0)
                      or v_k             (score = "value")

    ``reasoning`` drops the prefix's text from its last ``<answer>`` on (``strip_answer``), as the
    outcome reward does, so v_K is exactly ``likelihood``'s reward on the whole completion. As an
    outcome reward it scores v_K, whatever ``score`` is. The gain is GRPO-VPS's segment-wise
    progress ("GRPO-VPS: Enhancing Group Relative Policy Optimization with Verifiable Process
    Supervision for Effective Reasoning": the probability of the correct answer appended at each
    segment boundary), the value P2S's per-step probability of the reference ("P2S: Probabilistic
    Process Supervision for General-Domain Reasoning Question Answering", here of the reference
    answer, not of a synthesised gold reasoning chain); neither abstract gives a formula, this is the
    simplest rule faithful to both. Step scores are the ``process_rewards`` of token-level credit
    (``credit = "pure_min"``); a step whose score is exactly 0 (e.g. one that adds nothing after a
    stripped ``<answer>``) reads there as no step end and joins the next one.

    Batching: all the prefixes of all the samples go through :func:`answer_logprobs` together, each
    distinct (context, target) once (the G samples of a prompt share v_0), sorted by length so that a
    batch pads little; no gradients. The reference answers are those of the outcome call (the trainer
    scores the outcome first, then asks for the step scores of the same completions), which computes
    the step scores too and caches them.
    """

    def __init__(
        self,
        path: str = "",
        *,
        delimiter: str = "\n",
        score: str = "gain",
        scale: str = "log",
        **kw: Any,
    ) -> None:
        super().__init__(path, **kw)
        if not delimiter:
            raise ValueError("likelihood_steps: the knob 'delimiter' must not be empty")
        if score not in ("gain", "value"):
            raise ValueError(f"likelihood_steps: score must be 'gain' or 'value', got {score!r}")
        if scale not in ("log", "prob"):
            raise ValueError(f"likelihood_steps: scale must be 'log' or 'prob', got {scale!r}")
        self.delimiter, self.score, self.scale = delimiter, score, scale
        self._answers: dict[str, str] = {}  # prompt -> reference answer, from the outcome calls
        self._policy: tuple[Any, Any] | None = None

    def prefixes(self, completion: str) -> list[str]:
        """The texts the probe reads: "" (v_0), the step prefixes, the whole completion last (v_K;
        with no step, the completion is still read: the outcome)."""
        steps = split_steps(completion, self.delimiter)
        return ["", *steps[:-1], completion]

    def values(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        answers: Sequence[str],
        policy: tuple[Any, Any] | None = None,
    ) -> list[list[float]]:
        """[v_0, v_1, ..., v_K] of every completion (``[v_0, outcome]`` for one without a step)."""
        import math

        if not len(prompts) == len(completions) == len(answers):
            raise ValueError(
                f"likelihood_steps: {len(prompts)} prompts, {len(completions)} completions and "
                f"{len(answers)} answers; expected as many of each"
            )
        model, tok = self._model(policy)
        index: dict[tuple[str, str], int] = {}
        pairs: list[tuple[str, str]] = []
        rows: list[list[int]] = []
        for p, c, a in zip(prompts, completions, answers, strict=True):
            target = self.template.format(answer=a)
            keys = []
            for prefix in self.prefixes(c):
                key = (self.context(tok, p, prefix), target)
                if key not in index:
                    index[key] = len(pairs)
                    pairs.append(key)
                keys.append(index[key])
            rows.append(keys)
        value = self._reduced(model, tok, pairs)
        if self.scale == "prob":
            value = [math.exp(v) for v in value]
        return [[value[j] for j in keys] for keys in rows]

    def _steps(self, completions: Sequence[str], values: list[list[float]]) -> tuple[Any, Any]:
        import torch

        counts = [len(split_steps(c, self.delimiter)) for c in completions]
        s = max(counts, default=0)
        scores = torch.zeros((len(completions), s))  # [N, S]
        mask = torch.zeros((len(completions), s))  # [N, S]
        for i, (k, v) in enumerate(zip(counts, values, strict=True)):
            if not k:
                continue
            vs = torch.tensor(v, dtype=torch.float64)  # [K + 1]
            step = vs[1:] - vs[:-1] if self.score == "gain" else vs[1:]  # [K]
            scores[i, :k] = step.float()
            mask[i, :k] = 1.0
        return scores, mask

    def score_steps(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        missing = sorted({p for p in prompts if p not in self._answers})
        if missing:
            raise ValueError(
                f"likelihood_steps: no reference answer for the prompt {missing[0][:200]!r}; the step "
                "scores read the answers of the outcome call (call the reward with the answers first)"
            )
        answers = [self._answers[p] for p in prompts]
        return self._steps(completions, self.values(prompts, completions, answers, self._policy))

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        self._answers.update(zip(prompts, answers, strict=True))
        self._policy = policy  # kept: a later step_rewards call on other rows scores with it too
        values = self.values(prompts, completions, answers, policy)
        scores, mask = self._steps(completions, values)
        self._last = ((tuple(prompts), tuple(completions)), scores, mask)  # step_rewards' cache
        return [v[-1] for v in values]


@REWARDS.register("likelihood_steps", bounds={"batch_size": ">= 1", "max_length": ">= 2"})
def make_likelihood_steps(
    *,
    path: str = "",
    delimiter: str = "\n",
    score: Literal["gain", "value"] = "gain",
    scale: Literal["log", "prob"] = "log",
    reduce: Literal["mean", "sum"] = "mean",
    template: str = "<answer>{answer}</answer>",
    strip_answer: bool = True,
    batch_size: int = 16,
    max_length: int = 1024,
    device: str = "auto",
    dtype: DType = "auto",
) -> LikelihoodSteps:
    """Likelihood probes at every step boundary (:class:`LikelihoodSteps`; GRPO-VPS's verifiable
    process supervision, "GRPO-VPS: Enhancing Group Relative Policy Optimization with Verifiable
    Process Supervision for Effective Reasoning"): v_k = the ``likelihood`` reward of the prefix
    ending at step k (steps split by ``delimiter``; v_0 the prompt alone), the step score is the gain
    v_k - v_{k-1} (``score = "gain"``) or v_k (``"value"``), on the log scale or as a probability
    (``scale = "prob"``: exp of the mean, or of the sum, log-probability). The outcome is v_K, the
    ``likelihood`` reward. Under the policy when ``path`` is empty, else the causal LM at ``path``.
    Give it weight 0 to use it for token-level credit only (``credit = "pure_min"``)."""
    return LikelihoodSteps(
        path,
        delimiter=delimiter,
        score=score,
        scale=scale,
        reduce=reduce,
        template=template,
        strip_answer=strip_answer,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        dtype=dtype,
    )


# ---------------------------------------------------------------- R^3's regularised relevance


def relevance_regularizer(
    completion: str,
    *,
    length_coef: float = 0.0,
    length_target: int = 100,
    repeat_coef: float = 0.0,
    ngram: int = 3,
) -> float:
    """The inductive-bias terms that :class:`RelevanceReward` adds to the relevance::

        words  = completion.split()                       (whitespace words, n = |words|)
        L      = min(n / length_target, 1)                (length incentive, in [0, 1])
        rep    = 1 - |distinct ngrams| / |ngrams|         (repeated word n-grams, in [0, 1);
                                                           0 with fewer than ``ngram`` words)
        reg    = length_coef * L - repeat_coef * rep

    Both are 0 at weight 0, so the reward is then the relevance alone. Example: "a b a b a b" with
    ngram = 2 has 5 bigrams, 2 distinct (rep = 0.6) and, with length_target = 12, L = 0.5.
    """
    words = completion.split()
    length = min(len(words) / length_target, 1.0)
    grams = [tuple(words[i : i + ngram]) for i in range(len(words) - ngram + 1)]
    repeat = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    return length_coef * length - repeat_coef * repeat


class RelevanceReward(LikelihoodReward):
    """``relevance``: R^3's regularised relevance reward ("Preference-free Alignment Learning with
    Regularized Relevance Reward"), in a form computable with a causal LM::

        with    = template.format(response=completion)     # default "{response}\\n\\nQuestion: "
        without = template.format(response="")             # the same text with no response
        rel     = (1/|x|) sum_j log p(x_j | with, x_<j)  -  (1/|x|) sum_j log p(x_j | without, x_<j)
                  (the sums over j with reduce = "sum"), x = the prompt's text
        R       = rel + length_coef * min(n_words / length_target, 1) - repeat_coef * rep
                  (:func:`relevance_regularizer`)

    ``rel`` is the pointwise mutual information of prompt and response under the LM: how much the
    response makes the prompt more likely, i.e. how well it explains it (0 for an empty response).
    The paper scores relevance with a retriever and mixes it with inductive biases that keep the
    policy from hacking it (a short reply that restates the question is highly relevant); its
    abstract names neither the biases nor the mixture. Here, rlvr's form: the LM's log-likelihood
    ratio takes the retriever's place (the policy when ``path`` is empty, else the causal LM at
    ``path``), and the regularisers are a capped length incentive and a repeated-n-gram penalty,
    added with their weights; at weights 0 the reward is ``rel`` bit for bit.

    Batching: the N conditioned texts and one unconditioned text per distinct prompt (the G samples
    of a prompt share it) go through :func:`answer_logprobs` together, no gradients. The prompt
    is read as given (its text, not the chat-formatted prompt the policy is sampled from).
    """

    name = "relevance"

    def __init__(
        self,
        path: str = "",
        *,
        template: str = "{response}\n\nQuestion: ",
        reduce: str = "mean",
        length_coef: float = 0.0,
        length_target: int = 100,
        repeat_coef: float = 0.0,
        ngram: int = 3,
        batch_size: int = 16,
        max_length: int = 1024,
        device: str = "auto",
        dtype: str = "auto",
    ) -> None:
        if reduce not in ("mean", "sum"):
            raise ValueError(f"relevance: reduce must be 'mean' or 'sum', got {reduce!r}")
        if "{response}" not in template:
            raise ValueError(f"relevance: template must contain '{{response}}', got {template!r}")
        try:
            bare = template.format(response="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"relevance: template must have '{{response}}' as its only field, got {template!r}"
            ) from err
        if not bare.strip():
            raise ValueError(
                "relevance: template without the response must leave some text to condition the "
                f"prompt on (e.g. '{{response}}\\n\\nQuestion: '), got {template!r}"
            )
        if length_coef < 0 or repeat_coef < 0:
            raise ValueError(
                f"relevance: length_coef and repeat_coef must be >= 0, got {length_coef} and "
                f"{repeat_coef}"
            )
        if length_target < 1 or ngram < 1:
            raise ValueError(
                f"relevance: length_target and ngram must be >= 1, got {length_target} and {ngram}"
            )
        super().__init__(
            path,
            reduce=reduce,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            dtype=dtype,
        )
        self.relevance_template = template
        self.length_coef, self.length_target = float(length_coef), int(length_target)
        self.repeat_coef, self.ngram = float(repeat_coef), int(ngram)

    def relevance(
        self,
        prompts: Sequence[str],
        completions: Sequence[str],
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        """``rel`` of every (prompt, completion), without the regularisers."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"relevance: {len(prompts)} prompts but {len(completions)} completions; expected as "
                "many of each"
            )
        for i, p in enumerate(prompts):
            if not p.strip():
                raise ValueError(f"relevance: prompt {i} is empty (nothing to score the response by)")
        model, tok = self._model(policy)
        index: dict[tuple[str, str], int] = {}
        pairs: list[tuple[str, str]] = []

        def key(context: str, prompt: str) -> int:
            k = (context, prompt)
            if k not in index:
                index[k] = len(pairs)
                pairs.append(k)
            return index[k]

        rows = [
            (
                key(self.relevance_template.format(response=c), p),
                key(self.relevance_template.format(response=""), p),
            )
            for p, c in zip(prompts, completions, strict=True)
        ]
        value = self._reduced(model, tok, pairs)
        return [value[w] - value[wo] for w, wo in rows]

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float]:
        rel = self.relevance(prompts, completions, policy)
        if self.length_coef == 0 and self.repeat_coef == 0:
            return rel
        return [
            r
            + relevance_regularizer(
                c,
                length_coef=self.length_coef,
                length_target=self.length_target,
                repeat_coef=self.repeat_coef,
                ngram=self.ngram,
            )
            for r, c in zip(rel, completions, strict=True)
        ]


@REWARDS.register(
    "relevance",
    bounds={
        "batch_size": ">= 1",
        "max_length": ">= 2",
        "length_coef": ">= 0",
        "length_target": ">= 1",
        "repeat_coef": ">= 0",
        "ngram": ">= 1",
    },
)
def make_relevance(
    *,
    path: str = "",
    template: str = "{response}\n\nQuestion: ",
    reduce: Literal["mean", "sum"] = "mean",
    length_coef: float = 0.0,
    length_target: int = 100,
    repeat_coef: float = 0.0,
    ngram: int = 3,
    batch_size: int = 16,
    max_length: int = 1024,
    device: str = "auto",
    dtype: DType = "auto",
) -> RelevanceReward:
    """R^3's regularised relevance (:class:`RelevanceReward`, "Preference-free Alignment Learning with
    Regularized Relevance Reward"): log p(prompt | response) - log p(prompt) (mean, or sum, over the
    prompt's tokens; the response is put in ``template``) under the policy when ``path`` is empty,
    else the causal LM at ``path``, plus ``length_coef`` * min(words / ``length_target``, 1) minus
    ``repeat_coef`` * the fraction of repeated word ``ngram``-grams. rlvr's form: an LM takes the
    retriever's place and the two regularisers are rlvr's choice (the abstract names neither)."""
    return RelevanceReward(
        path,
        template=template,
        reduce=reduce,
        length_coef=length_coef,
        length_target=length_target,
        repeat_coef=repeat_coef,
        ngram=ngram,
        batch_size=batch_size,
        max_length=max_length,
        device=device,
        dtype=dtype,
    )
