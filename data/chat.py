"""Chat-template formatting and the prompt length filter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from data.prompts import Prompt

DEFAULT_MAX_PROMPT_TOKENS = 1024


class ChatTemplateError(Exception):
    """A tokenizer that cannot format chat prompts."""


def format_chat(tokenizer, messages: Sequence[dict]) -> str:
    """The model's own chat template applied to ``messages``, ending where the reply starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; "
            "use an instruction-tuned model or add a chat_template to its tokenizer_config.json"
        )
    return tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=True
    )


@dataclass(frozen=True)
class FormattedPrompt:
    prompt: Prompt
    text: str
    """The chat-formatted prompt, exactly as the model sees it."""
    token_count: int


def format_and_filter(
    tokenizer, prompts: Sequence[Prompt], max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS
) -> tuple[list[FormattedPrompt], int]:
    """Formats every prompt; returns those within ``max_prompt_tokens`` and how many were dropped.

    The count includes the template's own tokens, since that is what fills the context.
    """
    texts = [format_chat(tokenizer, p.messages) for p in prompts]
    # The template already holds any BOS token: adding special tokens again would count it twice.
    token_ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    kept = [
        FormattedPrompt(prompt, text, len(ids))
        for prompt, text, ids in zip(prompts, texts, token_ids)
        if len(ids) <= max_prompt_tokens
    ]
    return kept, len(prompts) - len(kept)
