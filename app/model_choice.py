"""Choosing models: known model folders, the pair compatibility check, what a memory budget
means, and the ModelPicker widget (a combo of known models plus Browse…)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QPushButton, QWidget

from engine.config import StreamConfig

from .accessibility import describe

MB = 2**20


def demo_paths() -> tuple[Path, Path] | None:
    """Where the demo pair lives, if the demo builder is part of this build."""
    try:
        from engine.formats import demo
    except ImportError:
        return None
    home = demo.models_home()
    return home / demo.TARGET_NAME, home / demo.DRAFT_NAME


def coder_pair() -> tuple[Path, Path, int] | None:
    """(target, draft, download MB) of the Qwen2.5-Coder pair, if its builder is in this build."""
    try:
        from engine.formats import pairs
    except ImportError:
        return None
    return (*pairs.coder_paths(), pairs.CODER_DOWNLOAD_MB)


def known_models() -> list[tuple[str, str]]:
    """(label, path) of models in the models folder and the Hugging Face cache."""
    try:
        from engine.formats.demo import list_models
    except ImportError:
        return []
    try:
        return [(m.name, str(m.path)) for m in list_models()]
    except OSError:
        return []


def check_pair_message(target: str, draft: str) -> tuple[bool, str]:
    """(ok, message) of the draft/target compatibility check; reads configs and tokenizers."""
    from engine.errors import CanopyError
    from engine.formats.compat import check_pair

    if not target:
        return False, "Pick a target model."
    if not draft:
        return True, ("No draft: tree mode uses prompt lookup and the n-gram pool; "
                      "lookahead needs none; ar decodes alone.")
    try:
        return True, "Compatible: " + check_pair(target, draft)
    except CanopyError as exc:
        return False, str(exc)


def budget_plan(target: str, budget_mb: int, stream: StreamConfig | None = None) -> str:
    """What a budget means for this target: layers pinned vs streamed per pass."""
    if budget_mb <= 0:
        return "Whole target resident (no streaming)."
    from engine.errors import CanopyError
    from engine.streaming.layerstore import plan_pinned
    from engine.streaming.weights import index_model

    try:
        index = index_model(Path(target))
        layers = [index.layer_bytes(i) for i in range(len(index.layers))]
        base = sum(t.length for t in index.other)
        prefetch = (stream or StreamConfig()).prefetch
        pinned = plan_pinned(base, layers, budget_mb * MB, prefetch=prefetch)
    except CanopyError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"Cannot read the target's weights: {exc}"
    n = len(layers)
    return (f"{budget_mb} MB of {index.nbytes / MB:.0f} MB: {len(pinned)} of {n} layers pinned, "
            f"{n - len(pinned)} streamed from disk every pass.")


class ModelPicker(QWidget):
    """A combo of known models plus a Browse… button; `path()` is the chosen folder."""

    sig_path_changed = Signal(str)
    """(path) the chosen model folder ("" for none)."""

    def __init__(self, allow_none: bool = False, parent: QWidget | None = None):
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.setMinimumWidth(320)
        self.combo.currentIndexChanged.connect(lambda _: self.sig_path_changed.emit(self.path()))
        self.allow_none = allow_none
        self.accepts = None  # optional filter: path -> bool (e.g. drafts that fit the target)
        self._models: list[tuple[str, str]] = []
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        role = "draft" if allow_none else "target"
        describe(self.combo, f"{role.capitalize()} model", f"The {role} model folder")
        describe(browse, f"Browse for the {role}", f"Choose a {role} model folder on disk")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo, 1)
        layout.addWidget(browse)
        self.set_models(known_models())

    def set_models(self, models: list[tuple[str, str]]) -> None:
        self._models = list(models)
        current = self.path()
        self.combo.blockSignals(True)
        self.combo.clear()
        if self.allow_none:
            self.combo.addItem("(none: no draft)", "")
        for label, path in models:
            if self.accepts is None or self.accepts(path):
                self.combo.addItem(label, path)
        self.combo.blockSignals(False)
        self.set_path(current)

    def path(self) -> str:
        return self.combo.currentData() or ""

    def set_filter(self, accepts) -> None:
        """Show only models for which `accepts(path)` is true (None: all)."""
        self.accepts = accepts
        self.set_models(self._models)

    def listed(self) -> list[str]:
        return [self.combo.itemData(i) for i in range(self.combo.count()) if self.combo.itemData(i)]

    def set_path(self, path: str) -> None:
        index = self.combo.findData(path)
        if index < 0 and path:
            self.combo.addItem(Path(path).name or path, path)
            index = self.combo.count() - 1
        if index < 0:
            index = 0
        if index != self.combo.currentIndex():
            self.combo.setCurrentIndex(index)
        self.combo.setToolTip(path or "No model chosen")

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", self.path())
        if folder:
            self.set_path(folder)
