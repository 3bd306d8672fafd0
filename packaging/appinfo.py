"""What the spec and the build script both need to know about the app (one place).

Read at build time only; not part of the bundle.
"""

from __future__ import annotations

import os
import re
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "Canopy"
EXE_NAME = "Canopy"
# Reverse-DNS id; override with CANOPY_BUNDLE_ID to sign under your own team's prefix.
BUNDLE_ID = os.environ.get("CANOPY_BUNDLE_ID", "org.canopy-llm.Canopy")
# MLX's macOS wheels start at macOS 14 (Sonoma); Apple Silicon only.
MIN_MACOS = "14.0"


def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """`[project] version` from pyproject.toml."""
    text = pyproject.read_text(encoding="utf-8")
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # 3.10: a [project] table's version line is enough
        m = re.search(r'(?ms)^\[project\].*?^version\s*=\s*"([^"]+)"', text)
        if not m:
            raise SystemExit(f"no [project] version in {pyproject}") from None
        return m.group(1)
    return tomllib.loads(text)["project"]["version"]


def mlx_wheel_min_macos() -> str | None:
    """The newest macOS floor among the installed mlx and mlx-metal wheels' platform tags.

    A wheel tagged macosx_26_0 carries an mlx.metallib (in mlx-metal since 0.31) that fails on
    older macOS ("language version ... not supported on this OS"), so the app must not claim
    to run there.
    """
    floors = []
    for dist in ("mlx", "mlx-metal"):
        try:
            wheel = metadata.distribution(dist).read_text("WHEEL") or ""
        except metadata.PackageNotFoundError:
            continue
        versions = [(int(a), int(b)) for a, b in re.findall(r"macosx_(\d+)_(\d+)_", wheel)]
        if versions:
            floors.append(min(versions))
    if not floors:
        return None
    major, minor = max(floors)
    return f"{major}.{minor}"


def min_macos() -> str:
    """LSMinimumSystemVersion: MIN_MACOS, raised to the mlx wheel's own floor."""
    floor = mlx_wheel_min_macos()

    def key(v):
        return tuple(int(x) for x in v.split("."))

    return max(MIN_MACOS, floor, key=key) if floor else MIN_MACOS


def info_plist(version: str) -> dict:
    """The Info.plist keys the BUNDLE step adds (PyInstaller fills the executable/icon keys)."""
    return {
        "CFBundleName": APP_NAME,
        "CFBundleDisplayName": APP_NAME,
        "CFBundleIdentifier": BUNDLE_ID,
        "CFBundleShortVersionString": version,
        "CFBundleVersion": os.environ.get("CANOPY_BUILD_NUMBER", version),
        "CFBundlePackageType": "APPL",
        "LSMinimumSystemVersion": min_macos(),
        "LSArchitecturePriority": ["arm64"],
        "LSApplicationCategoryType": "public.app-category.developer-tools",
        "NSHighResolutionCapable": True,
        "NSPrincipalClass": "NSApplication",
        "NSRequiresAquaSystemAppearance": False,  # follow the system's dark mode
        "NSHumanReadableCopyright": "MIT License",
        # .gguf files and model folders dropped on the Dock icon arrive as QFileOpenEvents
        # (app/dropzone.py); Alternate: Canopy never claims to be their default app
        "CFBundleDocumentTypes": [
            {"CFBundleTypeName": "GGUF model", "CFBundleTypeExtensions": ["gguf"],
             "CFBundleTypeRole": "Viewer", "LSHandlerRank": "Alternate"},
            {"CFBundleTypeName": "Model folder", "LSItemContentTypes": ["public.folder"],
             "CFBundleTypeRole": "Viewer", "LSHandlerRank": "Alternate"},
        ],
    }


def platform_tag() -> str:
    import platform

    machine = platform.machine().lower().replace("amd64", "x86_64").replace("aarch64", "arm64")
    system = {"darwin": "macos"}.get(sys.platform, sys.platform.rstrip("0123456789"))
    return f"{system}-{machine}"
