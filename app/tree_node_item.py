"""One node of the token-tree view: a box coloured by status, faded by draft path probability,
with a stripe naming its source and a tooltip; plus the legend those colours make."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont, QFontMetricsF, QPen
from PySide6.QtWidgets import QGraphicsRectItem, QGraphicsSimpleTextItem

from .theme import LIGHT, Theme
from .tree_nodes import MARKS, SOURCE_LABELS, NodeInfo, display_text, prob_label

NODE_W, NODE_H = 104, 30  # NODE_W: the widest node; short tokens get narrower boxes
MIN_NODE_W, GAP, ROW_H = 40, 18, 36
COLORS = LIGHT.tree  # status -> (fill, border); DARK.tree in dark mode
SOURCE_COLORS = {  # TokenTree.sources -> the stripe on a node's left edge (both themes)
    "draft": "#3d5a80",
    "prompt": "#f2a900",
    "ngram": "#00a3a3",
    "jacobi": "#d6336c",
}
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


def _fonts() -> tuple[QFont, QFont]:
    """Node fonts relative to the application font, so the system font size applies."""
    label, small = QFont(), QFont()
    base = label.pointSizeF() if label.pointSizeF() > 0 else 9.0
    label.setPointSizeF(base * 0.95)
    label.setBold(True)
    small.setPointSizeF(base * 0.75)
    return label, small


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
