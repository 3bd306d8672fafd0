"""The live panel plots the engine's acceptance by depth, not a definition of its own."""

from __future__ import annotations

import pytest

from app.live_panel import LivePanel
from engine.config import GenerationConfig, TreeConfig
from engine.decoding.generate import generate
from engine.decoding.stats import acceptance_by_depth
from engine.events import Finished, StepEvent


@pytest.mark.parametrize("mode", ["tree", "chain"])
def test_depth_plot_equals_engine_stats(qtbot, loaded_pair, mode):
    config = GenerationConfig(mode=mode, max_tokens=60, chain_length=5,
                              tree=TreeConfig(max_nodes=24, max_depth=6, adaptive=False))
    events = list(generate(loaded_pair["target"], loaded_pair["noisy"], [7, 8, 9], config))
    steps = [e for e in events if isinstance(e, StepEvent)]
    stats = events[-1].stats
    assert isinstance(events[-1], Finished)
    panel = LivePanel()
    qtbot.addWidget(panel)
    for i, step in enumerate(steps):
        panel.add_step(step, 0.1 * (i + 1))
    panel.refresh()
    plotted = tuple(panel.depth_bars.opts["height"])
    assert plotted == stats.acceptance_by_depth == acceptance_by_depth(steps)
    assert len(plotted) >= 2 and 0 < plotted[0] < 1  # a figure with something to disagree on
