"""LLM-as-judge rewards: a causal LM reads a judge prompt and writes a verdict that is parsed to a score.

Registered rewards (knobs in each factory's docstring):

- ``llm_judge``: a generative judge. ``mode = "pointwise"`` scores each completion from the judge's
  ``Score: N/10`` (a rubric and the reference answer in the prompt when there are ones; k sampled
  judgements voted); ``mode = "pairwise"`` compares each completion with a reference response drawn
  from its own group ("which is better, A or B": Writing-Zero's bootstrapped relative comparison).
- ``judge_steps``: a generative process reward (a :class:`~rlvr.rewards.steps.StepReward`): the judge
  critiques every step of a completion in one pass (``Step k: correct | incorrect``), for the
  ``process_rewards`` of token-level credit (``pure_min``).

The judge is a local Hugging Face causal LM directory (``path``), an embedded base (``embedded``, built
once and cached like ``model.embedded``), or the current policy itself (``self_judge = true``: the
weights being trained, read at every call). A model of its own is loaded once, at the first call,
frozen (eval mode, no gradients) on ``device``; the policy is put in eval mode for the judgement and
its mode restored. Judge prompts go through the judge tokenizer's chat template when it has one and
are generated in batches of ``batch_size`` prompts, greedily (``temperature = 0``) or sampled, each
judgement's random numbers from its own seed (a hash of ``seed``, the judge prompt and the sample
index): a judgement does not depend on the batch it is in, and draws nothing from the trainer's
generators.

A judgement that does not parse is ``None`` to the reward runner: the sample gets
``scoring.failure_score`` and counts in ``reward_failures/NAME``, its reason logged once. The tests
(and any caller) can replace the model by a function ``generate(prompts, samples) -> [[text] * k]``
(the ``generate`` argument of :class:`Judge`), the seam for scripted judges.

Guards against the hacks a judge invites: the response is fenced in ``<response>`` tags and any such
tag inside a completion is removed before it is shown (it cannot close its own fence); a completion
that itself contains the verdict format (``Score: 10/10``, ``Verdict: A``) is not shown to the judge
and scores ``echo_score`` (``reject_echo``).
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rlvr.models.hf import check_model_dir, quiet_progress_bars
from rlvr.rewards.steps import StepReward, split_steps, worst_step
from rlvr.rewards.verifiers import REWARDS, BatchedReward

if TYPE_CHECKING:
    import torch

__all__ = [
    "PAIRWISE_TEMPLATE",
    "POINTWISE_TEMPLATE",
    "STEPS_TEMPLATE",
    "Judge",
    "JudgeReward",
    "JudgeSteps",
    "PairwiseJudgeReward",
    "make_judge_steps",
    "make_llm_judge",
    "parse_choice",
    "parse_score",
    "parse_steps",
    "render",
    "vote",
]

POINTWISE_TEMPLATE = (
    "You are grading a response to a problem.\n\n"
    "Problem:\n{problem}\n\n"
    "{reference}{rubric}"
    "Response:\n<response>\n{response}\n</response>\n\n"
    "Judge whether the response is correct and well reasoned. Explain briefly, then end with "
    "'Score: N/10', where N is an integer from 0 (worst) to 10 (best)."
)
PAIRWISE_TEMPLATE = (
    "You are comparing two responses to a problem.\n\n"
    "Problem:\n{problem}\n\n"
    "{reference}{rubric}"
    "Response A:\n<response>\n{response_a}\n</response>\n\n"
    "Response B:\n<response>\n{response_b}\n</response>\n\n"
    "Which response is better? Explain briefly, then end with 'Verdict: A' or 'Verdict: B'."
)
STEPS_TEMPLATE = (
    "You are checking a solution step by step.\n\n"
    "Problem:\n{problem}\n\n"
    "{reference}{rubric}"
    "Solution:\n<response>\n{steps}\n</response>\n\n"
    "For every step write one line 'Step k: correct' or 'Step k: incorrect'."
)
REFERENCE_BLOCK = "Reference answer: {answer}\n\n"
RUBRIC_BLOCK = "Rubric:\n{rubric}\n\n"

SCORE_PATTERN = r"(?:score\s*[:=]\s*|<score>\s*)(-?\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?"
CHOICE_PATTERN = r"verdict\s*[:=]\s*\[*\s*([AB])\b"
STEP_PATTERN = r"step\s*(\d+)\s*[:\-]\s*(correct|incorrect)"

_FIELDS = {
    "pointwise": ({"problem", "response", "answer", "reference", "rubric"}, {"response"}),
    "pairwise": (
        {"problem", "response_a", "response_b", "answer", "reference", "rubric"},
        {"response_a", "response_b"},
    ),
    "steps": ({"problem", "steps", "answer", "reference", "rubric"}, {"steps"}),
}
_FENCE = re.compile(r"</?\s*response(?:_[ab])?\s*>", re.IGNORECASE)

Generate = Callable[[list[str], int], list[list[str]]]


# ---------------------------------------------------------------- templates and parsers


def check_template(template: str, kind: str, what: str = "llm_judge") -> str:
    """``template`` after checking its fields: only those of ``kind`` (``pointwise``, ``pairwise``,
    ``steps``), each required one present. Raises ValueError naming the field and the allowed ones."""
    allowed, required = _FIELDS[kind]
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"{what}: template is not a format string ({err}): {template!r}") from None
    seen = set()
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if name not in allowed:
            raise ValueError(
                f"{what}: template field {{{name}}} is not one of "
                + ", ".join(f"{{{f}}}" for f in sorted(allowed))
                + f" ({kind} mode)"
            )
        if spec or conv:
            raise ValueError(f"{what}: template field {{{name}}} must be plain (no format spec)")
        seen.add(name)
    missing = sorted(required - seen)
    if missing:
        raise ValueError(
            f"{what}: the {kind} template must contain " + ", ".join(f"{{{m}}}" for m in missing)
        )
    return template


def clean_response(text: str, max_chars: int) -> str:
    """A completion as the judge sees it: ``<response>`` fence tags removed (so that it cannot close
    its fence and write instructions after it), cut to ``max_chars`` characters by dropping its
    middle."""
    text = _FENCE.sub("", text)
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    return text[:head] + "\n...\n" + text[len(text) - (max_chars - head) :]


def render(
    template: str,
    *,
    problem: str,
    answer: str = "",
    rubric: str = "",
    **responses: str,
) -> str:
    """The judge prompt: ``template`` with ``{problem}``, the responses (``response``, or
    ``response_a`` / ``response_b``, or ``steps``), ``{answer}``, ``{reference}`` (``"Reference
    answer: ...\\n\\n"``, or empty without an answer) and ``{rubric}`` (``"Rubric:\\n...\\n\\n"``, or
    empty). The responses are inserted as given (see :func:`clean_response`)."""
    fields = {
        "problem": problem,
        "answer": answer,
        "reference": REFERENCE_BLOCK.format(answer=answer) if str(answer).strip() else "",
        "rubric": RUBRIC_BLOCK.format(rubric=rubric) if str(rubric).strip() else "",
        **responses,
    }
    return template.format(**fields)


def parse_score(
    text: str, pattern: str | re.Pattern[str] = SCORE_PATTERN, *, low: float = 0.0, high: float = 10.0
) -> float | None:
    """The judge's score normalised to [0, 1]: (v - low) / (high - low) for the number v of the last
    match of ``pattern`` (group 1; an optional group 2 is a written denominator ``v/d``, which must be
    ``high``). None when nothing matches, the denominator is another scale, or v is outside
    [low, high]: an unparseable judgement."""
    rx = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
    found = list(rx.finditer(text))
    if not found:
        return None
    m = found[-1]
    try:
        v = float(m.group(1))
        den = m.group(2) if rx.groups >= 2 else None
    except (IndexError, ValueError):
        return None
    if den is not None and float(den) != high:
        return None
    if not low <= v <= high:
        return None
    return (v - low) / (high - low)


def parse_choice(text: str, pattern: str | re.Pattern[str] = CHOICE_PATTERN) -> str | None:
    """``"A"`` or ``"B"`` from the last match of ``pattern`` (group 1), None when none matches."""
    rx = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
    found = [m.group(1).upper() for m in rx.finditer(text)]
    found = [c for c in found if c in ("A", "B")]
    return found[-1] if found else None


def parse_steps(
    text: str, n_steps: int, pattern: str | re.Pattern[str] = STEP_PATTERN
) -> list[bool | None]:
    """Per step 1..n_steps: True (``correct``), False (``incorrect``) or None (not judged), from the
    matches of ``pattern`` (group 1 the step number, group 2 the label); a step judged twice keeps its
    last label; numbers outside 1..n_steps are ignored."""
    rx = re.compile(pattern, re.IGNORECASE) if isinstance(pattern, str) else pattern
    out: list[bool | None] = [None] * n_steps
    for m in rx.finditer(text):
        k = int(m.group(1))
        if 1 <= k <= n_steps:
            out[k - 1] = m.group(2).lower() == "correct"
    return out


def vote(scores: Sequence[float | None], how: str = "mean") -> float | None:
    """The k judgements' scores combined (unparsed ones left out; None when none parsed): ``mean``
    (DeepSeek-GRM's voting by summing pointwise scores, divided by the parsed count), ``median``, or
    ``majority`` (the most frequent score; a tie goes to the lowest of the tied scores)."""
    got = [float(s) for s in scores if s is not None]
    if not got:
        return None
    if how == "mean":
        return sum(got) / len(got)
    if how == "median":
        s, m = sorted(got), len(got) // 2
        return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2
    if how == "majority":
        counts = Counter(got)
        top = max(counts.values())
        return min(v for v, c in counts.items() if c == top)
    raise ValueError(f"vote must be 'mean', 'median' or 'majority', got {how!r}")


def _seed(*parts: object) -> int:
    """A stable 63-bit seed from ``parts`` (sha256 of their reprs)."""
    h = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# ---------------------------------------------------------------- the judge model


class Judge:
    """A judge: judge prompts in, k judgement texts per prompt out.

    The model is ``path`` (a local causal LM directory), ``embedded`` (an embedded base name), or
    the policy (``self_judge``; then :meth:`__call__` needs ``policy = (model, tokenizer)``); or
    ``generate`` replaces all of it (``generate(prompts, samples) -> k texts per prompt``: a scripted
    judge). Judge prompts longer than ``max_prompt_tokens`` (or than the model's positions less
    ``max_new_tokens``) lose their beginning.
    """

    def __init__(
        self,
        *,
        path: str = "",
        embedded: str = "",
        self_judge: bool = False,
        generate: Generate | None = None,
        samples: int = 1,
        temperature: float = 0.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        max_prompt_tokens: int = 2048,
        batch_size: int = 8,
        seed: int = 0,
        device: str = "auto",
        dtype: str = "auto",
        what: str = "llm_judge",
    ) -> None:
        from rlvr.rewards.models import _device, _dtype

        chosen = [
            k for k, v in (("path", path), ("embedded", embedded), ("self_judge", self_judge)) if v
        ]
        if generate is None and len(chosen) != 1:
            raise ValueError(
                f"{what}: give exactly one judge: 'path' (a local causal LM directory), 'embedded' "
                f"(an embedded base name) or 'self_judge = true' (the policy); got "
                + (", ".join(chosen) if chosen else "none")
            )
        if samples < 1 or max_new_tokens < 1 or batch_size < 1 or max_prompt_tokens < 2:
            raise ValueError(
                f"{what}: samples, max_new_tokens and batch_size must be >= 1 and max_prompt_tokens "
                f">= 2, got {samples}, {max_new_tokens}, {batch_size}, {max_prompt_tokens}"
            )
        if samples > 1 and temperature <= 0:
            raise ValueError(
                f"{what}: samples = {samples} judgements need temperature > 0 (greedy judgements "
                "are all the same)"
            )
        if not 0 < top_p <= 1:
            raise ValueError(f"{what}: top_p must be in (0, 1], got {top_p}")
        self.what = what
        self.path = check_model_dir(path, what=f"{what} judge model") if path else None
        if embedded:
            from rlvr.models.tiny import EMBEDDED

            if embedded not in EMBEDDED:
                raise ValueError(
                    f"{what}: embedded = {embedded!r} is not an embedded base; valid names: "
                    + ", ".join(EMBEDDED)
                )
        self.embedded = embedded
        self.self_judge = bool(self_judge) and generate is None
        self._generate = generate
        _device(device), _dtype(dtype)  # a bad value fails when the reward is built
        self.device_name, self.dtype_name = device, dtype
        self.samples, self.temperature, self.top_p = samples, float(temperature), float(top_p)
        self.max_new_tokens, self.max_prompt_tokens = max_new_tokens, max_prompt_tokens
        self.batch_size, self.seed = batch_size, seed
        self._own: tuple[Any, Any] | None = None

    def load(self) -> tuple[Any, Any]:
        """The judge's own (model, tokenizer): loaded once, frozen, in eval mode on ``device``."""
        if self._own is not None:
            return self._own
        from transformers import AutoModelForCausalLM

        from rlvr.models.hf import _tokenizer
        from rlvr.rewards.models import _device, _dtype

        path = self.path
        if path is None:
            from rlvr.models.tiny import EMBEDDED, ensure_base

            path = Path(ensure_base(EMBEDDED[self.embedded], progress=False))
        quiet_progress_bars()
        try:
            tok = _tokenizer(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=_dtype(self.dtype_name))
        except Exception as err:
            raise ValueError(f"{self.what} judge model {path}: cannot load it: {err}") from err
        model.to(_device(self.device_name)).eval()
        model.requires_grad_(False)
        self._own = (model, tok)
        return self._own

    def chat(self, tokenizer: Any, prompt: str) -> str:
        """The judge prompt as the model reads it: its chat template (a user turn) when it has one."""
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return f"{prompt}\n"

    def __call__(self, prompts: list[str], policy: tuple[Any, Any] | None = None) -> list[list[str]]:
        """k = ``samples`` judgement texts for each judge prompt. Each distinct prompt is judged once
        (a judgement depends on its prompt and seed only, so a repeated prompt gets the same texts)."""
        if not prompts:
            return []
        distinct = list(dict.fromkeys(prompts))
        if self._generate is not None:
            out = self._generate(distinct, self.samples)
            if len(out) != len(distinct) or any(len(x) != self.samples for x in out):
                raise ValueError(
                    f"{self.what}: the generate function must return {self.samples} texts per prompt"
                )
        else:
            if self.self_judge:
                if policy is None:
                    raise ValueError(
                        f"{self.what}: self_judge = true judges with the policy, but no policy was "
                        "passed"
                    )
                model, tok = policy
            else:
                model, tok = self.load()
            out = self._sample(model, tok, distinct)
        judged = dict(zip(distinct, out, strict=True))
        return [list(judged[p]) for p in prompts]

    def _sample(self, model: Any, tok: Any, prompts: list[str]) -> list[list[str]]:
        from rlvr.rollout import generate

        eos = tok.eos_token_id
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        if eos is None:
            raise ValueError(f"{self.what}: the judge's tokenizer has no EOS token")
        room = int(getattr(model.config, "max_position_embeddings", 0) or 0) - self.max_new_tokens
        keep = self.max_prompt_tokens if room < 2 else min(self.max_prompt_tokens, room)
        texts = [self.chat(tok, p) for p in prompts]
        ids = [row[-keep:] for row in tok(texts, add_special_tokens=False)["input_ids"]]
        k = self.samples
        was_training = model.training
        model.eval()
        out: list[list[str]] = []
        try:
            for start in range(0, len(ids), self.batch_size):
                chunk = ids[start : start + self.batch_size]
                seeds = [
                    _seed(self.seed, texts[start + i], j) for i in range(len(chunk)) for j in range(k)
                ]  # [b * k] one stream per judgement
                roll = generate(
                    model,
                    chunk,
                    num_samples=k,
                    max_new_tokens=self.max_new_tokens,
                    eos_id=int(eos),
                    pad_id=int(pad),
                    temperature=self.temperature,
                    top_p=self.top_p,
                    row_seeds=seeds,
                )
                decoded = roll.texts(tok)  # [b * k], rows of prompt i together
                out.extend(decoded[i * k : (i + 1) * k] for i in range(len(chunk)))
        finally:
            model.train(was_training)
        return out


# ---------------------------------------------------------------- pointwise


class JudgeReward(BatchedReward):
    """``llm_judge`` pointwise: r_i = vote_j parse(judgement_ij) in [0, 1], j = 1..k judgements of
    the prompt :func:`render` (template, problem, reference answer, rubric, the cleaned completion).

    The rubric is the problem's ``meta[rubric_field]`` when it has one (problem-specific rubrics from
    a dataset column), else the ``rubric`` knob. A completion that contains the score format itself
    scores ``echo_score`` without a judgement (``reject_echo``); one whose k judgements all fail to
    parse is ``None`` (a failure, with the first judgement's text as the reason).
    """

    def __init__(
        self,
        judge: Judge,
        *,
        template: str = POINTWISE_TEMPLATE,
        rubric: str = "",
        rubric_field: str = "rubric",
        use_answer: bool = True,
        score_pattern: str = SCORE_PATTERN,
        low: float = 0.0,
        high: float = 10.0,
        vote: str = "mean",
        reject_echo: bool = True,
        echo_score: float = 0.0,
        max_response_chars: int = 4000,
    ) -> None:
        w = judge.what
        self.template = check_template(template, "pointwise", w)
        if high <= low:
            raise ValueError(f"{w}: 'high' must be above 'low', got low = {low}, high = {high}")
        try:
            self.rx = re.compile(score_pattern, re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"{w}: score_pattern is not a regular expression: {err}") from None
        if self.rx.groups < 1:
            raise ValueError(f"{w}: score_pattern needs a group (...) around the score's number")
        if vote not in ("mean", "median", "majority"):
            raise ValueError(f"{w}: vote must be 'mean', 'median' or 'majority', got {vote!r}")
        self.judge, self.rubric, self.rubric_field, self.use_answer = (
            judge,
            rubric,
            rubric_field,
            use_answer,
        )
        self.low, self.high, self.how = float(low), float(high), vote
        self.reject_echo, self.echo_score, self.max_chars = (
            reject_echo,
            float(echo_score),
            max_response_chars,
        )
        self.needs_policy = judge.self_judge
        self.failure_reasons: dict[int, str] = {}
        self.last_judgements: list[list[str]] = []

    def prompt(self, problem: str, completion: str, answer: str, meta: dict[str, Any]) -> str:
        """The judge prompt of one sample."""
        return render(
            self.template,
            problem=problem,
            answer=answer if self.use_answer else "",
            rubric=str(meta.get(self.rubric_field) or self.rubric),
            response=clean_response(completion, self.max_chars),
        )

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float | None]:
        n = len(completions)
        out: list[float | None] = [None] * n
        self.failure_reasons = {}
        asked = []
        for i in range(n):
            if self.reject_echo and self.rx.search(completions[i]):
                out[i] = self.echo_score
            else:
                asked.append(i)
        texts = self.judge(
            [self.prompt(prompts[i], completions[i], answers[i], metas[i]) for i in asked], policy
        )
        self.last_judgements = texts
        for i, judged in zip(asked, texts, strict=True):
            out[i] = vote(
                [parse_score(t, self.rx, low=self.low, high=self.high) for t in judged], self.how
            )
            if out[i] is None:
                self.failure_reasons[i] = f"no score in the judgement {judged[0][:300]!r}"
        return out


