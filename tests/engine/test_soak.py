"""The soak's smoke version: a few generations on a tiny pair, no thread or fd growth."""

from __future__ import annotations

import json
import sys

import pytest

from engine.bench import soak
from engine.bench.soak import SoakReport, SoakRun, SoakSample, run_soak
from engine.config import SoakConfig

SMOKE = SoakConfig(generations=8, max_tokens=4, reload_every=4, sample_every=2, warmup=2,
                   cancel_every=3, budget_fraction=0.9)


def collect(pair, config=SMOKE):
    records = list(run_soak(pair["target"], pair["noisy"], config))
    return ([r for r in records if isinstance(r, SoakRun)],
            [r for r in records if isinstance(r, SoakSample)], records[-1])


def test_smoke_soak_has_no_thread_or_fd_growth(tiny_pair):
    runs, samples, report = collect(tiny_pair)
    assert isinstance(report, SoakReport)
    assert [r.index for r in runs] == list(range(8))
    assert {r.mode for r in runs} == {"ar", "chain", "tree"}
    assert {r.streamed for r in runs} == {False, True}
    assert {r.sampled for r in runs} == {False, True}
    assert [r.cancel for r in runs if r.cancel] == ["close", "stop"]
    assert {r.reason for r in runs if r.cancel} <= {"closed", "cancelled"}
    assert report.failures == 0, report.errors
    assert report.greedy_mismatches == 0
    assert report.reloads == 1 and report.cancelled == 2
    assert [s.label for s in samples] == ["start", "every", "every", "every", "end", "closed"]
    assert report.fd_growth == 0
    assert report.thread_growth == 0
    assert report.os_thread_growth <= 0
    assert samples[-1].process.threads <= samples[0].process.threads  # IO threads gone
    assert samples[-1].process.open_fds <= samples[0].process.open_fds
    assert all(s.process.rss_bytes > 0 for s in samples)
    json.dumps(report.to_dict())


def test_a_leak_shows(tiny_pair, monkeypatch):
    """An fd leaked per generation must show as fd growth (the measurement can fail)."""
    leaked = []
    real = soak._one

    def leaky(*a, **kw):
        leaked.append(open(tiny_pair["target"] / "config.json"))
        return real(*a, **kw)

    monkeypatch.setattr(soak, "_one", leaky)
    try:
        *_, report = collect(tiny_pair, SoakConfig(generations=4, max_tokens=2, reload_every=0,
                                                   sample_every=2, warmup=2, cancel_every=0,
                                                   budget_fraction=0.9))
    finally:
        for f in leaked:
            f.close()
    assert report.fd_growth == 2


def test_greedy_mismatch_is_counted(tiny_pair, monkeypatch):
    real = soak._one

    def wrong(session, i, mode, sampled, cancel, config):
        reason, ids, err = real(session, i, mode, sampled, cancel, config)
        return reason, (ids + (1,) if mode == "tree" else ids), err

    monkeypatch.setattr(soak, "_one", wrong)
    *_, report = collect(tiny_pair, SoakConfig(generations=3, max_tokens=2, reload_every=0,
                                               cancel_every=0, budget_fraction=0.9))
    assert report.greedy_mismatches == 0  # three different prompts: nothing to compare yet
    *_, report = collect(tiny_pair, SoakConfig(generations=13, max_tokens=2, reload_every=0,
                                               cancel_every=0, budget_fraction=0.9))
    assert report.greedy_mismatches >= 1


def test_soak_config_is_validated():
    with pytest.raises(ValueError, match="generations"):
        SoakConfig(generations=0)
    with pytest.raises(ValueError, match="budget_fraction"):
        SoakConfig(budget_fraction=0)


def test_cli_soak_json(tiny_pair, capsys):
    from app.cli import main

    code = main(["soak", "--target", str(tiny_pair["target"]), "--draft",
                 str(tiny_pair["noisy"]), "--generations", "3", "--max-tokens", "2",
                 "--budget-mb", "1", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["generations"] == 3 and out["failures"] == 0
    assert {"rss_growth_after_warmup", "fd_growth", "thread_growth", "samples"} <= set(out)
    assert main(["soak", "--generations", "0", "--target", str(tiny_pair["target"])]) == 2


def test_reloading_a_streamed_model_does_not_grow_os_threads(tiny_pair):
    """MLX leaves a native thread behind per Python thread that evaluated; IO threads are
    therefore parked and reused (engine.runtime.run_on_mlx_thread)."""
    import mlx.core as mx

    from engine.bench.process import os_threads
    from engine.streaming.streamed_model import load_streamed_model
    from engine.streaming.weights import index_model

    budget = int(0.9 * index_model(tiny_pair["target"]).nbytes)
    counts = []
    for _ in range(6):
        m = load_streamed_model(tiny_pair["target"], budget)
        m.model(mx.array([[1, 2, 3]]))
        m.model.stop()
        m.model(mx.array([[4, 5]]))  # a restarted IO thread
        m.close()
        counts.append(os_threads())
    assert counts[-1] <= counts[1], counts


def test_process_with_parked_io_threads_exits_cleanly(tiny_pair):
    """Parked MLX threads release their streams at exit (else: 'terminate called ...')."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import mlx.core as mx\n"
            "from engine.streaming.streamed_model import load_streamed_model\n"
            f"m = load_streamed_model({str(tiny_pair['target'])!r}, 10**6)\n"
            "m.model(mx.array([[1, 2, 3]]))\n"
            "print('ok')\n")
    root = Path(__file__).resolve().parents[2]
    for _ in range(4):
        r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                           text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(root)})
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim (Linux)")
def test_release_memory_gives_a_closed_model_back_to_the_os(tmp_path):
    """Closing a ~130 MB model and calling release_memory() returns RSS to where it was (the
    GUI does this when it switches models; without it RSS stayed ~0.9 GB up on the demo pair)."""
    import gc

    import mlx.core as mx

    from engine.bench.process import rss_bytes
    from engine.formats.loader import load_model
    from engine.runtime import release_memory
    from engine.testing import make_tiny_model

    d = make_tiny_model(tmp_path / "m", hidden_size=512, intermediate_size=2048, num_layers=8,
                        num_heads=8, num_kv_heads=4)
    release_memory()
    before = rss_bytes()
    m = load_model(d)
    mx.eval(m.model(mx.array([[1, 2, 3]])))
    loaded = rss_bytes()
    del m
    gc.collect()
    release_memory()
    after = rss_bytes()
    assert loaded - before > 100 * 2**20
    assert after - before < 0.25 * (loaded - before), (before, loaded, after)
