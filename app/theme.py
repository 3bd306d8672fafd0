"""Light and dark appearance: every colour the views paint with, chosen from the system palette.

`theme_for(palette)` picks LIGHT or DARK from the palette's window colour, which is what Qt
updates when macOS (or the desktop) switches appearance; the main window re-applies the theme
on palette and colour-scheme change events, so the switch is live. `use_scheme("dark")` forces
an appearance (the `--dark` screenshot), falling back to Fusion with a dark palette on platforms
whose theme cannot switch (offscreen, most X11 setups).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette

from .markdown import DRAFT, LIGHT_COLORS, TARGET

STYLE_TEMPLATE = Path(__file__).resolve().parent.parent / "resources" / "style.qss"


@dataclass(frozen=True)
class Theme:
    name: str  # "light" | "dark"
    tree: dict[str, tuple[str, str]]  # node status -> (fill, border)
    tree_background: str
    tree_rejected_edge: str
    tree_rejected_text: tuple[str, str]  # (label, probability) on the pale rejected fill
    markdown: dict[str, str]  # markdown.render colours: tints, code and quote colours
    plot_background: str
    plot_text: str
    plot_axis: str
    plot_pens: dict[str, str]  # curve/bar name -> colour
    layers: dict[str, str]  # target layer state -> colour
    qss: dict[str, str] = field(default_factory=dict)  # names used in resources/style.qss

    @property
    def tints(self) -> dict[int, str]:
        return {DRAFT: self.markdown["draft"], TARGET: self.markdown["target"]}


LIGHT = Theme(
    name="light",
    tree={
        "root": ("#4a6fa5", "#2f4f7f"),
        "accepted": ("#2e9d4f", "#1d6e35"),
        "rejected": ("#e7b3b3", "#b55a5a"),
        "bonus": ("#8e5bd8", "#5e35a0"),
    },
    tree_background="#fbfbfb",
    tree_rejected_edge="#c9a0a0",
    tree_rejected_text=("#402020", "#6a4040"),
    markdown=dict(LIGHT_COLORS),
    plot_background="#ffffff",
    plot_text="#333333",
    plot_axis="#999999",
    plot_pens={"speed": "#2e7dd7", "pass": "#2e9d4f", "depth": "#8e5bd8", "io": "#e07b24",
               "wait": "#c94c4c", "memory": "#4a6fa5", "budget": "#c94c4c"},
    layers={"pinned": "#4a6fa5", "resident": "#8cc0e8", "loading": "#f0a030",
            "streamed": "#dcdcdc"},
    qss={
        "window": "#f6f7f9", "dock_title": "#e9ecf1", "user_bg": "#ffffff",
        "user_border": "#d9dee6", "assistant_bg": "#fbfcfe", "assistant_border": "#cfdcec",
        "role": "#4a6fa5", "muted": "#6b7480", "accent": "#2e7dd7", "accent_disabled": "#a9c5e8",
        "stop": "#c94c4c", "info": "#444c56", "input_bg": "#ffffff", "input_border": "#cfd6df",
        "text": "#1d2228", "banner_bg": "#fdecea", "banner_border": "#e0a39c",
        "banner_text": "#7a1c12", "welcome_bg": "#eef4fb", "welcome_border": "#b9cde6",
        "ok": "#1d6e35", "error": "#b00020",
    },
)

DARK = Theme(
    name="dark",
    tree={
        "root": ("#5b82bd", "#9db9e6"),
        "accepted": ("#2f8a4a", "#7fd39a"),
        "rejected": ("#5a3a3a", "#c98080"),
        "bonus": ("#8a5fd0", "#c7a8f5"),
    },
    tree_background="#1f2226",
    tree_rejected_edge="#8a5c5c",
    tree_rejected_text=("#f0d8d8", "#d0b0b0"),
    markdown={"draft": "#1f4a2c", "target": "#5a3d1c", "prompt": "#1c3a5c", "ngram": "#4a2a57",
              "jacobi": "#4f4a1c", "code_bg": "#2b2f36",
              "block_bg": "#262a30", "block_border": "#3d434c", "muted": "#a0a8b2",
              "quote": "#b8bec6"},
    plot_background="#1f2226",
    plot_text="#d8dce2",
    plot_axis="#7d8590",
    plot_pens={"speed": "#6aa8f0", "pass": "#4cc26f", "depth": "#b18cf0", "io": "#f0a060",
               "wait": "#f07a7a", "memory": "#8fb0e0", "budget": "#f07a7a"},
    layers={"pinned": "#5b82bd", "resident": "#3f6f96", "loading": "#d08a20",
            "streamed": "#4a4f57"},
    qss={
        "window": "#1e2024", "dock_title": "#2a2d33", "user_bg": "#2a2e35",
        "user_border": "#3b414a", "assistant_bg": "#25292f", "assistant_border": "#34465c",
        "role": "#8fb0e0", "muted": "#9aa3ad", "accent": "#3a82d6", "accent_disabled": "#34506f",
        "stop": "#c05050", "info": "#b8c0ca", "input_bg": "#17191c", "input_border": "#3b414a",
        "text": "#e4e7eb", "banner_bg": "#4a2523", "banner_border": "#8a4a44",
        "banner_text": "#ffd8d2", "welcome_bg": "#22303f", "welcome_border": "#3d5673",
        "ok": "#7fd39a", "error": "#ff8a80",
    },
)


def is_dark(palette: QPalette) -> bool:
    return palette.color(QPalette.ColorRole.Window).lightness() < 128


def theme_for(palette: QPalette | None = None) -> Theme:
    """DARK when the palette's windows are dark, else LIGHT (the palette is what Qt draws)."""
    palette = palette if palette is not None else QGuiApplication.palette()
    return DARK if is_dark(palette) else LIGHT


