"""The token-tree visualizer: one StepEvent drawn as a tree, left (root) to right (deeper).

`layout_tree` is pure (a tidy layout: leaves get consecutive rows, parents sit between their
children). `TokenTreeView` draws nodes coloured by status (root, accepted path, rejected, the
target's bonus token; also marked by a glyph and border style, not only colour), emphasised by
draft path probability, with a stripe on the left edge naming who proposed the node (draft
model, prompt lookup, n-gram pool, Jacobi window), hover tooltips, wheel zoom and fit.
`TreePanel` adds a step slider that replays every step of a message; Left/Right (or Page
Up/Down) in the view move through steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QGraphicsPathItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from engine.events import StepEvent

from .accessibility import describe
from .steps import bonus_text
from .theme import LIGHT, Theme

NODE_W, NODE_H = 104, 30  # NODE_W: the widest node; short tokens get narrower boxes
MIN_NODE_W, GAP, ROW_H = 40, 18, 36
COLORS = LIGHT.tree  # status -> (fill, border); DARK.tree in dark mode
# status glyphs: accepted / rejected / bonus differ by more than colour
MARKS = {"root": "", "accepted": "✓", "rejected": "✗", "bonus": "★"}
SOURCE_COLORS = {  # TokenTree.sources -> the stripe on a node's left edge (both themes)
    "draft": "#3d5a80",
    "prompt": "#f2a900",
    "ngram": "#00a3a3",
    "jacobi": "#d6336c",
}
SOURCE_LABELS = {"draft": "draft model", "prompt": "prompt", "ngram": "n-gram pool",
                 "jacobi": "Jacobi"}
STRIPE_W = 5


def legend_html(colors: dict[str, tuple[str, str]] = COLORS) -> str:
    return " ".join(
        f'<span style="background-color:{fill}; color:white">&nbsp;{MARKS[name]} {name}&nbsp;'
        "</span>" for name, (fill, _) in colors.items()
    ) + "&nbsp;&nbsp;source: " + " ".join(
        f'<span style="color:{color}">&#9612;</span>{SOURCE_LABELS[name]}'
        for name, color in SOURCE_COLORS.items()
    )


LEGEND = legend_html()


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


def _fonts() -> tuple[QFont, QFont]:
    """Node fonts relative to the application font, so the system font size applies."""
    label, small = QFont(), QFont()
    base = label.pointSizeF() if label.pointSizeF() > 0 else 9.0
    label.setPointSizeF(base * 0.95)
    label.setBold(True)
    small.setPointSizeF(base * 0.75)
    return label, small


def prob_label(node: NodeInfo) -> str:
    """The node's second line: its status glyph and draft probability (or its role)."""
    if node.status in ("root", "bonus"):
        return f"{MARKS[node.status]} {node.status}".strip()
    return f"{MARKS[node.status]} {node.prob:.2f}"


def node_width(node: NodeInfo) -> float:
    """Wide enough for the token's label and its probability, within [MIN_NODE_W, NODE_W]."""
    label, small = _fonts()
    text = QFontMetricsF(label).horizontalAdvance(display_text(node.text))
    prob = QFontMetricsF(small).horizontalAdvance(prob_label(node))
    stripe = STRIPE_W if node.source in SOURCE_COLORS else 0
    return max(MIN_NODE_W, min(NODE_W, max(text, prob) + 12 + stripe))


