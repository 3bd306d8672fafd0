"""The About box: the versions and the device a bug report needs, with a Copy button."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata

from PySide6.QtCore import Qt, qVersion
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from .accessibility import describe


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def chip() -> str:
    """The processor: `sysctl machdep.cpu.brand_string` on macOS (e.g. "Apple M2 Pro"), the
    first `model name` of /proc/cpuinfo on Linux, else what `platform` knows."""
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"],
                                 capture_output=True, text=True, timeout=2)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory() -> str:
    """Physical memory (the budget slider's ceiling matters in bug reports)."""
    try:
        return f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB"
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return "unknown"


def about_rows(models: str = "", target: str = "", draft: str = "") -> list[tuple[str, str]]:
    """(label, value) pairs: versions, the device, the loaded models."""
    import PySide6

    try:
        import mlx.core as mx

        mlx_version = mx.__version__
    except ImportError:
        mlx_version = "not installed"
    mac = platform.mac_ver()[0]
    return [
        ("Canopy", _version("canopy-llm")),
        ("MLX", mlx_version),
        ("mlx-lm", _version("mlx-lm")),
        ("Qt", qVersion()),
        ("PySide6", PySide6.__version__),
        ("Python", platform.python_version()),
        ("Platform", f"macOS {mac}" if mac else platform.platform()),
        ("Machine", platform.machine()),
        ("Chip", chip()),
        ("Memory", memory()),
        ("Loaded models", models or "none"),
        ("Target", target or "–"),
        ("Draft", draft or "–"),
    ]


def about_text(rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label + ':':<{width + 1}} {value}" for label, value in rows)


class AboutDialog(QDialog):
    """Canopy's name and purpose, and the versions as selectable text with a Copy button."""

    def __init__(self, rows: list[tuple[str, str]], parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("About Canopy")
        self.text = about_text(rows)
        title = QLabel("<h2>Canopy</h2>Chat with a model larger than your Mac's memory: "
                       "token-tree speculative decoding with a streamed target (MLX).")
        title.setWordWrap(True)
        self.details = QPlainTextEdit(self.text)
        self.details.setReadOnly(True)
        self.details.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.setMinimumSize(520, 230)
        describe(self.details, "Versions", "Versions and device, for bug reports")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        describe(self.copy_button, "Copy versions", "Copy these details to the clipboard")
        self.copy_button.clicked.connect(self.copy)
        buttons.rejected.connect(self.reject)
        close = buttons.button(QDialogButtonBox.StandardButton.Close)
        describe(close, "Close", "Close the About box")
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(self.details)
        layout.addWidget(buttons, 0, Qt.AlignmentFlag.AlignRight)

    def copy(self) -> None:
        QGuiApplication.clipboard().setText(self.text)
