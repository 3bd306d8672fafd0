"""OpenBLAS threads per generation: every core resident, one left to the IO thread streamed."""

from __future__ import annotations

import os

import pytest

from engine import blas_threads as B
from engine.bench.environment import peer_environment
from engine.config import GenerationConfig
from engine.session import Session
from engine.streaming import weights as W
from engine.testing import make_tiny_model

needs_openblas = pytest.mark.skipif(
    B.blas_threads() is None, reason="OpenBLAS is not loaded (macOS, or no LD_PRELOAD)")


def test_threads_for_leaves_a_core_to_the_io_thread():
    assert B.threads_for(streamed=False, cores=4) == 4
    assert B.threads_for(streamed=True, cores=4) == 3
    assert B.threads_for(streamed=True, cores=1) == 1


def test_peer_environment_drops_the_thread_count(monkeypatch):
    monkeypatch.setenv(B.USER_SETTING, "1")
    monkeypatch.setenv("LD_PRELOAD", "/x/libopenblas.so.0")
    env = peer_environment()
    assert B.USER_SETTING not in env and env["LD_PRELOAD"] == "/x/libopenblas.so.0"


@pytest.fixture
def restore_threads():
    before = B.blas_threads()
    yield
    B._openblas()[0](before)


@needs_openblas
def test_a_users_setting_wins(restore_threads):
    B._openblas()[0](1)
    assert B.use_blas_threads(streamed=False, environ={B.USER_SETTING: "1"}) == 1


@needs_openblas
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: resident and streamed agree")
def test_session_sets_threads_for_resident_and_streamed(tmp_path, monkeypatch, restore_threads):
    monkeypatch.delenv(B.USER_SETTING, raising=False)
    target = make_tiny_model(tmp_path / "t", num_layers=4, seed=3)
    cores = os.cpu_count()
    config = GenerationConfig(mode="ar", max_tokens=2)
    B._openblas()[0](1)
    list(Session.load(target).generate([1, 2, 3], config))
    assert B.blas_threads() == cores
    index = W.index_model(target)
    budget = sum(t.length for t in index.other) + index.layer_bytes(0)
    session = Session.load(target, budget_bytes=budget)
    try:
        list(session.generate([1, 2, 3], config))
        assert B.blas_threads() == cores - 1
    finally:
        session.close()