class NodeItem(QGraphicsRectItem):
    def __init__(self, node: NodeInfo, width: float = NODE_W, theme: Theme = LIGHT):
        super().__init__(0, 0, width, NODE_H)
        self.node = node
        fill, border = theme.tree[node.status]
        color = QColor(fill)
        # emphasis: likely paths are opaque, unlikely ones fade out
        color.setAlphaF(0.35 + 0.65 * max(0.0, min(1.0, node.path_prob)) ** 0.5)
        self.setBrush(QBrush(color))
        pen = QPen(QColor(border), 2.0 if node.status != "rejected" else 1.0)
        if node.status == "rejected":
            pen.setStyle(Qt.PenStyle.DashLine)
        self.setPen(pen)
        self.setAcceptHoverEvents(True)
        dark = node.status != "rejected"
        label = QGraphicsSimpleTextItem(display_text(node.text), self)
        font, small = _fonts()
        font.setBold(node.status in ("accepted", "bonus", "root"))
        label.setFont(font)
        label_color, prob_color = ("white", "#eeeeee") if dark else theme.tree_rejected_text
        label.setBrush(QBrush(QColor(label_color)))
        label.setPos(5, 1)
        prob = QGraphicsSimpleTextItem(prob_label(node), self)
        prob.setFont(small)
        prob.setBrush(QBrush(QColor(prob_color)))
        prob.setPos(5, 16)
        if node.source in SOURCE_COLORS:
            stripe = QGraphicsRectItem(0, 0, STRIPE_W, NODE_H, self)
            stripe.setBrush(QBrush(QColor(SOURCE_COLORS[node.source])))
            stripe.setPen(QPen(Qt.PenStyle.NoPen))
            label.setPos(5 + STRIPE_W, 1)
            prob.setPos(5 + STRIPE_W, 16)
        source = SOURCE_LABELS.get(node.source, "target" if node.status == "bonus" else "")
        self.setToolTip(
            f"<b>{_html(node.text) or '∅'}</b> (token {node.token})<br>"
            f"status: {node.status}<br>depth: {node.depth}<br>"
            + (f"proposed by: {source}<br>" if source else "")
            + f"draft prob: {node.prob:.3f}<br>path prob: {node.path_prob:.3f}"
        )

    def hoverEnterEvent(self, event):
        pen = self.pen()
        pen.setWidthF(pen.widthF() + 2)
        self.setPen(pen)
        super().hoverEnterEvent(event)

    def hoverLeaveEvent(self, event):
        pen = self.pen()
        pen.setWidthF(max(1.0, pen.widthF() - 2))
        self.setPen(pen)
        super().hoverLeaveEvent(event)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class TokenTreeView(QGraphicsView):
    """Draws one step's tree. `show_step(None)` clears it."""

    sig_step_key = Signal(int)
    """(delta) Left/Right (or Page Up/Down) pressed: show the previous/next step."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.TextAntialiasing)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.theme = LIGHT
        self.setBackgroundBrush(QBrush(QColor(self.theme.tree_background)))
        self.items_by_index: dict[int, NodeItem] = {}
        self.step: StepEvent | None = None

    def set_theme(self, theme: Theme) -> None:
        """Repaint the current tree in `theme`'s colours (light/dark)."""
        self.theme = theme
        self.setBackgroundBrush(QBrush(QColor(theme.tree_background)))
        if self.step is not None:
            self.show_step(self.step, fit=False)

    def keyPressEvent(self, event):
        delta = {Qt.Key.Key_Left: -1, Qt.Key.Key_Right: 1, Qt.Key.Key_PageUp: -1,
                 Qt.Key.Key_PageDown: 1}.get(event.key())
        if delta is None:
            super().keyPressEvent(event)
        else:
            self.sig_step_key.emit(delta)

    def show_step(self, step: StepEvent | None, fit: bool = True) -> None:
        scene = self.scene()
        scene.clear()
        self.items_by_index = {}
        self.step = step
        if step is None:
            return
        nodes = tree_nodes(step)
        pos = layout_tree([n.parent for n in nodes])
        widths = [node_width(n) for n in nodes]
        col_w = [0.0] * (max(c for c, _ in pos) + 1)
        for w, (col, _) in zip(widths, pos, strict=True):
            col_w[col] = max(col_w[col], w)
        col_x = [sum(col_w[:c]) + GAP * c for c in range(len(col_w))]
        for node, w, (col, row) in zip(nodes, widths, pos, strict=True):
            item = NodeItem(node, w, self.theme)
            item.setPos(col_x[col], row * ROW_H)
            self.items_by_index[node.index] = item
        for node in nodes:
            if node.parent < 0:
                continue
            a, b = self.items_by_index[node.parent], self.items_by_index[node.index]
            start = a.pos() + QPointF(a.rect().width(), NODE_H / 2)
            end = b.pos() + QPointF(0, NODE_H / 2)
            path = QPainterPath(start)
            mid = (start.x() + end.x()) / 2
            path.cubicTo(QPointF(mid, start.y()), QPointF(mid, end.y()), end)
            edge = QGraphicsPathItem(path)
            on_path = node.status in ("accepted", "bonus")
            color = QColor(self.theme.tree[node.status][1] if on_path else
                           self.theme.tree_rejected_edge)
            width = 3.0 if on_path else 0.8 + 2.5 * max(0.0, min(1.0, node.path_prob))
            edge.setPen(QPen(color, width))
            edge.setZValue(-1)
            scene.addItem(edge)
        for item in self.items_by_index.values():
            scene.addItem(item)
        scene.setSceneRect(scene.itemsBoundingRect().adjusted(-10, -10, 10, 10))
        if fit:
            self.fit()

    def fit(self, min_scale: float = 0.85) -> None:
        """Fit the tree, but never below `min_scale` so labels stay readable; a tree too big
        for that (60+ nodes, long chains) scrolls, showing the newest end of the accepted path."""
        rect = self.scene().sceneRect()
        if rect.isEmpty():
            return
        view = self.viewport().rect()
        scale = min(view.width() / rect.width(), view.height() / rect.height(), 1.25)
        clamped = scale < min_scale
        scale = max(scale, min_scale)
        self.resetTransform()
        self.scale(scale, scale)
        path = sorted((i for i, item in self.items_by_index.items()
                       if item.node.status != "rejected"))
        if not clamped or not path:
            self.centerOn(rect.center())
            return
        box = QRectF()
        for i in path[-3:]:  # the last accepted nodes and the bonus token
            box = box.united(self.items_by_index[i].sceneBoundingRect())
        self.centerOn(box.center())

    def fit_all(self) -> None:
        self.fit(min_scale=0.0)

    def zoom(self, factor: float) -> None:
        self.scale(factor, factor)

    def wheelEvent(self, event):
        self.zoom(1.15 if event.angleDelta().y() > 0 else 1 / 1.15)


