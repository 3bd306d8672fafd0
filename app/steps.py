"""Pure helpers over engine StepEvents, shared by the chat, the tree view and the live panel.

The engine's StepEvent carries node depths, path probabilities and each emitted token's text
segment, so nothing here reconstructs them; acceptance by depth is the engine's
`DepthAcceptance` (one definition for stats, GUI, bench and calibration).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import StepEvent

from .markdown import SOURCE_CODES, TARGET


def step_sources(step: StepEvent) -> bytes:
    """Per-character source of `step.text`, token by token: markdown.TARGET for the target's
    own token, else the code (markdown.SOURCE_CODES) of the accepted node's proposer."""
    out = []
    for j, (segment, drafted) in enumerate(zip(step.token_texts, step.from_draft, strict=True)):
        code = TARGET
        if drafted:
            node = step.accepted[j + 1] if j + 1 < len(step.accepted) else -1
            names = step.tree_sources
            code = SOURCE_CODES.get(names[node] if 0 <= node < len(names) else "draft",
                                    SOURCE_CODES["draft"])
        out.append(bytes([code]) * len(segment))
    return b"".join(out)


def bonus_text(step: StepEvent) -> str:
    """The target's own token's text (what follows the accepted draft tokens)."""
    own = [s for s, drafted in zip(step.token_texts, step.from_draft) if not drafted]
    return "".join(own)


@dataclass
class SourceAcceptance:
    """Running accepted / proposed node counts per source (TokenTree.sources), as the engine's
    `accepted_by_source` / `proposed_by_source` stats."""

    proposed: dict[str, int]
    accepted: dict[str, int]

    @classmethod
    def empty(cls) -> SourceAcceptance:
        return cls({}, {})

    def add(self, step: StepEvent) -> None:
        for source in step.tree_sources[1:]:
            self.proposed[source] = self.proposed.get(source, 0) + 1
        for node in step.accepted[1:]:
            if node < len(step.tree_sources):
                source = step.tree_sources[node]
                self.accepted[source] = self.accepted.get(source, 0) + 1

    def summary(self) -> str:
        """E.g. 'accepted by source: draft 12/40 · prompt 8/9'."""
        parts = [f"{s} {self.accepted.get(s, 0)}/{n}" for s, n in self.proposed.items()]
        return "accepted by source: " + " · ".join(parts) if parts else ""