def stylesheet(theme: Theme, template: Path = STYLE_TEMPLATE) -> str:
    """resources/style.qss with the theme's colours filled in ($name placeholders)."""
    return Template(template.read_text()).substitute(theme.qss) if template.exists() else ""


def dark_palette() -> QPalette:
    """A dark palette for Fusion, for platforms whose own theme cannot switch to dark."""
    p = QPalette()
    roles = QPalette.ColorRole
    colors = {
        roles.Window: "#1e2024", roles.WindowText: "#e4e7eb", roles.Base: "#17191c",
        roles.AlternateBase: "#24272c", roles.ToolTipBase: "#2a2d33", roles.ToolTipText: "#e4e7eb",
        roles.Text: "#e4e7eb", roles.Button: "#2a2d33", roles.ButtonText: "#e4e7eb",
        roles.BrightText: "#ff6b6b", roles.Link: "#6aa8f0", roles.Highlight: "#3a82d6",
        roles.HighlightedText: "#ffffff", roles.PlaceholderText: "#7d8590",
        roles.Light: "#3b414a", roles.Midlight: "#33373e", roles.Mid: "#2a2d33",
        roles.Dark: "#141618", roles.Shadow: "#000000",
    }
    for role, color in colors.items():
        p.setColor(role, QColor(color))
    for role in (roles.WindowText, roles.Text, roles.ButtonText):
        p.setColor(QPalette.ColorGroup.Disabled, role, QColor("#6b7280"))
    return p


def use_scheme(app, scheme: str) -> None:
    """Force "dark" or "light" appearance for this run (the system's choice otherwise)."""
    want = Qt.ColorScheme.Dark if scheme == "dark" else Qt.ColorScheme.Light
    app.styleHints().setColorScheme(want)
    app.processEvents()
    if is_dark(app.palette()) != (scheme == "dark"):  # the platform theme did not follow
        app.setStyle("Fusion")
        app.setPalette(dark_palette() if scheme == "dark" else app.style().standardPalette())
