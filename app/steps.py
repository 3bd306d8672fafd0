"""Pure helpers over engine StepEvents, shared by the chat, the tree view and the live panel."""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import StepEvent

from .markdown import DRAFT, TARGET


def drafted_char_count(step: StepEvent) -> int:
    """Characters of `step.text` that came from accepted draft tokens.

    The engine emits the accepted draft tokens first, then the target's own token(s); the
    accepted nodes' texts give the draft part's length (clamped: byte tokens may split a char).
    """
    if all(step.from_draft):
        return len(step.text)
    drafted = [i for i in step.accepted if i != 0]
    n = 0
    for k, flag in enumerate(step.from_draft):
        if not flag:
            break
        if k < len(drafted) and drafted[k] < len(step.tree_texts):
            n += len(step.tree_texts[drafted[k]])
    return min(n, len(step.text))


def step_sources(step: StepEvent) -> bytes:
    """Per-character source (markdown.DRAFT / TARGET) of `step.text`."""
    n_draft = drafted_char_count(step)
    return bytes([DRAFT]) * n_draft + bytes([TARGET]) * (len(step.text) - n_draft)


def bonus_text(step: StepEvent) -> str:
    """The target's own token's text (what follows the accepted draft tokens)."""
    return step.text[drafted_char_count(step):]


def path_probs(parents, probs) -> list[float]:
    """Probability of reaching each node from the root under the draft (product along path)."""
    out: list[float] = []
    for i, p in enumerate(parents):
        out.append((out[p] if p >= 0 else 1.0) * (probs[i] if i < len(probs) else 1.0))
    return out


def depths(parents) -> list[int]:
    out: list[int] = []
    for p in parents:
        out.append(out[p] + 1 if p >= 0 else 0)
    return out


@dataclass
class DepthAcceptance:
    """Running P(accept depth d | the accepted path reached depth d-1), as the engine's stats."""

    reached: list[int]
    accepted: list[int]

    @classmethod
    def empty(cls) -> DepthAcceptance:
        return cls([], [])

    def add(self, step: StepEvent) -> None:
        d = depths(step.tree_parents)
        if len(d) <= 1:
            return
        max_depth = max(d)
        n_accepted = len(step.accepted) - 1  # drafted nodes accepted, root excluded
        while len(self.reached) < max_depth:
            self.reached.append(0)
            self.accepted.append(0)
        # depth k+1 was tried when the path reached depth k and the tree had a node there
        for depth in range(1, max_depth + 1):
            if n_accepted >= depth - 1:
                self.reached[depth - 1] += 1
                if n_accepted >= depth:
                    self.accepted[depth - 1] += 1

    def rates(self) -> list[float]:
        return [a / r if r else 0.0 for a, r in zip(self.accepted, self.reached, strict=True)]


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
