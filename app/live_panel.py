"""Live panel (pyqtgraph): speed, acceptance, IO and memory of the running generation.

Plots: tokens/s over time, tokens per target pass, acceptance by tree depth, IO MB/s, IO wait,
target bytes resident vs the budget, and acceptance per answer over the session with the draft's
adaptation runs marked (`end_answer`, `mark_adaptation`); below them a strip of target layers
(pinned / resident / loading / streamed) and a summary line with acceptance per node source.
Data arrive per step (`add_step`); plots redraw in `refresh`, once a frame.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from engine.decoding.stats import DepthAcceptance
from engine.events import StepEvent

from .accessibility import describe
from .steps import SourceAcceptance
from .theme import LIGHT, Theme

LAYER_COLORS = LIGHT.layers  # DARK.layers in dark mode
WINDOW = 8  # steps in the sliding window of the tokens/s curve
MB = 2**20


class LayerStrip(QWidget):
    """One cell per target layer, coloured by state."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.states: tuple[str, ...] = ()
        self.colors = dict(LAYER_COLORS)
        self.setMinimumHeight(22)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_states(self, states) -> None:
        states = tuple(states or ())
        if states != self.states:
            self.states = states
            self.update()

    def set_counts(self, pinned: int, streamed: int) -> None:
        """Without live states (e.g. a whole target): pinned layers first, then streamed."""
        self.set_states(("pinned",) * pinned + ("streamed",) * streamed)

    def paintEvent(self, event):
        painter = QPainter(self)
        n = len(self.states)
        if not n:
            painter.setPen(self.palette().placeholderText().color())
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no target loaded")
            return
        w = self.width() / n
        painter.setPen(QPen(self.palette().window().color(), 1))
        for i, state in enumerate(self.states):
            painter.setBrush(QColor(self.colors.get(state, self.colors["streamed"])))
            painter.drawRect(QRectF(i * w, 0, w, self.height() - 1))


def _plot(layout: pg.GraphicsLayoutWidget, title: str, row: int, col: int):
    plot = layout.addPlot(row=row, col=col, title=title)
    plot.setMenuEnabled(False)
    # no grid: pyqtgraph's translucent grid made each repaint ~10x slower (54 vs 5.5 ms)
    plot.setMouseEnabled(x=False, y=False)
    plot.canopy_title = title
    return plot


def _style_plot(plot, theme: Theme, title_pt: float) -> None:
    plot.titleLabel.setText(plot.canopy_title, size=f"{title_pt:.1f}pt", color=theme.plot_text)
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setPen(pg.mkPen(theme.plot_axis))
        axis.setTextPen(pg.mkPen(theme.plot_text))
        if axis.labelText:
            plot.setLabel(name, axis.labelText, color=theme.plot_text)


