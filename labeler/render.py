"""Showing untrusted text (prompts, model output) as markdown without rendering its HTML."""

from __future__ import annotations

import html
import re

from data.rankings import candidate_letter

# Fenced blocks and inline code spans: markdown shows their content literally already, and
# escaping inside them would display "&lt;" instead of "<".
_CODE = re.compile(r"(```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)|`[^`\n]+`)", re.DOTALL)


def escape_markdown_html(text: str) -> str:
    """Markdown with every HTML tag and entity outside code shown as text, not rendered."""
    parts = _CODE.split(text)
    return "".join(part if i % 2 else html.escape(part, quote=False)
                   for i, part in enumerate(parts))


def conversation_markdown(messages: list[dict]) -> str:
    """The prompt as the annotator reads it: earlier turns labelled, the final question last."""
    if len(messages) == 1:
        return escape_markdown_html(messages[0]["content"])
    blocks = [f"**{m['role'].capitalize()}:**\n\n{escape_markdown_html(m['content'])}"
              for m in messages]
    return "\n\n---\n\n".join(blocks)


def candidate_title(index: int) -> str:
    return f"### Candidate {candidate_letter(index)}"
