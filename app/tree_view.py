"""The token-tree visualizer: one StepEvent drawn as a tree, left (root) to right (deeper).

The nodes and their layout are pure (app/tree_nodes.py); each node is drawn by
app/tree_node_item.py (status colour, glyph and border style, draft-probability emphasis, a
stripe naming who proposed it, a tooltip). `TokenTreeView` lays them out with edges, wheel zoom
and fit. `TreePanel` adds a step slider that replays every step of a message; Left/Right (or
Page Up/Down) in the view move through steps.
"""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import (
    QCheckBox,
    QGraphicsPathItem,
    QGraphicsScene,
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
from .theme import LIGHT, Theme
from .tree_node_item import (  # noqa: F401  (re-exported: tests and the GUI import them here)
    COLORS,
    GAP,
    LEGEND,
    MIN_NODE_W,
    NODE_H,
    NODE_W,
    ROW_H,
    SOURCE_COLORS,
    NodeItem,
    legend_html,
    node_width,
)
from .tree_nodes import (  # noqa: F401  (re-exported)
    MARKS,
    SOURCE_LABELS,
    NodeInfo,
    display_text,
    layout_tree,
    prob_label,
    tree_nodes,
)


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
