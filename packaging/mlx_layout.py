"""Where MLX's files go in Canopy.app, and the check that MLX will find its metallib there.

Read from MLX's own source (mlx/backend/metal/device.cpp, `load_default_library`, identical in
v0.31.2 and v0.32.x apart from step 0; MLX_PIN below is the version the bundle is built with):

  0. a path set with the C++ call `metal::set_metallib_path` (0.32+, not exposed to Python);
  1. `<dir of the loaded libmlx>/mlx.metallib`;
  2. `<dir of the loaded libmlx>/Resources/mlx.metallib`;
  3. `default.metallib` in a SwiftPM bundle (never the case for a Python app);
  4. `<dir of the loaded libmlx>/Resources/default.metallib`;
  5. the absolute path the wheel was compiled with (METAL_PATH: a CI folder, never on a Mac).
"dir of the loaded libmlx" is `dladdr(...).dli_fname`'s parent: the path dyld opened, symlinks
NOT resolved. MLX's Python extension `mlx/core.cpython-*.so` loads `@rpath/libmlx.dylib` with
one LC_RPATH, `@loader_path/lib` (read from the 0.31.2 and 0.32.4 macosx_14_0_arm64 wheels), so
the library dyld opens is `<dir of core.so>/lib/libmlx.dylib`, and the metallib must sit there
(or in its Resources/). In the wheels both come from the `mlx-metal` distribution, in `mlx/lib/`.

What breaks in PyInstaller bundles (stenoai #287/#515): the dylib collected a second time by
dependency analysis under its basename at the top level, so a copy without a metallib beside it
is the one loaded. Canopy's rule: exactly one file named libmlx.dylib, at `mlx/lib/` next to
`mlx.metallib`, both collected as binaries (so PyInstaller puts both in Contents/Frameworks).
The spec applies the rule with `darwin_mlx_binaries` / `keep_one_libmlx`; build.py and the tests
check a bundle (or a fake file list) with `check_darwin_layout`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path

MLX_PIN = "0.32.4"  # mlx and mlx-metal: the versions the macOS bundle is built and checked with
MLX_LM_PIN = "0.32.2"
MAC_WHEEL_PLATFORM = "macosx_14_0_arm64"  # a newer tag ships a metallib older macOS can't load
MLX_DEST = "mlx/lib"
LIBMLX = "libmlx.dylib"
METALLIB = "mlx.metallib"
MLX_LIB_FILES = (LIBMLX, METALLIB, "libjaccl.dylib")


def darwin_mlx_binaries(mlx_lib_dir: Path) -> list[tuple[str, str]]:
    """(source, destination folder) for MLX's library folder, as PyInstaller binaries."""
    missing = [n for n in (LIBMLX, METALLIB) if not (mlx_lib_dir / n).is_file()]
    if missing:
        raise SystemExit(f"{mlx_lib_dir}: {', '.join(missing)} missing; install the pinned "
                         f"macOS wheels (python packaging/build.py --install-pinned-mlx)")
    return [(str(mlx_lib_dir / n), MLX_DEST) for n in MLX_LIB_FILES
            if (mlx_lib_dir / n).is_file()]


def keep_one_libmlx(entries: Iterable[tuple]) -> list[tuple]:
    """Drop every TOC entry (dest_name, src, kind) of MLX's library files except the one at
    mlx/lib/ (dependency analysis re-collects libmlx.dylib under its basename elsewhere)."""
    kept = []
    for entry in entries:
        dest = str(entry[0]).replace("\\", "/")
        name = posixpath.basename(dest)
        if name in MLX_LIB_FILES and posixpath.dirname(dest) != MLX_DEST:
            continue
        kept.append(entry)
    return kept


def _resolve(path: str, links: Mapping[str, str], depth: int = 0) -> str:
    """`path` with every symlink in it followed, inside a listing {path: link target or None}."""
    if depth > 40:
        raise ValueError(f"symlink loop at {path}")
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        head = "/".join(parts[:i])
        target = links.get(head)
        if target:
            base = posixpath.dirname(head)
            real = posixpath.normpath(posixpath.join(base, target))
            rest = "/".join(parts[i:])
            return _resolve(posixpath.join(real, rest) if rest else real, links, depth + 1)
    return path


def check_darwin_layout(listing: Mapping[str, str | None]) -> list[str]:
    """Problems with MLX's files in a Canopy.app listing (paths relative to Contents/, values:
    a symlink's target, or None for a regular file); [] when MLX will find its metallib."""
    files = {p for p, target in listing.items() if target is None}

    def exists(p: str) -> bool:
        return _resolve(p, listing) in files

    problems = []
    libs = sorted(p for p in files if posixpath.basename(p) == LIBMLX)
    if len(libs) != 1:
        problems.append(f"expected exactly one {LIBMLX}, found {len(libs)}: {libs}")
    # a symlink to the extension loads the real file (dyld's @loader_path is the real one)
    cores = sorted(p for p in files if posixpath.basename(p).startswith("core.cpython-")
                   and posixpath.basename(posixpath.dirname(p)) == "mlx")
    if not cores:
        return problems + ["no mlx/core.cpython-*.so in the bundle"]
    for core in cores:
        loaded = posixpath.join(posixpath.dirname(core), "lib", LIBMLX)  # @loader_path/lib
        if not exists(loaded):
            problems.append(f"{core} loads @loader_path/lib/{LIBMLX}: {loaded} does not exist")
            continue
        if libs and _resolve(loaded, listing) != libs[0]:
            problems.append(f"{loaded} is not the bundle's one {LIBMLX} ({libs[0]})")
        # dladdr may report the path dyld opened or its real path: both must work
        for lib_path in dict.fromkeys((loaded, _resolve(loaded, listing))):
            folder = posixpath.dirname(lib_path)
            beside = [posixpath.join(folder, METALLIB),
                      posixpath.join(folder, "Resources", METALLIB)]
            if not any(exists(p) for p in beside):
                problems.append(f"MLX loads {lib_path} and will look for {beside[0]} or "
                                f"{beside[1]}: neither exists")
    return problems


def listing_of(contents: Path) -> dict[str, str | None]:
    """The listing `check_darwin_layout` reads, from a real Canopy.app/Contents folder."""
    out: dict[str, str | None] = {}
    for path in sorted(contents.rglob("*")):
        rel = path.relative_to(contents).as_posix()
        if path.is_symlink():
            out[rel] = str(Path(path.readlink()).as_posix())
        elif path.is_file():
            out[rel] = None
    return out