# ---------------------------------------------------------------- pairwise (BRPO)


class PairwiseJudgeReward(JudgeReward):
    """``llm_judge`` pairwise (Writing-Zero's BRPO): in each group one response, drawn at random
    (a seeded hash of the group's problem and completions), is the reference; every other response i
    is compared with it by the judge, "which is better, A or B", with i as A (and, with ``swap``, once
    more as B, against position bias). r_i = the mean over its k (or 2k) verdicts of 1 when i wins, 0
    when the reference wins; the reference itself, and a response identical to it, get 0.5.

    The abstract gives no formula; this is the simplest one faithful to it: a win rate against a
    bootstrapped in-group reference, so a group's rewards centre on the reference. Unparsed verdicts are
    left out; a response with none parsed is ``None`` (a failure).
    """

    def __init__(
        self,
        judge: Judge,
        *,
        template: str = PAIRWISE_TEMPLATE,
        choice_pattern: str = CHOICE_PATTERN,
        swap: bool = True,
        seed: int = 0,
        **kw: Any,
    ) -> None:
        w = judge.what
        super().__init__(judge, template="{response}", **kw)
        self.template = check_template(template, "pairwise", w)
        try:
            self.choice = re.compile(choice_pattern, re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"{w}: choice_pattern is not a regular expression: {err}") from None
        if self.choice.groups < 1:
            raise ValueError(f"{w}: choice_pattern needs a group (...) around the letter A or B")
        self.swap, self.seed = swap, seed

    def reference_index(self, prompt: str, group: Sequence[str]) -> int:
        """The group's bootstrapped reference: an index drawn from a seed of (seed, prompt, group)."""
        return random.Random(_seed(self.seed, prompt, tuple(group))).randrange(len(group))

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float | None]:
        n, g = len(completions), group_size
        if g < 1 or n % g:
            raise ValueError(f"llm_judge pairwise: {n} samples are not groups of {g}")
        out: list[float | None] = [None] * n
        self.failure_reasons = {}
        jobs: list[tuple[int, bool]] = []  # (sample, it is response A)
        asks: list[str] = []
        for start in range(0, n, g):
            rows = list(range(start, start + g))
            ref = start + self.reference_index(prompts[start], completions[start : start + g])
            out[ref] = 0.5
            for i in rows:
                if i == ref:
                    continue
                if self.reject_echo and (
                    self.choice.search(completions[i]) or self.rx.search(completions[i])
                ):
                    out[i] = self.echo_score
                    continue
                if completions[i] == completions[ref]:
                    out[i] = 0.5
                    continue
                mine = clean_response(completions[i], self.max_chars)
                theirs = clean_response(completions[ref], self.max_chars)
                rubric = str(metas[i].get(self.rubric_field) or self.rubric)
                answer = answers[i] if self.use_answer else ""
                for first in (True, False) if self.swap else (True,):
                    a, b = (mine, theirs) if first else (theirs, mine)
                    asks.append(
                        render(
                            self.template,
                            problem=prompts[i],
                            answer=answer,
                            rubric=rubric,
                            response_a=a,
                            response_b=b,
                        )
                    )
                    jobs.append((i, first))
        texts = self.judge(asks, policy)
        self.last_judgements = texts
        wins: dict[int, list[float]] = {}
        first_text: dict[int, str] = {}
        for (i, first), judged in zip(jobs, texts, strict=True):
            first_text.setdefault(i, judged[0])
            for t in judged:
                c = parse_choice(t, self.choice)
                if c is not None:
                    wins.setdefault(i, []).append(1.0 if (c == "A") == first else 0.0)
        for i, _ in jobs:
            if i in wins:
                out[i] = sum(wins[i]) / len(wins[i])
            else:
                self.failure_reasons[i] = f"no verdict in the judgement {first_text[i][:300]!r}"
        return out


