"""`canopy app`: build the Qt application and the main window; `--screenshot` mode.

Entry points (wired by app/cli.py):
    run_app(args) -> int      args: target, draft, budget_mb, stream, screenshot, prompt, self_test,
                              dark
    screenshot(png_path, prompt, target=None, draft=None, ..., dark=False) -> int
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

DEFAULT_PROMPT = "Explain speculative decoding in two sentences."
RESOURCES = Path(__file__).resolve().parent.parent / "resources"


def _ensure_platform(headless: bool) -> None:
    if headless and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def create_app(argv: list[str] | None = None, scheme: str | None = None):
    """The QApplication (created once), named so QSettings/QStandardPaths use "Canopy".

    `scheme` "dark" or "light" forces that appearance; None follows the system.
    """
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from .theme import stylesheet, theme_for, use_scheme

    app = QApplication.instance() or QApplication(argv or [sys.argv[0]])
    app.setOrganizationName("Canopy")
    app.setApplicationName("Canopy")
    icon = RESOURCES / "icon.png"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    if scheme:
        use_scheme(app, scheme)
    app.setStyleSheet(stylesheet(theme_for(app.palette())))  # windows re-apply on changes
    return app


def _quiet_offscreen_warnings():
    """The offscreen platform warns on every top-level resize; nothing is wrong.
    Returns the previous message handler."""
    if os.environ.get("QT_QPA_PLATFORM") != "offscreen":
        return None
    from PySide6.QtCore import qInstallMessageHandler

    def handler(mode, context, message):
        if "propagateSizeHints" not in message:
            print(message, file=sys.stderr)

    return qInstallMessageHandler(handler)


def create_window(*, history_path: str | Path | None = None, qsettings=None, loader=None,
                  stream=None, adaptation=None):
    """A MainWindow with its bridge and history store (defaults: the platform locations).

    stream: engine.config.StreamConfig for a streamed target (None: the engine's defaults).
    adaptation: how the bridge builds a pair's Adaptation (app/bridge_adapt.py; tests fake it)."""
    from PySide6.QtCore import QSettings

    from .bridge import EngineBridge
    from .history import HistoryStore, default_history_path
    from .main_window import MainWindow

    store = HistoryStore(history_path or default_history_path())
    qsettings = qsettings if qsettings is not None else QSettings()
    bridge = EngineBridge(loader, stream=stream, adaptation=adaptation)
    bridge.prompt_cache_folder = str(store.path.parent / "prompt-cache")  # next to the history
    window = MainWindow(bridge, store, qsettings)
    store.on_error = lambda message: window.banner.show_error(message, "History not saved")
    return window


def run_app(args) -> int:
    """`canopy app [--target DIR --draft DIR --budget-mb M] [--screenshot PNG --prompt TEXT]`."""
    if getattr(args, "self_test", False):
        from .selftest import self_test

        return self_test()
    budget_mb = getattr(args, "budget_mb", None)
    stream = getattr(args, "stream", None)
    if getattr(args, "screenshot", None):
        return screenshot(args.screenshot, args.prompt or DEFAULT_PROMPT,
                          getattr(args, "target", None), getattr(args, "draft", None),
                          budget_mb=budget_mb, stream=stream,
                          dark=getattr(args, "dark", False))
    _quiet_offscreen_warnings()
    app = create_app(scheme="dark" if getattr(args, "dark", False) else None)
    window = create_window(stream=stream)
    s = window.settings
    if getattr(args, "target", None):
        s.target, s.draft = str(args.target), str(args.draft or "")
    if budget_mb is not None:
        s.budget_mb = int(budget_mb)
    window.apply_settings(s)
    window.show()
    window.start()
    if getattr(args, "prompt", None):
        window.bridge.sig_load_finished.connect(lambda *_: _send_once(window, args.prompt))
    code = app.exec()
    window.store.close()
    return code


def _send_once(window, prompt: str) -> None:
    if not getattr(window, "_sent_cli_prompt", False):
        window._sent_cli_prompt = True
        window.send(prompt)


def screenshot(png_path: str | Path, prompt: str = DEFAULT_PROMPT, target: str | None = None,
               draft: str | None = None, *, budget_mb: float | None = None,
               mode: str | None = None, max_tokens: int | None = None,
               mid_png: str | Path | None = None, mid_after_steps: int = 3,
               size: tuple[int, int] = (1600, 1000), timeout: float = 900.0,
               loader=None, stream=None, dark: bool = False) -> int:
    """Run `prompt`, wait for the answer, save the main window (tree and panel visible).

    The final PNG shows the answer's biggest token tree (the step slider says which step).
    Uses a throw-away settings file and history, so the user's are untouched. With `mid_png`
    a second PNG is saved after `mid_after_steps` steps (mid-answer).
    Returns 0 on success, 1 if loading or generation failed (the PNG shows the error), 2 when
    no models are available, 3 on timeout. `dark` renders the dark appearance.
    """
    _ensure_platform(headless=True)
    from PySide6.QtCore import QSettings, QTimer

    from .model_choice import demo_paths

    if target is None:
        paths = demo_paths()
        if not paths or not paths[0].is_dir():
            print("canopy: no models: run `canopy models demo` or pass --target DIR",
                  file=sys.stderr)
            return 2
        target, draft = str(paths[0]), str(draft or paths[1])
    previous_handler = _quiet_offscreen_warnings()
    app = create_app(scheme="dark" if dark else None)
    tmp = tempfile.TemporaryDirectory(prefix="canopy-shot-")
    qsettings = QSettings(str(Path(tmp.name) / "settings.ini"), QSettings.Format.IniFormat)
    window = create_window(history_path=Path(tmp.name) / "history.sqlite3", qsettings=qsettings,
                           loader=loader, stream=stream)
    s = window.settings
    s.target, s.draft = str(target), str(draft or "")
    s.budget_mb = int(budget_mb or 0)
    s.mode = mode or s.mode
    s.max_tokens = max_tokens or 96
    window.apply_settings(s)
    window.resize(*size)
    window.show()
    result = {"code": None}
    bridge = window.bridge

    def save(path) -> None:
        app.processEvents()
        window.tree.view.fit()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(path)):
            print(f"canopy: could not write {path}", file=sys.stderr)
            result["code"] = 1

    def finish(code: int) -> None:
        if result["code"] is None:
            result["code"] = code
        if mid_png and not getattr(window, "_mid_saved", False):  # answered within one frame
            save(mid_png)
        steps = window.tree.steps
        if steps:  # show the answer's biggest tree (the slider says which step it is)
            window.tree.live_check.setChecked(False)
            window.tree.show_index(max(range(len(steps)), key=lambda i: len(steps[i].tree_tokens)))
        save(png_path)
        app.quit()

    def on_frame() -> None:
        if mid_png and not getattr(window, "_mid_saved", False) and \
                len(window.tree.steps) >= mid_after_steps and bridge.generating:
            window._mid_saved = True
            save(mid_png)

    def on_failed(context: str, message: str) -> None:
        print(f"canopy: {message}", file=sys.stderr)
        QTimer.singleShot(100, lambda: finish(1))

    bridge.sig_load_finished.connect(lambda *_: window.send(prompt))
    bridge.sig_frame.connect(on_frame)
    bridge.sig_generation_finished.connect(lambda _e: QTimer.singleShot(150, lambda: finish(0)))
    bridge.sig_generation_aborted.connect(lambda _e: QTimer.singleShot(150, lambda: finish(1)))
    bridge.sig_failed.connect(on_failed)
    QTimer.singleShot(int(timeout * 1000), lambda: (print("canopy: screenshot timed out",
                                                          file=sys.stderr), finish(3)))
    window.load_models()
    app.exec()
    window.bridge.shutdown(timeout=10.0)
    window.store.close()
    window.close()
    window.deleteLater()
    tmp.cleanup()
    if previous_handler is not None:
        from PySide6.QtCore import qInstallMessageHandler

        qInstallMessageHandler(previous_handler)
    return int(result["code"] or 0)
