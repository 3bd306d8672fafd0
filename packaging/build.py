"""Build the Canopy app with PyInstaller (packaging/canopy.spec).

macOS (Apple Silicon): dist/Canopy.app, ad-hoc signed, and dist/Canopy-<version>-macos-arm64.dmg.
Linux: dist/Canopy/ (one folder) and dist/Canopy-<version>-linux-<arch>.tar.gz.

    python packaging/build.py                    # build + archive (ad-hoc signature on macOS)
    python packaging/build.py --smoke            # ... then run the bundle's checks + self-test
    python packaging/build.py --identity "Developer ID Application: NAME (TEAMID)" \
        --notary-profile canopy-notary           # real signing + notarization (macOS)

Real signing needs a "Developer ID Application" certificate in the keychain; notarization a
stored notarytool profile, created once with
    xcrun notarytool store-credentials canopy-notary --apple-id YOU@EXAMPLE.COM \
        --team-id TEAMID --password APP-SPECIFIC-PASSWORD
With --notary-profile the script signs the app with the hardened runtime and
packaging/entitlements.plist, submits a zip of it (`xcrun notarytool submit --wait`), staples
the ticket to the app (`xcrun stapler staple`), builds the .dmg, signs it, notarizes and
staples it too. Without it, the commands it would run are printed for reference.
Writes dist/build-info.json: bundle size, archive size and build time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import appinfo  # noqa: E402
import make_icon  # noqa: E402
import mlx_layout  # noqa: E402

MACOS = sys.platform == "darwin"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def tree_size(path: Path) -> int:
    """Bytes of the files under `path`, symlinks not followed (what an archive holds)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                total += os.path.getsize(p)
    return total


def bundle_executable(dist: Path) -> Path:
    if MACOS:
        return dist / f"{appinfo.APP_NAME}.app" / "Contents" / "MacOS" / appinfo.EXE_NAME
    return dist / appinfo.APP_NAME / appinfo.EXE_NAME


def pyinstaller(work: Path, dist: Path, *, clean: bool, env: dict) -> None:
    cmd = [sys.executable, "-m", "PyInstaller", HERE / "canopy.spec", "--noconfirm",
           "--distpath", dist, "--workpath", work, "--log-level", "WARN"]
    if clean:
        cmd.append("--clean")
    run(cmd, env=env, cwd=ROOT)


# --- macOS ----------------------------------------------------------------------------------


def installed_version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_mlx_pin(found: dict | None = None, floor: str | None = None) -> None:
    """Refuse a macOS build with any mlx other than the pinned, macOS-14-tagged wheels: the
    bundle layout is checked against that version's metallib search (mlx_layout.py).
    `found` ({distribution: version}) and `floor` default to this environment's."""
    pin = mlx_layout.MLX_PIN
    if found is None:
        found = {d: installed_version(d) for d in ("mlx", "mlx-metal")}
        floor = appinfo.mlx_wheel_min_macos()
    wrong = {d: v for d, v in found.items() if v != pin}
    if wrong:
        have = ", ".join(f"{d} {v or 'not installed'}" for d, v in wrong.items())
        raise SystemExit(
            f"Canopy.app is built and checked with mlx {pin} (mlx-metal {pin}); this "
            f"environment has {have}. Install the pinned wheels: "
            "python packaging/build.py --install-pinned-mlx")
    want = mlx_layout.MAC_WHEEL_PLATFORM.split("_")[1] + ".0"
    if floor != want:
        raise SystemExit(
            f"the installed mlx wheel is tagged for macOS {floor}, not {want}: its metallib may "
            "not load on older macOS. Install the pinned wheels: "
            "python packaging/build.py --install-pinned-mlx")


def install_pinned_mlx(wheels: Path) -> None:
    """Download the pinned macosx_14_0_arm64 wheels of mlx, mlx-metal and mlx-lm and install
    them into this environment (pip would otherwise pick the newest macOS tag it accepts)."""
    pins = [f"mlx=={mlx_layout.MLX_PIN}", f"mlx-metal=={mlx_layout.MLX_PIN}"]
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--platform", mlx_layout.MAC_WHEEL_PLATFORM, "--python-version", py, "-d", wheels, *pins])
    names = [w for w in wheels.glob("*.whl") if w.name.startswith(("mlx-", "mlx_metal-"))]
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--force-reinstall", *names])
    run([sys.executable, "-m", "pip", "install", f"mlx-lm=={mlx_layout.MLX_LM_PIN}"])


def check_app_layout(app: Path) -> None:
    problems = mlx_layout.check_darwin_layout(mlx_layout.listing_of(app / "Contents"))
    if problems:
        raise SystemExit("Canopy.app would not find mlx.metallib:\n  " + "\n  ".join(problems))


def codesign(app: Path, identity: str, entitlements: Path | None) -> None:
    cmd = ["codesign", "--force", "--deep", "--sign", identity]
    if identity != "-":
        cmd += ["--options", "runtime", "--timestamp"]
        if entitlements:
            cmd += ["--entitlements", entitlements]
    run(cmd + [app])
    run(["codesign", "--verify", "--deep", "--strict", "--verbose=2", app])


def notarize(path: Path, profile: str) -> None:
    run(["xcrun", "notarytool", "submit", path, "--keychain-profile", profile, "--wait"])


