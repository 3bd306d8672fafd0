"""Draw Canopy's app icon (resources/icon.png, 1024 x 1024) and turn it into .icns / .ico.

The icon is a token tree seen as a canopy: a root node with branches, the accepted path
highlighted. Drawn with Pillow (a build-time dependency only; PyInstaller needs it anyway to
convert icons). Run it again to regenerate the PNG; `build.py` calls `make_icns` on macOS.

    python packaging/make_icon.py            # rewrite resources/icon.png
    python packaging/make_icon.py --icns X   # also write X (.icns) from the PNG
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ICON_PNG = ROOT / "resources" / "icon.png"

# (x, y) on a 0..1 grid; parent index; accepted path flag
NODES = [
    ((0.50, 0.80), -1, True),   # root: the last committed token
    ((0.30, 0.58), 0, False),
    ((0.50, 0.55), 0, True),
    ((0.70, 0.58), 0, False),
    ((0.18, 0.36), 1, False),
    ((0.38, 0.33), 2, True),
    ((0.60, 0.33), 2, False),
    ((0.82, 0.36), 3, False),
    ((0.28, 0.15), 5, False),
    ((0.46, 0.13), 5, True),    # the bonus token
    ((0.66, 0.15), 6, False),
]


def draw_icon(size: int = 1024):
    from PIL import Image, ImageDraw

    s = 4 * size  # draw large, downsample for smooth edges
    img = Image.new("RGBA", (s, s), (0, 0, 0, 0))
    bg = Image.new("RGBA", (s, s))
    top, bottom = (36, 92, 70), (14, 38, 34)
    gd = ImageDraw.Draw(bg)
    for y in range(s):
        t = y / (s - 1)
        gd.line([(0, y), (s, y)], fill=tuple(round(a + (b - a) * t) for a, b in zip(top, bottom)))
    mask = Image.new("L", (s, s), 0)
    margin = round(s * 0.09)  # macOS icon grid: content inset, rounded square
    ImageDraw.Draw(mask).rounded_rectangle([margin, margin, s - margin, s - margin],
                                           radius=round(s * 0.19), fill=255)
    img.paste(bg, (0, 0), mask)

    d = ImageDraw.Draw(img)
    inner = s - 2 * margin

    def at(p):
        return (margin + p[0] * inner, margin + p[1] * inner)

    branch, accepted = (120, 170, 150, 255), (255, 214, 102, 255)
    for (p, parent, acc) in NODES:
        if parent >= 0:
            q = NODES[parent][0]
            d.line([at(q), at(p)], fill=accepted if acc else branch,
                   width=round(s * (0.030 if acc else 0.018)))
    for i, (p, _, acc) in enumerate(NODES):
        r = s * (0.062 if i == 0 else 0.048 if acc else 0.038)
        x, y = at(p)
        fill = (255, 240, 200, 255) if acc else (186, 222, 204, 255)
        if i == len(NODES) - 2:  # bonus token: a distinct colour, as in the tree view
            fill = (255, 160, 90, 255)
        d.ellipse([x - r, y - r, x + r, y + r], fill=fill,
                  outline=accepted if acc else branch, width=round(s * 0.008))
    return img.resize((size, size), Image.LANCZOS)


def make_png(path: Path = ICON_PNG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    draw_icon().save(path, optimize=True)
    return path


def make_icns(png: Path, out: Path) -> Path:
    """`out` (.icns) from `png`: with sips + iconutil on macOS (Apple's tools), else Pillow."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "darwin" and shutil.which("iconutil") and shutil.which("sips"):
        with tempfile.TemporaryDirectory() as tmp:
            iconset = Path(tmp) / "Canopy.iconset"
            iconset.mkdir()
            for px in (16, 32, 128, 256, 512):
                for scale in (1, 2):
                    name = f"icon_{px}x{px}{'@2x' if scale == 2 else ''}.png"
                    subprocess.run(["sips", "-z", str(px * scale), str(px * scale), str(png),
                                    "--out", str(iconset / name)],
                                   check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["iconutil", "-c", "icns", str(iconset), "-o", str(out)], check=True)
        return out
    from PIL import Image

    Image.open(png).save(out, format="ICNS")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--png", type=Path, default=ICON_PNG)
    p.add_argument("--icns", type=Path, default=None, help="also write this .icns")
    p.add_argument("--keep", action="store_true", help="do not redraw an existing PNG")
    args = p.parse_args(argv)
    if not (args.keep and args.png.exists()):
        print(make_png(args.png))
    if args.icns:
        print(make_icns(args.png, args.icns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
