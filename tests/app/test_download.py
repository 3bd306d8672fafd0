"""The picker's Download… dialog (fake Hub on 127.0.0.1) and the compatible-draft filter."""

import json
import threading

from engine.formats.hub import is_complete_model_dir, pull_model
from engine.testing import make_tiny_model
from tests.fake_hub import REPO, SHA, FakeHub, tiny_repo_files


def test_download_dialog_pulls_into_the_cache_and_picks_it(qtbot, tmp_path):
    from app.settings import AppSettings
    from app.settings_dialog import SettingsDialog

    hub = FakeHub(tiny_repo_files(tmp_path / "src"))
    try:
        dialog = SettingsDialog(AppSettings())
        qtbot.addWidget(dialog)
        dialog.pull = lambda repo, rev, **kw: pull_model(repo, rev, cache_dir=tmp_path / "hf",
                                                         endpoint=hub.url, **kw)
        download = dialog.open_download()
        download.repo.setText(REPO)
        with qtbot.waitSignal(download.sig_downloaded, timeout=30000) as blocker:
            download.start_button.click()
        path = blocker.args[0]
        assert path.endswith(SHA) and is_complete_model_dir(path)
        assert download.bar.value() == 1000 and not download.isVisible()
        assert dialog.target.path() == path  # the new model is picked as the target
    finally:
        hub.close()


def test_download_dialog_cancel_and_error(qtbot):
    from app.download import DownloadDialog
    from engine.errors import ModelError
    from engine.events import LoadProgress

    started = threading.Event()

    def slow_pull(repo, revision, progress, should_stop):
        progress(LoadProgress("download", 10, 100))
        started.set()
        while not should_stop():
            threading.Event().wait(0.01)
        raise ModelError("Download cancelled; run it again to resume.")

    dialog = DownloadDialog(pull=slow_pull, repo_id="org/model")
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.start_button.click()
    assert started.wait(5)
    qtbot.waitUntil(lambda: dialog.bar.value() == 100, timeout=5000)
    dialog.cancel_button.click()
    qtbot.waitUntil(lambda: not dialog.running and "cancelled" in dialog.status.text(),
                    timeout=5000)
    assert dialog.start_button.isEnabled() and dialog.path == ""

    def failing(repo, revision, progress, should_stop):
        raise ModelError("Cannot reach the Hugging Face Hub at http://127.0.0.1:9.")

    dialog._pull = failing
    dialog.start_button.click()
    qtbot.waitUntil(lambda: "Cannot reach" in dialog.status.text(), timeout=5000)


def test_draft_list_shows_only_compatible_drafts(qtbot, tmp_path, monkeypatch):
    from app import model_choice
    from app.settings import AppSettings
    from app.settings_dialog import SettingsDialog

    target = make_tiny_model(tmp_path / "target", seed=1)
    good = make_tiny_model(tmp_path / "good", like=target, noise=0.1)
    other = make_tiny_model(tmp_path / "other", seed=2)
    tok = json.loads((other / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = list(vocab)[40:42]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # another tokenizer: cannot draft for this target
    (other / "tokenizer.json").write_text(json.dumps(tok))
    models = [(p.name, str(p)) for p in (target, good, other)]
    monkeypatch.setattr(model_choice, "known_models", lambda: models)
    dialog = SettingsDialog(AppSettings(target=str(target)))
    qtbot.addWidget(dialog)
    assert dialog.draft.listed() == [str(good)]
    dialog.compatible_only.setChecked(False)
    assert set(dialog.draft.listed()) == {str(target), str(good), str(other)}


def test_catalog_entries_fill_the_repo_id(qtbot):
    from app.download import DownloadDialog

    dialog = DownloadDialog(pull=lambda *a, **k: None)
    qtbot.addWidget(dialog)
    assert dialog.catalog.count() > 6
    dialog.catalog.setCurrentIndex(1)
    assert dialog.repo.text().startswith("mlx-community/")
    labels = [dialog.catalog.itemText(i) for i in range(1, dialog.catalog.count())]
    assert any("draft" in t for t in labels) and all(" GB · " in t for t in labels)
