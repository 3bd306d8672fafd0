"""Launcher of the frozen Canopy bundle (PyInstaller's entry script).

Differences from the `canopy` console script (app/cli.py's `main()`, which it calls):
- no arguments (double-clicked Canopy.app, or ./Canopy) opens the app: `canopy app`;
  options without a subcommand go to `app` too (`Canopy --self-test`);
  macOS's `-psn_…` process-serial argument is dropped;
- `--bundle-check` prints what the bundle carries (MLX, Qt plugins, tokenizers, ...) as JSON;
- on Linux, MLX's matmuls go through the system's OpenBLAS when it is installed: the bundle
  re-executes itself once with LD_PRELOAD (app/blas.py skips that when frozen); opt out with
  CANOPY_NO_OPENBLAS=1;
- HTTPS (the demo model download) uses certifi's CA bundle: a frozen OpenSSL looks for CA
  files where the build machine kept them;
- an unexpected error is written to a log file and, in the GUI, shown in a message box
  instead of vanishing with the process;
- for headless smoke tests of the bundled GUI: with CANOPY_SMOKE_GRAB=PNG the app saves its
  window to PNG after CANOPY_SMOKE_SECONDS (default 20), writes the texts it shows to
  PNG + ".txt", and quits with status 0.
"""

from __future__ import annotations

import os
import sys
import traceback

COMMANDS = {"app", "generate", "models", "bench", "-h", "--help", "--version"}


def launcher_args(argv: list[str]) -> list[str]:
    argv = [a for a in argv if not a.startswith("-psn_")]
    if not argv:
        return ["app"]
    if argv[0] not in COMMANDS and argv[0].startswith("-"):
        return ["app", *argv]
    return argv


def _use_certifi() -> None:
    if os.environ.get("SSL_CERT_FILE"):
        return
    try:
        import certifi
    except ImportError:
        return
    if os.path.isfile(certifi.where()):
        os.environ["SSL_CERT_FILE"] = certifi.where()


def _maybe_openblas(argv: list[str]) -> None:
    from app.blas import reexec_with_openblas

    reexec_with_openblas([sys.executable, *argv])


def log_dir() -> str:
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Logs/Canopy")
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "canopy")


def _readable(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename:
        return (f"Canopy cannot use {error.filename}: {error.strerror or error}. Check that "
                "you may read and write it, or set CANOPY_HOME to a folder you own.")
    return f"{type(error).__name__}: {error}"


def _report_crash(args: list[str]) -> int:
    text = traceback.format_exc()
    message = _readable(sys.exc_info()[1])
    path = None
    try:
        os.makedirs(log_dir(), exist_ok=True)
        path = os.path.join(log_dir(), "crash.log")
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"--- canopy {' '.join(args)}\n{text}\n")
    except OSError:
        pass
    print(text, file=sys.stderr)
    print(f"canopy: {message}", file=sys.stderr)
    gui = args[:1] == ["app"] and not {"--self-test", "--screenshot"} & set(args)
    if gui:
        try:
            from PySide6.QtWidgets import QApplication, QMessageBox

            app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841
            QMessageBox.critical(
                None, "Canopy",
                f"Canopy stopped because of an unexpected error:\n\n{message}\n\n"
                + (f"The details were saved to {path}." if path else ""),
            )
        except Exception:
            pass
    return 1


def _install_smoke_grab(path: str) -> None:
    """Grab the main window after a delay, dump its visible texts, quit (tests only)."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QAbstractButton, QApplication, QLabel, QMainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    seconds = float(os.environ.get("CANOPY_SMOKE_SECONDS", "20"))

    def grab():
        windows = [w for w in app.topLevelWidgets() if w.isVisible()]
        code = 0
        try:
            main = next((w for w in windows if isinstance(w, QMainWindow)), None)
            texts = []
            for w in windows:
                if w is (main or windows[0]):
                    w.grab().save(path)
                texts += [x.text() for x in w.findChildren(QLabel) if x.isVisible() and x.text()]
                texts += [f"[button] {x.text()}" for x in w.findChildren(QAbstractButton)
                          if x.isVisible() and x.text()]
            with open(path + ".txt", "w", encoding="utf-8") as f:
                f.write("\n".join(texts) + "\n")
        except Exception:
            traceback.print_exc()
            code = 3
        finally:
            for w in windows:
                w.close()
            app.exit(code)

    QTimer.singleShot(int(seconds * 1000), grab)


def main() -> int:
    args = launcher_args(sys.argv[1:])
    if getattr(sys, "frozen", False):
        _use_certifi()
        _maybe_openblas(args)
    if "--bundle-check" in args[:2]:
        from bundle_check import bundle_check

        return bundle_check()
    from app.cli import main as cli_main

    if os.environ.get("CANOPY_SMOKE_GRAB") and args[:1] == ["app"]:
        _install_smoke_grab(os.environ["CANOPY_SMOKE_GRAB"])
    try:
        return cli_main(args)
    except SystemExit:
        raise
    except Exception:
        return _report_crash(args)


if __name__ == "__main__":
    import multiprocessing

    multiprocessing.freeze_support()
    sys.exit(main())
