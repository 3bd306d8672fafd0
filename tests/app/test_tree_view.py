import random

from app.tree_view import (
    COLORS,
    MIN_NODE_W,
    NODE_H,
    NODE_W,
    TreePanel,
    layout_tree,
    tree_nodes,
)
from engine.events import StepEvent
from tests.app.fake_engine import make_step, tree_shape


def random_tree(n: int, seed: int = 0) -> StepEvent:
    rng = random.Random(seed)
    parents = [-1] + [rng.randrange(0, i) if i > 3 else i - 1 for i in range(1, n)]
    path, node = [0], 0
    while True:  # accept a root-to-leaf prefix
        kids = [i for i, p in enumerate(parents) if p == node]
        if not kids or len(path) > 4:
            break
        node = kids[0]
        path.append(node)
    probs = [1.0] + [rng.random() for _ in range(n - 1)]
    depths, paths = tree_shape(parents, probs)
    texts = [f"t{i}" for i in path[1:]] + ["B"]
    return StepEvent(
        index=0, mode="tree", tree_tokens=tuple(range(n)), tree_parents=tuple(parents),
        tree_probs=tuple(probs), tree_depths=depths, tree_path_probs=paths,
        tree_texts=tuple(f"t{i}" for i in range(n)), accepted=tuple(path), bonus_token=999,
        token_ids=tuple(range(len(path))), from_draft=(True,) * (len(path) - 1) + (False,),
        token_texts=tuple(texts), text="".join(texts),
    )


def _no_overlap(pos):
    seen = set()
    for col, row in pos:
        assert (col, row) not in seen
        seen.add((col, row))


def test_layout_small_tree():
    #      0
    #    1   2
    #   3 4
    pos = layout_tree([-1, 0, 0, 1, 1])
    assert [c for c, _ in pos] == [0, 1, 1, 2, 2]
    assert pos[3][1] == 0 and pos[4][1] == 1 and pos[2][1] == 2
    assert pos[1][1] == 0.5 and pos[0][1] == (0.5 + 2) / 2
    _no_overlap(pos)


def test_layout_deep_chain_does_not_recurse():
    pos = layout_tree([-1] + list(range(0, 4999)))
    assert pos[-1] == (4999, 0.0)


def test_nodes_statuses_and_bonus():
    step = make_step(0, ["a", "b"], 2, width=2, depth=3, bonus="Z")
    nodes = tree_nodes(step)
    statuses = [n.status for n in nodes]
    assert statuses[0] == "root" and statuses[-1] == "bonus"
    assert statuses.count("accepted") == 2 and nodes[-1].text == "Z"
    assert nodes[-1].parent == step.accepted[-1]


def test_panel_draws_60_node_tree_readably(qtbot):
    panel = TreePanel()
    qtbot.addWidget(panel)
    panel.resize(600, 500)
    panel.show()
    step = random_tree(64, seed=2)
    panel.set_steps([step])
    view = panel.view
    assert len(view.items_by_index) == 65  # + bonus
    boxes = [item.sceneBoundingRect() for item in view.items_by_index.values()]
    for i, a in enumerate(boxes):  # no two nodes overlap
        for b in boxes[i + 1:]:
            assert not a.intersects(b)
    assert view.transform().m11() >= 0.6  # fit never shrinks text below readable size
    colors = {item.brush().color().name() for item in view.items_by_index.values()}
    assert {COLORS[s][0] for s in ("root", "accepted", "rejected", "bonus")} <= colors
    tip = view.items_by_index[step.accepted[1]].toolTip()
    assert "accepted" in tip and "draft prob" in tip
    view.fit_all()
    assert view.transform().m11() < 0.6
    assert all(MIN_NODE_W <= i.rect().width() <= NODE_W for i in view.items_by_index.values())
    assert view.items_by_index[0].rect().height() == NODE_H


def test_slider_replays_steps(qtbot):
    panel = TreePanel()
    qtbot.addWidget(panel)
    steps = [make_step(i, ["x"] * 3, i % 4) for i in range(5)]
    for s in steps:
        panel.add_step(s)
    panel.refresh()
    assert panel.view.step is steps[-1] and panel.slider.maximum() == 4
    with qtbot.waitSignal(panel.sig_step_shown) as blocker:
        panel.slider.setValue(1)
    assert blocker.args == [1] and panel.view.step is steps[1]
    assert not panel.live_check.isChecked()
    assert "step 2/5" in panel.info.text()


def test_nodes_show_their_source_with_a_legend(qtbot):
    from dataclasses import replace

    from app.tree_view import LEGEND, SOURCE_COLORS, SOURCE_LABELS

    step = random_tree(12, seed=4)
    sources = ("root",) + tuple(("draft", "prompt", "ngram", "jacobi")[i % 4] for i in range(11))
    step = replace(step, tree_sources=sources)
    nodes = tree_nodes(step)
    assert [n.source for n in nodes[:12]] == ["", *sources[1:]] and nodes[-1].source == ""
    panel = TreePanel()
    qtbot.addWidget(panel)
    panel.set_steps([step])
    for i in range(1, 12):
        item = panel.view.items_by_index[i]
        stripes = [c.brush().color().name() for c in item.childItems()
                   if hasattr(c, "rect")]
        assert stripes == [SOURCE_COLORS[sources[i]]], (i, stripes)
        assert SOURCE_LABELS[sources[i]] in item.toolTip()
    assert not [c for c in panel.view.items_by_index[0].childItems() if hasattr(c, "rect")]
    assert all(label in LEGEND for label in SOURCE_LABELS.values())
