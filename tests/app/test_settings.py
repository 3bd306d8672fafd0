from PySide6.QtCore import QSettings

from app.model_choice import budget_plan, check_pair_message
from app.settings import AppSettings, load_settings, save_settings
from app.settings_dialog import SettingsDialog


def test_qsettings_round_trip(tmp_path):
    s = AppSettings(target="/m/t", draft="/m/d", budget_mb=300, mode="chain", tree_max_nodes=60,
                    tree_threshold=0.125, tree_adaptive=False, temperature=0.7, top_p=0.9,
                    seed=42, max_tokens=512, tint_tokens=False, system_prompt="Be terse.")
    save_settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), s)
    back = load_settings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert back == s
    cfg = back.generation_config()
    assert cfg.mode == "chain" and cfg.max_tokens == 512 and cfg.sampling.seed == 42
    assert cfg.tree.max_nodes == 60 and not cfg.tree.adaptive and back.budget_bytes == 300 << 20


def test_defaults_when_missing_or_malformed(tmp_path):
    qs = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    qs.setValue("max_tokens", "lots")
    assert load_settings(qs) == AppSettings()
    assert AppSettings().generation_config().sampling.seed is None


def test_dialog_round_trip_and_checks(qtbot, tiny_pair, tmp_path):
    s = AppSettings(target=str(tiny_pair["target"]), draft=str(tiny_pair["noisy"]),
                    mode="ar", temperature=0.5, seed=7, max_tokens=99)
    dialog = SettingsDialog(s)
    qtbot.addWidget(dialog)
    assert dialog.values() == s
    assert dialog.compat.text().startswith("✔") and dialog.ok_button.isEnabled()
    dialog.draft.set_path(str(tmp_path / "no-such-draft"))
    dialog.update_checks()
    assert dialog.compat.text().startswith("✖") and not dialog.ok_button.isEnabled()


def test_check_messages(tiny_pair, tmp_path):
    ok, msg = check_pair_message(str(tiny_pair["target"]), "")
    assert ok and "No draft" in msg
    ok, msg = check_pair_message(str(tmp_path / "missing"), str(tiny_pair["same"]))
    assert not ok and "not found" in msg
    assert "Whole target" in budget_plan(str(tiny_pair["target"]), 0)
    plan = budget_plan(str(tiny_pair["target"]), 1)
    assert "layers pinned" in plan or "too small" in plan


def test_spin_boxes_cannot_reach_invalid_settings(qtbot):
    """Every spin box pushed below its range stops at a value the engine accepts."""
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    for box in (dialog.tree_nodes, dialog.tree_depth, dialog.threshold, dialog.chain,
                dialog.temperature, dialog.top_p, dialog.max_tokens):
        box.setValue(-1000)
    values = dialog.values()
    assert values.top_p > 0 and values.max_tokens >= 1 and values.tree_max_nodes >= 1
    values.generation_config()  # raises ConfigError if any setting were invalid
    for box in (dialog.threshold, dialog.top_p):
        box.setValue(1000)
    dialog.values().generation_config()


def test_invalid_stored_settings_fall_back_to_defaults(tmp_path):
    qs = QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat)
    for key, value in (("top_p", 0.0), ("temperature", -2.0), ("tree_max_nodes", 0)):
        qs.setValue(key, value)
    loaded = load_settings(qs)
    assert loaded == AppSettings()
    loaded.generation_config()


def test_dialog_offers_the_coder_pair_with_its_download_size(qtbot, tiny_pair, tmp_path,
                                                             monkeypatch):
    import shutil

    monkeypatch.setenv("CANOPY_HOME", str(tmp_path))
    dialog = SettingsDialog(AppSettings())
    qtbot.addWidget(dialog)
    assert "Qwen2.5-Coder" in dialog.coder_button.toolTip()
    assert "1.6 GB download" in dialog.coder_button.text()
    with qtbot.waitSignal(dialog.sig_build_coder_requested, timeout=1000):
        dialog.coder_button.click()  # not built yet: ask for the build
    from engine.formats.pairs import coder_paths

    target, draft = coder_paths()
    shutil.copytree(tiny_pair["target"], target)
    shutil.copytree(tiny_pair["noisy"], draft)
    dialog.coder_button.click()
    assert (dialog.target.path(), dialog.draft.path()) == (str(target), str(draft))
