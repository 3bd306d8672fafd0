"""Export a conversation as Markdown (to read) or JSON (to keep: stats and step records too).

File > Export Conversation… calls `export_conversation(path, conversation, messages, store)`,
which picks the format by suffix. The JSON form round-trips (`import_conversation`), so an
exported chat can be reopened, trees and all. No Qt here: the CLI (`canopy export`) uses it too.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .history import Conversation, HistoryStore, Message

FORMAT = "canopy-conversation"
VERSION = 1
FORMATS = {".md": "Markdown", ".json": "JSON"}
FIGURES = (  # per-answer figures shown in the Markdown export, in order
    ("generated_tokens", "{} tokens"),
    ("time_to_first_token", "TTFT {:.2f} s"),
    ("tokens_per_second", "{:.1f} tok/s"),
    ("tokens_per_pass", "{:.2f} tokens/pass"),
    ("mode", "mode {}"),
)


class ExportError(ValueError):
    """Bad export input; the message says what is wrong."""


def to_markdown(conversation: Conversation, messages: list[Message]) -> str:
    """`# title`, the system prompt as a quote, one `## You` / `## Assistant` per message, and
    under each answer its figures (tokens, TTFT, tok/s, tokens/pass)."""
    out = [f"# {conversation.title}", ""]
    if conversation.system_prompt:
        out += [f"> System: {line}" for line in conversation.system_prompt.splitlines()] + [""]
    for m in messages:
        out += [f"## {'You' if m.role == 'user' else 'Assistant'}", "", m.content.rstrip(), ""]
        figures = [fmt.format(m.stats[key]) for key, fmt in FIGURES if key in m.stats]
        if m.role == "assistant" and m.stop_reason and m.stop_reason != "eos":
            figures.append(f"stopped: {m.stop_reason}")
        if m.role == "assistant" and figures:
            out += [f"*{' · '.join(figures)}*", ""]
    return "\n".join(out).rstrip() + "\n"


def to_json(conversation: Conversation, messages: list[Message],
            store: HistoryStore | None = None) -> str:
    return json.dumps(conversation_doc(conversation, messages, store), indent=1) + "\n"


def conversation_doc(conversation: Conversation, messages: list[Message],
                     store: HistoryStore | None = None) -> dict:
    """Every message with its stats (TTFT, tokens/s, ...) and, given the `store`, each
    answer's per-step records (trees, accepted paths, timings) as plain lists."""
    items = []
    for m in messages:
        item = {"role": m.role, "content": m.content, "stats": m.stats,
                "stop_reason": m.stop_reason, "finished": m.finished}
        if store is not None and m.role == "assistant":
            records = store.steps(m.id)
            if records:
                item["steps"] = [_step_dict(s) for s in records]
        items.append(item)
    return {"format": FORMAT, "version": VERSION, "exported": time.time(),
            "title": conversation.title, "system_prompt": conversation.system_prompt,
            "messages": items}


def export_conversation(path: str | Path, conversation: Conversation, messages: list[Message],
                        store: HistoryStore | None = None) -> Path:
    """Write Markdown (.md, the default for other suffixes) or JSON (.json) to `path`; with the
    `store`, the JSON carries each answer's step records too."""
    path = Path(path)
    text = to_json(conversation, messages, store) if path.suffix.lower() == ".json" else \
        to_markdown(conversation, messages)
    path.write_text(text, encoding="utf-8")
    return path


def conversation_json(store: HistoryStore, conversation_id: int, steps: bool = True) -> dict:
    """The stored conversation as the JSON document (with step records unless `steps` is
    False)."""
    conversation = _conversation(store, conversation_id)
    return conversation_doc(conversation, store.messages(conversation_id),
                            store if steps else None)


def conversation_markdown(store: HistoryStore, conversation_id: int) -> str:
    return to_markdown(_conversation(store, conversation_id), store.messages(conversation_id))


def import_conversation(store: HistoryStore, doc: dict) -> int:
    """Add an exported conversation (from `conversation_json`) to `store`; returns its id."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ExportError("not a Canopy conversation export (missing \"format\": "
                          f"\"{FORMAT}\")")
    if doc.get("version") != VERSION:
        raise ExportError(f"conversation export version {doc.get('version')!r} is not "
                          f"supported (expected {VERSION})")
    cid = store.create_conversation(doc.get("title") or "Imported chat",
                                    doc.get("system_prompt") or "")
    for item in doc.get("messages", []):
        mid = store.add_message(cid, item["role"], item.get("content", ""))
        store.update_message(mid, item.get("content", ""), stats=item.get("stats") or {},
                             stop_reason=item.get("stop_reason"),
                             finished=item.get("finished", True))
        if item.get("steps"):
            store.set_steps(mid, [_step_from_dict(s) for s in item["steps"]])
    return cid


def _step_dict(step) -> dict:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(step).items()}


def _step_from_dict(step: dict):
    from engine.events import StepEvent

    try:
        return StepEvent(**{k: tuple(v) if isinstance(v, list) else v for k, v in step.items()})
    except TypeError as e:
        raise ExportError(f"a step record in the export is malformed ({e})") from e


def _conversation(store: HistoryStore, conversation_id: int) -> Conversation:
    conversation = store.conversation(conversation_id)
    if conversation is None:
        raise ExportError(f"no conversation with id {conversation_id} "
                          "(`canopy export --list` shows them)")
    return conversation


def run_export_cli(args) -> int:
    """`canopy export [ID] [--format md|json] [--db PATH] [--out FILE] [--list]`."""
    import sys

    from engine.errors import CanopyError

    path = Path(args.db) if args.db else default_history_path_without_app()
    if not path.exists():
        raise CanopyError(f"No chat history at {path}. Pass --db PATH (the app's history file).")
    store = HistoryStore(path)
    try:
        if args.list or args.conversation is None:
            for c in store.conversations():
                print(f"{c.id}\t{c.title}")
            return 0
        try:
            if args.format == "json":
                text = json.dumps(conversation_json(store, args.conversation), indent=1) + "\n"
            else:
                text = conversation_markdown(store, args.conversation)
        except ExportError as e:
            raise CanopyError(str(e)) from e
    finally:
        store.close()
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def default_history_path_without_app() -> Path:
    """The app's history file, found as the app finds it (Qt's app-data folder), no window."""
    from PySide6.QtCore import QCoreApplication

    from .history import default_history_path

    QCoreApplication.setOrganizationName("Canopy")
    QCoreApplication.setApplicationName("Canopy")
    return default_history_path()