class TreePanel(QWidget):
    """The tree view plus a step slider (replay) and zoom/fit controls."""

    sig_step_shown = Signal(int)
    """(index) the step now drawn, within the current message's steps."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.steps: list[StepEvent] = []
        self._pending = False
        self.view = TokenTreeView()
        self.view.sig_step_key.connect(self.step_by)
        self.legend = QLabel(LEGEND)
        self.info = QLabel("No steps yet")
        self.info.setObjectName("treeInfo")
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setMinimum(0)
        self.slider.setMaximum(0)
        self.slider.valueChanged.connect(self._on_slider)
        self.live_check = QCheckBox("Follow live")
        self.live_check.setChecked(True)
        fit_button = QPushButton("Fit")
        fit_button.clicked.connect(self.view.fit_all)
        zoom_in, zoom_out = QPushButton("+"), QPushButton("−")
        zoom_in.clicked.connect(lambda: self.view.zoom(1.25))
        zoom_out.clicked.connect(lambda: self.view.zoom(0.8))
        for b in (zoom_in, zoom_out):
            b.setFixedWidth(28)
        describe(zoom_in, "Zoom in on the tree", "Zoom in (or use the mouse wheel)")
        describe(zoom_out, "Zoom out of the tree", "Zoom out (or use the mouse wheel)")
        describe(fit_button, "Fit the tree", "Show the whole tree")
        describe(self.view, "Token tree",
                 "The draft's token tree for this step: ✓ accepted, ✗ rejected, ★ the target's "
                 "bonus token. Left/Right arrows: previous/next step.")
        describe(self.slider, "Step", "Replay the steps of this answer (Left/Right arrows)")
        describe(self.live_check, "Follow live", "Show each new step as it arrives")
        top = QHBoxLayout()
        top.addWidget(self.legend)
        top.addStretch(1)
        top.addWidget(zoom_out)
        top.addWidget(zoom_in)
        top.addWidget(fit_button)
        bottom = QHBoxLayout()
        bottom.addWidget(self.slider, 1)
        bottom.addWidget(self.live_check)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addLayout(top)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.info)
        layout.addLayout(bottom)

    def set_theme(self, theme: Theme) -> None:
        self.view.set_theme(theme)
        self.legend.setText(legend_html(theme.tree))

    def step_by(self, delta: int) -> None:
        """Show the step `delta` away from the one shown (keyboard navigation)."""
        if self.steps:
            self.slider.setValue(max(0, min(len(self.steps) - 1, self.slider.value() + delta)))

    def set_steps(self, steps: list[StepEvent], show: int = -1) -> None:
        """Replace the message being shown (e.g. replay an earlier answer)."""
        self.steps = list(steps)
        self.slider.blockSignals(True)
        self.slider.setMaximum(max(0, len(self.steps) - 1))
        self.slider.blockSignals(False)
        if self.steps:
            self.show_index(show % len(self.steps))
        else:
            self.view.show_step(None)
            self.info.setText("No steps yet")

    def add_step(self, step: StepEvent) -> None:
        """A live step: drawn at the next `refresh` when following live."""
        self.steps.append(step)
        self._pending = True

    def refresh(self) -> None:
        if not self._pending:
            return
        self._pending = False
        self.slider.blockSignals(True)
        self.slider.setMaximum(max(0, len(self.steps) - 1))
        self.slider.blockSignals(False)
        if self.live_check.isChecked() and self.steps:
            self.show_index(len(self.steps) - 1)

    def show_index(self, index: int) -> None:
        step = self.steps[index]
        self.slider.blockSignals(True)
        self.slider.setValue(index)
        self.slider.blockSignals(False)
        self.view.show_step(step)
        drafted = len(step.tree_tokens) - 1
        self.info.setText(
            f"step {index + 1}/{len(self.steps)} · {step.mode} · {drafted} drafted · "
            f"{len(step.accepted) - 1} accepted · +{len(step.token_ids)} tokens · "
            f"threshold {step.threshold:.3f}"
        )
        self.sig_step_shown.emit(index)

    def _on_slider(self, value: int) -> None:
        if 0 <= value < len(self.steps):
            self.live_check.setChecked(value == len(self.steps) - 1)
            self.show_index(value)
