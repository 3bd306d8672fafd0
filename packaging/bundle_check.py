"""`Canopy --bundle-check`: what a (frozen) bundle carries, as one JSON object; exit 1 if broken.

Checks that each piece the app needs at run time imports and works from inside the bundle:
MLX (its version, the libmlx it loaded, the metallib its search finds and whether a Metal
device is available; on macOS the .app's layout, packaging/mlx_layout.py), mlx-lm's model
modules, tokenizers' native library, transformers' tokenizer classes, Qt with its platform and
image-format plugins, pyqtgraph, `resources/`, a CA bundle for HTTPS, and (Linux) whether
OpenBLAS is preloaded. Runs unfrozen too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def bundle_root() -> Path | None:
    if not getattr(sys, "frozen", False):
        return None
    return Path(getattr(sys, "_MEIPASS", os.path.dirname(sys.executable)))


def _mlx():
    import mlx.core as mx

    a = mx.arange(6, dtype=mx.float32).reshape(2, 3)
    value = (a @ a.T).sum().item()  # [[5, 14], [14, 50]]
    if value != 83.0:
        raise RuntimeError(f"matmul gave {value}, expected 83")
    import mlx.nn  # noqa: F401
    import mlx.optimizers  # noqa: F401
    import mlx.utils  # noqa: F401

    lib = _loaded_libmlx()
    out = {"version": mx.__version__, "default_device": str(mx.default_device()),
           "core": mx.__file__ if hasattr(mx, "__file__") else None, "libmlx": lib,
           "metal_available": bool(mx.metal.is_available()), "metallib_path": None}
    if sys.platform == "darwin":
        out["metallib_path"] = _metallib_mlx_finds(lib)
        if not out["metal_available"]:
            raise RuntimeError("no Metal device (MLX needs Apple Silicon)")
        with mx.stream(mx.gpu):
            if (mx.ones(4) * 2).sum().item() != 8.0:  # loads mlx.metallib
                raise RuntimeError("a GPU kernel gave a wrong result")
    return out


def _loaded_libmlx() -> str | None:
    """The path of the libmlx the process loaded, as the loader opened it (what MLX's
    `dladdr` sees: symlinks not resolved)."""
    if sys.platform == "darwin":
        import ctypes

        dyld = ctypes.CDLL(None)
        dyld._dyld_get_image_name.restype = ctypes.c_char_p
        for i in range(dyld._dyld_image_count()):
            name = dyld._dyld_get_image_name(i).decode()
            if os.path.basename(name) == "libmlx.dylib":
                return name
        return None
    maps = Path("/proc/self/maps")
    if maps.exists():
        for line in maps.read_text().splitlines():
            path = line.split(maxsplit=5)[-1]
            if os.path.basename(path).startswith("libmlx.so"):
                return path
    return None


def _metallib_mlx_finds(lib: str | None) -> str | None:
    """The metallib MLX's search (packaging/mlx_layout.py) finds next to the loaded libmlx."""
    if lib is None:
        return None
    folder = Path(lib).parent
    for candidate in (folder / "mlx.metallib", folder / "Resources" / "mlx.metallib",
                      folder / "Resources" / "default.metallib"):
        if candidate.is_file():
            return str(candidate)
    return None


def _metallib():
    """macOS: MLX will find mlx.metallib (packaging/mlx_layout.py: the whole .app's layout
    when frozen, else the metallib beside the loaded libmlx)."""
    root = bundle_root()
    contents = root.parent if root is not None else None
    if contents is not None and contents.name == "Contents":
        import mlx_layout

        problems = mlx_layout.check_darwin_layout(mlx_layout.listing_of(contents))
        if problems:
            raise RuntimeError("; ".join(problems))
        return {"layout": "one libmlx.dylib, mlx.metallib beside it"}
    found = _metallib_mlx_finds(_loaded_libmlx())
    if found is None:
        raise RuntimeError("MLX's search finds no mlx.metallib beside the loaded libmlx")
    return {"metallib": found}


def _mlx_lm():
    import pkgutil

    import mlx_lm.models
    import mlx_lm.models.llama  # noqa: F401
    import mlx_lm.models.qwen2  # noqa: F401
    import mlx_lm.models.rope_utils  # noqa: F401
    import mlx_lm.tokenizer_utils  # noqa: F401

    return {"model_modules": len(list(pkgutil.iter_modules(mlx_lm.models.__path__)))}


def _tokenizers():
    import tokenizers
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
    ids = tok.encode("ab").ids
    if ids != [2]:
        raise RuntimeError(f"BPE gave {ids}")
    native = getattr(tokenizers.tokenizers, "__file__", None)
    return {"version": tokenizers.__version__, "native": native}