JUDGE_BOUNDS = {
    "samples": ">= 1",
    "temperature": ">= 0",
    "top_p": "(0, 1]",
    "max_new_tokens": ">= 1",
    "max_prompt_tokens": ">= 2",
    "batch_size": ">= 1",
    "max_response_chars": ">= 16",
}
"""The bounds of the judge's knobs, shared by ``llm_judge`` and ``judge_steps``."""


@REWARDS.register(
    "llm_judge",
    bounds=JUDGE_BOUNDS,
)
def make_llm_judge(
    *,
    path: str = "",
    embedded: str = "",
    self_judge: bool = False,
    mode: Literal["pointwise", "pairwise"] = "pointwise",
    template: str = "",
    rubric: str = "",
    rubric_field: str = "rubric",
    use_answer: bool = True,
    score_pattern: str = SCORE_PATTERN,
    low: float = 0.0,
    high: float = 10.0,
    choice_pattern: str = CHOICE_PATTERN,
    swap: bool = True,
    samples: int = 1,
    vote: Literal["mean", "median", "majority"] = "mean",
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    max_prompt_tokens: int = 2048,
    max_response_chars: int = 4000,
    batch_size: int = 8,
    seed: int = 0,
    reject_echo: bool = True,
    echo_score: float = 0.0,
    device: str = "auto",
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
) -> BatchedReward:
    """A generative LLM judge (:class:`JudgeReward`; the pointwise generative reward model with k
    sampled judgements voted of "Inference-Time Scaling for Generalist Reward Modeling", and rubric
    prompts as in "Curing Miracle Steps in LLM Mathematical Reasoning with Rubric Rewards").

    The judge: ``path`` (a causal LM directory), ``embedded`` (an embedded base) or ``self_judge``
    (the policy). ``mode = "pointwise"``: the judge's score (``score_pattern``, group 1 the number in
    [``low``, ``high``], normalised to [0, 1]); ``"pairwise"``: :class:`PairwiseJudgeReward`, a win
    rate against a reference drawn from the group ("Writing-Zero: Bridge the Gap Between
    Non-verifiable Problems and Verifiable Rewards"; ``choice_pattern``, ``swap``). ``template``
    (empty: the mode's default) has the fields ``{problem}``, ``{response}`` (pairwise:
    ``{response_a}``, ``{response_b}``), ``{answer}``, ``{reference}`` and ``{rubric}``; ``rubric``
    or the problem's ``meta[rubric_field]`` fills it. ``samples`` judgements per prompt at
    ``temperature`` (> 0 when ``samples`` > 1), combined by ``vote`` (pointwise; pairwise verdicts
    are averaged into a win rate). A judgement that does not parse
    is a reward failure (``scoring.failure_score``, counted in ``reward_failures/llm_judge``).
    """
    judge = Judge(
        path=path,
        embedded=embedded,
        self_judge=self_judge,
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
        batch_size=batch_size,
        seed=seed,
        device=device,
        dtype=dtype,
    )
    kw: dict[str, Any] = {
        "rubric": rubric,
        "rubric_field": rubric_field,
        "use_answer": use_answer,
        "score_pattern": score_pattern,
        "low": low,
        "high": high,
        "vote": vote,
        "reject_echo": reject_echo,
        "echo_score": echo_score,
        "max_response_chars": max_response_chars,
    }
    if mode == "pairwise":
        return PairwiseJudgeReward(
            judge,
            template=template or PAIRWISE_TEMPLATE,
            choice_pattern=choice_pattern,
            swap=swap,
            seed=seed,
            **kw,
        )
    if mode != "pointwise":
        raise ValueError(f"llm_judge: mode must be 'pointwise' or 'pairwise', got {mode!r}")
    return JudgeReward(judge, template=template or POINTWISE_TEMPLATE, **kw)


