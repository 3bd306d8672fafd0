"""The macOS bundle, checked from Linux: MLX's file placement (packaging/mlx_layout.py, the
rules the spec applies) against fake Canopy.app listings, the mlx pin guard of build.py, and
the GitHub workflows' structure (they cannot run here)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
WORKFLOWS = ROOT / ".github" / "workflows"


def _load(name: str):
    sys.path.insert(0, str(PACKAGING))
    try:
        spec = importlib.util.spec_from_file_location(f"_mac_{name}", PACKAGING / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(PACKAGING))


layout = _load("mlx_layout")
CORE = "Frameworks/mlx/core.cpython-312-darwin.so"


def _app(**entries) -> dict:
    base = {"MacOS/Canopy": None, "Info.plist": None, CORE: None,
            "Resources/mlx/core.cpython-312-darwin.so": f"../../{CORE}"}
    base.update(entries)
    return base


# What Canopy's rule produces: both files as binaries in Frameworks/mlx/lib.
GOOD = _app(**{"Frameworks/mlx/lib/libmlx.dylib": None, "Frameworks/mlx/lib/mlx.metallib": None})


def test_canopy_layout_passes():
    assert layout.check_darwin_layout(GOOD) == []


def test_metallib_behind_a_symlink_to_resources_passes():
    app = _app(**{"Frameworks/mlx/lib/libmlx.dylib": None,
                  "Frameworks/mlx/lib/mlx.metallib": "../../../Resources/mlx/lib/mlx.metallib",
                  "Resources/mlx/lib/mlx.metallib": None})
    assert layout.check_darwin_layout(app) == []


def test_library_deduplicated_to_the_top_level_fails():
    # stenoai PR #287: PyInstaller keeps one libmlx.dylib by basename, at Frameworks/; the
    # metallib (a data file) stays in Resources/mlx/lib: MLX looks beside the loaded library.
    app = _app(**{"Frameworks/libmlx.dylib": None,
                  "Frameworks/mlx/lib/libmlx.dylib": "../../libmlx.dylib",
                  "Resources/mlx/lib/mlx.metallib": None})
    problems = layout.check_darwin_layout(app)
    assert problems and "mlx.metallib" in problems[0]


def test_two_copies_of_the_library_fail():
    app = dict(GOOD, **{"Frameworks/libmlx.dylib": None})
    problems = layout.check_darwin_layout(app)
    assert any("exactly one libmlx.dylib" in p for p in problems)


def test_metallib_only_as_data_in_resources_fails():
    app = _app(**{"Frameworks/mlx/lib/libmlx.dylib": None, "Resources/mlx/lib/mlx.metallib": None})
    assert any("neither exists" in p for p in layout.check_darwin_layout(app))


def test_missing_library_fails():
    app = _app(**{"Frameworks/mlx/lib/mlx.metallib": None})
    assert layout.check_darwin_layout(app)


def test_metallib_in_resources_subfolder_of_the_library_folder_passes():
    app = _app(**{"Frameworks/mlx/lib/libmlx.dylib": None,
                  "Frameworks/mlx/lib/Resources/mlx.metallib": None})
    assert layout.check_darwin_layout(app) == []


def test_listing_of_a_real_folder(tmp_path):
    contents = tmp_path / "Contents"
    lib = contents / "Frameworks" / "mlx" / "lib"
    lib.mkdir(parents=True)
    (lib / "libmlx.dylib").write_bytes(b"x")
    (contents / "Frameworks" / "mlx" / "core.cpython-312-darwin.so").write_bytes(b"x")
    (contents / "Resources" / "mlx" / "lib").mkdir(parents=True)
    (contents / "Resources" / "mlx" / "lib" / "mlx.metallib").write_bytes(b"x")
    (lib / "mlx.metallib").symlink_to("../../../Resources/mlx/lib/mlx.metallib")
    listing = layout.listing_of(contents)
    assert listing["Frameworks/mlx/lib/mlx.metallib"] == "../../../Resources/mlx/lib/mlx.metallib"
    assert layout.check_darwin_layout(listing) == []
    (contents / "Resources" / "mlx" / "lib" / "mlx.metallib").unlink()  # dangling link
    assert layout.check_darwin_layout(layout.listing_of(contents))


def test_spec_rules_place_one_library_beside_the_metallib(tmp_path):
    wheel_lib = tmp_path / "site-packages" / "mlx" / "lib"
    wheel_lib.mkdir(parents=True)
    for name in ("libmlx.dylib", "mlx.metallib", "libjaccl.dylib"):
        (wheel_lib / name).write_bytes(b"x")
    placed = layout.darwin_mlx_binaries(wheel_lib)
    assert {dest for _, dest in placed} == {"mlx/lib"}
    assert {Path(src).name for src, _ in placed} == {"libmlx.dylib", "mlx.metallib",
                                                      "libjaccl.dylib"}
    # PyInstaller's TOC after dependency analysis: a second libmlx.dylib under its basename
    toc = [("mlx/lib/libmlx.dylib", "a", "BINARY"), ("libmlx.dylib", "a", "BINARY"),
           ("mlx/lib/mlx.metallib", "b", "BINARY"), ("mlx/core.cpython-312-darwin.so", "c",
                                                     "EXTENSION"), ("libz.dylib", "d", "BINARY")]
    kept = layout.keep_one_libmlx(toc)
    assert [e[0] for e in kept] == ["mlx/lib/libmlx.dylib", "mlx/lib/mlx.metallib",
                                    "mlx/core.cpython-312-darwin.so", "libz.dylib"]
    # the resulting app (binaries in Frameworks/) satisfies MLX's search
    app = {f"Frameworks/{dest}": None for dest, _, _ in kept}
    assert layout.check_darwin_layout(app) == []


def test_wheel_without_metallib_is_refused(tmp_path):
    (tmp_path / "libmlx.dylib").write_bytes(b"x")
    with pytest.raises(SystemExit, match="mlx.metallib missing"):
        layout.darwin_mlx_binaries(tmp_path)


def test_spec_uses_the_layout_rules():
    spec = (PACKAGING / "canopy.spec").read_text()
    assert "mlx_layout.darwin_mlx_binaries(" in spec and "mlx_layout.keep_one_libmlx(" in spec


# --- the mlx pin ----------------------------------------------------------------------------


def test_build_refuses_an_unpinned_mlx():
    build = _load("build")
    pin = layout.MLX_PIN
    build.check_mlx_pin({"mlx": pin, "mlx-metal": pin}, "14.0")  # the pinned wheels: fine
    with pytest.raises(SystemExit, match=rf"built and checked with mlx {re.escape(pin)}.*0\.31\.2"):
        build.check_mlx_pin({"mlx": "0.31.2", "mlx-metal": "0.31.2"}, "14.0")
    with pytest.raises(SystemExit, match="mlx-metal not installed"):
        build.check_mlx_pin({"mlx": pin, "mlx-metal": None}, "14.0")
    with pytest.raises(SystemExit, match="tagged for macOS 26.0"):
        build.check_mlx_pin({"mlx": pin, "mlx-metal": pin}, "26.0")


def test_pins_agree_with_the_workflow_and_readme():
    readme = (ROOT / "README.md").read_text()
    assert f"mlx {layout.MLX_PIN}" in readme and layout.MAC_WHEEL_PLATFORM in readme
    appinfo = _load("appinfo")
    assert appinfo.MIN_MACOS == "14.0" and layout.MAC_WHEEL_PLATFORM.startswith("macosx_14_0")


# --- workflows ------------------------------------------------------------------------------


def _workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(data, dict) and {"name", "jobs"} <= set(data)
    assert True in data or "on" in data  # YAML 1.1 reads a bare `on:` key as True
    for job_name, job in data["jobs"].items():
        assert set(job) <= {"runs-on", "steps", "needs", "if", "env", "timeout-minutes",
                            "permissions", "strategy"}, job_name
        assert job["runs-on"] and job["steps"], job_name
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
    return data


def _commands(job: dict) -> str:
    return "\n".join(s.get("run", "") + s.get("uses", "") for s in job["steps"])


def test_macos_workflow():
    wf = _workflow("macos.yml")
    build = wf["jobs"]["build"]
    assert build["runs-on"].startswith("macos-") and "intel" not in build["runs-on"]
    cmds = _commands(build)
    for needed in ("--install-pinned-mlx", "packaging/build.py --smoke", "--bundle-check",
                   "actions/upload-artifact", "pytest"):
        assert needed in cmds, needed
    release = wf["jobs"]["release"]
    assert "refs/tags/" in release["if"] and release["needs"] == "build"
    signing = [s for s in release["steps"] if "--notary-profile" in s.get("run", "")]
    assert signing and all("HAVE_SIGNING" in s["if"] for s in signing)
    assert "secrets." in release["env"]["HAVE_SIGNING"]


def test_linux_workflow_runs_ci():
    wf = _workflow("linux.yml")
    assert ".ci/run" in _commands(wf["jobs"]["ci"])
