import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402


@pytest.fixture
def fake_loader():
    from tests.app.fake_engine import FakeLoader

    return FakeLoader()


@pytest.fixture
def make_window(qtbot, tmp_path, monkeypatch):
    """A MainWindow on a fake engine with its own settings file, history and models folder."""
    from PySide6.QtCore import QSettings

    from app.gui import create_app, create_window
    from tests.app.fake_engine import FakeLoader

    monkeypatch.setenv("CANOPY_HOME", str(tmp_path / "home"))
    create_app()
    windows = []

    def make(loader=None, history=None, size=(1300, 850)):
        qs = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        loader = loader or FakeLoader()
        window = create_window(history_path=history or tmp_path / "history.sqlite3",
                               qsettings=qs, loader=loader,
                               adaptation=getattr(loader, "make_adaptation", None))
        qtbot.addWidget(window)
        if size is not None:  # None: keep the size restored from the settings file
            window.resize(*size)
        windows.append(window)
        return window

    yield make
    for w in windows:
        w.bridge.shutdown(timeout=5)
        w.store.close()