def _transformers():
    """AutoConfig and AutoTokenizer find their classes by name (the bundle trims transformers)."""
    import tempfile

    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoTokenizer

    configs = {t: type(AutoConfig.for_model(t)).__name__
               for t in ("llama", "qwen2", "mistral", "gemma3", "phi3")}
    tok = Tokenizer(models.BPE({"h": 0, "i": 1, "hi": 2, "<unk>": 3}, [("h", "i")],
                               unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    classes = {}
    with tempfile.TemporaryDirectory(prefix="canopy-check-") as tmp:
        tok.save(os.path.join(tmp, "tokenizer.json"))
        for cls in ("PreTrainedTokenizerFast", "GPT2Tokenizer", "LlamaTokenizer",
                    "Qwen2Tokenizer"):
            with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                json.dump({"tokenizer_class": cls, "unk_token": "<unk>"}, f)
            t = AutoTokenizer.from_pretrained(tmp)
            if t.encode("hi", add_special_tokens=False) != [2]:
                raise RuntimeError(f"{cls} encoded 'hi' as {t.encode('hi')}")
            classes[cls] = type(t).__name__
    return {"version": transformers.__version__, "configs": configs, "tokenizers": classes}


def _qt():
    from PySide6 import __version__ as pyside_version
    from PySide6.QtCore import QLibraryInfo
    from PySide6.QtGui import QImage, QImageReader
    from PySide6.QtWidgets import QApplication

    plugins = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath))
    listing = {d: sorted(p.name for p in (plugins / d).glob("*") if p.is_file())
               for d in ("platforms", "imageformats", "platformthemes", "styles", "iconengines")
               if (plugins / d).is_dir()}
    want = ["offscreen", "cocoa"] if sys.platform == "darwin" else ["offscreen", "xcb"]
    names = " ".join(listing.get("platforms", []))
    missing = [w for w in want if w not in names]
    if missing:
        raise RuntimeError(f"Qt platform plugins missing: {missing} (have: {names or 'none'})")
    if not listing.get("imageformats"):
        raise RuntimeError("no Qt imageformats plugins")
    app = QApplication.instance() or QApplication(["canopy", "-platform", "offscreen"])
    import resources

    icon = QImage(str(Path(resources.__file__).parent / "icon.png"))
    if icon.isNull():
        raise RuntimeError("Qt cannot read resources/icon.png")
    formats = sorted(bytes(f).decode() for f in QImageReader.supportedImageFormats())
    return {"pyside6": pyside_version, "plugins": str(plugins), "platform": app.platformName(),
            "plugin_files": listing, "image_formats": formats}


def _pyqtgraph():
    import pyqtgraph

    return {"version": pyqtgraph.__version__}


def _resources():
    import resources

    folder = Path(resources.__file__).parent
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    if "icon.png" not in files:
        raise RuntimeError(f"resources/icon.png missing in {folder}")
    return {"folder": str(folder), "files": files}


def _ssl():
    import ssl

    cas = ssl.create_default_context().cert_store_stats()["x509_ca"]
    if not cas:
        raise RuntimeError("no CA certificates: HTTPS downloads (the demo model) would fail")
    return {"ca_certificates": cas, "SSL_CERT_FILE": os.environ.get("SSL_CERT_FILE")}


def _openblas():
    maps = Path("/proc/self/maps").read_text() if os.path.exists("/proc/self/maps") else ""
    return {"LD_PRELOAD": os.environ.get("LD_PRELOAD"), "loaded": "libopenblas" in maps}


def _app():
    import importlib.util

    import app.cli  # noqa: F401
    import app.selftest  # noqa: F401
    import engine.session  # noqa: F401
    from engine.formats.demo import models_home

    return {"gui_module": importlib.util.find_spec("app.gui") is not None,
            "models_home": str(models_home())}


def bundle_check() -> int:
    checks = {"mlx": _mlx, "mlx_lm": _mlx_lm, "tokenizers": _tokenizers,
              "transformers": _transformers, "qt": _qt, "pyqtgraph": _pyqtgraph,
              "resources": _resources, "ssl": _ssl, "app": _app}
    if sys.platform == "darwin":
        checks["metallib"] = _metallib
    if sys.platform.startswith("linux"):
        checks["openblas"] = _openblas
    report: dict = {"frozen": bool(getattr(sys, "frozen", False)),
                    "bundle": str(bundle_root()) if bundle_root() else None,
                    "python": sys.version.split()[0], "platform": sys.platform}
    problems = []
    for name, fn in checks.items():
        try:
            report[name] = fn()
        except Exception as e:  # report every broken piece, not just the first
            report[name] = {"error": f"{type(e).__name__}: {e}"}
            problems.append(name)
    report["problems"] = problems
    print(json.dumps(report, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(bundle_check())
