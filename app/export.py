"""Conversation export as Markdown or JSON (File > Export Conversation…). Pure: no Qt.

Minimal version written for the menu bar (issue 17); the chat work (per-step records) may
extend it. `export_conversation(path, conversation, messages)` picks the format by suffix.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from .history import Conversation, Message

FORMATS = {".md": "Markdown", ".json": "JSON"}


def to_markdown(conversation: Conversation, messages: list[Message]) -> str:
    """`# title`, the system prompt as a quote, then one `## You` / `## Assistant` per message."""
    out = [f"# {conversation.title}", ""]
    if conversation.system_prompt:
        out += [f"> System: {line}" for line in conversation.system_prompt.splitlines()] + [""]
    for m in messages:
        out += [f"## {'You' if m.role == 'user' else 'Assistant'}", "", m.content.rstrip(), ""]
        if m.role == "assistant" and m.stats:
            s = m.stats
            out += [f"*{s.get('generated_tokens', 0)} tokens · "
                    f"{s.get('tokens_per_pass', 0.0):.2f} tokens/pass · "
                    f"{s.get('tokens_per_second', 0.0):.1f} tok/s*", ""]
    return "\n".join(out)


def to_json(conversation: Conversation, messages: list[Message]) -> str:
    """The conversation and its messages (role, content, stats, stop reason; no source bytes)."""
    items = []
    for m in messages:
        d = asdict(m)
        d.pop("sources", None)
        items.append(d)
    return json.dumps({"title": conversation.title, "system_prompt": conversation.system_prompt,
                       "messages": items}, indent=1)


def export_conversation(path: str | Path, conversation: Conversation,
                        messages: list[Message]) -> Path:
    """Write Markdown (.md, the default for other suffixes) or JSON (.json) to `path`."""
    path = Path(path)
    text = to_json(conversation, messages) if path.suffix.lower() == ".json" else \
        to_markdown(conversation, messages)
    path.write_text(text, encoding="utf-8")
    return path
