"""Multi-turn episodes: the model's turns and the environment's observations in one token sequence.

One episode is one row of a :class:`~rlvr.rollout.batch.Rollout`::

    prompt      = chat(system?, user: first observation) + assistant header     (prompt side)
    completion  = turn 1 tokens (+ EOS) | obs 1 (tool/user turn + assistant header) | turn 2 ... (rest)

On the completion side, ``mask`` is 1 on the model's tokens only (each turn's EOS included) and 0 on the
environment's, ``attn_mask`` is 1 on every real token, ``old_logp`` is the behaviour log-prob on model
tokens and 0 elsewhere, and ``turn`` [N, T] is k on the tokens of the k-th model turn. The learner
recomputes log-probs with ``sequence_logp(model, prompt_ids, prompt_mask, completion_ids,
roll.attention)``; the positions of a row are consecutive over its real tokens, as during sampling.

Batching: every turn makes ONE :func:`~rlvr.rollout.sampler.generate` call over the episodes still
running, each prompted with its whole context so far (num_samples=1). An episode stops when the
environment says ``done`` (finish ``"eos"``), after ``max_turns`` model turns (``"turns"``), or when
its token budget is used (``"length"``): at most ``max_episode_tokens`` completion-side tokens (model
and environment ones) and at most the model's ``max_position_embeddings`` tokens in all. A model turn
is at most ``max_new_tokens`` tokens; a turn cut there without EOS is still given to the environment
(which usually ends the episode), and the EOS that closes the turn is then added as an environment
token (mask 0) before the observation. An observation that does not fit, with at least one token left
for the next turn, ends the episode with ``"length"``.

Observation turns are rendered with the tokenizer's chat template, role ``info["role"]`` (default
``"tool"`` after tool calls, else ``"user"``; a template that refuses the role gets ``"user"``): the
text between the end of an assistant turn and the start of the next one, e.g. with the tiny model's
template ``<|tool|><tool_response>19</tool_response><|end|><|assistant|>``. Anchor states: the key
of the observation before turn k is ``env.state`` after ``reset`` and ``info["state"]`` after a step
(the observation text when absent), and ``turn_states`` holds :func:`~rlvr.envs.base.state_id` of it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rlvr.data.tasks import Problem
from rlvr.envs.base import Env, state_id
from rlvr.eval.evaluate import EvalResult, final_answer, outcome_result
from rlvr.rollout.batch import Rollout
from rlvr.rollout.sampler import generate, left_pad

__all__ = [
    "ChatFormat",
    "Episodes",
    "episode_metrics",
    "evaluate_episodes",
    "run_episodes",
]

_MARK_A, _MARK_O = "\x00rlvr-assistant\x00", "\x00rlvr-observation\x00"


class ChatFormat:
    """The text of an episode's turns under a tokenizer's chat template (cached per role)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.templated = bool(getattr(tokenizer, "chat_template", None))
        self._wrap: dict[str, tuple[str, str]] = {}

    def prompt(self, observation: str, system: str | None = None) -> str:
        """The prompt of an episode: (system,) user = first observation, and the assistant header."""
        if not self.templated:
            return f"{system}\n{observation}\n" if system else f"{observation}\n"
        msgs = [{"role": "system", "content": system}] if system else []
        msgs.append({"role": "user", "content": observation})
        return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    def _split(self, role: str) -> tuple[str, str]:
        msgs = [
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": _MARK_A},
            {"role": role, "content": _MARK_O},
        ]
        full = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        after = full[full.index(_MARK_A) + len(_MARK_A) :]
        eos = self.tokenizer.eos_token or ""
        if eos and after.startswith(eos):  # the model writes this EOS itself
            after = after[len(eos) :]
        pre, post = after.split(_MARK_O)
        return pre, post

    def observation(self, observation: str, role: str = "user") -> str:
        """The text after a model turn's EOS: the observation as a ``role`` turn and the assistant
        header of the next model turn."""
        if not self.templated:
            return f"\n{observation}\n"
        if role not in self._wrap:
            try:
                self._wrap[role] = self._split(role)
            except Exception:  # a template that refuses the role (e.g. strict alternation)
                if role == "user":
                    raise
                self._wrap[role] = self.observation_wrap("user")
        pre, post = self._wrap[role]
        return f"{pre}{observation}{post}"

    def observation_wrap(self, role: str) -> tuple[str, str]:
        """(text before, text after) the observation of a ``role`` turn."""
        self.observation("", role)
        return self._wrap[role]


