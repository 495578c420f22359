"""The Rollout batch: everything one training step knows about its N = B*G sampled sequences."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["Rollout"]

# the tree fields of a branching rollout, with their value on a root row (Rollout.cat fills a part
# that did not branch with it)
_ROOT = {"branch_pos": 0, "parent": -1}


@dataclass
class Rollout:
    """N sampled completions. Prompts are left-padded, completions right-padded.

    Tensors are on one device. ``finish`` is ``"eos"`` when the completion ended with the EOS token and
    ``"length"`` when it hit the token limit.
    """

    prompt_ids: Tensor  # [N, P] left-padded
    prompt_mask: Tensor  # [N, P] 1 on real prompt tokens
    completion_ids: Tensor  # [N, T] right-padded
    mask: Tensor  # [N, T] float, 1 on completion tokens that count (EOS included)
    old_logp: Tensor  # [N, T] behaviour log-probs of the sampled tokens
    lengths: Tensor  # [N] completion lengths in tokens
    finish: list[str]  # N entries: "eos" | "length"
    group: Tensor  # [N] prompt index in 0..B-1
    rewards: Tensor | None = None  # [N]
    reward_parts: Tensor | None = None  # [N, K]
    ref_logp: Tensor | None = None  # [N, T]
    values: Tensor | None = None  # [N, T]
    entropy: Tensor | None = None  # [N, T]
    sum_pi_sq: Tensor | None = None
    """[N, T] sum_v pi(v|s_t)^2 of the policy before this step's update (a no-grad forward at the
    sampling temperature), when a credit assigner needs it; recomputed every step, like ``ref_logp``."""
    teacher_logp: Tensor | None = None
    """[N, T] the frozen teacher's log-probs of the sampled tokens (``[teacher]``, at the sampling
    temperature), when a credit assigner needs them; computed every step, like ``ref_logp``."""
    seq_hidden: Tensor | None = None
    """[N, D] the policy's last hidden state (before this step's update) averaged over each
    completion's counted tokens, when an advantage estimator needs it; computed every step."""
    implicit_rewards: Tensor | None = None
    """[N, T] beta (log pi_prm - log pi_ref) of the sampled tokens under the implicit PRM (``[prm]``,
    before this step's PRM update), when a credit assigner needs them; computed every step."""
    self_teacher_logp: Tensor | None = None
    """[N, T] the policy's log-probs (before this step's update) of each failed row's tokens after its
    prompt with a correct solution appended (``[self_teacher]``); ``old_logp`` on rows without one."""
    self_teacher_entropy: Tensor | None = None
    """[N, T] the entropy of that forward at each position; 0 on rows without a hint."""
    self_teacher_mask: Tensor | None = None
    """[N] 1.0 on the rows that got a hinted context, 0.0 elsewhere."""
    attn_mask: Tensor | None = None
    """[N, T] 1 on every real completion-side token the model attends to, when that differs from
    ``mask``: in a multi-turn episode the environment's tokens are attended to but not trained on."""
    turn: Tensor | None = None  # [N, T] long: k >= 1 on tokens of the k-th model turn, else 0
    turn_rewards: Tensor | None = None  # [N, K] environment reward after model turn k (column k-1)
    turn_states: Tensor | None = None  # [N, K] long: anchor-state id (>= 1) before model turn k
    process_rewards: Tensor | None = None
    """[N, T] each step's process reward on the step's last token, 0 elsewhere (``StepReward``)."""
    greedy_rewards: Tensor | None = None
    """[N] reward of the greedy response to the row's prompt (ReMax's baseline; not trained on)."""
    demo: Tensor | None = None
    """[N] 1.0 on demonstration rows (``[demos]``: a worked solution appended to its group, not
    sampled by the policy; ``old_logp`` on it is the policy's before the update), 0.0 elsewhere."""
    demo_group: Tensor | None = None
    """[N] 1.0 on every row of a group that has a demonstration row (the demonstration included)."""
    is_weight: Tensor | None = None
    """[N, T] truncated importance weights of rollouts from older weights (asynchronous training)."""
    branch_pos: Tensor | None = None
    """[N] long: the position t at which a branched row left the row it grew from (its first t tokens
    are that row's, copied, not sampled again; ``rlvr.rollout.branching``); 0 on a root or an i.i.d.
    row. None when nothing branched."""
    parent: Tensor | None = None
    """[N] long: the index inside its group (0 .. G-1) of the row a branched row grew from, so that
    its first ``branch_pos`` tokens equal that row's; -1 on a root or an i.i.d. row. Set with
    ``branch_pos``; None when nothing branched."""
    policy_version: int = 0
    """Updates the generating weights had received (asynchronous rollouts lag the learner)."""

    @property
    def attention(self) -> Tensor:
        """[N, T] the completion-side attention mask: ``attn_mask`` when set, else ``mask``."""
        return self.mask if self.attn_mask is None else self.attn_mask

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def select(self, idx: Tensor) -> Rollout:
        """The sub-batch of sequences ``idx`` (a 1-D index tensor)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                out[f.name] = v[idx.to(v.device)]
            elif isinstance(v, list):
                out[f.name] = [v[i] for i in idx.tolist()]
            else:
                out[f.name] = v
        return replace(self, **out)

    @staticmethod
    def cat(rolls: list[Rollout], *, pad_id: int = 0) -> Rollout:
        """Rollouts of several generation rounds as one batch: prompts re-padded on the left,
        completions on the right (pads are 0 with mask 0; the token ids' new pads are ``pad_id``),
        ``group`` renumbered consecutively.

        Optional fields must be set in all or none of the parts.
        """
        if len(rolls) == 1:
            return rolls[0]
        p_len = max(x.prompt_ids.shape[1] for x in rolls)

        def pad(t: Tensor, width: int, left: bool, value: int = 0) -> Tensor:
            extra = width - t.shape[1]
            if extra == 0:
                return t
            z = torch.full((t.shape[0], extra), value, dtype=t.dtype, device=t.device)
            return torch.cat([z, t] if left else [t, z], dim=1)

        out: dict[str, Any] = {}
        offset, groups = 0, []
        for x in rolls:
            groups.append(x.group + offset)
            offset += int(x.group.max()) + 1 if len(x) else 0
        out["group"] = torch.cat(groups)
        out["finish"] = [f for x in rolls for f in x.finish]
        for f in fields(Rollout):
            if f.name in out:
                continue
            vals = [getattr(x, f.name) for x in rolls]
            if not isinstance(vals[0], Tensor | None):  # scalars such as policy_version: the first's
                out[f.name] = vals[0]
                continue
            if all(v is None for v in vals):
                out[f.name] = None
                continue
            if f.name in _ROOT:  # a part that did not branch: every row is a root
                vals = [
                    torch.full((len(x),), _ROOT[f.name], dtype=torch.long) if v is None else v
                    for x, v in zip(rolls, vals, strict=True)
                ]
                vals = [v.to(next(u for u in vals if u is not None).device) for v in vals]
            if any(v is None for v in vals):
                raise ValueError(f"Rollout.cat: {f.name!r} is set in some parts only")
            value = pad_id if f.name in ("prompt_ids", "completion_ids") else 0
            if f.name in ("prompt_ids", "prompt_mask"):
                vals = [pad(v, p_len, left=True, value=value) for v in vals]
            elif vals[0].dim() == 2 and f.name != "reward_parts":  # [N, T] or [N, K]: pad right
                width = max(v.shape[1] for v in vals)
                vals = [pad(v, width, left=False, value=value) for v in vals]
            out[f.name] = torch.cat(vals)
        return Rollout(**out)

    def texts(self, tokenizer: Any) -> list[str]:
        """The N completions as text (up to and including EOS, special tokens dropped)."""
        rows = [r[: int(n)] for r, n in zip(self.completion_ids.tolist(), self.lengths, strict=True)]
        return tokenizer.batch_decode(rows, skip_special_tokens=True)

    def to(self, device: torch.device | str) -> Rollout:
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device)
                for f in fields(self)
                if isinstance(getattr(self, f.name), Tensor)
            },
        )
