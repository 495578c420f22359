"""Procedural reasoning tasks from reasoning-gym, with a held-out split that never leaks into training.

reasoning-gym builds item ``i`` of a dataset from ``Random(seed + i)``, so a task is fully described by
its name, its generation knobs and a seed. Because of that ``seed + i`` form, the stream of seed
``s + 1`` would be the stream of seed ``s`` shifted by one item; the training stream is therefore
generated from a hash of the seed (:func:`stream_seed`), so runs with different seeds see independent
data. The held-out set is generated from a far-away seed, and any training item whose question also
appears in the held-out set is skipped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import reasoning_gym

__all__ = ["Problem", "ReasoningGymTask", "mixture_kwargs", "stream_seed"]

_HELDOUT_SEED_OFFSET = 1_000_003  # far from any training index stream
_TRAIN_SIZE = 2**31 - 1  # training items are generated on demand; this only bounds the index


def stream_seed(seed: int) -> int:
    """The reasoning-gym seed of the training stream of run seed ``seed``.

    ``blake2b("rlvr-train-<seed>") mod 2**30``: streams of different seeds start at unrelated points
    of reasoning-gym's ``seed + i`` index space (two streams of 10^5 items overlap with probability
    about 2e-4), and ``stream_seed + i`` stays below 2**32 for any index we reach.
    """
    digest = hashlib.blake2b(f"rlvr-train-{int(seed)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 2**30


@dataclass(frozen=True)
class Problem:
    """One prompt with its reference answer and the task's metadata (the scorer needs the entry).

    ``messages``: for a dataset row given as a chat, its turns ({role, content}, the last one a user
    turn; ``question`` is then that last turn's content). ``format_prompt(tok, p.question,
    messages=p.messages)`` formats either kind.
    """

    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    messages: tuple[dict[str, str], ...] | None = field(default=None, hash=False)

    @property
    def entry(self) -> dict[str, Any]:
        """The reasoning-gym entry (question, answer, metadata) that the task's scorer expects."""
        return {"question": self.question, "answer": self.answer, "metadata": self.meta}


class ReasoningGymTask:
    """A reasoning-gym task: a deterministic stream of training problems and a held-out set.

    ``position`` is the index of the next training item; it is the whole state of the stream, so saving
    it in a checkpoint resumes the data exactly.
    """

    def __init__(
        self,
        name: str,
        *,
        seed: int = 0,
        heldout_seed: int | None = None,
        heldout_size: int = 256,
        **task_kwargs: Any,
    ) -> None:
        """``seed`` picks the training stream (through :func:`stream_seed`); ``heldout_seed`` (default:
        ``seed``) fixes the held-out set, so that runs with different seeds are evaluated on the same
        problems."""
        self.name = name
        self.seed = seed
        heldout_seed = seed if heldout_seed is None else heldout_seed
        self.task_kwargs = dict(task_kwargs)
        try:
            self._train = reasoning_gym.create_dataset(
                name, seed=stream_seed(seed), size=_TRAIN_SIZE, **task_kwargs
            )
            held = reasoning_gym.create_dataset(
                name, seed=heldout_seed + _HELDOUT_SEED_OFFSET, size=_TRAIN_SIZE, **task_kwargs
            )
        except (KeyError, ValueError, TypeError, AssertionError) as e:
            raise ValueError(
                f"cannot create reasoning-gym task {name!r} with {task_kwargs}: {e}"
            ) from None
        # held-out problems are distinct questions; give up if the task has too few of them
        self.heldout: list[Problem] = []
        self._heldout_questions: set[str] = set()
        for i in range(50 * heldout_size):
            if len(self.heldout) == heldout_size:
                break
            p = self._problem(held[i])
            if p.question not in self._heldout_questions:
                self._heldout_questions.add(p.question)
                self.heldout.append(p)
        else:
            raise ValueError(
                f"task {name!r} with {task_kwargs} has fewer than {heldout_size} distinct questions"
            )
        self.position = 0

    @staticmethod
    def _problem(item: dict[str, Any]) -> Problem:
        return Problem(question=item["question"], answer=str(item["answer"]), meta=item["metadata"])

    def next(self, b: int) -> list[Problem]:
        """The next ``b`` training problems (never one of the held-out questions)."""
        out: list[Problem] = []
        while len(out) < b:
            item = self._train[self.position]
            self.position += 1
            if item["question"] not in self._heldout_questions:
                out.append(self._problem(item))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def mixture_kwargs(mixture: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The knobs of reasoning-gym's ``composite`` task for a weighted mixture ``{task: {weight, and
    the task's own generation knobs}}`` (a missing weight is 1).

    ``ReasoningGymTask("composite", **mixture_kwargs(m))`` draws item ``i`` from the family that
    ``Random(seed + i).choices(families, weights)`` picks, so the draw is seeded like every other
    task; each item keeps its family's ``source_dataset``, so the ``answer`` reward scores it with
    that family's own scorer and :func:`rlvr.data.solutions.solve` writes its family's solution.
    """
    from reasoning_gym.composite import DatasetSpec

    return {
        "datasets": [
            DatasetSpec(
                name=name,
                weight=float(spec.get("weight", 1.0)),
                config={k: v for k, v in spec.items() if k != "weight"},
            )
            for name, spec in mixture.items()
        ]
    }
