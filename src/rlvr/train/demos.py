"""Demonstrations inside the RL step: the collector's stage that appends off-policy rows to groups.

When a chosen component reads ``demo`` or ``demo_group`` (``rlvr.algos.INPUTS["objective"]``), the
collector calls :class:`Demonstrations` on the assembled batch. Each group whose share of correct
samples is at most ``demos.max_success`` gets one more row at its end: the problem's demonstration
(``demos.source``: a dataset's solution field, or the task's worked solution from
``rlvr.data.solutions.SOLVERS``), tokenised after the group's plain prompt, cut to
``rollout.max_new_tokens``, and scored by the run's rewards as a group of one. The row is marked
``roll.demo = 1`` and every row of its group ``roll.demo_group = 1``; its ``old_logp`` is the
policy's own log-prob of each token before the update (one no-grad forward over the demonstration
rows), since the demonstration's behaviour policy is unknown.

Two sources write the row from a failed sample of the group (the first whose row exists) and the
problem's worked solution (the field, else the solver): ``intervention`` (InT: the sample's steps
before its first error, then the worked solution's from there; ``rlvr.rewards.feedback``) and
``refinement`` (Critique-GRPO: the policy samples a refinement once, after the question with
``demos.critique_template`` holding the failed sample and a critique of it; the row is that sample,
trained as an answer to the plain prompt). With ``demos.intervention_by = 'policy'`` the policy
proposes the intervention itself (InT's self-proposal): shown the worked solution after the
question, it continues the sample's steps before the error, and the row is those steps and its
first new one. A sample of the policy draws from the run's sampling generator; a prompt that with
``rollout.max_new_tokens`` would exceed the model's context gets no row (``demo_too_long``). A
group without a failed sample gets no row.

The rows then reach every later stage as part of their groups (groups of G + 1): the reference's,
teacher's and critic's forwards, the advantage estimator (the demonstration's reward joins its
group's statistics, LUFFY's mixed group), and the objective, which decides what to do with them (an
SFT term, importance weights against the current policy, or nothing). The stage draws no random
numbers (but a refinement's sample) and holds no state: a group with no demonstration stays as it
was, so a run in which no problem has one trains exactly as without the stage.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rlvr.data.guidance import Guide
from rlvr.data.solutions import solve
from rlvr.data.tasks import Problem
from rlvr.rewards.feedback import critique, error_prefix, first_error, intervention
from rlvr.rollout import Rollout, generate, sequence_logp
from rlvr.rollout.sampler import left_pad
from rlvr.train.batch import Batch, group_rows
from rlvr.train.config import Config
from rlvr.train.rounds import Rounds, autocast, gen_knobs, prompt_ids

__all__ = ["Demonstrations", "demonstration", "with_rows"]


def demonstration(problem: Problem, *, source: str = "auto", field: str = "solution") -> str | None:
    """The demonstration of ``problem``: its metadata field ``field`` ('field'), its task's worked
    solution ('solver'), or the field when present else the solver ('auto'); None when it has none."""
    if source in ("auto", "field"):
        text = problem.meta.get(field)
        if isinstance(text, str) and text.strip():
            return text
        if source == "field":
            return None
    return solve(problem)


def with_rows(batch: Batch, extra: Batch, owners: list[int]) -> Batch:
    """``batch`` with the rows of ``extra`` (one group of one per entry of ``owners``) appended at the
    end of their owner groups: group ``owners[k]`` gains row k of ``extra``. Prompts are re-padded,
    groups renumbered; ``extra`` must carry the same optional fields as ``batch`` (the scorer sets
    the same ones on both)."""
    n = len(batch.roll)
    both = Rollout.cat([batch.roll, extra.roll])  # [N + k] rows
    spans = group_rows(batch.sizes)
    tail: dict[int, int] = {j: n + k for k, j in enumerate(owners)}
    order: list[int] = []  # each group's rows, then its new row
    for j, sl in enumerate(spans):
        order += [*range(sl.start, sl.stop), *([tail[j]] if j in tail else [])]
    idx = torch.tensor(order)  # [N + k]
    roll = both.select(idx)
    sizes = [s + (1 if j in tail else 0) for j, s in enumerate(batch.sizes)]
    roll.group = torch.arange(len(sizes), device=roll.group.device).repeat_interleave(
        torch.tensor(sizes, device=roll.group.device)
    )  # [N + k] contiguous
    texts = batch.texts + extra.texts
    return replace(
        batch,
        roll=roll,
        texts=[texts[i] for i in order],
        raw=torch.cat([batch.raw, extra.raw.to(batch.raw.device)])[idx.to(batch.raw.device)],
        correct=torch.cat([batch.correct, extra.correct.to(batch.correct.device)])[
            idx.to(batch.correct.device)
        ],
        sizes=sizes,
    )


class Demonstrations:
    """The demonstration stage of the collector (see the module docstring); built once per run."""

    def __init__(self, cfg: Config, rounds: Rounds) -> None:
        self.cfg, self.rounds = cfg, rounds

    def attach(self, batch: Batch) -> tuple[Batch, dict[str, float]]:
        """The batch with a demonstration row at the end of each eligible group (``roll.demo`` and
        ``roll.demo_group`` [N] set, zeros where there is none), and the stage's metrics."""
        d = self.cfg.demos
        owners: list[int] = []
        found: list[str | Guide] = []  # per owner: a text row, or what the policy is asked
        for j, p in enumerate(batch.problems):
            sl = batch.group(j)
            rate = float(batch.correct[sl].float().mean())  # the group's share of correct samples
            if rate > d.max_success:
                continue
            if d.source in ("intervention", "refinement"):
                item = self._from_failure(batch, j)
            else:
                item = demonstration(p, source=d.source, field=d.solution_field)
            if item is not None:
                owners.append(j)
                found.append(item)
        metrics: dict[str, float] = {}
        rows: list[list[int]] = []
        if d.source == "refinement" or (d.source == "intervention" and d.intervention_by == "policy"):
            if owners:
                guides = [g for g in found if isinstance(g, Guide)]
                owners, rows, metrics["demo_too_long"] = self._sample(batch, owners, guides)
        else:
            rows = [self._tokens(t) for t in found if isinstance(t, str)]
        n = len(batch.roll)
        dev = batch.roll.mask.device
        in_group = torch.zeros(n, device=dev)  # [N]
        for j in owners:
            in_group[batch.group(j)] = 1.0
        # a new Rollout: the rounds' own (the replay buffer keeps groups of them) stay unflagged
        flagged = replace(batch.roll, demo=torch.zeros(n, device=dev), demo_group=in_group)
        batch = replace(batch, roll=flagged)
        if not owners:  # nothing to add: the batch as it was, flagged
            return batch, {"demo_rows": 0.0} | metrics
        extra = self._rows([batch.problems[j] for j in owners], rows)
        k = len(owners)
        extra.roll.demo = torch.ones(k, device=extra.roll.mask.device)  # [k]
        extra.roll.demo_group = torch.ones(k, device=extra.roll.mask.device)  # [k]
        out = with_rows(batch, extra, owners)
        metrics |= {
            "demo_rows": float(k),
            "demo_reward_mean": float(extra.rewards.mean()),
            "demo_correct_mean": float(extra.correct.float().mean()),
            "demo_length": float(extra.roll.lengths.float().mean()),
        }
        return out, metrics

    def _from_failure(self, batch: Batch, j: int) -> str | Guide | None:
        """Sources 'intervention' and 'refinement', from the first failed sample of group ``j`` that
        gives one: InT's intervention against the problem's worked solution
        (``rlvr.rewards.feedback.intervention``), or, for the policy to sample, a guide: for a
        self-proposed intervention, the worked solution after the question
        (``demos.intervention_template``) and the sample's steps before its error starting the
        reply; for a refinement, the sample and its critique after the question
        (``demos.critique_template``; without a worked solution the critique is the outcome
        alone). None when no failed sample gives one."""
        d = self.cfg.demos
        reference = demonstration(batch.problems[j], source="auto", field=d.solution_field)
        if d.source == "intervention" and reference is None:
            return None
        for i in range(*batch.group(j).indices(len(batch.roll))):
            if bool(batch.correct[i]):
                continue
            text = batch.texts[i]
            if d.source == "refinement":
                note = critique(text, reference, correct=False, delimiter=d.step_delimiter)
                return Guide(user_extra=d.critique_template.format(answer=text, critique=note))
            assert reference is not None
            if d.intervention_by == "reference":
                fixed = intervention(text, reference, delimiter=d.step_delimiter)
                if fixed is not None:
                    return fixed
                continue
            err = first_error(text, reference, delimiter=d.step_delimiter)
            if err is not None:
                head = error_prefix(text, err, delimiter=d.step_delimiter)
                return Guide(
                    user_extra=d.intervention_template.format(reference=reference),
                    assistant_prefix=f"{head}{d.step_delimiter}" if head else "",
                )
        return None

    def _sample(
        self, batch: Batch, owners: list[int], guides: list[Guide]
    ) -> tuple[list[int], list[list[int]], float]:
        """One sample of the policy per owner group after its question with ``guides[k]`` (its
        ``user_extra`` appended to the question, its ``assistant_prefix`` starting the reply), at
        the run's sampling temperature and with its sampling generator -> (the owners whose prompt
        fits the model's context with ``rollout.max_new_tokens`` more, their rows' tokens, the
        number left out because it did not fit). A refinement's row is the sample as drawn; a
        self-proposed intervention's is the prefix and the sample's first step (none when it wrote
        no step), without EOS, cut to ``rollout.max_new_tokens``."""
        rounds, cfg = self.rounds, self.cfg
        tok, model, delim = rounds.tokenizer, rounds.model, cfg.demos.step_delimiter
        problems = [batch.problems[j] for j in owners]
        ids, _ = prompt_ids(tok, problems, 1, guides=guides)
        cap = rounds.max_new_tokens
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        fits = [k for k, row in enumerate(ids) if context is None or len(row) + cap <= context]
        too_long = float(len(owners) - len(fits))
        if not fits:
            return [], [], too_long
        knobs = gen_knobs(cfg, tok, cap)
        dev = next(model.parameters()).device
        model.eval()
        with torch.no_grad(), autocast(cfg, dev):
            roll = generate(
                model, [ids[k] for k in fits], num_samples=1, generator=rounds.generator, **knobs
            )
        model.train()
        comp, lengths = roll.completion_ids.tolist(), roll.lengths.tolist()
        if cfg.demos.source == "refinement":
            rows = [comp[i][: int(lengths[i])] for i in range(len(fits))]
            return [owners[k] for k in fits], rows, too_long
        kept, rows = [], []
        for i, text in enumerate(roll.texts(tok)):
            step = next((piece.strip() for piece in text.split(delim) if piece.strip()), None)
            if step is None:
                continue
            whole = guides[fits[i]].assistant_prefix + step
            kept.append(owners[fits[i]])
            rows.append(tok(whole, add_special_tokens=False)["input_ids"][: cfg.rollout.max_new_tokens])
        return kept, rows, too_long

    def _tokens(self, text: str) -> list[int]:
        """A text target's tokens and EOS, cut to ``rollout.max_new_tokens``."""
        tok = self.rounds.tokenizer
        ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return ids[: self.cfg.rollout.max_new_tokens]

    def _rows(self, problems: list[Problem], rows: list[list[int]]) -> Batch:
        """The demonstrations as a scored batch of groups of one: plain prompts, the rows' tokens
        (at most ``rollout.max_new_tokens``), behaviour log-probs from the current policy."""
        rounds, cfg = self.rounds, self.cfg
        tok, model = rounds.tokenizer, rounds.model
        dev = next(model.parameters()).device
        ids, _ = prompt_ids(tok, problems, 1)
        p_ids, p_mask = left_pad(ids, tok.pad_token_id)  # [k, P]
        width = max(len(r) for r in rows)
        comp = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)  # [k, T]
        mask = torch.zeros(len(rows), width)  # [k, T]
        for i, r in enumerate(rows):
            comp[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1.0
        lengths = torch.tensor([len(r) for r in rows])  # [k]
        finish = ["eos" if r[-1] == tok.eos_token_id else "length" for r in rows]
        p_ids, p_mask, comp, mask = p_ids.to(dev), p_mask.to(dev), comp.to(dev), mask.to(dev)
        with torch.no_grad(), autocast(cfg, dev):
            logp, _ = sequence_logp(
                model, p_ids, p_mask, comp, mask, temperature=cfg.rollout.temperature
            )  # [k, T]
        roll = Rollout(
            prompt_ids=p_ids,
            prompt_mask=p_mask,
            completion_ids=comp,
            mask=mask,
            old_logp=logp * mask,
            lengths=lengths.to(dev),
            finish=finish,
            group=torch.arange(len(rows), device=dev),
        )
        texts = roll.texts(tok)
        sizes = [1] * len(rows)
        raw, correct, fails = rounds.scorer.score(problems, roll, texts, sizes, policy=(model, tok))
        return Batch(problems, roll, texts, raw, correct, sizes, failures=fails)
