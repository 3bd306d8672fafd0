"""Light/dark appearance (live), the saved window layout, accessibility and keyboard use."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from app import accessibility
from app.markdown import LIGHT_COLORS
from app.settings_dialog import SettingsDialog
from app.theme import DARK, LIGHT, dark_palette, stylesheet, theme_for
from app.tree_view import NodeItem, TreePanel, tree_nodes
from tests.app.fake_engine import make_step


@pytest.fixture
def dark_system():
    """Switch the application palette to dark (as macOS does), and back afterwards."""
    app = QApplication.instance()
    light = QPalette(app.palette())

    def switch(dark: bool = True):
        app.setPalette(dark_palette() if dark else light)

    yield switch
    app.setPalette(light)


def _answered(qtbot, window):
    s = window.settings
    s.target, s.draft = "/models/t", "/models/d"
    with qtbot.waitSignal(window.bridge.sig_load_finished, timeout=5000):
        window.apply_settings(s, load=True)
    with qtbot.waitSignal(window.bridge.sig_generation_finished, timeout=5000):
        window.send("hello")
    qtbot.waitUntil(lambda: not window.bridge.busy, timeout=2000)
    return window


def test_palette_change_switches_every_colour_live(qtbot, make_window, dark_system):
    w = _answered(qtbot, make_window())
    w.show()
    assert w.appearance.theme is LIGHT and theme_for(QApplication.palette()) is LIGHT
    answer = w.chat.messages[-1]
    accepted = next(i for i in w.tree.view.items_by_index.values()
                    if i.node.status == "accepted")
    assert accepted.brush().color().name() == LIGHT.tree["accepted"][0]
    assert LIGHT_COLORS["draft"] in answer.browser.toHtml()

    dark_system(True)
    qtbot.waitUntil(lambda: w.appearance.theme is DARK, timeout=2000)
    assert QApplication.instance().styleSheet() == stylesheet(DARK)
    assert w.tree.view.backgroundBrush().color().name() == DARK.tree_background
    accepted = next(i for i in w.tree.view.items_by_index.values()
                    if i.node.status == "accepted")
    assert accepted.brush().color().name() == DARK.tree["accepted"][0]
    html = answer.browser.toHtml()
    assert DARK.markdown["draft"] in html and LIGHT_COLORS["draft"] not in html
    assert DARK.markdown["draft"] in w.chat.legend.text()
    assert w.live.graphs.backgroundBrush().color().name() == DARK.plot_background
    assert w.live.speed_curve.opts["pen"].color().name() == DARK.plot_pens["speed"]
    assert w.live.strip.colors == DARK.layers
    assert DARK.tree["bonus"][0] in w.tree.legend.text()

    dark_system(False)
    qtbot.waitUntil(lambda: w.appearance.theme is LIGHT, timeout=2000)
    assert w.live.graphs.backgroundBrush().color().name() == LIGHT.plot_background
    assert LIGHT_COLORS["draft"] in answer.browser.toHtml()


def test_window_layout_is_restored(qtbot, make_window):
    w = make_window()
    w.show()
    # the offscreen screen is 800x800 and restoreGeometry keeps windows on screen: test the
    # height, the width stays at the window's minimum
    w.resize(w.minimumSizeHint().width(), 700)
    w.live_dock.hide()
    w.splitter.setSizes([300, 700])
    w.appearance.set_zoom(2)
    qtbot.wait(50)
    sizes = w.splitter.sizes()
    w.close()
    again = make_window(size=None)
    again.show()
    qtbot.wait(50)
    assert again.size() == w.size() and again.height() == 700
    assert again.live_dock.isHidden() and not again.tree_dock.isHidden()
    assert again.splitter.sizes() == sizes
    assert again.appearance.zoom_level == 2


def test_every_control_has_a_name_and_tooltip(qtbot, make_window):
    w = _answered(qtbot, make_window())
    w.show()
    w.banner.show_error("A problem.")
    w.first_run.offer(broken=True)
    w.first_run.set_building(True)
    w.find_bar.open()
    w.chat.messages[0].set_editing(True)
    w.chat.messages[-1].steps_button.show()
    found = accessibility.controls(w)
    kinds = {type(c).__name__ for c in found}
    assert {"QPushButton", "QLineEdit", "QPlainTextEdit", "AutoHeightBrowser", "QListWidget",
            "TokenTreeView", "QSlider", "QCheckBox", "GraphicsLayoutWidget"} <= kinds
    assert accessibility.missing(w) == []
    w.menu_actions.about.trigger()
    assert accessibility.missing(w.about_dialog) == []
    w.about_dialog.close()
    settings = SettingsDialog(w.settings, w)
    settings.show()
    assert accessibility.missing(settings) == []
    settings.close()


def test_tree_is_keyboard_reachable_and_arrow_keys_move_steps(qtbot, make_window):
    w = make_window()
    chain, widget = [], w.nextInFocusChain()
    while widget is not w and len(chain) < 500:
        chain.append(widget)
        widget = widget.nextInFocusChain()
    assert w.tree.view in chain and w.chat.prompt in chain
    assert w.tree.view.focusPolicy() & Qt.FocusPolicy.TabFocus

    panel = TreePanel()
    qtbot.addWidget(panel)
    steps = [make_step(i, ["a", "b", "c"], i % 3) for i in range(4)]
    panel.set_steps(steps, show=2)
    qtbot.keyClick(panel.view, Qt.Key.Key_Left)
    assert panel.view.step is steps[1] and panel.slider.value() == 1
    qtbot.keyClick(panel.view, Qt.Key.Key_Right)
    qtbot.keyClick(panel.view, Qt.Key.Key_Right)
    qtbot.keyClick(panel.view, Qt.Key.Key_Right)  # stays on the last step
    assert panel.view.step is steps[3]


def test_node_status_is_not_only_colour():
    step = make_step(0, ["a", "b", "c"], 2)
    items = {n.status: NodeItem(n) for n in tree_nodes(step)}
    labels = {status: [c.text() for c in item.childItems()] for status, item in items.items()}
    assert labels["accepted"][1].startswith("✓")
    assert labels["rejected"][1].startswith("✗")
    assert labels["bonus"][1] == "★ bonus" and labels["root"][1] == "root"
    assert items["rejected"].pen().style() == Qt.PenStyle.DashLine
    assert items["accepted"].pen().style() == Qt.PenStyle.SolidLine
