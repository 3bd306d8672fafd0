"""Bug 7: the IO benchmark on an OS without posix_fadvise (macOS): no unguarded call, reads go
through F_NOCACHE, and "cold" is measured on a fresh file (and says so), since macOS cannot
evict pages already cached."""

from __future__ import annotations

import os
import sys
import types

import pytest

from engine.streaming import iobench
from engine.streaming import weights as W


@pytest.fixture
def no_fadvise(monkeypatch):
    """posix_fadvise missing, F_NOCACHE present (recorded instead of applied)."""
    calls = []
    monkeypatch.delattr(os, "posix_fadvise", raising=False)
    monkeypatch.setattr(W, "F_NOCACHE", 48)
    monkeypatch.setattr(W, "fcntl", types.SimpleNamespace(
        fcntl=lambda fd, cmd, arg: calls.append((cmd, arg))), raising=False)
    return calls


@pytest.fixture
def macos(monkeypatch, no_fadvise):
    monkeypatch.setattr(sys, "platform", "darwin")
    return no_fadvise


def test_cold_reads_without_posix_fadvise(macos, tmp_path):
    assert iobench.cold_read_kind() == "fresh-file"
    path = iobench.make_file(tmp_path / "m.safetensors", 1, 2, sorted_layout=True)
    for name, reader in iobench.READERS.items():
        for bypass in (True, False):
            assert iobench.bandwidth(path, reader, bypass) > 0, name
    assert macos and all(c == (48, 1) for c in macos)  # canopy and numpy readers: F_NOCACHE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # fresh copy gone
    assert not W.drop_page_cache(path)


def test_linux_cold_reads_evict(tmp_path):
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise here")
    assert iobench.cold_read_kind() == "evicted"
    path = iobench.make_file(tmp_path / "m.safetensors", 1, 2, sorted_layout=False)
    assert iobench.bandwidth(path, iobench.READERS["canopy"], True) > 0
    assert W.drop_page_cache(path)


def test_run_iobench_figures(no_fadvise, tmp_path):
    out = iobench.run_iobench(tmp_path / "io", mb=1, layers=2, repeat=1)
    assert out["cold_read_kind"] == "fresh-file"
    for layout in ("sorted", "mlx"):
        gbps = out["layouts"][layout]["gbps"]
        assert set(gbps) == set(iobench.READERS)
        assert all(len(v["cold"]) == len(v["warm"]) == 1 for v in gbps.values())
    assert out["pass_seconds_per_layer"]["streamed"] > 0