# ---------------------------------------------------------------- step-level judge


class JudgeSteps(StepReward):
    """``judge_steps``: a generative process reward. The completion's steps (:func:`split_steps` by
    ``delimiter``) are shown numbered (``Step k: ...``) and the judge critiques them all in one pass
    (``Step k: correct | incorrect``, :func:`parse_steps`); over k judgements each step takes the
    majority label (a tie is ``incorrect``). Step k scores ``right`` (correct), ``wrong``
    (incorrect) or ``unjudged`` (no judgement names it); as an outcome reward, the worst step.

    A completion without a step scores 0 and is not judged; one none of whose steps was judged is
    ``None`` (a failure); one that writes the critique format itself scores ``wrong`` on every step
    (``reject_echo``). Step scores are the ``process_rewards`` of token-level credit (``pure_min``);
    the reference answer and rubric of each problem are those of the last outcome call (the trainer
    scores the outcome first, then asks for the step scores of the same completions).
    """

    def __init__(
        self,
        judge: Judge,
        *,
        delimiter: str = "\n",
        template: str = STEPS_TEMPLATE,
        step_pattern: str = STEP_PATTERN,
        right: float = 1.0,
        wrong: float = -1.0,
        unjudged: float = 1.0,
        rubric: str = "",
        rubric_field: str = "rubric",
        use_answer: bool = True,
        reject_echo: bool = True,
        max_response_chars: int = 4000,
    ) -> None:
        w = judge.what
        if not delimiter:
            raise ValueError(f"{w}: the knob 'delimiter' must not be empty")
        if 0 in (right, wrong, unjudged):
            raise ValueError(
                f"{w}: 'right', 'wrong' and 'unjudged' must be nonzero (a 0 step reward reads as "
                "no step)"
            )
        self.template = check_template(template, "steps", w)
        try:
            self.rx = re.compile(step_pattern, re.IGNORECASE)
        except re.error as err:
            raise ValueError(f"{w}: step_pattern is not a regular expression: {err}") from None
        if self.rx.groups < 2:
            raise ValueError(f"{w}: step_pattern needs two groups: the step number and the label")
        self.judge, self.delimiter = judge, delimiter
        self.right, self.wrong, self.unjudged = float(right), float(wrong), float(unjudged)
        self.rubric, self.rubric_field, self.use_answer = rubric, rubric_field, use_answer
        self.reject_echo, self.max_chars = reject_echo, max_response_chars
        self.needs_policy = judge.self_judge
        self.failure_reasons: dict[int, str] = {}
        self.last_judgements: list[list[str]] = []
        self._context: dict[str, tuple[str, str]] = {}  # problem -> (answer, rubric) of the last call
        self._policy: tuple[Any, Any] | None = None
        self._judged: list[bool] = []

    def pieces(self, completion: str) -> list[str]:
        """The text of each step (the differences of consecutive :func:`split_steps` prefixes)."""
        out, start = [], 0
        for prefix in split_steps(completion, self.delimiter):
            out.append(prefix[start:].strip())
            start = len(prefix)
        return out

    def prompt(self, problem: str, steps: Sequence[str]) -> str:
        answer, rubric = self._context.get(problem, ("", self.rubric))
        numbered = "\n".join(
            f"Step {k + 1}: {clean_response(s, self.max_chars)}" for k, s in enumerate(steps)
        )
        return render(
            self.template,
            problem=problem,
            answer=answer if self.use_answer else "",
            rubric=rubric,
            steps=numbered,
        )

    def score_steps(
        self, prompts: Sequence[str], completions: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        steps = [self.pieces(c) for c in completions]
        s = max((len(p) for p in steps), default=0)
        scores = torch.zeros((len(completions), s))  # [N, S]
        mask = torch.zeros((len(completions), s))  # [N, S]
        self._judged = [True] * len(completions)
        self.failure_reasons = {}
        asked = []
        for i, p in enumerate(steps):
            mask[i, : len(p)] = 1.0
            if not p:
                continue
            if self.reject_echo and self.rx.search(completions[i]):
                scores[i, : len(p)] = self.wrong
            else:
                asked.append(i)
        texts = self.judge([self.prompt(prompts[i], steps[i]) for i in asked], self._policy)
        self.last_judgements = texts
        for i, judged in zip(asked, texts, strict=True):
            k = len(steps[i])
            labels = [parse_steps(t, k, self.rx) for t in judged]  # k judgements x [S_i]
            for j in range(k):
                said = [lab[j] for lab in labels if lab[j] is not None]
                if not said:
                    scores[i, j] = self.unjudged
                else:
                    good = sum(said)
                    scores[i, j] = self.right if good > len(said) - good else self.wrong
            self._judged[i] = any(lab[j] is not None for lab in labels for j in range(k))
            if not self._judged[i]:
                self.failure_reasons[i] = f"no step verdict in the judgement {judged[0][:300]!r}"
        return scores, mask

    def __call__(
        self,
        prompts: list[str],
        completions: list[str],
        answers: list[str],
        metas: list[dict[str, Any]],
        *,
        group_size: int,
        policy: tuple[Any, Any] | None = None,
    ) -> list[float | None]:
        self._context = {
            p: (a, str(m.get(self.rubric_field) or self.rubric))
            for p, a, m in zip(prompts, answers, metas, strict=True)
        }
        self._policy = policy
        worst = worst_step(*self.step_rewards(prompts, completions))  # [N]
        out: list[float | None] = [w if ok else None for w, ok in zip(worst, self._judged, strict=True)]
        self._policy = None
        return out


@REWARDS.register(
    "judge_steps",
    bounds=JUDGE_BOUNDS,
)
def make_judge_steps(
    *,
    path: str = "",
    embedded: str = "",
    self_judge: bool = False,
    delimiter: str = "\n",
    template: str = STEPS_TEMPLATE,
    step_pattern: str = STEP_PATTERN,
    right: float = 1.0,
    wrong: float = -1.0,
    unjudged: float = 1.0,
    rubric: str = "",
    rubric_field: str = "rubric",
    use_answer: bool = True,
    samples: int = 1,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_new_tokens: int = 256,
    max_prompt_tokens: int = 2048,
    max_response_chars: int = 4000,
    batch_size: int = 8,
    seed: int = 0,
    reject_echo: bool = True,
    device: str = "auto",
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
) -> JudgeSteps:
    """A generative process reward model (:class:`JudgeSteps`; the LLM-as-GenPRM of "CAPO: Towards
    Enhancing LLM Reasoning through Verifiable Generative Credit Assignment": every step critiqued
    in one pass, ``samples`` critiques voted per step). The judge as in ``llm_judge`` (``path``,
    ``embedded`` or ``self_judge``); ``template`` has ``{problem}``, ``{steps}`` (numbered),
    ``{answer}``, ``{reference}`` and ``{rubric}``; a step scores ``right``, ``wrong`` or
    ``unjudged``. Give it weight 0 to use it for token-level credit only (``credit = "pure_min"``)."""
    judge = Judge(
        path=path,
        embedded=embedded,
        self_judge=self_judge,
        samples=samples,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
        batch_size=batch_size,
        seed=seed,
        device=device,
        dtype=dtype,
        what="judge_steps",
    )
    return JudgeSteps(
        judge,
        delimiter=delimiter,
        template=template,
        step_pattern=step_pattern,
        right=right,
        wrong=wrong,
        unjudged=unjudged,
        rubric=rubric,
        rubric_field=rubric_field,
        use_answer=use_answer,
        reject_echo=reject_echo,
        max_response_chars=max_response_chars,
    )