class LivePanel(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.graphs = pg.GraphicsLayoutWidget()
        describe(self.graphs, "Live plots", "Speed, acceptance, IO and memory of the answer "
                                            "being generated")
        g = self.graphs
        self.speed_plot = _plot(g, "tokens / s", 0, 0)
        self.pass_plot = _plot(g, "tokens per target pass", 0, 1)
        self.depth_plot = _plot(g, "acceptance by depth", 0, 2)
        self.io_plot = _plot(g, "target IO MB/s", 0, 3)
        self.wait_plot = _plot(g, "IO wait per pass (ms)", 0, 4)
        self.memory_plot = _plot(g, "resident vs budget (MB)", 0, 5)
        self.history_plot = _plot(g, "acceptance per answer", 0, 6)
        self.history_plot.setYRange(0, 1, padding=0.02)
        self.history_plot.setLabel("bottom", "answer")
        self.history_curve = self.history_plot.plot(symbol="o", symbolSize=5)
        self.accept_history: list[float] = []  # per finished answer, across generations
        self.adapt_marks: list[tuple[float, str]] = []  # (x between answers, label)
        self._mark_lines: list[pg.InfiniteLine] = []
        self.speed_curve = self.speed_plot.plot()
        self.pass_bars = pg.BarGraphItem(x=[], height=[], width=0.8)
        self.pass_plot.addItem(self.pass_bars)
        self.depth_bars = pg.BarGraphItem(x=[], height=[], width=0.7)
        self.depth_plot.addItem(self.depth_bars)
        self.depth_plot.setYRange(0, 1, padding=0.02)
        self.depth_plot.setLabel("bottom", "depth")
        self.io_curve = self.io_plot.plot()
        self.wait_curve = self.wait_plot.plot()
        self.memory_curve = self.memory_plot.plot()
        self.budget_line = pg.InfiniteLine(angle=0)
        self.memory_plot.addItem(self.budget_line)
        self.budget_line.setVisible(False)
        self.speed_plot.setLabel("bottom", "seconds")

        self.strip = LayerStrip()
        self.strip_label = QLabel("")
        self.summary = QLabel("")
        self.summary.setObjectName("liveSummary")
        self.memory = QLabel("")
        self.memory.setObjectName("liveMemory")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.setSpacing(2)
        layout.addWidget(self.graphs, 1)
        layout.addWidget(self.strip_label)
        layout.addWidget(self.strip)
        layout.addWidget(self.summary)
        layout.addWidget(self.memory)
        self.budget_bytes: int | None = None
        self._has_live_layers = False
        self.set_theme(LIGHT)
        self.reset()

    def set_theme(self, theme: Theme) -> None:
        """Colour the plots, the layer strip and its legend for the light or dark appearance."""
        self.theme = theme
        self.graphs.setBackground(theme.plot_background)
        title_pt = max(7.0, self.font().pointSizeF() * 0.95)
        for plot in (self.speed_plot, self.pass_plot, self.depth_plot, self.io_plot,
                     self.wait_plot, self.memory_plot, self.history_plot):
            _style_plot(plot, theme, title_pt)
        pens = theme.plot_pens
        for curve, key in ((self.speed_curve, "speed"), (self.io_curve, "io"),
                           (self.wait_curve, "wait"), (self.memory_curve, "memory")):
            curve.setPen(pg.mkPen(pens[key], width=2))
        self.history_curve.setPen(pg.mkPen(pens["depth"], width=2))
        self.history_curve.setSymbolBrush(pens["depth"])
        for line in self._mark_lines:
            line.setPen(pg.mkPen(pens["budget"], style=Qt.PenStyle.DashLine))
        self.pass_bars.setOpts(brush=pens["pass"], pen=pg.mkPen(pens["pass"]))
        self.depth_bars.setOpts(brush=pens["depth"], pen=pg.mkPen(pens["depth"]))
        self.budget_line.setPen(pg.mkPen(pens["budget"], style=Qt.PenStyle.DashLine))
        self.strip.colors = dict(theme.layers)
        self.strip.update()
        legend = " ".join(
            f'<span style="background-color:{c}">&nbsp;&nbsp;&nbsp;</span>&nbsp;{name}'
            for name, c in theme.layers.items()
        )
        self.strip_label.setText(f"target layers: {legend}")

    def reset(self) -> None:
        """Start a new generation (the budget and the layer strip stay)."""
        self.times: list[float] = []
        self.tokens: list[int] = []
        self.speed: list[float] = []
        self.io_mbps: list[float] = []
        self.io_wait_ms: list[float] = []
        self.resident_mb: list[float] = []
        self.depth = DepthAcceptance()
        self.sources = SourceAcceptance.empty()
        self._pending = True
        self.refresh()

    def end_answer(self) -> None:
        """The answer is over: its acceptance per drafted position joins the session's curve
        (answers where nothing was drafted add no point)."""
        if sum(self.depth.reached):
            self.accept_history.append(self.depth.overall())
            self._pending = True

    def mark_adaptation(self, label: str) -> None:
        """An adaptation run ended here (between the answers before and after it)."""
        x = len(self.accept_history) + 0.5
        self.adapt_marks.append((x, label))
        line = pg.InfiniteLine(pos=x, angle=90, label=label,
                               labelOpts={"position": 0.9, "color": self.theme.plot_text},
                               pen=pg.mkPen(self.theme.plot_pens["budget"],
                                            style=Qt.PenStyle.DashLine))
        self.history_plot.addItem(line)
        self._mark_lines.append(line)
        self._pending = True

    def set_target(self, budget_bytes: int | None, layers: int) -> None:
        """A target was loaded: its budget (None: whole) and layer count."""
        self.budget_bytes = budget_bytes
        self.memory.setText(self._budget_text())
        self._has_live_layers = False
        self.strip.set_counts(layers, 0)
        self._pending = True

    def add_step(self, step: StepEvent, t: float) -> None:
        prev = self.times[-1] if self.times else 0.0
        dt = max(t - prev, 1e-6)
        self.times.append(t)
        self.tokens.append(len(step.token_ids))
        k = max(0, len(self.times) - 1 - WINDOW)
        span = t - (self.times[k] if k < len(self.times) - 1 else 0.0)
        n = sum(self.tokens[k + 1:]) if k < len(self.times) - 1 else self.tokens[-1]
        self.speed.append(n / max(span, 1e-6))
        self.io_mbps.append(step.bytes_read / MB / dt)
        self.io_wait_ms.append(step.io_wait_seconds * 1000)
        self.resident_mb.append(step.target_resident_bytes / MB)
        self.depth.add(step)
        self.sources.add(step)
        if step.layers_pinned + step.layers_streamed and not self._has_live_layers:
            self.strip.set_counts(step.layers_pinned, step.layers_streamed)
        self._pending = True

    def set_kv_cache(self, stats: dict) -> None:
        """KV cache bytes of the finished answer's conversation (kept for its next turn), next to
        the weight budget."""
        if "kv_cache_bytes" not in stats:
            return
        text = f"KV cache {stats['kv_cache_bytes'] / MB:.1f} MB"
        if "prompt_cache_conversations" in stats:
            text += (f" (all {stats['prompt_cache_conversations']} cached chats: "
                     f"{stats.get('prompt_cache_bytes', 0) / MB:.1f} MB)")
        if stats.get("prefill_cached_tokens"):
            text += f" · {stats['prefill_cached_tokens']} prompt tokens reused"
        self.memory.setText(f"{text} · {self._budget_text()}")

    def _budget_text(self) -> str:
        if self.budget_bytes:
            return f"weight budget {self.budget_bytes / MB:.0f} MB"
        return "weights: whole target resident"

    def set_layers(self, states) -> None:
        """Live per-layer states from the bridge (streamed targets only)."""
        self._has_live_layers = bool(states)
        self.strip.set_states(states)

    def refresh(self) -> None:
        if not self._pending:
            return
        self._pending = False
        steps = list(range(1, len(self.tokens) + 1))
        self.speed_curve.setData(self.times, self.speed)
        self.pass_bars.setOpts(x=steps, height=self.tokens)
        rates = self.depth.rates()
        self.depth_bars.setOpts(x=list(range(1, len(rates) + 1)), height=rates)
        self.io_curve.setData(steps, self.io_mbps)
        self.wait_curve.setData(steps, self.io_wait_ms)
        self.memory_curve.setData(steps, self.resident_mb)
        self.history_curve.setData(list(range(1, len(self.accept_history) + 1)),
                                   self.accept_history)
        for plot, values in ((self.speed_plot, self.speed), (self.io_plot, self.io_mbps),
                             (self.wait_plot, self.io_wait_ms), (self.pass_plot, self.tokens)):
            plot.setYRange(0, max(values, default=0) * 1.15 or 1, padding=0)
        if self.budget_bytes:
            self.budget_line.setValue(self.budget_bytes / MB)
            self.budget_line.setVisible(True)
            top = max([self.budget_bytes / MB, *self.resident_mb]) * 1.1
            self.memory_plot.setYRange(0, top, padding=0)
        else:
            self.budget_line.setVisible(False)
            self.memory_plot.setYRange(0, max(self.resident_mb, default=0) * 1.15 or 1, padding=0)
        if self.tokens:
            total = sum(self.tokens)
            elapsed = self.times[-1]
            self.summary.setText(
                f"{len(self.tokens)} passes · {total} tokens · "
                f"{total / len(self.tokens):.2f} tokens/pass · "
                f"{total / max(elapsed, 1e-6):.1f} tok/s · "
                f"IO wait {sum(self.io_wait_ms) / 1000:.2f} s"
                + (f" · {self.sources.summary()}" if self.sources.proposed else "")
            )
        else:
            self.summary.setText("Waiting for the first step…")
