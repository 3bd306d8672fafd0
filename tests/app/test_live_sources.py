from dataclasses import replace

from app.live_panel import LivePanel
from app.steps import SourceAcceptance
from tests.app.fake_engine import make_step


def sourced_step():
    step = make_step(0, ["a", "b"], 2, width=2, depth=3, bonus="Z")
    n = len(step.tree_tokens)
    sources = ("root",) + tuple("prompt" if i % 2 else "draft" for i in range(1, n))
    return replace(step, tree_sources=sources), sources


def test_source_acceptance_counts_proposed_and_accepted_nodes():
    step, sources = sourced_step()
    acc = SourceAcceptance.empty()
    acc.add(step)
    acc.add(step)
    for s in ("draft", "prompt"):
        assert acc.proposed[s] == 2 * sources[1:].count(s)
        assert acc.accepted.get(s, 0) == 2 * sum(sources[i] == s for i in step.accepted[1:])
    assert acc.summary().startswith("accepted by source: ")


def test_live_panel_summary_shows_acceptance_per_source(qtbot):
    panel = LivePanel()
    qtbot.addWidget(panel)
    step, _ = sourced_step()
    panel.add_step(step, 0.5)
    panel.refresh()
    assert "accepted by source" in panel.summary.text() and "prompt" in panel.summary.text()
