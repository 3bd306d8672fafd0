"""Accessible names and tooltips: one helper to set both, and a walk that finds controls missing
them (the test suite runs it over the whole window)."""

from __future__ import annotations

from PySide6.QtGui import QAccessible
from PySide6.QtWidgets import (
    QAbstractButton,
    QAbstractItemView,
    QAbstractScrollArea,
    QAbstractSlider,
    QAbstractSpinBox,
    QComboBox,
    QLineEdit,
    QScrollArea,
    QScrollBar,
    QWidget,
)

INTERACTIVE = (QAbstractButton, QAbstractItemView, QAbstractSlider, QAbstractSpinBox, QComboBox,
               QLineEdit, QAbstractScrollArea)


def describe(widget: QWidget, name: str, tooltip: str | None = None) -> QWidget:
    """Set what a screen reader says (`name`) and what hovering shows (`tooltip`, else name)."""
    widget.setAccessibleName(name)
    widget.setToolTip(tooltip or name)
    return widget


def accessible_name(widget: QWidget) -> str:
    """The name assistive technology gets: explicit, or derived by Qt (e.g. a button's text)."""
    iface = QAccessible.queryAccessibleInterface(widget)
    return (iface.text(QAccessible.Text.Name) if iface is not None else "") or \
        widget.accessibleName()


def controls(root: QWidget) -> list[QWidget]:
    """Visible interactive widgets under `root`, without Qt's own parts (scroll bars, the dock
    title buttons) and without the inner views of composite controls."""
    out = []
    for w in root.findChildren(QWidget):
        if not isinstance(w, INTERACTIVE) or isinstance(w, QScrollBar):
            continue
        if w.objectName().startswith("qt_") or not w.isVisibleTo(root):
            continue
        if isinstance(w.parent(), (QComboBox, QAbstractSpinBox)):
            continue
        # a scroll area that only holds other widgets (the chat list) is not itself a control
        if type(w) is QScrollArea:
            continue
        out.append(w)
    return out


def missing(root: QWidget) -> list[str]:
    """Descriptions of the controls under `root` without an accessible name or tooltip."""
    problems = []
    for w in controls(root):
        label = f"{type(w).__name__} {w.objectName() or ''} {getattr(w, 'text', lambda: '')()}"
        if not accessible_name(w).strip():
            problems.append(f"no accessible name: {label}")
        if not w.toolTip().strip():
            problems.append(f"no tooltip: {label}")
    return problems
