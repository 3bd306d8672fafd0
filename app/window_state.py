"""Window size and position, dock layout (which panels are open), splitter sizes and zoom,
kept in QSettings under "window/" and restored on the next start."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings

KEYS = ("window/geometry", "window/state", "window/splitter", "window/zoom")


def save_window_state(window, qs: QSettings) -> None:
    qs.setValue("window/geometry", window.saveGeometry())
    qs.setValue("window/state", window.saveState())
    qs.setValue("window/splitter", window.splitter.saveState())
    qs.setValue("window/zoom", window.appearance.zoom_level)
    qs.sync()


def restore_window_state(window, qs: QSettings) -> bool:
    """Restore what was saved; False when nothing was (first start: the defaults stay)."""
    geometry = qs.value("window/geometry")
    if not isinstance(geometry, QByteArray) or geometry.isEmpty():
        return False
    window.restoreGeometry(geometry)
    state = qs.value("window/state")
    if isinstance(state, QByteArray):
        window.restoreState(state)
    splitter = qs.value("window/splitter")
    if isinstance(splitter, QByteArray):
        window.splitter.restoreState(splitter)
    try:
        window.appearance.set_zoom(int(qs.value("window/zoom", 0)))
    except (TypeError, ValueError):
        window.appearance.set_zoom(0)
    return True
