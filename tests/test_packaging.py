"""The packaged app: packaging/canopy.spec built by packaging/build.py, run headless.

The slow tests build the one-folder bundle into a temporary folder (about 4-5 minutes on two
shared cores), or reuse one: set CANOPY_BUNDLE_DIST to a `--dist` folder build.py filled
(`python packaging/build.py --no-archive` fills ./dist). They run the bundled executable
with QT_QPA_PLATFORM=offscreen: --bundle-check, `app --self-test`, `app --screenshot`, the
app started with no arguments, and started with a broken or unreadable models folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
MACOS = sys.platform == "darwin"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_canopy_packaging_{name}",
                                                  PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- fast: the launcher's argument rule and the app metadata ------------------------------


def test_launcher_defaults_to_app():
    entry = _load("entry")
    assert entry.launcher_args([]) == ["app"]
    assert entry.launcher_args(["-psn_0_12345"]) == ["app"]  # Finder's process serial number
    assert entry.launcher_args(["--self-test"]) == ["app", "--self-test"]
    assert entry.launcher_args(["app", "--self-test"]) == ["app", "--self-test"]
    assert entry.launcher_args(["generate", "--prompt", "x"]) == ["generate", "--prompt", "x"]
    assert entry.launcher_args(["--help"]) == ["--help"]
    assert entry.launcher_args(["--version"]) == ["--version"]


def test_app_metadata():
    appinfo = _load("appinfo")
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert appinfo.project_version() == version
    plist = appinfo.info_plist(version)
    assert plist["CFBundleShortVersionString"] == version
    assert plist["NSHighResolutionCapable"] is True
    assert plist["NSRequiresAquaSystemAppearance"] is False  # dark mode
    gguf = [t for t in plist["CFBundleDocumentTypes"] if "gguf" in t.get("CFBundleTypeExtensions",
                                                                          [])]
    assert gguf and gguf[0]["LSHandlerRank"] == "Alternate"  # Dock-icon drops, never the default
    assert float(plist["LSMinimumSystemVersion"]) >= 14.0
    assert plist["CFBundleIdentifier"].count(".") >= 2
    assert (ROOT / "resources" / "icon.png").is_file()


def test_icns_from_png(tmp_path):
    make_icon = _load("make_icon")
    out = make_icon.make_icns(ROOT / "resources" / "icon.png", tmp_path / "Canopy.icns")
    assert out.read_bytes()[:4] == b"icns"


# --- slow: the bundle itself ---------------------------------------------------------------


def _executable(dist: Path) -> Path:
    if MACOS:
        return dist / "Canopy.app" / "Contents" / "MacOS" / "Canopy"
    return dist / "Canopy" / "Canopy"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    given = os.environ.get("CANOPY_BUNDLE_DIST")
    if given:
        exe = _executable(Path(given))
        assert exe.is_file(), f"CANOPY_BUNDLE_DIST={given} holds no bundle ({exe})"
        return exe
    pytest.importorskip("PyInstaller")
    tmp = tmp_path_factory.mktemp("bundle")
    subprocess.run([sys.executable, str(PACKAGING / "build.py"), "--dist", str(tmp / "dist"),
                    "--work", str(tmp / "work"), "--no-archive"], check=True, timeout=3600)
    info = json.loads((tmp / "dist" / "build-info.json").read_text())
    print(f"\nbundle: {info['bundle_bytes'] / 2**20:.0f} MiB, "
          f"built in {info['pyinstaller_seconds']:.0f} s")
    return _executable(tmp / "dist")


@pytest.fixture
def env(tmp_path) -> dict:
    """A clean environment: offscreen Qt, models/settings/history in tmp_path."""
    drop = ("PYTHON", "QT_", "CANOPY_", "SSL_CERT", "REQUESTS_CA", "LD_PRELOAD", "HF_")
    e = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    home = tmp_path / "home"
    home.mkdir()
    e.update(QT_QPA_PLATFORM="offscreen", HOME=str(home), CANOPY_HOME=str(tmp_path / "canopy"),
             XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
             XDG_STATE_HOME=str(home / ".local/state"), XDG_CACHE_HOME=str(home / ".cache"))
    return e


def run(exe: Path, args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    r = subprocess.run([str(exe), *args], env=env, capture_output=True, text=True,
                       timeout=timeout, cwd=env["HOME"])
    print(r.stdout[-4000:], r.stderr[-4000:], sep="\n")
    return r


def _no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout


@pytest.mark.slow
def test_bundle_carries_what_the_app_needs(bundle, env):
    r = run(bundle, ["--bundle-check"], env)
    report = json.loads(r.stdout[r.stdout.index("{"):])
    assert r.returncode == 0 and report["problems"] == [], report["problems"]
    assert report["frozen"] is True
    import mlx.core as mx

    assert report["mlx"]["version"] == mx.__version__
    platforms = " ".join(report["qt"]["plugin_files"]["platforms"])
    assert "offscreen" in platforms and ("cocoa" if MACOS else "xcb") in platforms
    assert report["qt"]["plugin_files"]["imageformats"]
    want = {str(p.relative_to(ROOT / "resources")) for p in (ROOT / "resources").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".py", ".pyc")}
    assert want <= set(report["resources"]["files"])
    assert report["tokenizers"]["native"]
    assert report["mlx_lm"]["model_modules"] > 20
    assert report["app"]["gui_module"] is True
    assert set(report["mlx"]) >= {"version", "libmlx", "metallib_path", "metal_available"}
    assert report["mlx"]["libmlx"] and bundle.parent.as_posix() in report["mlx"]["libmlx"]
    if MACOS:
        assert report["mlx"]["metal_available"] and report["mlx"]["metallib_path"]
    else:  # the system's OpenBLAS is preloaded at run time, never bundled
        assert not list(bundle.parent.rglob("libopenblas*"))


@pytest.mark.slow
def test_bundled_self_test(bundle, env):
    r = run(bundle, ["app", "--self-test"], env)
    assert r.returncode == 0
    assert "self-test OK" in r.stdout
    _no_traceback(r)


@pytest.mark.slow
def test_bundled_cli_reports_bad_model_readably(bundle, env, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    r = run(bundle, ["generate", "--target", str(broken), "--mode", "ar", "--prompt", "hi"], env)
    assert r.returncode == 2
    assert "canopy:" in r.stderr
    _no_traceback(r)


def _tiny_pair(tmp_path: Path) -> tuple[Path, Path]:
    from engine.testing import make_tiny_model

    target = make_tiny_model(tmp_path / "target", seed=1)
    draft = make_tiny_model(tmp_path / "draft", like=target, noise=0.1, seed=2)
    return Path(target), Path(draft)


@pytest.mark.slow
def test_bundled_screenshot(bundle, env, tmp_path):
    if importlib.util.find_spec("app.gui") is None:
        pytest.skip("app/gui.py (run_app, --screenshot) is not written yet (issue 5)")
    target, draft = _tiny_pair(tmp_path)
    png = tmp_path / "shot.png"
    r = run(bundle, ["app", "--screenshot", str(png), "--prompt", "hello",
                     "--target", str(target), "--draft", str(draft)], env, timeout=900)
    assert r.returncode == 0
    _no_traceback(r)
    from PIL import Image

    with Image.open(png) as im:
        assert im.width >= 800 and im.height >= 500
        assert len(im.convert("RGB").getcolors(1 << 20) or range(1 << 20)) > 50  # not blank


def _start_window(bundle, env, png: Path,
                  seconds: float = 25) -> tuple[subprocess.CompletedProcess, str]:
    env = dict(env, CANOPY_SMOKE_GRAB=str(png), CANOPY_SMOKE_SECONDS=str(seconds))
    r = run(bundle, [], env, timeout=300)  # no arguments: what a double-click does
    texts = Path(str(png) + ".txt").read_text() if Path(str(png) + ".txt").exists() else ""
    return r, texts


@pytest.mark.slow
def test_no_arguments_opens_the_app(bundle, env, tmp_path):
    if importlib.util.find_spec("app.gui") is None:
        pytest.skip("app/gui.py is not written yet (issue 5)")
    r, texts = _start_window(bundle, env, tmp_path / "first-run.png")
    assert r.returncode == 0
    _no_traceback(r)
    assert (tmp_path / "first-run.png").is_file()
    assert _offers_demo_pair(texts)  # first run: the offer to build the demo pair


def _broken_demo_pair(env: dict) -> None:
    from engine.formats import demo

    models = Path(env["CANOPY_HOME"]) / "models"
    for name in (demo.TARGET_NAME, demo.DRAFT_NAME):  # half-written folders
        (models / name).mkdir(parents=True)
        (models / name / "config.json").write_text("{truncated")


def _offers_demo_pair(texts: str) -> bool:
    return any("demo pair" in line for line in texts.splitlines() if line.startswith("[button]"))


@pytest.mark.slow
def test_broken_models_folder_shows_readable_message(bundle, env, tmp_path):
    if importlib.util.find_spec("app.gui") is None:
        pytest.skip("app/gui.py is not written yet (issue 5)")
    _broken_demo_pair(env)
    r, texts = _start_window(bundle, env, tmp_path / "broken.png")
    assert r.returncode == 0
    _no_traceback(r)
    assert "config.json is not valid JSON" in texts  # the reason, naming the file


@pytest.mark.slow
def test_broken_models_folder_offers_rebuild(bundle, env, tmp_path):
    if importlib.util.find_spec("app.gui") is None:
        pytest.skip("app/gui.py is not written yet (issue 5)")
    _broken_demo_pair(env)
    r, texts = _start_window(bundle, env, tmp_path / "broken.png")
    assert r.returncode == 0 and _offers_demo_pair(texts)


@pytest.mark.slow
@pytest.mark.skipif(MACOS or not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="needs root on Linux to run the bundle as another user")
def test_unreadable_models_folder_shows_message(bundle, env):
    """The models folder exists but this user may not read it (as root, permissions do not
    apply: run the bundle as `nobody`)."""
    if importlib.util.find_spec("app.gui") is None:
        pytest.skip("app/gui.py is not written yet (issue 5)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv missing")
    for p in bundle.parents:  # only folders that shut others out (pytest's tmp is 0700)
        if p.stat().st_mode & 0o005 != 0o005:
            p.chmod(p.stat().st_mode | 0o755)
    base = Path(tempfile.mkdtemp(prefix="canopy-perm-"))
    try:
        base.chmod(0o777)
        home, canopy = base / "home", base / "canopy"
        for d in (home, canopy, canopy / "models"):
            d.mkdir()
            d.chmod(0o777)
        (canopy / "models").chmod(0o000)
        png = base / "denied.png"
        env = dict(env, HOME=str(home), CANOPY_HOME=str(canopy),
                   XDG_CONFIG_HOME=str(home / ".config"), XDG_DATA_HOME=str(home / ".local/share"),
                   XDG_STATE_HOME=str(home / ".local/state"), XDG_CACHE_HOME=str(home / ".cache"),
                   CANOPY_SMOKE_GRAB=str(png), CANOPY_SMOKE_SECONDS="25")
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            str(bundle)], env=env, capture_output=True, text=True, timeout=300,
                           cwd=str(home))
        print(r.stdout[-4000:], r.stderr[-4000:], sep="\n")
        texts = Path(str(png) + ".txt").read_text() if Path(str(png) + ".txt").exists() else ""
        print(texts)
        # a readable message naming the folder, in the window (not only on stderr)
        assert "Permission denied" in texts and str(canopy / "models") in texts
        assert r.returncode == 0  # the app stayed up (the grab closed it)
        _no_traceback(r)
        assert _offers_demo_pair(texts)
    finally:
        (base / "canopy" / "models").chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)
