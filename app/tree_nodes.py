"""The token tree of one StepEvent as plain data, and its tidy layout (no Qt).

`tree_nodes` turns a step into nodes with a status (root, accepted, rejected, the target's bonus
token) and the source that proposed each; `layout_tree` places them left (root) to right (deeper),
leaves on consecutive rows, parents midway between their children.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import StepEvent

from .steps import bonus_text

# status glyphs: accepted / rejected / bonus differ by more than colour
MARKS = {"root": "", "accepted": "✓", "rejected": "✗", "bonus": "★"}
SOURCE_LABELS = {"draft": "draft model", "prompt": "prompt", "ngram": "n-gram pool",
                 "jacobi": "Jacobi"}


@dataclass(frozen=True)
class NodeInfo:
    index: int
    parent: int
    token: int | None
    text: str
    prob: float  # draft probability given the parent
    path_prob: float  # draft probability of the whole path from the root
    depth: int
    status: str  # root | accepted | rejected | bonus
    source: str = ""  # who proposed it (TokenTree.sources); "" for the root and the bonus


def tree_nodes(step: StepEvent) -> list[NodeInfo]:
    """The step's tree as nodes, plus the bonus token as an extra child of the accepted path."""
    parents = list(step.tree_parents)
    paths, deps = step.tree_path_probs, step.tree_depths
    accepted = set(step.accepted)
    nodes = []
    for i, parent in enumerate(parents):
        status = "root" if i == 0 else ("accepted" if i in accepted else "rejected")
        text = step.tree_texts[i] if step.tree_texts else ""  # asked for by the GUI's config
        source = step.tree_sources[i] if i and i < len(step.tree_sources) else ""
        nodes.append(NodeInfo(i, parent, step.tree_tokens[i], text, step.tree_probs[i],
                              paths[i], deps[i], status, source))
    if step.bonus_token is not None and step.accepted:
        last = step.accepted[-1]
        nodes.append(NodeInfo(len(nodes), last, step.bonus_token, bonus_text(step), 1.0,
                              paths[last], deps[last] + 1, "bonus"))
    return nodes


def layout_tree(parents: list[int]) -> list[tuple[int, float]]:
    """(column, row) per node: column = depth; leaves take consecutive rows in depth-first
    order; each parent sits midway between its first and last child."""
    n = len(parents)
    children: list[list[int]] = [[] for _ in range(n)]
    for i, p in enumerate(parents):
        if p >= 0:
            children[p].append(i)
    pos: list[tuple[int, float]] = [(0, 0.0)] * n
    next_row = 0.0
    # iterative post-order, so deep chains do not hit the recursion limit
    for root in (i for i, p in enumerate(parents) if p < 0):
        stack = [(root, 0, False)]
        while stack:
            node, depth, done = stack.pop()
            if not children[node]:
                pos[node] = (depth, next_row)
                next_row += 1
            elif done:
                rows = [pos[c][1] for c in children[node]]
                pos[node] = (depth, (rows[0] + rows[-1]) / 2)
            else:
                stack.append((node, depth, True))
                stack.extend((c, depth + 1, False) for c in reversed(children[node]))
    return pos


def display_text(text: str, limit: int = 10) -> str:
    shown = text.replace("\n", "⏎").replace("\t", "⇥").replace(" ", "␣") or "∅"
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def prob_label(node: NodeInfo) -> str:
    """The node's second line: its status glyph and draft probability (or its role)."""
    if node.status in ("root", "bonus"):
        return f"{MARKS[node.status]} {node.status}".strip()
    return f"{MARKS[node.status]} {node.prob:.2f}"
