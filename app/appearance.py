"""The main window's appearance: light/dark theme following the system live, and text zoom."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QApplication

from .theme import Theme, stylesheet, theme_for

ZOOM_STEP = 1.15  # chat font scale per View › Zoom In step
ZOOM_RANGE = (-4, 8)
THEME_EVENTS = (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange,
                QEvent.Type.ThemeChange)


class Appearance(QObject):
    """Applies a Theme to the chat, tree and live panel of `window`; re-checks the system's
    appearance on palette/theme change events and on QStyleHints.colorSchemeChanged."""

    def __init__(self, window):
        super().__init__(window)
        self.window = window
        self.theme: Theme | None = None
        self.zoom_level = 0
        self._base_font = QFont(window.chat.font())  # the system font size
        window.installEventFilter(self)
        # a bound method, not a lambda: Qt drops the connection when this object is deleted
        QApplication.styleHints().colorSchemeChanged.connect(self._on_color_scheme)
        self.follow_system()

    def follow_system(self) -> None:
        """Light or dark, as the application palette is now."""
        theme = theme_for(QApplication.palette())
        if self.theme is None or theme.name != self.theme.name:
            self.apply(theme)

    def apply(self, theme: Theme) -> None:
        self.theme = theme
        QApplication.instance().setStyleSheet(stylesheet(theme))
        w = self.window
        w.chat.set_colors(theme.markdown)
        w.tree.set_theme(theme)
        w.live.set_theme(theme)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.window and event.type() in THEME_EVENTS:
            QTimer.singleShot(0, self.follow_system)  # after Qt has updated every palette
        return False

    def _on_color_scheme(self, _scheme) -> None:
        QTimer.singleShot(0, self.follow_system)

    def set_zoom(self, level: int) -> None:
        """Scale the chat's text by ZOOM_STEP**level from the system font size."""
        self.zoom_level = max(ZOOM_RANGE[0], min(ZOOM_RANGE[1], level))
        font = QFont(self._base_font)
        font.setPointSizeF(self._base_font.pointSizeF() * ZOOM_STEP ** self.zoom_level)
        self.window.chat.setFont(font)

    def zoom_by(self, steps: int) -> None:
        """+1 / -1 zoom in or out; 0 back to actual size (View › Zoom In/Out/Actual Size)."""
        self.set_zoom(self.zoom_level + steps if steps else 0)
