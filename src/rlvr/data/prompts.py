"""Prompt formatting: a problem's question (or its chat) -> the text the policy is conditioned on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["INSTRUCTION", "format_prompt"]

# Appended to every question so that any instruction-following model knows the answer format that the
# verifier extracts (rlvr.rewards.extract_answer).
INSTRUCTION = "Give the final answer as <answer>...</answer>."


def format_prompt(
    tokenizer: Any,
    question: str,
    *,
    instruction: str = INSTRUCTION,
    messages: Sequence[dict[str, str]] | None = None,
) -> str:
    """The prompt text for ``question``: the tokenizer's chat template when it has one, else plain text.

    With ``messages`` (a chat of {role, content} turns ending with a user turn, e.g.
    ``Problem.messages`` of a dataset row) the whole chat is the prompt and ``question`` is ignored;
    the instruction is appended to the last user turn. Without a chat template the earlier turns are
    written as ``Role: content`` lines before it. The returned text already ends where the
    assistant's answer begins.
    """
    if messages:
        last = messages[-1]["content"]
        turns = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    else:
        last, turns = question, []
    content = f"{last}\n{instruction}" if instruction else last
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [*turns, {"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    earlier = "".join(f"{t['role'].capitalize()}: {t['content']}\n" for t in turns)
    return f"{earlier}{content}\nAnswer: "