@dataclass
class Episodes:
    """N episodes as one batch (see the module docstring for the layout of ``roll``)."""

    roll: Rollout
    texts: list[str]  # N transcripts after the prompt (model + env turns, special tokens kept)
    returns: Tensor  # [N] sum of the env rewards
    success: Tensor  # [N] 0/1 info["success"] at the end (0 if never done)
    turns: Tensor  # [N] model turns taken
    tool_calls: Tensor  # [N] tool calls made
    tool_errors: Tensor  # [N] tool calls that failed
    turn: Tensor  # [N, T] long: k >= 1 on the tokens of the k-th model turn, else 0
    turn_rewards: Tensor  # [N, K] env reward after model turn k (column k-1), K = max_turns
    turn_states: Tensor  # [N, K] long anchor-state id of the observation before turn k, 0 beyond
    actions: list[list[str]] = field(default_factory=list)  # N lists: each model turn's text
    tool_turns: Tensor | None = None  # [N] model turns that made at least one tool call


@torch.no_grad()
def run_episodes(
    model: torch.nn.Module,
    tokenizer: Any,
    envs: Sequence[Env],
    seeds: Sequence[int],
    *,
    group: Tensor,
    max_turns: int,
    max_new_tokens: int,
    max_episode_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Episodes:
    """Play one episode in each of ``envs`` (reset with ``seeds``), all batched; see the module
    docstring. ``group`` [N]: the episode's prompt index (rows of one group are consecutive).

    The episode return is R_i = sum_k r_{i,k} over the rewards of its steps.
    """
    n = len(envs)
    if n == 0 or len(seeds) != n or group.shape != (n,):
        raise ValueError(
            f"run_episodes: need N >= 1 envs with N seeds and group [N]; got {n} envs, "
            f"{len(seeds)} seeds, group {tuple(group.shape)}"
        )
    for name, v in (
        ("max_turns", max_turns),
        ("max_new_tokens", max_new_tokens),
        ("max_episode_tokens", max_episode_tokens),
    ):
        if v < 1:
            raise ValueError(f"run_episodes: {name} must be >= 1, got {v}")
    device = next(model.parameters()).device
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    max_pos = int(getattr(getattr(model, "config", None), "max_position_embeddings", None) or 2**62)
    chat = ChatFormat(tokenizer)

    prompts: list[list[int]] = []
    comp: list[list[int]] = [[] for _ in range(n)]  # completion-side ids
    is_model: list[list[int]] = [[] for _ in range(n)]  # 1 on model tokens
    turn_of: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    actions: list[list[str]] = [[] for _ in range(n)]
    rewards: list[list[float]] = [[] for _ in range(n)]
    states: list[list[int]] = [[] for _ in range(n)]  # state id before each turn taken
    calls, errors, tool_turns = [0] * n, [0] * n, [0] * n
    success, finish = [0] * n, [""] * n
    next_state: list[int] = []
    for i, env in enumerate(envs):
        obs = env.reset(int(seeds[i]))
        ids = tokenizer(chat.prompt(obs, getattr(env, "system", None)), add_special_tokens=False)[
            "input_ids"
        ]
        if len(ids) >= max_pos:
            raise ValueError(
                f"run_episodes: the first observation of episode {i} is {len(ids)} tokens; the "
                f"model's context holds {max_pos}"
            )
        prompts.append(ids)
        next_state.append(state_id(getattr(env, "state", None) or obs))

    def budget(i: int, extra: int = 0) -> int:
        used = len(comp[i]) + extra
        return min(max_episode_tokens - used, max_pos - len(prompts[i]) - used)

    active = list(range(n))
    for k in range(1, max_turns + 1):
        run = []
        for i in active:
            if budget(i) < 1:
                finish[i] = "length"
            else:
                run.append(i)
        if not run:
            break
        caps = [min(max_new_tokens, budget(i)) for i in run]
        roll = generate(
            model,
            [prompts[i] + comp[i] for i in run],
            num_samples=1,
            max_new_tokens=max(caps),
            eos_id=eos_id,
            pad_id=pad_id,
            temperature=temperature,
            top_p=top_p,
            generator=generator,
        )
        toks_all, lp_all = roll.completion_ids.tolist(), roll.old_logp.tolist()
        active = []
        for row, i in enumerate(run):
            length, ended = int(roll.lengths[row]), roll.finish[row] == "eos"
            if length > caps[row]:  # the shared call ran past this episode's own cap
                length, ended = caps[row], False
            toks = toks_all[row][:length]
            comp[i] += toks
            is_model[i] += [1] * length
            turn_of[i] += [k] * length
            logps[i] += lp_all[row][:length]
            states[i].append(next_state[i])
            action = tokenizer.decode(toks, skip_special_tokens=True)
            actions[i].append(action)
            if not ended and budget(i) < 1:  # cut by the episode budget: no env step
                rewards[i].append(0.0)
                finish[i] = "length"
                continue
            obs, r, done, info = envs[i].step(action)
            rewards[i].append(float(r))
            c = int(info.get("tool_calls", 0))
            calls[i] += c
            errors[i] += int(info.get("tool_errors", 0))
            tool_turns[i] += c > 0
            if done:
                finish[i], success[i] = "eos", int(bool(info.get("success", False)))
                continue
            if k == max_turns:
                finish[i] = "turns"
                continue
            role = info.get("role") or ("tool" if c > 0 else "user")
            extra = ([] if ended else [eos_id]) + tokenizer(
                chat.observation(obs, role), add_special_tokens=False
            )["input_ids"]
            if budget(i, len(extra)) < 1:
                finish[i] = "length"
                continue
            comp[i] += extra
            is_model[i] += [0] * len(extra)
            turn_of[i] += [0] * len(extra)
            logps[i] += [0.0] * len(extra)
            next_state[i] = state_id(info.get("state") or obs)
            active.append(i)

    t = max(len(c) for c in comp)
    completion = torch.full((n, t), pad_id, dtype=torch.long)  # [N, T]
    mask = torch.zeros((n, t))  # [N, T]
    attn = torch.zeros((n, t))  # [N, T]
    old_logp = torch.zeros((n, t))  # [N, T]
    turn = torch.zeros((n, t), dtype=torch.long)  # [N, T]
    turn_rewards = torch.zeros((n, max_turns))  # [N, K]
    turn_states = torch.zeros((n, max_turns), dtype=torch.long)  # [N, K]
    for i in range(n):
        m = len(comp[i])
        completion[i, :m] = torch.tensor(comp[i], dtype=torch.long)
        mask[i, :m] = torch.tensor(is_model[i], dtype=torch.float32)
        attn[i, :m] = 1.0
        old_logp[i, :m] = torch.tensor(logps[i], dtype=torch.float32) * mask[i, :m]
        turn[i, :m] = torch.tensor(turn_of[i], dtype=torch.long)
        turn_rewards[i, : len(rewards[i])] = torch.tensor(rewards[i])
        turn_states[i, : len(states[i])] = torch.tensor(states[i], dtype=torch.long)
    p_ids, p_mask = left_pad(prompts, pad_id)  # [N, P]
    roll = Rollout(
        prompt_ids=p_ids.to(device),
        prompt_mask=p_mask.to(device),
        completion_ids=completion.to(device),
        mask=mask.to(device),
        old_logp=old_logp.to(device),
        lengths=torch.tensor([len(c) for c in comp], device=device),
        finish=finish,
        group=group.to(device),
        attn_mask=attn.to(device),
    )
    return Episodes(
        roll=roll,
        texts=[tokenizer.decode(c, skip_special_tokens=False) for c in comp],
        returns=turn_rewards.sum(1).to(device),
        success=torch.tensor(success, dtype=torch.float32, device=device),
        turns=torch.tensor([len(a) for a in actions], device=device),
        tool_calls=torch.tensor(calls, device=device),
        tool_errors=torch.tensor(errors, device=device),
        turn=turn.to(device),
        turn_rewards=turn_rewards.to(device),
        turn_states=turn_states.to(device),
        actions=actions,
        tool_turns=torch.tensor(tool_turns, device=device),
    )


def episode_metrics(ep: Episodes) -> dict[str, float]:
    """Means over the N episodes: ``turns_per_episode``, ``tool_calls_per_episode``,
    ``tool_call_success`` = 1 - errors / calls (NaN without calls), ``tool_turn_rate`` = turns with a
    call / turns, ``env_return``, ``success_rate``, ``episode_tokens`` (completion side, env tokens
    included), ``model_tokens``, and ``finish_<reason>`` shares."""
    n = len(ep.texts)
    calls, turns = float(ep.tool_calls.sum()), float(ep.turns.sum())
    tool_turns = float(ep.tool_turns.sum()) if ep.tool_turns is not None else float("nan")
    out = {
        "turns_per_episode": turns / n,
        "tool_calls_per_episode": calls / n,
        "tool_call_success": 1.0 - float(ep.tool_errors.sum()) / calls if calls else float("nan"),
        "tool_turn_rate": tool_turns / turns if turns else float("nan"),
        "env_return": float(ep.returns.float().mean()),
        "success_rate": float(ep.success.float().mean()),
        "episode_tokens": float(ep.roll.lengths.float().mean()),
        "model_tokens": float(ep.roll.mask.sum()) / n,
    }
    for reason in ("eos", "length", "turns"):
        out[f"finish_{reason}"] = sum(f == reason for f in ep.roll.finish) / n
    return out


def evaluate_episodes(
    model: torch.nn.Module,
    tokenizer: Any,
    problems: list[Problem],
    make_env: Callable[[Problem], Env],
    *,
    n: int,
    max_turns: int,
    max_new_tokens: int,
    max_episode_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
    max_batch_episodes: int = 512,
    keep_samples: int = 0,
    metrics: dict[str, float] | None = None,
) -> EvalResult:
    """``n`` episodes per problem; an episode is correct when it ends with ``info["success"]``.

    pass@k / maj@k as in :func:`rlvr.eval.evaluate.evaluate` (the final answer of an episode is that of
    its last model turn). Each batch holds at most ``max_batch_episodes`` episodes (whole problems);
    ``on_batch(problems_done)`` after each. ``metrics``, when given, is filled with
    :func:`episode_metrics` over all episodes (episode-weighted). Reset seeds: ``problem.meta["seed"]``.
    """
    if n < 1 or max_batch_episodes < 1:
        raise ValueError(
            f"evaluate_episodes: n and max_batch_episodes must be >= 1, got {n}, {max_batch_episodes}"
        )
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    was_training = model.training
    model.eval()
    per = max(1, max_batch_episodes // n)
    correct: list[int] = []
    ok_rows: list[list[bool]] = []  # [P][n]
    answers: list[list[str | None]] = []  # [P][n]
    lengths: list[float] = []
    ent_sum = ent_tokens = 0.0
    samples: list[dict[str, Any]] = []
    sums: dict[str, float] = {}
    try:
        for start in range(0, len(problems), per):
            chunk = problems[start : start + per]
            envs = [make_env(p) for p in chunk for _ in range(n)]
            seeds = [int(p.meta.get("seed", 0)) for p in chunk for _ in range(n)]
            group = torch.arange(len(chunk)).repeat_interleave(n)  # [N]
            ep = run_episodes(
                model,
                tokenizer,
                envs,
                seeds,
                group=group,
                max_turns=max_turns,
                max_new_tokens=max_new_tokens,
                max_episode_tokens=max_episode_tokens,
                temperature=temperature,
                top_p=top_p,
                generator=gen,
            )
            succ = ep.success.bool().tolist()
            for j, p in enumerate(chunk):
                row = succ[j * n : (j + 1) * n]
                ok_rows.append(row)
                correct.append(sum(row))
                answers.append(
                    [final_answer(a[-1]) if a else None for a in ep.actions[j * n : (j + 1) * n]]
                )
                if len(samples) < keep_samples:
                    samples.append(
                        {
                            "question": p.question,
                            "answer": p.answer,
                            "completion": ep.texts[j * n],
                            "reward": float(ep.returns[j * n]),
                        }
                    )
            lengths.extend(ep.roll.lengths.float().tolist())
            ent_sum += float((-ep.roll.old_logp * ep.roll.mask).sum())
            ent_tokens += float(ep.roll.mask.sum())
            for key, v in episode_metrics(ep).items():
                sums[key] = sums.get(key, 0.0) + v * len(envs)
            if on_batch is not None:
                on_batch(len(chunk))
    finally:
        if was_training:
            model.train()
    if metrics is not None:
        total = len(problems) * n
        metrics.update({key: v / total for key, v in sums.items()})
    return outcome_result(
        correct,
        ok_rows,
        answers,
        n=n,
        seed=seed,
        lengths=lengths,
        samples=samples,
        entropy=ent_sum / ent_tokens if ent_tokens else float("nan"),
    )
