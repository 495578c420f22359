"""Prompt formatting: a problem's question -> the text the policy is conditioned on."""

from __future__ import annotations

from typing import Any

__all__ = ["INSTRUCTION", "format_prompt"]

# Appended to every question so that any instruction-following model knows the answer format that the
# verifier extracts (rlvr.rewards.extract_answer).
INSTRUCTION = "Give the final answer as <answer>...</answer>."


def format_prompt(tokenizer: Any, question: str, *, instruction: str = INSTRUCTION) -> str:
    """The prompt text for ``question``: the tokenizer's chat template when it has one, else plain text.

    The returned text already ends where the assistant's answer begins.
    """
    content = f"{question}\n{instruction}" if instruction else question
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    return f"{content}\nAnswer: "
