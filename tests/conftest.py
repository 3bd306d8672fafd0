"""Shared fixtures: tiny random model directories built once per test session."""

from __future__ import annotations

import os
import sys

import pytest

from app.blas import maybe_reexec_with_openblas

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def pytest_configure(config):
    """Like the `canopy` launcher: on Linux, rerun pytest once with OpenBLAS preloaded when it
    is installed (MLX's CPU wheel otherwise uses a reference BLAS 10-20x slower in fp32)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.suspend_global_capture(in_=True)  # the new process gets the real stdout/stderr
    maybe_reexec_with_openblas(sys.argv[1:], command=list(sys.orig_argv))
    if capture is not None:
        capture.resume_global_capture()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from engine.testing import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "target", seed=1)


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory, tiny_dir):
    """Target plus three drafts: identical, noisy and unrelated."""
    from engine.testing import make_tiny_model

    root = tmp_path_factory.mktemp("drafts")
    return {
        "target": tiny_dir,
        "same": make_tiny_model(root / "same", like=tiny_dir, noise=0.0),
        "noisy": make_tiny_model(root / "noisy", like=tiny_dir, noise=0.15, seed=3),
        "unrelated": make_tiny_model(root / "unrelated", seed=7),
    }


@pytest.fixture(scope="session")
def loaded_pair(tiny_pair):
    from engine.formats.loader import load_model

    return {k: load_model(v) for k, v in tiny_pair.items()}


@pytest.fixture(scope="session")
def demo_pair(tmp_path_factory):
    """The real demo pair: `$CANOPY_HOME/models` when set (CI builds it with `canopy models
    demo` first, so this reuses it), else built once into a temporary folder."""
    from engine.formats import demo

    home = demo.models_home() if os.environ.get("CANOPY_HOME") else (
        tmp_path_factory.mktemp("canopy") / "models")
    return demo.build_demo_pair(home)


@pytest.fixture(autouse=True, scope="session")
def timings_in_tmp(tmp_path_factory):
    """Sessions in tests (and `canopy` processes they start) keep the policy's timings
    (engine.costmodel.timing_store) in a temporary file: a test run neither reads nor leaves
    one in the user's folder."""
    patch = pytest.MonkeyPatch()
    path = tmp_path_factory.mktemp("timings") / "timings.json"
    patch.setenv("CANOPY_TIMINGS_FILE", str(path))
    yield path
    patch.undo()


@pytest.fixture(autouse=True)
def unpriced_branches(request, monkeypatch):
    """Every draft-free branch that clears its node cut goes, whatever the measured pass
    seconds say: engine.decoding.prompt_lookup prices a step's branches from wall-clock timings,
    and tests of other properties (lossless ids, launches ahead, pass counts) must not depend on
    the machine's load. Tests of the pricing itself are marked `priced_branches`."""
    if request.node.get_closest_marker("priced_branches"):
        return
    from engine.decoding import prompt_lookup

    monkeypatch.setattr(prompt_lookup.LookupDrafter, "_pay_for_the_pass",
                        lambda self, tree, before, first: None)