def make_dmg(app: Path, dmg: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / appinfo.APP_NAME
        stage.mkdir()
        run(["ditto", app, stage / app.name])  # ditto keeps symlinks and signatures
        (stage / "Applications").symlink_to("/Applications")
        dmg.unlink(missing_ok=True)
        run(["hdiutil", "create", "-volname", appinfo.APP_NAME, "-srcfolder", stage,
             "-fs", "HFS+", "-format", "UDZO", "-ov", dmg])


def build_macos(args, dist: Path, version: str) -> dict:
    app = dist / f"{appinfo.APP_NAME}.app"
    check_app_layout(app)
    real = args.identity != "-"
    codesign(app, args.identity, args.entitlements if real else None)
    info = {"app": str(app), "signature": "ad-hoc" if not real else args.identity}
    if args.notary_profile:
        if not real:
            raise SystemExit("--notary-profile needs --identity 'Developer ID Application: …'")
        zipped = dist / f"{appinfo.APP_NAME}-notarize.zip"
        run(["ditto", "-c", "-k", "--keepParent", app, zipped])
        notarize(zipped, args.notary_profile)
        zipped.unlink()
        run(["xcrun", "stapler", "staple", app])
    if not args.no_archive:
        dmg = dist / f"{appinfo.APP_NAME}-{version}-{appinfo.platform_tag()}.dmg"
        make_dmg(app, dmg)
        if real:
            run(["codesign", "--force", "--sign", args.identity, "--timestamp", dmg])
        if args.notary_profile:
            notarize(dmg, args.notary_profile)
            run(["xcrun", "stapler", "staple", dmg])
        info["archive"] = str(dmg)
    if not args.notary_profile:
        print("\nNot notarized. For distribution, sign with a Developer ID and notarize:\n"
              "  python packaging/build.py --identity 'Developer ID Application: NAME (TEAMID)'"
              " --notary-profile PROFILE\n(see the docstring of packaging/build.py)\n")
    return info


# --- Linux ----------------------------------------------------------------------------------


def build_linux(args, dist: Path, version: str) -> dict:
    folder = dist / appinfo.APP_NAME
    info = {"folder": str(folder)}
    if not args.no_archive:
        tarball = dist / f"{appinfo.APP_NAME}-{version}-{appinfo.platform_tag()}.tar.gz"
        run(["tar", "-C", dist, "-czf", tarball, appinfo.APP_NAME])  # keeps symlinks
        info["archive"] = str(tarball)
    return info


def smoke(exe: Path) -> None:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    run([exe, "--bundle-check"], env=env, stdout=subprocess.DEVNULL)
    run([exe, "app", "--self-test"], env=env)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Build the Canopy app (PyInstaller).")
    p.add_argument("--dist", type=Path, default=ROOT / "dist", help="output folder")
    p.add_argument("--work", type=Path, default=ROOT / "build" / "pyinstaller",
                   help="PyInstaller's work folder")
    p.add_argument("--clean", action="store_true", help="clear PyInstaller's caches first")
    p.add_argument("--no-archive", action="store_true", help="skip the .dmg / .tar.gz")
    p.add_argument("--smoke", action="store_true",
                   help="run the bundle's --bundle-check and `app --self-test` afterwards")
    p.add_argument("--identity", default=os.environ.get("CANOPY_CODESIGN_ID", "-"),
                   help="macOS signing identity ('-' = ad-hoc, the default)")
    p.add_argument("--entitlements", type=Path, default=HERE / "entitlements.plist")
    p.add_argument("--notary-profile", default=None,
                   help="notarytool keychain profile: notarize and staple (macOS)")
    p.add_argument("--install-pinned-mlx", action="store_true",
                   help=f"macOS: install mlx/mlx-metal {mlx_layout.MLX_PIN} "
                   f"({mlx_layout.MAC_WHEEL_PLATFORM} wheels) and exit")
    args = p.parse_args(argv)
    if args.install_pinned_mlx:
        if not MACOS:
            raise SystemExit("--install-pinned-mlx is for the macOS build (Linux uses mlx[cpu])")
        install_pinned_mlx(args.work.resolve() / "wheels")
        return 0

    version = appinfo.project_version()
    dist, work = args.dist.resolve(), args.work.resolve()
    env = dict(os.environ)
    if not make_icon.ICON_PNG.exists():
        make_icon.make_png()
    if MACOS:
        if platform.machine() != "arm64":
            raise SystemExit("Canopy.app needs Apple Silicon (MLX has no Intel macOS wheels)")
        check_mlx_pin()
        icns = make_icon.make_icns(make_icon.ICON_PNG, work / "Canopy.icns")
        env["CANOPY_ICNS"] = str(icns)
        if args.identity != "-":
            env["CANOPY_CODESIGN_ID"] = args.identity
            env["CANOPY_ENTITLEMENTS"] = str(args.entitlements)
        print(f"LSMinimumSystemVersion {appinfo.min_macos()} "
              f"(mlx wheel built for macOS {appinfo.mlx_wheel_min_macos()})")

    started = time.monotonic()
    pyinstaller(work, dist, clean=args.clean, env=env)
    build_seconds = time.monotonic() - started
    info = build_macos(args, dist, version) if MACOS else build_linux(args, dist, version)
    total_seconds = time.monotonic() - started

    bundle = dist / (f"{appinfo.APP_NAME}.app" if MACOS else appinfo.APP_NAME)
    info.update(version=version, platform=appinfo.platform_tag(),
                mlx=installed_version("mlx"),
                executable=str(bundle_executable(dist)),
                pyinstaller_seconds=round(build_seconds, 1), total_seconds=round(total_seconds, 1),
                bundle_bytes=tree_size(bundle))
    if "archive" in info:
        info["archive_bytes"] = os.path.getsize(info["archive"])
    (dist / "build-info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))
    if args.smoke:
        smoke(bundle_executable(dist))
    return 0


if __name__ == "__main__":
    sys.exit(main())
